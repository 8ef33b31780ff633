// The workflow driver against a real etcd, with the agents faked: a step retried after a lost
// compare-and-swap must not leave a second hold-off lease behind (issue 10, point 3). And the
// hold-off extension a forced move makes before it revokes, as the lease operation it is.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import type { Workflow } from '../../pkg/api/schema.js';
import type { AgentLink } from '../../pkg/controller/agents.js';
import { ControllerKeys, GuardedWriter, readSnapshot } from '../../pkg/controller/store.js';
import { WorkflowDriver } from '../../pkg/controller/workflow.js';
import { extendHoldOff, LeaseOperationError } from '../../pkg/lease/index.js';
import { IntegrationCluster } from '../support/cluster.js';
import { switchover } from '../support/switchover.js';
import { waitFor } from '../support/wait.js';

/** A writer whose first write of `draining` loses its compare: someone wrote the workflow in between. */
class RacedWriter extends GuardedWriter {
  raced = 0;
  constructor(
    private readonly etcd: Etcd3,
    keys: ControllerKeys,
    token: () => bigint | undefined,
  ) {
    super(etcd, keys, token, 'c1');
  }
  override async put(...args: Parameters<GuardedWriter['put']>): ReturnType<GuardedWriter['put']> {
    const [key, value] = args;
    if (this.raced === 0 && (value as Workflow).state === 'draining') {
      this.raced++;
      const stored = await this.etcd.get(key).string();
      await this.etcd.put(key).value(stored!); // same value, newer revision: the compare fails
    }
    return super.put(...args);
  }
}

describe('controller workflow driver (real etcd, faked agents)', function () {
  this.timeout(120_000);
  let cluster: IntegrationCluster;
  let client: Etcd3;

  before(async () => {
    cluster = await IntegrationCluster.start({ nats: false });
    client = cluster.client;
  });

  after(() => cluster?.close());

  it('a requested step retried after a lost compare leaves exactly one hold-off lease', async () => {
    const keys = new ControllerKeys('orphan-test');
    const identity = 'bot';
    const election = await client.put(keys.election.leader('active')).value('{}').exec();
    const token = BigInt(election.header.revision);
    const leader = { node: 'a', leaseId: '1', ttlMs: 4_000, mustBeOutByMs: 3_600, since: Date.now() };
    const put = await client.put(keys.lease.leader(identity)).value(JSON.stringify(leader)).exec();
    await client.put(keys.lease.candidate(identity, 'b')).value(
      JSON.stringify({
        node: 'b',
        leaseId: '2',
        ttlMs: 4_000,
        mustBeOutByMs: 3_600,
        priority: 0,
        healthy: true,
      }),
    );
    const now = Date.now();
    const wf = switchover(
      { requestedAt: now, dueAt: now + 30_000 },
      { identity, actor: 'test', from: { node: 'a', token: put.header.revision } },
    );
    await client.put(keys.workflow(identity)).value(JSON.stringify(wf));
    const leasesBefore = (await client.leaseClient.leaseLeases()).leases.map((l) => l.ID);

    const writer = new RacedWriter(client, keys, () => token);
    const agents = { drain: async () => ({}), undrain: async () => ({}) } as unknown as AgentLink;
    const driver = new WorkflowDriver(
      {
        name: 'c1',
        etcd: client,
        keys,
        writer,
        agents,
        logger: pino({ level: 'silent' }),
        drainTimeoutMs: 5_000,
        loginTimeoutMs: 5_000,
        fence: [],
        viewContext: (snap) => ({
          snap,
          agents: new Map(),
          heartbeatTimeoutMs: 10_000,
          now: Date.now(),
          startedAt: Date.now(),
        }),
        responders: async () => [],
        history: () => undefined,
        changed: () => undefined,
        alarm: () => undefined,
        finished: () => undefined,
        isActive: () => true,
      },
      identity,
    );
    const running = driver.run();
    let stored: Workflow;
    try {
      stored = await waitFor(
        async () => {
          const w = (await readSnapshot(client, keys)).workflows.get(identity)?.workflow;
          return w?.state === 'draining' ? w : undefined;
        },
        { what: 'the workflow to reach draining', timeoutMs: 20_000 },
      );
    } finally {
      driver.stop();
      await running;
    }
    expect(writer.raced, 'the first draining write lost its compare').to.equal(1);
    const leases = (await client.leaseClient.leaseLeases()).leases
      .map((l) => l.ID)
      .filter((id) => !leasesBefore.includes(id));
    // One hold-off lease, the one the workflow records, holding exactly the old leader off.
    expect(leases).to.deep.equal([stored.holdOff!.lease]);
    const held = await client.leaseClient.leaseTimeToLive({ ID: stored.holdOff!.lease, keys: true });
    expect(held.keys.map((k) => k.toString())).to.deep.equal([keys.lease.holdOff(identity, 'a')]);
  });

  it('a hold-off extension validates its record and lands only under the caller’s term', async () => {
    const keys = new ControllerKeys('extend-test');
    const identity = 'bot';
    const electionKey = keys.election.leader('active');
    const term = (await client.put(electionKey).value('{}').exec()).header.revision;
    const authority = { key: electionKey, revision: term, mayAct: () => true, describe: 'controller c1' };
    const lease = (await client.leaseClient.leaseGrant({ TTL: 30 })).ID;
    const record = { reason: 'failover to b', actor: 'test', at: Date.now(), workflow: 'w1' };
    const extend = (nodes: string[], rec: typeof record) =>
      extendHoldOff(client, { identity, nodes, record: rec, leaseId: lease, authority, keys: keys.lease });
    const held = async (node: string) =>
      (await client.get(keys.lease.holdOff(identity, node)).string()) !== null;
    try {
      // A record that does not validate: refused before anything is sent.
      const invalid = await extend(['c'], { ...record, reason: '' }).catch((err: Error) => err);
      expect(invalid).to.be.instanceOf(Error);
      expect(await held('c')).to.equal(false);

      await extend(['c'], record);
      expect(await held('c')).to.equal(true);
      const bound = await client.leaseClient.leaseTimeToLive({ ID: lease, keys: true });
      expect(bound.keys.map((k) => k.toString())).to.deep.equal([keys.lease.holdOff(identity, 'c')]);

      // Another term began (the election key was written again): the deposed caller writes nothing.
      await client.put(electionKey).value('{}');
      const refused = await extend(['d'], record).catch((err: Error) => err);
      expect(refused).to.be.instanceOf(LeaseOperationError);
      expect((refused as LeaseOperationError).code).to.equal('no-authority');
      expect(await held('d')).to.equal(false);
    } finally {
      await client.leaseClient.leaseRevoke({ ID: lease }).catch(() => undefined);
    }
  });
});

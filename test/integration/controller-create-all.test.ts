// Handovers started together are written together, or not at all. A fence of a node that leads
// two identities starts two handovers and records the intent to fence after them; if a second
// operator's switchover of one of them lands in between, nothing may be left behind — no
// handover of the other identity holding the node off, no intent — and the operator is told
// so. (Found by the chaos suite's operators' race: the fence was answered "nothing was
// started" while one handover ran on, and its node stayed held off with no fence to follow.)
// Real etcd; the supervisor is built directly, with no agents and no NATS (no driver runs).
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { ApiError } from '../../pkg/api/schema.js';
import { systemClock } from '../../pkg/clock/index.js';
import { ControllerConfig } from '../../pkg/config/controller.js';
import { Audit } from '../../pkg/controller/audit.js';
import { Cluster } from '../../pkg/controller/cluster.js';
import { EventStream } from '../../pkg/controller/events.js';
import { ControllerMetrics } from '../../pkg/controller/metrics.js';
import { ControllerKeys, GuardedWriter } from '../../pkg/controller/store.js';
import { WorkflowSupervisor, type WorkflowRequest } from '../../pkg/controller/supervisor.js';
import { LoopTrouble } from '../../pkg/controller/trouble.js';
import { putSpec } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import { rateBotSpec } from '../support/specs.js';

describe('controller: handovers started together are all written, or none (real etcd)', function () {
  this.timeout(120_000);
  let cluster: IntegrationCluster;
  let client: Etcd3;
  const keys = new ControllerKeys();

  before(async () => {
    cluster = await IntegrationCluster.start({ nats: false });
    client = cluster.client;
    await putSpec(client, rateBotSpec('one'));
    await putSpec(client, rateBotSpec('two'));
  });

  after(() => cluster?.close());

  async function active() {
    const electionKey = keys.election.leader('active');
    const term = BigInt((await client.put(electionKey).value('{"node":"c1"}').exec()).header.revision);
    const log = pino({ level: 'silent' });
    const writer = new GuardedWriter(client, keys, () => term, 'c1');
    const ctl = new Cluster({
      name: 'c1',
      etcd: client,
      keys,
      writer,
      clock: systemClock,
      // Inactive for the drivers: a workflow written here is not driven (no agents exist).
      isActive: () => false,
      agents: () => new Map(),
      heartbeatTimeoutMs: 6_000,
      startedAt: Date.now(),
    });
    const config = ControllerConfig.parse({
      name: 'c1',
      etcd: { endpoints: [cluster.etcd.hostEndpoint] },
      nats: { servers: ['nats://127.0.0.1:4222'] },
      http: {},
      auth: { tokens: [{ name: 'admin', role: 'admin', token: 'admin-token-0123456789abcdef' }] },
    });
    const metrics = new ControllerMetrics();
    const supervisor = new WorkflowSupervisor({
      name: 'c1',
      etcd: client,
      nc: undefined as never,
      keys,
      writer,
      agents: undefined as never,
      cluster: ctl,
      audit: new Audit(client, 'c1', systemClock, new LoopTrouble(log), writer, ctl),
      events: new EventStream(systemClock, log, metrics),
      metrics,
      config,
      clock: systemClock,
      log,
      isActive: () => false,
    });
    return { ctl, supervisor, term: writer.authority() };
  }

  const fenceOf = (node: string): WorkflowRequest => ({
    kind: 'node-fence',
    actor: 'ops',
    reason: `fence ${node}: kernel update`,
    deadlineMs: 30_000,
    fencingNode: node,
  });
  const intentKey = () => keys.fenceIntent('n1');
  const stored = async (key: string) => (await client.get(key).exec()).kvs.length;

  it('writes every handover and the intent in one transaction', async () => {
    const { ctl, supervisor, term } = await active();
    const snap = await ctl.read();
    const wfs = await supervisor.createAll(
      snap,
      [
        { identity: 'one', req: fenceOf('n1') },
        { identity: 'two', req: fenceOf('n1') },
      ],
      term,
      {
        key: intentKey(),
        value: (w) => ({ reason: 'x', actor: 'ops', at: 0, workflows: w.map((x) => x.id) }),
      },
    );
    expect(wfs.map((w) => w.identity)).to.deep.equal(['one', 'two']);
    expect(await stored(keys.workflow('one'))).to.equal(1);
    expect(await stored(keys.workflow('two'))).to.equal(1);
    const intent = JSON.parse((await client.get(intentKey()).string())!) as { workflows: string[] };
    expect(intent.workflows).to.deep.equal(wfs.map((w) => w.id));
    await client.delete().prefix(keys.workflows()).exec();
    await client.delete().key(intentKey()).exec();
  });

  it('when one identity got a workflow meanwhile, writes nothing and says so', async () => {
    const { ctl, supervisor, term } = await active();
    const snap = await ctl.read();
    // Another operator's switchover of `two` lands after the snapshot was read.
    await client.put(keys.workflow('two')).value(JSON.stringify({ racing: true }));
    let error: unknown;
    try {
      await supervisor.createAll(
        snap,
        [
          { identity: 'one', req: fenceOf('n1') },
          { identity: 'two', req: fenceOf('n1') },
        ],
        term,
        { key: intentKey(), value: () => ({ reason: 'x', actor: 'ops', at: 0, workflows: [] }) },
      );
    } catch (err) {
      error = err;
    }
    expect(error).to.be.instanceOf(ApiError);
    expect((error as ApiError).code).to.equal('conflict');
    expect((error as Error).message).to.match(/nothing was started/);
    expect(await stored(keys.workflow('one')), 'no handover of one left behind').to.equal(0);
    expect(await stored(intentKey()), 'no fence intent').to.equal(0);
    supervisor.stopAll();
  });
});

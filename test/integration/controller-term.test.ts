// A controller whose election term ended, but which still believes it is active (it froze and
// resumed before noticing), must not be able to write anything: every API write compares the
// election term in the same etcd txn. Real etcd; the controller's API modules are built
// directly, with no agents (none of these operations needs one).
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { pino } from 'pino';
import { ApiError } from '../../pkg/api/schema.js';
import { systemClock } from '../../pkg/clock/index.js';
import { ControllerConfig } from '../../pkg/config/controller.js';
import { AccessListApi } from '../../pkg/controller/access-lists.js';
import type { ApiDeps } from '../../pkg/controller/api-deps.js';
import { HandoverApi } from '../../pkg/controller/api-handovers.js';
import { NodeApi } from '../../pkg/controller/api-nodes.js';
import { SpecApi } from '../../pkg/controller/api-specs.js';
import { Audit } from '../../pkg/controller/audit.js';
import { Cluster } from '../../pkg/controller/cluster.js';
import { ControllerMetrics } from '../../pkg/controller/metrics.js';
import { Prober } from '../../pkg/controller/probes.js';
import { ControllerKeys, GuardedWriter } from '../../pkg/controller/store.js';
import type { WorkflowSupervisor } from '../../pkg/controller/supervisor.js';
import { LoopTrouble } from '../../pkg/controller/trouble.js';
import { readHistory } from '../../pkg/history/index.js';
import { getSpec, listPending, putSpec, recordPending } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import type { EtcdMember } from '../support/harness.js';
import { rateBotSpec } from '../support/specs.js';

const NKEY = `U${'A'.repeat(55)}`;

describe('controller: a deposed controller writes nothing (real etcd)', function () {
  this.timeout(120_000);
  let cluster: IntegrationCluster;
  let client: Etcd3;
  let etcd: EtcdMember;

  before(async () => {
    cluster = await IntegrationCluster.start({ nats: false });
    ({ client, etcd } = cluster);
  });

  after(() => cluster?.close());

  /** The API modules of controller `name`, acting under election token `token()`. */
  function controller(name: string, token: () => bigint | undefined) {
    const keys = new ControllerKeys();
    const log = pino({ level: 'silent' });
    const metrics = new ControllerMetrics();
    const trouble = new LoopTrouble(log);
    const writer = new GuardedWriter(client, keys, token, name);
    const cluster = new Cluster({
      name,
      etcd: client,
      keys,
      writer,
      clock: systemClock,
      isActive: () => token() !== undefined,
      agents: () => new Map(),
      heartbeatTimeoutMs: 6_000,
      startedAt: Date.now(),
    });
    const config = ControllerConfig.parse({
      name,
      etcd: { endpoints: [etcd.hostEndpoint] },
      nats: { servers: ['nats://127.0.0.1:4222'] },
      http: {},
      auth: { tokens: [{ name: 'admin', role: 'admin', token: 'admin-token-0123456789abcdef' }] },
    });
    const parts = { name, etcd: client, keys, writer, cluster, metrics, config, clock: systemClock, log };
    const deps: ApiDeps = {
      ...parts,
      audit: new Audit(client, name, systemClock, trouble, writer, cluster),
      supervisor: {} as WorkflowSupervisor,
      prober: new Prober({ ...parts, trouble } as unknown as ConstructorParameters<typeof Prober>[0]),
    };
    return {
      specs: new SpecApi(deps),
      handovers: new HandoverApi(deps),
      nodes: new NodeApi(deps),
      access: new AccessListApi(deps),
    };
  }

  async function refused(what: string, call: () => Promise<unknown>): Promise<void> {
    let error: unknown;
    try {
      await call();
    } catch (err) {
      error = err;
    }
    expect(error, `${what} was refused`).to.be.instanceOf(ApiError);
    expect((error as ApiError).code, `${what}: ${(error as Error).message}`).to.equal('not-active');
  }

  it('pause, resume, apply, delete, access-list edits, approve, deny and unfence are refused after the term ended, and not recorded', async () => {
    const keys = new ControllerKeys();
    const electionKey = keys.election.leader('active');
    const first = BigInt((await client.put(electionKey).value('{"node":"c1"}').exec()).header.revision);
    await putSpec(client, rateBotSpec('bot'));
    await putSpec(client, rateBotSpec('other'));
    await recordPending(client, 'bot', {
      name: 'carol',
      nkey: NKEY,
      request: 'RATE USD',
      node: 'n1',
      at: Date.now(),
    });
    await client
      .put(keys.paused('other'))
      .value(JSON.stringify({ reason: 'x', actor: 'ops', at: Date.now() }));
    await client
      .put(keys.lease.fence('n1'))
      .value(JSON.stringify({ reason: 'x', actor: 'ops', at: Date.now() }));
    const before = await getSpec(client, 'bot');

    // c2 wins the next term; c1 still holds its old token (it has not noticed yet).
    const second = BigInt((await client.put(electionKey).value('{"node":"c2"}').exec()).header.revision);
    const deposed = controller('c1', () => first);

    await refused('pause', () => deposed.handovers.pause('bot', { reason: 'maintenance' }, 'ops'));
    expect((await client.get(keys.paused('bot')).exec()).kvs, 'no pause written').to.have.length(0);
    await refused('resume', () => deposed.handovers.resume('other', {}, 'ops'));
    expect((await client.get(keys.paused('other')).exec()).kvs, 'the pause stays').to.have.length(1);
    await refused('apply', () =>
      deposed.specs.apply({ specs: [rateBotSpec('bot', { description: 'changed' })], dryRun: false }, 'ops'),
    );
    await refused('delete', () => deposed.specs.deleteIdentity('bot', 'ops'));
    await refused('access-list change', () =>
      deposed.access.changeAcl('bot', { op: 'open', open: false }, 'ops'),
    );
    await refused('approve', () => deposed.access.approve('bot', 'carol', {}, 'ops'));
    await refused('deny', () => deposed.access.deny('bot', 'carol', { block: true }, 'ops'));
    await refused('unfence', () => deposed.nodes.unfenceNode('n1', {}, 'ops'));
    expect((await getSpec(client, 'bot'))?.revision, 'the spec is untouched').to.equal(before?.revision);
    expect(await listPending(client, 'bot'), 'the request still waits').to.have.length(1);
    expect((await client.get(keys.lease.fence('n1')).exec()).kvs, 'the fence stays').to.have.length(1);
    const recorded = async (node: string) =>
      (await Promise.all(['bot', 'other', '_nodes'].map((id) => readHistory(client, id))))
        .flat()
        .filter((e) => e.node === node);
    expect(await recorded('c1'), 'history shows no action of the deposed controller').to.deep.equal([]);

    // The same calls under the current term go through: the refusals above were the term's.
    const current = controller('c2', () => second);
    await current.handovers.pause('bot', { reason: 'maintenance' }, 'ops');
    expect((await client.get(keys.paused('bot')).exec()).kvs).to.have.length(1);
    await current.access.approve('bot', 'carol', {}, 'ops');
    expect(await listPending(client, 'bot')).to.have.length(0);
    await current.nodes.unfenceNode('n1', {}, 'ops');
    expect((await client.get(keys.lease.fence('n1')).exec()).kvs).to.have.length(0);
    await current.specs.deleteIdentity('other', 'ops');
    expect(await getSpec(client, 'other')).to.equal(undefined);
    expect((await recorded('c2')).map((e) => e.reason)).to.include.members([
      'paused: maintenance',
      'authorization of carol approved',
      'unfence of n1',
      'spec deleted: its leader logs out',
    ]);
  });
});

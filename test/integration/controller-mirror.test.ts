// The controller's watched copy of the cluster, against a real etcd: a snapshot from it is the
// same as one read from etcd, and never older than the call that asked for it — a change any
// writer made just before is in it. When it cannot prove itself caught up (a write outside
// the prefix moved etcd's revision) the snapshot is read from etcd instead.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { ManualClock } from '../../pkg/clock/index.js';
import { Cluster } from '../../pkg/controller/cluster.js';
import { ClusterMirror } from '../../pkg/controller/mirror.js';
import { Keys } from '../../pkg/lease/keys.js';
import {
  ControllerKeys,
  readSnapshot,
  type ClusterSnapshot,
  type GuardedWriter,
} from '../../pkg/controller/store.js';
import { readRecentHistory, recordHistory } from '../../pkg/history/index.js';
import { deleteSpec, putSpec } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import { rateBotSpec } from '../support/specs.js';

/** Everything but the revision, in a stable order (maps as sorted entries). */
function content(snap: ClusterSnapshot): string {
  return JSON.stringify({ ...snap, revision: undefined }, (_k, v: unknown) => {
    if (v instanceof Map) return [...v.entries()].sort(([a], [b]) => String(a).localeCompare(String(b)));
    if (typeof v === 'bigint') return String(v);
    return v;
  });
}

describe('controller: the cluster mirror (real etcd)', function () {
  this.timeout(120_000);
  let harness: IntegrationCluster;
  let client: Etcd3;
  let mirror: ClusterMirror;
  let cluster: Cluster;
  const keys = new ControllerKeys();
  const sources: string[] = [];

  before(async () => {
    harness = await IntegrationCluster.start({ nats: false });
    client = harness.client;
    mirror = ClusterMirror.start(client, keys);
    cluster = new Cluster({
      name: 'c1',
      etcd: client,
      keys,
      writer: {} as GuardedWriter,
      clock: new ManualClock(),
      isActive: () => true,
      agents: () => new Map(),
      heartbeatTimeoutMs: 6_000,
      startedAt: 0,
      mirror,
      onSnapshot: (source) => sources.push(source),
    });
  });

  after(async () => {
    mirror?.close();
    await harness?.close();
  });

  const leader = (node: string) =>
    JSON.stringify({ node, since: Date.now(), leaseId: '1', ttlMs: 5_000, mustBeOutByMs: 4_500 });

  it('serves what a read of etcd shows, through puts, overwrites and deletes of every kind of key', async () => {
    const steps: Array<[string, () => unknown]> = [
      ['a spec', () => putSpec(client, rateBotSpec('m1'))],
      ['another spec', () => putSpec(client, rateBotSpec('m2'))],
      ['a leader', () => client.put(keys.lease.leader('m1')).value(leader('a'))],
      [
        'a pause',
        () => client.put(keys.paused('m1')).value(JSON.stringify({ reason: 'r', actor: 'ops', at: 1 })),
      ],
      [
        'a node fence',
        () => client.put(keys.lease.fence('b')).value(JSON.stringify({ reason: 'r', actor: 'ops', at: 1 })),
      ],
      ['a new leader', () => client.put(keys.lease.leader('m1')).value(leader('b'))],
      ['an unreadable value', () => client.put(keys.lease.leader('m2')).value('not json')],
      ['a spec changed', () => putSpec(client, rateBotSpec('m2', { description: 'changed' }))],
      ['a leader gone', () => client.delete().key(keys.lease.leader('m1'))],
      ['a pause gone', () => client.delete().key(keys.paused('m1'))],
      ['a spec gone', () => deleteSpec(client, 'm1')],
    ];
    sources.length = 0;
    for (const [what, step] of steps) {
      await step();
      const served = await cluster.snapshot();
      const read = await readSnapshot(client, keys);
      expect(content(served), `after ${what}`).to.equal(content(read));
      expect(served.revision, `after ${what}`).to.equal(read.revision);
    }
    expect(
      sources.filter((s) => s === 'mirror'),
      'served from the mirror',
    ).to.have.length(steps.length);
  });

  it('a change any writer made just before the call is in the snapshot', async () => {
    sources.length = 0;
    for (let i = 0; i < 40; i++) {
      await client
        .put(keys.paused(`race${i}`))
        .value(JSON.stringify({ reason: `r${i}`, actor: 'ops', at: i }));
      const snap = await cluster.snapshot();
      expect(snap.paused.get(`race${i}`)?.reason, `pause ${i}`).to.equal(`r${i}`);
    }
    expect(sources.filter((s) => s === 'mirror').length).to.be.greaterThan(30);
  });

  it('keeps the same snapshot while only keys it does not use change (the election sessions rewritten every T/10)', async () => {
    const before = await cluster.snapshot();
    await client.put('understudy/controllers/sessions/4242').value('renewed');
    await client.put('understudy/sessions/4343').value('renewed');
    expect(await cluster.snapshot(), 'not rebuilt').to.equal(before);
    await client.put(keys.paused('rebuilt')).value(JSON.stringify({ reason: 'r', actor: 'ops', at: 1 }));
    const after = await cluster.snapshot();
    expect(after).to.not.equal(before);
    expect(after.paused.has('rebuilt')).to.equal(true);
  });

  it("wakes a workflow waiting on an identity when that identity's keys change, and not for another's", async () => {
    const lease = new Keys();
    const mine = mirror.changed('waker', 60_000);
    const other = mirror.changed('sleeper', 1_000);
    await client.put(lease.login('waker')).value('{"changed":true}');
    expect(await mine).to.equal('changed');
    expect(await other).to.equal('timeout');
    await client.delete().key(lease.login('waker'));
  });

  it('recent history of every identity is one read, newest entries across identities, oldest first', async () => {
    const at = Date.now();
    for (let i = 0; i < 9; i++) {
      await recordHistory(client, {
        identity: `h${i % 3}`,
        node: 'a',
        at: at + i,
        kind: 'action',
        reason: `step ${i}`,
      });
    }
    const recent = await readRecentHistory(client, { limit: 4 });
    expect(recent.map((e) => e.reason)).to.deep.equal(['step 5', 'step 6', 'step 7', 'step 8']);
    expect(recent.map((e) => e.identity)).to.deep.equal(['h2', 'h0', 'h1', 'h2']);
  });

  it('reads etcd when a write outside the prefix leaves the mirror unable to prove it is caught up', async () => {
    await client.put('elsewhere/key').value('x');
    sources.length = 0;
    const snap = await cluster.snapshot();
    expect(sources).to.deep.equal(['etcd']);
    expect(content(snap)).to.equal(content(await readSnapshot(client, keys)));
    // The next write under the prefix brings the mirror level again.
    await client.put(keys.paused('after')).value(JSON.stringify({ reason: 'r', actor: 'ops', at: 1 }));
    sources.length = 0;
    expect((await cluster.snapshot()).paused.has('after')).to.equal(true);
    expect(sources).to.deep.equal(['mirror']);
  });
});

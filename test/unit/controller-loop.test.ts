// The controller's round on a manual clock: it runs every TICK_MS, a failing round is
// reported once per reason (not every 250 ms) and shown as lastError until a round works.
import { expect } from 'chai';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { ManualClock } from '../../pkg/clock/index.js';
import type { Cluster } from '../../pkg/controller/cluster.js';
import { EventStream } from '../../pkg/controller/events.js';
import type { FenceReconciler } from '../../pkg/controller/fence-reconciler.js';
import type { DriftReconciler } from '../../pkg/controller/drift-reconciler.js';
import { ControlLoop, TICK_MS } from '../../pkg/controller/loop.js';
import { FULL_REBUILD_MS } from '../../pkg/controller/view-changes.js';
import type { ProbeState } from '../../pkg/controller/view.js';
import { ControllerMetrics } from '../../pkg/controller/metrics.js';
import type { Prober } from '../../pkg/controller/probes.js';
import { emptySnapshot, type ClusterSnapshot, type GuardedWriter } from '../../pkg/controller/store.js';
import type { WorkflowSupervisor } from '../../pkg/controller/supervisor.js';
import { LoopTrouble } from '../../pkg/controller/trouble.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

function capture() {
  const lines: Array<{ level: number; msg: string; loop?: string; err?: string }> = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, done) {
      for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
      done();
    },
  });
  return { log: pino({ level: 'info' }, stream), lines };
}

const emptySnap = emptySnapshot(1n);

describe('controller loop (manual clock)', () => {
  it('ticks every TICK_MS; a failing round is logged once per reason and shown until one works', async () => {
    const clock = new ManualClock();
    const { log, lines } = capture();
    const metrics = new ControllerMetrics();
    let failure: string | undefined = 'etcd: deadline exceeded';
    let reads = 0;
    const cluster = {
      snapshot: async () => {
        reads++;
        if (failure) throw new Error(failure);
        return emptySnap;
      },
      view: (snap: ClusterSnapshot) => ({
        snap,
        agents: new Map(),
        heartbeatTimeoutMs: 1,
        now: 0,
        startedAt: 0,
      }),
      identityNames: () => [],
    } as unknown as Cluster;
    const loop = new ControlLoop({
      cluster,
      prober: {
        startDue: () => undefined,
        state: () => undefined,
        takeChanged: () => new Set(),
      } as unknown as Prober,
      events: new EventStream(clock, log, metrics),
      supervisor: {} as WorkflowSupervisor,
      fences: {} as FenceReconciler,
      drift: {} as DriftReconciler,
      writer: {} as GuardedWriter,
      metrics,
      trouble: new LoopTrouble(log, metrics.loopFailures),
      clock,
      log,
      isActive: () => false,
    });
    loop.start();
    await clock.advance(TICK_MS * 4);
    expect(reads).to.equal(4);
    expect(loop.lastError).to.equal('etcd: deadline exceeded');
    const warned = () => lines.filter((l) => l.loop === 'tick' && l.level === 40);
    expect(warned().map((l) => l.err)).to.deep.equal(['etcd: deadline exceeded']);

    failure = 'etcd: connection refused';
    await clock.advance(TICK_MS * 2);
    expect(
      warned().map((l) => l.err),
      'a new reason is logged once more',
    ).to.deep.equal(['etcd: deadline exceeded', 'etcd: connection refused']);

    failure = undefined;
    await clock.advance(TICK_MS * 2);
    expect(loop.lastError).to.equal(undefined);
    expect(lines.filter((l) => l.msg === 'tick works again')).to.have.length(1);
    const counted = (await metrics.loopFailures.get()).values.find((v) => v.labels.loop === 'tick');
    expect(counted?.value, 'every failed round is counted').to.equal(6);
    loop.stop();
    await clock.advance(TICK_MS * 4);
    expect(reads).to.equal(8);
  });
});

describe('controller loop: publishing views', () => {
  const SPEC = {} as IdentitySpec;
  const leader = (node: string, token: bigint) => ({
    record: { node, leaseId: '1', ttlMs: 5000, mustBeOutByMs: 4000, since: 0 },
    token,
  });
  /** A new snapshot object holding these leader records (the same objects while unchanged, as the mirror keeps them). */
  function snapshotOf(revision: bigint, records: Map<string, ReturnType<typeof leader>>): ClusterSnapshot {
    const snap = emptySnapshot(revision);
    for (const [id, l] of records) {
      snap.specs.set(id, { spec: SPEC, revision: 1n });
      snap.identities.set(id, { leader: l, candidates: new Map(), holdOffs: new Map() });
    }
    return snap;
  }

  function loopWith(
    snapshot: () => ClusterSnapshot,
    probesChanged: () => string[],
    probes = new Map<string, ProbeState>(),
    /** Reading a probe state fails while this says so (a round that fails halfway). */
    failing: () => boolean = () => false,
  ) {
    const clock = new ManualClock();
    const { log } = capture();
    const metrics = new ControllerMetrics();
    let fullBuilds = 0;
    const events = new EventStream(clock, log, metrics);
    const sent: string[] = [];
    events.subscribe((e) => {
      if (e.type === 'identity') sent.push(`${e.identity.identity}:${e.identity.leader}`);
    });
    const cluster = {
      snapshot: async () => snapshot(),
      view: (snap: ClusterSnapshot) => ({
        snap,
        agents: new Map(),
        heartbeatTimeoutMs: 1,
        now: 0,
        startedAt: 0,
      }),
      identityNames: (snap: ClusterSnapshot) => {
        fullBuilds++;
        return [...snap.specs.keys()].sort();
      },
    } as unknown as Cluster;
    const loop = new ControlLoop({
      cluster,
      prober: {
        startDue: () => undefined,
        state: (id: string) => {
          if (failing()) throw new Error('broken view');
          return probes.get(id);
        },
        takeChanged: () => new Set(probesChanged()),
      } as unknown as Prober,
      events,
      supervisor: {} as WorkflowSupervisor,
      fences: {} as FenceReconciler,
      drift: {} as DriftReconciler,
      writer: {} as GuardedWriter,
      metrics,
      trouble: new LoopTrouble(log, metrics.loopFailures),
      clock,
      log,
      isActive: () => false,
    });
    return { clock, loop, fullBuilds: () => fullBuilds, sent, lastError: () => loop.lastError };
  }

  it('at rest builds no view; every view is built again only once per FULL_REBUILD_MS', async () => {
    const records = new Map([
      ['a', leader('n1', 10n)],
      ['b', leader('n2', 11n)],
    ]);
    const probes = new Map<string, ProbeState>();
    const t = loopWith(
      () => snapshotOf(1n, records),
      () => [],
      probes,
    );
    t.loop.start();
    await t.clock.advance(TICK_MS);
    expect(t.fullBuilds(), 'the first round builds every view').to.equal(1);
    expect(t.sent).to.deep.equal(['a:n1', 'b:n2']);
    // A probe result the prober does not report as changed: only a rebuild would show it.
    probes.set('a', { responders: [{ node: 'n1', token: '10' }], at: 1, failures: 0 });
    // A new snapshot object every round, holding the same records: nothing to rebuild.
    await t.clock.advance(FULL_REBUILD_MS - 2 * TICK_MS);
    expect(t.fullBuilds()).to.equal(1);
    expect(t.sent, 'no view was rebuilt').to.have.length(2);
    await t.clock.advance(2 * TICK_MS);
    expect(t.fullBuilds()).to.equal(2);
    expect(t.sent, 'the full rebuild sends only what changed').to.deep.equal(['a:n1', 'b:n2', 'a:n1']);
    t.loop.stop();
  });

  it('a changed record, or a changed probe outcome, rebuilds and sends that identity at once, and only it', async () => {
    const records = new Map([
      ['a', leader('n1', 10n)],
      ['b', leader('n2', 11n)],
    ]);
    let probed: string[] = [];
    let revision = 1n;
    const probes = new Map<string, ProbeState>();
    const t = loopWith(
      () => snapshotOf(revision, records),
      () => probed.splice(0),
      probes,
    );
    t.loop.start();
    await t.clock.advance(TICK_MS);
    records.set('b', leader('n1', 12n));
    revision++;
    await t.clock.advance(TICK_MS);
    expect(t.sent).to.deep.equal(['a:n1', 'b:n2', 'b:n1']);
    expect(t.fullBuilds()).to.equal(1);
    probes.set('a', { responders: [{ node: 'n1', token: '10' }], at: 1, failures: 0 });
    probes.set('b', { responders: [], at: 1, failures: 1 });
    probed = ['a'];
    await t.clock.advance(TICK_MS);
    expect(t.sent, 'a probe outcome rebuilds its own view only').to.deep.equal([
      'a:n1',
      'b:n2',
      'b:n1',
      'a:n1',
    ]);
    expect(t.fullBuilds()).to.equal(1);
    records.delete('a');
    revision++;
    await t.clock.advance(TICK_MS);
    expect(t.fullBuilds(), 'a removed identity is dropped without a full rebuild').to.equal(1);
    t.loop.stop();
  });

  it('a round that fails while building views loses no change: the next one rebuilds every view', async () => {
    const records = new Map([
      ['a', leader('n1', 10n)],
      ['b', leader('n2', 11n)],
    ]);
    let revision = 1n;
    let fail = false;
    const t = loopWith(
      () => snapshotOf(revision, records),
      () => [],
      new Map(),
      () => fail,
    );
    t.loop.start();
    await t.clock.advance(TICK_MS);
    records.set('b', leader('n1', 12n));
    revision++;
    fail = true;
    await t.clock.advance(TICK_MS);
    expect(t.lastError()).to.equal('broken view');
    fail = false;
    await t.clock.advance(TICK_MS);
    expect(t.fullBuilds()).to.equal(2);
    expect(t.sent).to.deep.equal(['a:n1', 'b:n2', 'b:n1']);
    t.loop.stop();
  });
});

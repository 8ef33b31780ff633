// The controller's round on a manual clock: it runs every TICK_MS, a failing round is
// reported once per reason (not every 250 ms) and shown as lastError until a round works.
import { expect } from 'chai';
import { pino } from 'pino';
import { Writable } from 'node:stream';
import { ManualClock } from '../../pkg/clock/index.js';
import type { Cluster } from '../../pkg/controller/cluster.js';
import { EventStream } from '../../pkg/controller/events.js';
import type { FenceReconciler } from '../../pkg/controller/fence-reconciler.js';
import { ControlLoop, PUBLISH_EVERY_MS, TICK_MS } from '../../pkg/controller/loop.js';
import { ControllerMetrics } from '../../pkg/controller/metrics.js';
import type { Prober } from '../../pkg/controller/probes.js';
import { emptySnapshot, type ClusterSnapshot, type GuardedWriter } from '../../pkg/controller/store.js';
import type { WorkflowSupervisor } from '../../pkg/controller/supervisor.js';
import { LoopTrouble } from '../../pkg/controller/trouble.js';

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
      prober: { startDue: () => undefined, state: () => undefined } as unknown as Prober,
      events: new EventStream(clock, log, metrics),
      supervisor: {} as WorkflowSupervisor,
      fences: {} as FenceReconciler,
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
  function loopWith(snapshot: () => ClusterSnapshot, prober: { version: number }) {
    const clock = new ManualClock();
    const { log } = capture();
    const metrics = new ControllerMetrics();
    let built = 0;
    const cluster = {
      snapshot: async () => snapshot(),
      view: (snap: ClusterSnapshot) => ({
        snap,
        agents: new Map(),
        heartbeatTimeoutMs: 1,
        now: 0,
        startedAt: 0,
      }),
      identityNames: () => {
        built++;
        return [];
      },
    } as unknown as Cluster;
    const loop = new ControlLoop({
      cluster,
      prober: Object.assign(prober, {
        startDue: () => undefined,
        state: () => undefined,
      }) as unknown as Prober,
      events: new EventStream(clock, log, metrics),
      supervisor: {} as WorkflowSupervisor,
      fences: {} as FenceReconciler,
      writer: {} as GuardedWriter,
      metrics,
      trouble: new LoopTrouble(log, metrics.loopFailures),
      clock,
      log,
      isActive: () => false,
    });
    return { clock, loop, built: () => built };
  }

  it(`builds views once per PUBLISH_EVERY_MS while nothing they are made of changes`, async () => {
    const t = loopWith(() => emptySnap, { version: 0 });
    t.loop.start();
    await t.clock.advance(PUBLISH_EVERY_MS * 3);
    t.loop.stop();
    expect(t.built()).to.equal(3);
  });

  it('builds them at once when the snapshot or a probe outcome changes', async () => {
    const prober = { version: 0 };
    let snap = emptySnapshot(1n);
    const t = loopWith(() => snap, prober);
    t.loop.start();
    await t.clock.advance(TICK_MS);
    expect(t.built()).to.equal(1);
    snap = emptySnapshot(2n);
    await t.clock.advance(TICK_MS);
    expect(t.built()).to.equal(2);
    prober.version++;
    await t.clock.advance(TICK_MS);
    expect(t.built()).to.equal(3);
    await t.clock.advance(TICK_MS);
    expect(t.built(), 'nothing changed').to.equal(3);
    t.loop.stop();
  });
});

// The controller's round, every TICK_MS, in one place:
//
//   read the cluster (one etcd txn) → start the probes that are due → publish changed views
//     → if active: drive unfinished workflows, apply node fences that are due
//
// A round that fails is retried next tick; its error is logged once per reason, counted,
// and reported by readiness (lastError) until a round succeeds.
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { Cluster } from './cluster.js';
import type { EventStream } from './events.js';
import type { FenceReconciler } from './fence-reconciler.js';
import type { ControllerMetrics } from './metrics.js';
import type { Prober } from './probes.js';
import { isTermEnded, type ClusterSnapshot, type GuardedWriter } from './store.js';
import type { WorkflowSupervisor } from './supervisor.js';
import type { LoopTrouble } from './trouble.js';
import { identityView, nodeViews } from './view.js';

/** How often the controller re-reads the cluster, publishes changes and checks its duties. */
export const TICK_MS = 250;
/**
 * Views are built and offered at least this often even when nothing they are made of changed
 * (the snapshot, a probe's outcome): an agent falling silent changes them with time alone.
 * Building every view every round was most of an idle controller's CPU at 1,000 identities.
 */
export const PUBLISH_EVERY_MS = 1_000;

export interface ControlLoopDeps {
  cluster: Cluster;
  prober: Prober;
  events: EventStream;
  supervisor: WorkflowSupervisor;
  fences: FenceReconciler;
  writer: GuardedWriter;
  metrics: ControllerMetrics;
  trouble: LoopTrouble;
  clock: Clock;
  log: Logger;
  isActive(): boolean;
}

export class ControlLoop {
  private cancel: (() => void) | undefined;
  private ticking = false;
  private stopped = false;
  /** Why the last round failed, while rounds keep failing. */
  lastError: string | undefined;
  /** What the last published views were built from. */
  private published: { snap: ClusterSnapshot; probes: number; at: number } | undefined;

  constructor(private readonly deps: ControlLoopDeps) {}

  start(): void {
    this.stopped = false;
    const next = () => {
      if (this.stopped) return;
      this.cancel = this.deps.clock.after(TICK_MS, () => {
        void this.tick();
        next();
      });
    };
    next();
  }

  stop(): void {
    this.stopped = true;
    this.cancel?.();
  }

  async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    const { deps } = this;
    let snap: ClusterSnapshot;
    try {
      snap = await deps.cluster.snapshot({ mirrorOnly: true });
    } catch (err) {
      this.failed(err, 'controller cannot read the cluster from etcd; retrying');
      this.ticking = false;
      return;
    }
    try {
      deps.prober.startDue(snap);
      this.publish(snap);
      if (deps.isActive()) await this.actOn(snap);
      this.lastError = undefined;
      deps.trouble.recovered('tick');
    } catch (err) {
      this.failed(err, 'controller round failed; retrying');
    } finally {
      this.ticking = false;
    }
  }

  /** The active controller's duties. */
  private async actOn(snap: ClusterSnapshot): Promise<void> {
    let term;
    try {
      term = this.deps.writer.authority();
    } catch (err) {
      if (isTermEnded(err)) return; // the term ended since isActive(): the next round stands by
      throw err;
    }
    this.deps.supervisor.resume(snap);
    await this.deps.fences.reconcile(snap, term);
  }

  private failed(err: unknown, what: string): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.deps.trouble.failed('tick', err, what);
  }

  /** Publish identity, node and workflow views that changed; keep the gauges current. */
  private publish(snap: ClusterSnapshot): void {
    const { cluster, prober, metrics, events, clock } = this.deps;
    const now = clock.monotonicMs();
    const last = this.published;
    if (last && last.snap === snap && last.probes === prober.version && now - last.at < PUBLISH_EVERY_MS)
      return;
    this.published = { snap, probes: prober.version, at: now };
    const view = cluster.view(snap);
    const identities = cluster.identityNames(snap).map((id) => identityView(view, id, prober.state(id)));
    // Only identities with a spec get series: the prober frees them when the spec goes.
    for (const v of identities)
      if (snap.specs.has(v.identity)) metrics.setIdentity(metrics.paused, v.identity, v.paused ? 1 : 0);
    metrics.identitiesTotal.set({ kind: 'all' }, snap.specs.size);
    metrics.identitiesTotal.set({ kind: 'paused' }, identities.filter((v) => v.paused).length);
    const probes = identities.map((v) => prober.state(v.identity));
    metrics.identitiesTotal.set({ kind: 'split-brain' }, probes.filter((p) => p?.splitBrain).length);
    metrics.identitiesTotal.set(
      { kind: 'probe-failing' },
      probes.filter((p) => (p?.failures ?? 0) > 0).length,
    );
    const nodes = nodeViews(view);
    for (const n of nodes) metrics.nodeAlive.set({ node: n.node }, n.alive ? 1 : 0);
    events.publish(
      identities,
      nodes,
      [...snap.workflows.values()].map((w) => w.workflow),
    );
  }
}

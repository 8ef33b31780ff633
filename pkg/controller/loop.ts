// The controller's round, every TICK_MS, in one place:
//
//   read the cluster (the mirror) → start the probes that are due → publish changed views
//     → if active: drive unfinished workflows, apply node fences that are due, hold drifted
//       standbys back (and let them in again once in sync)
//
// A round that fails is retried next tick; its error is logged once per reason, counted,
// and reported by readiness (lastError) until a round succeeds.
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { Cluster } from './cluster.js';
import type { EventStream } from './events.js';
import type { FenceReconciler } from './fence-reconciler.js';
import type { DriftReconciler } from './drift-reconciler.js';
import type { ControllerMetrics } from './metrics.js';
import type { Prober } from './probes.js';
import { isTermEnded, type ClusterSnapshot, type GuardedWriter } from './store.js';
import type { WorkflowSupervisor } from './supervisor.js';
import type { LoopTrouble } from './trouble.js';
import { ALL, ViewInputs } from './view-changes.js';
import { identityKeys, identityView, nodeNames, nodeView } from './view.js';
import type { IdentityView } from '../api/schema.js';

/** How often the controller re-reads the cluster, publishes changes and checks its duties. */
export const TICK_MS = 250;
export interface ControlLoopDeps {
  cluster: Cluster;
  prober: Prober;
  events: EventStream;
  supervisor: WorkflowSupervisor;
  fences: FenceReconciler;
  drift: DriftReconciler;
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
  /** What the last published views were built from, to rebuild only what changed. */
  private inputs = new ViewInputs();
  /** The last view built of each identity (the totals are counted over them). */
  private readonly views = new Map<string, IdentityView>();

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
    await this.deps.drift.reconcile(snap, term);
  }

  private failed(err: unknown, what: string): void {
    this.lastError = err instanceof Error ? err.message : String(err);
    this.deps.trouble.failed('tick', err, what);
  }

  /**
   * Publish identity, node and workflow views that changed; keep the gauges current. Only the
   * views whose inputs changed are rebuilt (view-changes.ts): at rest, next to none.
   */
  private publish(snap: ClusterSnapshot): void {
    try {
      this.publishChanged(snap);
    } catch (err) {
      // The changes this round took in were not all sent: the next round rebuilds everything.
      this.inputs = new ViewInputs();
      throw err;
    }
  }

  private publishChanged(snap: ClusterSnapshot): void {
    const { cluster, prober, metrics, events, clock } = this.deps;
    const view = cluster.view(snap);
    const changes = this.inputs.changes(view, prober.takeChanged(), clock.monotonicMs());
    const names = changes.identities === ALL ? cluster.identityNames(snap) : [...changes.identities];
    if (changes.identities === ALL) {
      const current = new Set(names);
      for (const id of this.views.keys()) if (!current.has(id)) this.views.delete(id);
    }
    const identities: IdentityView[] = [];
    let removed = false;
    for (const id of names) {
      if (!snap.specs.has(id) && !identityKeys(snap, id).leader) {
        removed = this.views.delete(id) || removed; // neither a spec nor a leader: no longer an identity
        continue;
      }
      const v = identityView(view, id, prober.state(id));
      this.views.set(id, v);
      identities.push(v);
      // Only identities with a spec get series: the prober frees them when the spec goes.
      if (snap.specs.has(id)) metrics.setIdentity(metrics.paused, id, v.paused ? 1 : 0);
    }
    if (identities.length > 0 || removed || changes.identities === ALL) this.count(snap);
    const nodes = (changes.nodes === ALL ? nodeNames(view) : [...changes.nodes].sort()).map((n) =>
      nodeView(view, n),
    );
    for (const n of nodes) metrics.nodeAlive.set({ node: n.node }, n.alive ? 1 : 0);
    events.publish(
      identities,
      nodes,
      [...snap.workflows.values()].map((w) => w.workflow),
    );
  }

  /** The totals over every identity's current view (a pass over a map, no view built). */
  private count(snap: ClusterSnapshot): void {
    const { prober, metrics } = this.deps;
    let paused = 0;
    let splitBrain = 0;
    let failing = 0;
    for (const [id, v] of this.views) {
      if (v.paused) paused++;
      const probe = prober.state(id);
      if (probe?.splitBrain) splitBrain++;
      if ((probe?.failures ?? 0) > 0) failing++;
    }
    metrics.identitiesTotal.set({ kind: 'all' }, snap.specs.size);
    metrics.identitiesTotal.set({ kind: 'paused' }, paused);
    metrics.identitiesTotal.set({ kind: 'split-brain' }, splitBrain);
    metrics.identitiesTotal.set({ kind: 'probe-failing' }, failing);
  }
}

// Prometheus metrics of one controller (its own registry, so tests can run several).
import { DEFAULT_IDENTITY_SERIES_LIMIT } from '../config/controller.js';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export class ControllerMetrics {
  readonly registry = new Registry();
  readonly active = new Gauge({
    name: 'understudy_controller_active',
    help: '1 while this controller is the active one (drives workflows and probe-driven failover)',
    registers: [this.registry],
  });
  readonly responders = new Gauge({
    name: 'understudy_identity_responders',
    help: 'PING responders of each identity at the last probe (1 is healthy, 0 down, more is split brain)',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly splitBrain = new Gauge({
    name: 'understudy_identity_split_brain',
    help: '1 while more than one node answers PING for the identity',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly probeFailures = new Gauge({
    name: 'understudy_identity_probe_failures',
    help: 'Consecutive probes the logged-in leader did not answer',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly drifted = new Gauge({
    name: 'understudy_identity_drifted_standbys',
    help: 'Standbys held back from elections as drifted from what the identity runs (spec, access lists, version, state)',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly paused = new Gauge({
    name: 'understudy_identity_paused',
    help: '1 while the identity is in maintenance mode (no probe-driven failover)',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly nodeAlive = new Gauge({
    name: 'understudy_node_alive',
    help: '1 while the node agent heartbeats are fresh',
    labelNames: ['node'],
    registers: [this.registry],
  });
  readonly workflows = new Counter({
    name: 'understudy_workflows_total',
    help: 'Finished workflows by kind and outcome (done or aborted)',
    labelNames: ['kind', 'outcome'],
    registers: [this.registry],
  });
  readonly workflowSeconds = new Histogram({
    name: 'understudy_workflow_duration_seconds',
    help: 'Time from request to done or aborted',
    labelNames: ['kind', 'outcome'],
    buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300],
    registers: [this.registry],
  });
  readonly alarms = new Counter({
    name: 'understudy_alarms_total',
    help: 'Alarms raised (split-brain, leader-unresponsive, probe-failover-paused, fence-command-failed, standby-drifted, no-in-sync-standby)',
    labelNames: ['alarm'],
    registers: [this.registry],
  });

  readonly loopFailures = new Counter({
    name: 'understudy_controller_loop_failures_total',
    help: 'Failed rounds of a retry loop (tick, fences, probe, audit); the log says why, once per change of reason',
    labelNames: ['loop'],
    registers: [this.registry],
  });

  readonly probeRounds = new Counter({
    name: 'understudy_probe_judgements_total',
    help: "Identities judged by a real PING, or (past probes.maxPingsPerSecond) from their leader's heartbeat",
    labelNames: ['judged'],
    registers: [this.registry],
  });
  readonly snapshots = new Counter({
    name: 'understudy_controller_snapshots_total',
    help: 'Cluster snapshots served from the watched mirror, or read from etcd (mirror not caught up in time)',
    labelNames: ['source'],
    registers: [this.registry],
  });
  readonly identitiesTotal = new Gauge({
    name: 'understudy_identities',
    help: 'Identities with a stored spec, and how many of them are in each trouble (any number of identities)',
    labelNames: ['kind'],
    registers: [this.registry],
  });

  /** Identities that have per-identity series (the first `identitySeriesLimit` seen). */
  private readonly withSeries = new Set<string>();

  constructor(
    /**
     * Identities given their own label at most (metrics.identitySeriesLimit): each costs
     * Prometheus a series per gauge; past the cap only the totals of understudy_identities say it.
     */
    readonly identitySeriesLimit = DEFAULT_IDENTITY_SERIES_LIMIT,
  ) {
    collectDefaultMetrics({ register: this.registry });
  }

  /** Set a per-identity gauge, if the identity is within the series cap. */
  setIdentity(gauge: Gauge<'identity'>, identity: string, value: number): void {
    if (!this.withSeries.has(identity)) {
      if (this.withSeries.size >= this.identitySeriesLimit) return;
      this.withSeries.add(identity);
    }
    gauge.set({ identity }, value);
  }

  /** Drop the series of an identity that is gone, freeing its place under the cap. */
  forgetIdentity(identity: string): void {
    if (!this.withSeries.delete(identity)) return;
    for (const gauge of [this.responders, this.splitBrain, this.probeFailures, this.paused]) {
      gauge.remove({ identity });
    }
  }
}

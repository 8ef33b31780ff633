// Prometheus metrics of one controller (its own registry, so tests can run several).
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
    help: 'Alarms raised (split-brain, leader-unresponsive, probe-failover-paused, fence-command-failed)',
    labelNames: ['alarm'],
    registers: [this.registry],
  });

  readonly loopFailures = new Counter({
    name: 'understudy_controller_loop_failures_total',
    help: 'Failed rounds of a retry loop (tick, fences, probe, audit); the log says why, once per change of reason',
    labelNames: ['loop'],
    registers: [this.registry],
  });

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }
}

// Prometheus metrics of one agent (its own registry: several agents may share a process
// when understudy is embedded as a library).
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { LoopDelay, RECENT_WINDOW_MS } from './loop-delay.js';
import type { RetryChange } from './retries.js';
import { IDENTITY_STATES, type IdentityState } from './states.js';

export class AgentMetrics {
  readonly registry = new Registry();
  readonly state = new Gauge({
    name: 'understudy_identity_state',
    help: 'Current state of each identity on this node (1 for the current state, 0 otherwise)',
    labelNames: ['identity', 'state'],
    registers: [this.registry],
  });
  readonly token = new Gauge({
    name: 'understudy_identity_token',
    help: 'Fencing token of the term this node leads (0 when not leader)',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly transitions = new Counter({
    name: 'understudy_identity_transitions_total',
    help: 'State transitions per identity',
    labelNames: ['identity', 'from', 'to'],
    registers: [this.registry],
  });
  readonly requests = new Counter({
    name: 'understudy_identity_requests_total',
    help: 'Requests handled for each identity while logged in, by outcome',
    labelNames: ['identity', 'outcome'],
    registers: [this.registry],
  });
  readonly retrying = new Gauge({
    name: 'understudy_identity_retrying',
    help: 'Whether something for the identity is being retried after a failure (1) or not (0); the reason is in its status detail and the log',
    labelNames: ['identity'],
    registers: [this.registry],
  });
  readonly retries = new Counter({
    name: 'understudy_identity_retry_reasons_total',
    help: 'Retry reasons that began or changed, by identity and kind (campaign, loop, warm-service)',
    labelNames: ['identity', 'kind'],
    registers: [this.registry],
  });
  readonly refused = new Gauge({
    name: 'understudy_identity_refused',
    help: "Whether this node refuses the identity (1) or not (0): 'spec' when its allow-list refuses what the spec runs, 'inbox' when the durable inbox is not what the spec says; the reason is in its status detail and the log",
    labelNames: ['identity', 'what'],
    registers: [this.registry],
  });
  readonly sessionRenewals = new Counter({
    name: 'understudy_session_renewals_total',
    help: 'etcd lease keepalives acknowledged',
    registers: [this.registry],
  });
  readonly sessionsOpened = new Counter({
    name: 'understudy_sessions_opened_total',
    help: 'etcd sessions (leases) opened by this agent',
    registers: [this.registry],
  });

  readonly sessionStops = new Counter({
    name: 'understudy_session_stops_total',
    help: 'etcd sessions that had to stop (every identity led on one logs out), by reason: keepalive-timeout (no renewal acknowledged within the self-fence deadline), lease-gone (etcd no longer had the lease), closed (shutdown)',
    labelNames: ['reason'],
    registers: [this.registry],
  });
  readonly lifelineKills = new Counter({
    name: 'understudy_lifeline_kills_total',
    help: 'Services the lifeline killed because their deadline passed before the agent renewed it (the agent was frozen or starved); each one is a logout nobody asked for',
    registers: [this.registry],
  });
  readonly loopDelay = new LoopDelay();

  constructor() {
    collectDefaultMetrics({ register: this.registry });
    const loop = this.loopDelay;
    new Gauge({
      name: 'understudy_event_loop_delay_max_seconds',
      help: "Worst delay of this agent's event loop since it started (perf_hooks.monitorEventLoopDelay): how late timers and etcd answers could be handled at worst",
      registers: [this.registry],
      collect() {
        this.set(loop.worstMs / 1000);
      },
    });
    new Gauge({
      name: 'understudy_event_loop_delay_recent_max_seconds',
      help: `Worst delay of this agent's event loop over the last ${RECENT_WINDOW_MS / 1000} to ${(2 * RECENT_WINDOW_MS) / 1000} s`,
      registers: [this.registry],
      collect() {
        this.set(loop.recentMs / 1000);
      },
    });
  }

  close(): void {
    this.loopDelay.close();
  }

  retryChanged(r: { identity: string; retrying: boolean } & RetryChange): void {
    this.retrying.set({ identity: r.identity }, r.retrying ? 1 : 0);
    if (r.retry) this.retries.inc({ identity: r.identity, kind: r.source });
  }

  setState(identity: string, current: IdentityState): void {
    for (const s of IDENTITY_STATES) this.state.set({ identity, state: s }, s === current ? 1 : 0);
  }
}

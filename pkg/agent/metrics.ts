// Prometheus metrics of one agent (its own registry: several agents may share a process
// when understudy is embedded as a library).
//
// Per-identity series are capped (DEFAULT_AGENT_IDENTITY_SERIES_LIMIT, `metrics.identityLimit`
// in the agent config): an agent hosting 2,000 identities exported 33,000 lines per scrape,
// each series a cost to Prometheus and to the agent's memory. Totals without an identity label
// (understudy_identities{state}, understudy_transitions_total, …) count every identity.
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import { DEFAULT_AGENT_IDENTITY_SERIES_LIMIT } from '../config/agent.js';
import { LoopDelay, RECENT_WINDOW_MS } from './loop-delay.js';
import type { RetryChange } from './retries.js';
import { IDENTITY_STATES, type IdentityState } from './states.js';

export class AgentMetrics {
  readonly registry = new Registry();
  /** Identities that have per-identity series (the first `identitySeriesLimit` added). */
  private readonly withSeries = new Set<string>();
  /** Every identity's state and whether it retries, for the totals (read at each scrape). */
  private readonly states = new Map<string, IdentityState>();
  private readonly retryingNow = new Set<string>();
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
  readonly transitionsTotal = new Counter({
    name: 'understudy_transitions_total',
    help: 'State transitions of all identities hosted by this agent',
    labelNames: ['from', 'to'],
    registers: [this.registry],
  });
  readonly requestsTotal = new Counter({
    name: 'understudy_requests_total',
    help: 'Requests handled for all identities logged in on this agent, by outcome',
    labelNames: ['outcome'],
    registers: [this.registry],
  });
  readonly retriesTotal = new Counter({
    name: 'understudy_retry_reasons_total',
    help: 'Retry reasons that began or changed, over all identities of this agent, by kind',
    labelNames: ['kind'],
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
    help: "Services the lifeline killed: their deadline passed before the agent renewed it (the agent was frozen or starved), or the reaper's timer could not keep time (the agent's log says which); each one is a logout nobody asked for",
    registers: [this.registry],
  });
  readonly loopDelay = new LoopDelay();

  constructor(
    /** Identities given series of their own at most (the agent config's metrics.identityLimit). */
    readonly identitySeriesLimit = DEFAULT_AGENT_IDENTITY_SERIES_LIMIT,
  ) {
    collectDefaultMetrics({ register: this.registry });
    const { states, retryingNow } = this;
    new Gauge({
      name: 'understudy_identities',
      help: 'Identities hosted by this agent in each state (all of them, whatever the series cap)',
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const counts = new Map<IdentityState, number>(IDENTITY_STATES.map((st) => [st, 0]));
        for (const st of states.values()) counts.set(st, counts.get(st)! + 1);
        for (const [state, n] of counts) this.set({ state }, n);
      },
    });
    new Gauge({
      name: 'understudy_identities_retrying',
      help: 'Identities hosted by this agent with something being retried after a failure',
      registers: [this.registry],
      collect() {
        this.set(retryingNow.size);
      },
    });
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

  /** Export how many etcd calls run and wait for a slot (understudy_etcd_calls{state}). */
  watchEtcdCalls(calls: () => { running: number; waiting: number } | undefined): void {
    new Gauge({
      name: 'understudy_etcd_calls',
      help: "This agent's unary etcd calls at etcd (running) and waiting for one of its slots (waiting): a queue that stays long means etcd answers slower than the agent asks",
      labelNames: ['state'],
      registers: [this.registry],
      collect() {
        const now = calls();
        if (!now) return;
        this.set({ state: 'running' }, now.running);
        this.set({ state: 'waiting' }, now.waiting);
      },
    });
  }

  close(): void {
    this.loopDelay.close();
  }

  /** A new identity on this agent, in its first state. */
  added(identity: string, state: IdentityState): void {
    this.states.set(identity, state);
    if (this.withSeries.has(identity) || this.withSeries.size < this.identitySeriesLimit) {
      this.withSeries.add(identity);
      this.retrying.set({ identity }, 0);
    }
    this.setState(identity, state);
  }

  transition(t: { identity: string; from: IdentityState; to: IdentityState; token?: bigint }): void {
    this.transitionsTotal.inc({ from: t.from, to: t.to });
    this.setState(t.identity, t.to);
    if (!this.withSeries.has(t.identity)) return;
    this.transitions.inc({ identity: t.identity, from: t.from, to: t.to });
    this.token.set({ identity: t.identity }, t.to === 'leader' && t.token ? Number(t.token) : 0);
  }

  request(identity: string, outcome: string): void {
    this.requestsTotal.inc({ outcome });
    if (this.withSeries.has(identity)) this.requests.inc({ identity, outcome });
  }

  retryChanged(r: { identity: string; retrying: boolean } & RetryChange): void {
    if (r.retrying) this.retryingNow.add(r.identity);
    else this.retryingNow.delete(r.identity);
    if (r.retry) this.retriesTotal.inc({ kind: r.source });
    if (!this.withSeries.has(r.identity)) return;
    this.retrying.set({ identity: r.identity }, r.retrying ? 1 : 0);
    if (r.retry) this.retries.inc({ identity: r.identity, kind: r.source });
  }

  refusedChanged(r: { identity: string; what: string; refused: boolean }): void {
    if (this.withSeries.has(r.identity))
      this.refused.set({ identity: r.identity, what: r.what }, r.refused ? 1 : 0);
  }

  private setState(identity: string, current: IdentityState): void {
    this.states.set(identity, current);
    if (!this.withSeries.has(identity)) return;
    for (const s of IDENTITY_STATES) this.state.set({ identity, state: s }, s === current ? 1 : 0);
  }
}

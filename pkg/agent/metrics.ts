// Prometheus metrics of one agent (its own registry: several agents may share a process
// when understudy is embedded as a library).
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
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

  constructor() {
    collectDefaultMetrics({ register: this.registry });
  }

  setState(identity: string, current: IdentityState): void {
    for (const s of IDENTITY_STATES) this.state.set({ identity, state: s }, s === current ? 1 : 0);
  }
}

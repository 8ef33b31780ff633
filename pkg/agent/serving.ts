// What the identity's responders share across its terms on this node: requests served so far,
// the last failover to this node (both for STATUS replies), and the pending-authorization
// records of callers on no access list, written through the port at most once a minute each.
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { IdentityDriver } from '../identity/driver.js';
import type { ResponderContext } from '../identity/responder.js';
import type { Leadership } from '../lease/index.js';
import type { IdentitySpec } from '../spec/schema.js';
import type { LoginPort } from './port.js';

/** Pending-authorization records written per caller at most this often (a flood writes once). */
const PENDING_RECORD_INTERVAL_MS = 60_000;

export interface ServingDeps {
  identity: string;
  node: string;
  clock: Clock;
  port: LoginPort;
  log: Logger;
  onRequest?(identity: string, outcome: string): void;
}

export class Serving {
  /** Requests served by earlier terms, carried into the next responder's count. */
  requestsServed = 0;
  private lastFailover: { at: string; fromNode?: string; fromToken?: string } | null = null;
  /** Caller → monotonic ms of its last pending record. */
  private readonly pendingRecorded = new Map<string, number>();

  constructor(private readonly deps: ServingDeps) {}

  /** This node logged in after another node's term. */
  tookOver(previous: { node: string; token: bigint }): void {
    this.lastFailover = {
      at: new Date(this.deps.clock.wallMs()).toISOString(),
      fromNode: previous.node,
      fromToken: String(previous.token),
    };
  }

  /** The responder's view of this term: whether it may act, the live spec, STATUS fields. */
  context(
    leadership: Leadership,
    driver: IdentityDriver,
    spec: () => IdentitySpec,
    upSince: () => number,
  ): ResponderContext {
    const { identity, node, log } = this.deps;
    return {
      identity,
      node,
      token: leadership.token,
      mayAct: () => leadership.mayAct(),
      spec,
      driver,
      status: () => ({
        identity,
        node,
        token: String(leadership.token),
        upSince: new Date(upSince()).toISOString(),
        lastFailover: this.lastFailover,
      }),
      onPending: (p) => this.recordPending(p),
      onRequest: (outcome) => this.deps.onRequest?.(identity, outcome),
      logger: log,
    };
  }

  private recordPending(p: { name: string; nkey: string; request: string }): void {
    const { clock, log } = this.deps;
    const now = clock.monotonicMs();
    const last = this.pendingRecorded.get(p.name);
    if (last !== undefined && now - last < PENDING_RECORD_INTERVAL_MS) return;
    this.pendingRecorded.set(p.name, now);
    this.deps.port
      .recordPending({ ...p, node: this.deps.node, at: clock.wallMs() })
      .then((created) => created && log.info({ caller: p.name }, 'authorization request recorded as pending'))
      .catch((err: Error) =>
        log.warn({ err: err.message, caller: p.name }, 'could not record a pending authorization request'),
      );
  }
}

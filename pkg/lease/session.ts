// An agent's session: one etcd lease, renewed every T/10, and the self-fence clock.
//
// Each renewal is two calls: a keepalive (it keeps the lease) and a rewrite of the session's
// own key, bound to the lease (it proves the lease alive *and* shows the renewal to every
// other node: keepalives leave no trace anyone else can see). Both go to one endpoint at a
// time, through a client of its own (etcd.ts), each bounded; one that does not answer in
// time moves the session to the next endpoint at once. An etcd member that died, froze or
// lost its leader therefore costs a renewal or two, not the seconds gRPC takes to notice.
// The self-fence clock runs on this process's monotonic time from the *send* time of the
// last session-key write etcd acknowledged. Any node that saw that write saw it after we
// sent it, so it can bound how long we may still act on its own clock (peers.ts). At
// `sent + D` the session raises must-stop: whoever acts under it (a logged-in service) must
// be out by `sent + T × (1 − drift)` (see timing.ts). A session that raised must-stop is
// finished: it stops renewing, and a new session must be opened to act again. Recovering the
// old one would let a leader that already began logging out resume without a new term.
//
// The session never revokes its lease while a service may still run under it: holders
// (`hold()`) release once their service is confirmed out, and the revoke waits for all of
// them or for the must-be-out instant, whichever comes first.
import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { systemClock, type Clock } from '../clock/index.js';
import { TypedEmitter } from './emitter.js';
import { isLeaseGone, renewalClients, within } from './etcd.js';
import { Keys, type SessionRecord } from './keys.js';
import { leaseTiming, type LeaseTiming, type LeaseTimingInput } from './timing.js';

/** Bound on a grant or revoke call; well under any TTL etcd grants. */
const LEASE_CALL_MS = 1_500;
/**
 * Bound on each renewal call as a share of T: a keepalive or write not answered by then (a
 * frozen member, a raft election) is abandoned and the next one goes to the next endpoint,
 * several times before D. A healthy one takes milliseconds.
 */
const RENEW_CALL_SHARE = 1 / 10;
const RENEW_CALL_MIN_MS = 100;
/** Pause before retrying a failed renewal write. */
const RENEW_RETRY_MS = 50;
/** How long a finished session keeps trying to revoke its lease so standbys need not wait T. */
const REVOKE_RETRY_WINDOW_FACTOR = 3;
const REVOKE_RETRY_MS = 250;

export type StopReason =
  /** No keepalive acknowledged for D: etcd unreachable, frozen, or this process was stalled. */
  | 'keepalive-timeout'
  /** etcd answered TTL 0: the lease expired or was revoked by someone else. */
  | 'lease-gone'
  /** close() was called. */
  | 'closed';

export interface MustStop {
  reason: StopReason;
  /** Wall-clock time the signal was raised (for logs and reports). */
  at: number;
  /** Monotonic ms since the send time of the last acknowledged keepalive. */
  sinceRenewalMs: number;
  /** Monotonic deadline (the session's clock, performance.now() by default) by which the service must be out. */
  mustBeOutBy: number;
  /** Why renewals were failing, when they were: the operator's first clue (etcd down, a frozen member…). */
  lastError?: string;
}

export interface Lost {
  reason: StopReason;
  at: number;
  /**
   * True when this session revoked its own lease. It proves nothing to successors: they go
   * by confirmed logouts and by when they last saw this session renewed.
   */
  revoked: boolean;
}

export interface SessionEvents extends Record<string, unknown> {
  renewed: { sentAt: number; rttMs: number };
  'must-stop': MustStop;
  lost: Lost;
  /** Revoking the lease failed for REVOKE_RETRY_WINDOW_FACTOR × T; `error` is the last failure. */
  'revoke-abandoned': { error: string };
}

export type SessionState = 'alive' | 'stopping' | 'lost';

export interface SessionOptions {
  timing: LeaseTimingInput | LeaseTiming;
  /** Name of the node (for errors and records). */
  node: string;
  keys?: Keys;
  /** Clients to renew through, one per endpoint; default: those connectEtcd made for `client`. */
  renewVia?: Etcd3[];
  /** The clock of the self-fence deadline, the renewals and every wait (default: systemClock). */
  clock?: Clock;
}

type KeepaliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> & {
  /** gRPC's cancel: `end()` is only a half-close, which a frozen member never completes. */
  cancel?: () => void;
};

/** Validate either form: a precomputed LeaseTiming is checked again, never trusted. */
function validTiming(t: LeaseTimingInput | LeaseTiming, context: string): LeaseTiming {
  const { ttlSeconds, selfFenceMs, logoutBudgetMs, driftMargin } = t;
  return leaseTiming({ ttlSeconds, selfFenceMs, logoutBudgetMs, driftMargin }, context);
}

/** A service that may still run under this session until released. */
export type Release = () => void;

export class Session extends TypedEmitter<SessionEvents> {
  private stateValue: SessionState = 'alive';
  /** Monotonic ms at the send of the last session-key write etcd acknowledged. */
  private renewedSentAt: number;
  /**
   * Wall-clock ms at that same send. Linux's monotonic clock stands still while the host is
   * suspended (or a VM is paused for migration), while etcd's and every other node's time
   * goes on: the wall clock, which keeps counting, is checked too, and the larger wins.
   */
  private renewedSentWall: number;
  /** The clients renewals go through (one per endpoint) and the one in use. */
  private readonly via: Etcd3[];
  private endpoint = 0;
  private keepaliveInFlight = false;
  /** Why the latest renewal attempt failed; cleared by an acknowledged one. */
  private lastRenewalError: string | undefined;
  /** Cancels the next renewal round (they run every T/10 until must-stop). */
  private cancelRenewals: (() => void) | undefined;
  /** Cancels the timer that raises must-stop at the self-fence deadline. */
  private cancelFenceTimer: (() => void) | undefined;
  private renewing = false;
  private mustStopEvent: MustStop | undefined;
  private lostEvent: Lost | undefined;
  private readonly mustStopWaiters: Array<(e: MustStop) => void> = [];
  private readonly lostWaiters: Array<(e: Lost) => void> = [];
  private readonly holds = new Set<symbol>();
  private readonly releaseWaiters: Array<() => void> = [];
  private readonly sessionKey: string;
  private readonly sessionValue: string;

  private constructor(
    readonly client: Etcd3,
    readonly node: string,
    readonly leaseId: string,
    readonly timing: LeaseTiming,
    readonly keys: Keys,
    renewedSentAt: number,
    via: Etcd3[],
    readonly clock: Clock,
  ) {
    super();
    this.via = via.length > 0 ? via : [client];
    this.renewedSentAt = renewedSentAt;
    this.renewedSentWall = clock.wallMs() - (clock.monotonicMs() - renewedSentAt);
    this.sessionKey = keys.session(leaseId);
    const record: SessionRecord = { node, ttlMs: timing.ttlMs, mustBeOutByMs: timing.mustBeOutByMs };
    this.sessionValue = JSON.stringify(record);
  }

  /**
   * Grant a lease, check etcd granted the TTL asked for, write the session key and start
   * renewing. Rejects (naming the cause) if etcd does not answer.
   */
  static async open(client: Etcd3, opts: SessionOptions): Promise<Session> {
    const timing = validTiming(opts.timing, `session of ${opts.node}`);
    const keys = opts.keys ?? new Keys();
    const clock = opts.clock ?? systemClock;
    const sentAt = clock.monotonicMs();
    let granted;
    try {
      granted = await client.leaseClient.leaseGrant({ TTL: timing.ttlSeconds, ID: 0 }, within(LEASE_CALL_MS));
    } catch (err) {
      throw new Error(
        `node ${opts.node}: could not open an etcd session (lease grant, ${LEASE_CALL_MS} ms): ${(err as Error).message}; check the etcd endpoints and that etcd is healthy`,
        { cause: err },
      );
    }
    const revoke = () =>
      client.leaseClient.leaseRevoke({ ID: granted.ID }, within(LEASE_CALL_MS)).catch(() => undefined);
    // The fence arithmetic assumes etcd expires the lease T after a renewal: a TTL raised by
    // etcd (below its minimum) or lowered by a proxy would break it either way.
    if (Number(granted.TTL) !== timing.ttlSeconds) {
      await revoke();
      throw new Error(
        `node ${opts.node}: etcd granted a lease TTL of ${granted.TTL} s for the ${timing.ttlSeconds} s asked (lease.ttlSeconds); ` +
          `set lease.ttlSeconds to at least etcd's minimum (1.5 × its election timeout) or check what sits between this node and etcd`,
      );
    }
    const session = new Session(
      client,
      opts.node,
      granted.ID,
      timing,
      keys,
      sentAt,
      opts.renewVia ?? renewalClients(client),
      clock,
    );
    try {
      await client
        .put(session.sessionKey)
        .value(session.sessionValue)
        .lease(granted.ID)
        .options(within(LEASE_CALL_MS));
    } catch (err) {
      await revoke();
      throw new Error(
        `node ${opts.node}: could not write its session key ${session.sessionKey} (${LEASE_CALL_MS} ms): ${(err as Error).message}; check that etcd is healthy and this node may write under ${keys.prefix}/`,
        { cause: err },
      );
    }
    session.armFenceTimer();
    session.renewEvery(timing.keepaliveIntervalMs);
    return session;
  }

  get state(): SessionState {
    return this.stateValue;
  }

  /** Lease ID as etcd's decimal string. */
  get id(): string {
    return this.leaseId;
  }

  /**
   * May the holder act right now? False from the self-fence deadline on, even if the timer
   * has not fired yet (this process may just have been resumed from a freeze). Call it
   * synchronously right before every action taken on the strength of the lease.
   */
  mayAct(): boolean {
    if (this.stateValue !== 'alive') return false;
    if (this.sinceRenewalMs() >= this.timing.selfFenceMs) {
      this.raiseMustStop('keepalive-timeout');
      return false;
    }
    return true;
  }

  /** Monotonic ms left before the self-fence deadline (0 once passed). */
  msUntilSelfFence(): number {
    if (this.stateValue !== 'alive') return 0;
    return Math.max(0, this.timing.selfFenceMs - this.sinceRenewalMs());
  }

  /** Time since the send of the last acknowledged renewal, by whichever clock says more. */
  private sinceRenewalMs(): number {
    return Math.max(
      this.clock.monotonicMs() - this.renewedSentAt,
      this.clock.wallMs() - this.renewedSentWall,
    );
  }

  /** Resolves when this session raises must-stop (immediately if it already has). */
  stopped(): Promise<MustStop> {
    if (this.mustStopEvent) return Promise.resolve(this.mustStopEvent);
    return new Promise((resolve) => this.mustStopWaiters.push(resolve));
  }

  /** Resolves when the lease is known gone (revoked by us, or answered TTL 0, or expired by our clock). */
  lost(): Promise<Lost> {
    if (this.lostEvent) return Promise.resolve(this.lostEvent);
    return new Promise((resolve) => this.lostWaiters.push(resolve));
  }

  /**
   * Declare that a service may run under this lease from now on. The lease is not revoked
   * (by close or must-stop) until every hold is released — call the returned function once
   * the service is confirmed out — or until the must-be-out instant, by which the lifeline
   * has killed it. An unreleased hold is the safe default for a logout that went wrong.
   */
  hold(): Release {
    const token = Symbol('hold');
    this.holds.add(token);
    return () => {
      if (!this.holds.delete(token) || this.holds.size > 0) return;
      for (const resolve of this.releaseWaiters.splice(0)) resolve();
    };
  }

  /** Number of services that may still run under this session. */
  get held(): number {
    return this.holds.size;
  }

  /**
   * End the session: stop renewing and revoke the lease once no service may run under it,
   * so the keys bound to it go without waiting for the TTL. Resolves once revoked or known
   * gone; never rejects.
   */
  async close(): Promise<Lost> {
    this.raiseMustStop('closed');
    return this.lost();
  }

  /** A renewal round now, and every `intervalMs` after, until must-stop cancels them. */
  private renewEvery(intervalMs: number): void {
    this.renew();
    if (this.stateValue === 'alive') {
      this.cancelRenewals = this.clock.after(intervalMs, () => this.renewEvery(intervalMs));
    }
  }

  /** One renewal round: a keepalive and a write of the session key. */
  private renew(): void {
    if (!this.mayAct()) return;
    if (!this.keepaliveInFlight) void this.keepaliveOnce();
    if (!this.renewing) void this.renewSessionKey();
  }

  private get boundMs(): number {
    return Math.max(RENEW_CALL_MIN_MS, Math.floor(this.timing.ttlMs * RENEW_CALL_SHARE));
  }

  private current(): Etcd3 {
    return this.via[this.endpoint % this.via.length]!;
  }

  /** The endpoint `used` did not answer: the next call goes to the next one. */
  private moveOn(used: Etcd3, why: string): void {
    this.lastRenewalError = `${why} (endpoint ${(this.endpoint % this.via.length) + 1} of ${this.via.length})`;
    if (this.current() === used) this.endpoint = (this.endpoint + 1) % this.via.length;
  }

  /**
   * Write the session key until etcd acknowledges it, each attempt bounded: a write stuck on
   * a frozen member or lost in a raft election is sent again at once to the next endpoint.
   */
  private async renewSessionKey(): Promise<void> {
    this.renewing = true;
    try {
      while (this.mayAct()) {
        const client = this.current();
        const sentAt = this.clock.monotonicMs();
        const sentWall = this.clock.wallMs();
        try {
          await client
            .put(this.sessionKey)
            .value(this.sessionValue)
            .lease(this.leaseId)
            .options(within(this.boundMs));
        } catch (err) {
          if (isLeaseGone(err)) {
            // etcd no longer has the lease: revoked by someone else, or expired.
            this.raiseMustStop('lease-gone');
            this.finish({ reason: 'lease-gone', at: this.clock.wallMs(), revoked: false });
            return;
          }
          this.moveOn(client, `session-key write failed: ${(err as Error).message}`);
          await this.clock.sleep(RENEW_RETRY_MS, undefined, { background: true });
          continue;
        }
        // An answer processed after the deadline (a stall) must not un-fence: check first.
        if (!this.mayAct()) return;
        if (sentAt > this.renewedSentAt) {
          this.renewedSentAt = sentAt;
          this.renewedSentWall = sentWall;
        }
        this.lastRenewalError = undefined;
        this.armFenceTimer();
        this.emit('renewed', { sentAt, rttMs: this.clock.monotonicMs() - sentAt });
        return;
      }
    } finally {
      this.renewing = false;
    }
  }

  /**
   * One keepalive on a stream of its own, bounded: renewals queue behind each other on a
   * shared stream, so one stuck on a member forwarding to a dead leader would hold back
   * every later one. TTL 0 means the lease is gone; no answer in time moves us on.
   */
  private async keepaliveOnce(): Promise<void> {
    this.keepaliveInFlight = true;
    const client = this.current();
    let rpc: KeepaliveStream | undefined;
    let settled = false;
    let cancelBound: (() => void) | undefined;
    const drop = (stream: KeepaliveStream) => {
      stream.on('error', () => undefined); // a cancelled stream reports its cancellation
      if (stream.cancel) stream.cancel();
      else stream.end();
    };
    try {
      const answer = await new Promise<ILeaseKeepAliveResponse | undefined>((resolve) => {
        cancelBound = this.clock.after(this.boundMs, () => resolve(undefined));
        client.leaseClient
          .leaseKeepAlive()
          .then((stream) => {
            const s = stream as KeepaliveStream;
            // Opened after the bound ran out: drop it at once, or it stays open for good.
            if (settled) return drop(s);
            rpc = s;
            s.on('data', (res: ILeaseKeepAliveResponse) => resolve(res));
            s.on('error', () => resolve(undefined));
            s.on('end', () => resolve(undefined));
            s.write({ ID: this.leaseId });
          })
          .catch(() => resolve(undefined));
      });
      if (!answer) {
        this.moveOn(client, `keepalive unanswered within ${this.boundMs} ms`);
        return;
      }
      if (answer.TTL === '0' && this.stateValue === 'alive') {
        this.raiseMustStop('lease-gone');
        this.finish({ reason: 'lease-gone', at: this.clock.wallMs(), revoked: false });
      }
      // A live answer keeps the lease; only the session-key write renews the fence clock.
    } finally {
      settled = true;
      cancelBound?.();
      this.keepaliveInFlight = false;
      if (rpc) drop(rpc);
    }
  }

  private armFenceTimer(): void {
    this.cancelFenceTimer?.();
    // mayAct() raises must-stop once the deadline has passed (by either clock). A timer that
    // fires a hair early (timers round to whole ms) arms again rather than leaving the
    // deadline to whoever calls mayAct() next.
    this.cancelFenceTimer = this.clock.after(this.msUntilSelfFence() + 1, () => {
      if (this.mayAct()) this.armFenceTimer();
    });
  }

  private raiseMustStop(reason: StopReason): void {
    if (this.stateValue !== 'alive') return;
    this.stateValue = 'stopping';
    this.cancelRenewals?.();
    this.cancelFenceTimer?.();
    const since = this.sinceRenewalMs();
    this.mustStopEvent = {
      reason,
      at: this.clock.wallMs(),
      sinceRenewalMs: since,
      mustBeOutBy: this.clock.monotonicMs() - since + this.timing.mustBeOutByMs,
      ...(this.lastRenewalError ? { lastError: this.lastRenewalError } : {}),
    };
    this.emit('must-stop', this.mustStopEvent);
    for (const resolve of this.mustStopWaiters.splice(0)) resolve(this.mustStopEvent);
    if (reason !== 'lease-gone') void this.revokeWhenOut(reason, this.mustStopEvent.mustBeOutBy);
  }

  /**
   * Revoke our own lease once no service may run under it: every hold released, or the
   * must-be-out instant passed (the lifeline has killed whatever was left). Meanwhile the
   * lease is also declared lost by our own clock once etcd must have expired it.
   */
  private async revokeWhenOut(reason: StopReason, mustBeOutBy: number): Promise<void> {
    const clock = this.clock;
    const expiredByClockAt = clock.monotonicMs() - this.sinceRenewalMs() + this.timing.ttlMs;
    const cancelExpiry = clock.after(
      expiredByClockAt - clock.monotonicMs(),
      () => this.finish({ reason, at: clock.wallMs(), revoked: false }),
      { background: true },
    );
    if (this.holds.size > 0) {
      const released = new Promise<void>((resolve) => this.releaseWaiters.push(resolve));
      // Node timers may fire a fraction of a millisecond early: wait until the instant has
      // truly passed on the monotonic clock.
      while (this.holds.size > 0 && clock.monotonicMs() < mustBeOutBy) {
        const passed = new AbortController();
        await Promise.race([released, clock.sleep(mustBeOutBy - clock.monotonicMs() + 1, passed.signal)]);
        passed.abort();
      }
    }
    // Revoke even when our clock already declared the lease expired: after an etcd restart
    // leases come back with a fresh TTL, and the keys on it with them.
    const giveUpAt = clock.monotonicMs() + REVOKE_RETRY_WINDOW_FACTOR * this.timing.ttlMs;
    let revokeError = 'no attempt made';
    while (clock.monotonicMs() < giveUpAt) {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: this.leaseId }, within(LEASE_CALL_MS));
        cancelExpiry();
        this.finish({ reason, at: clock.wallMs(), revoked: true });
        return;
      } catch (err) {
        if (isLeaseGone(err)) {
          cancelExpiry();
          this.finish({ reason, at: clock.wallMs(), revoked: false });
          return;
        }
        revokeError = (err as Error).message;
        await clock.sleep(REVOKE_RETRY_MS, undefined, { background: true });
      }
    }
    // Given up (the lease was declared lost by our clock long ago): etcd expires it on its
    // own, or keeps it across a restart until it does. Say why, once.
    this.emit('revoke-abandoned', { error: revokeError });
  }

  private finish(event: Lost): void {
    if (this.lostEvent) return;
    this.stateValue = 'lost';
    this.lostEvent = event;
    this.emit('lost', event);
    for (const resolve of this.lostWaiters.splice(0)) resolve(event);
  }
}

// An agent's session: one etcd lease, renewed every T/10, and the self-fence clock.
//
// Each renewal is a keepalive and a rewrite of the session's own key (renewer.ts). An agent
// renews from a thread of its own (renewal-thread.ts): a burst of logins (each process spawn
// blocks this thread until the child has exec'd) must never hold a renewal back.
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
import type { Etcd3 } from 'etcd3';
import { systemClock, type Clock } from '../clock/index.js';
import { TypedEmitter } from './emitter.js';
import { isLeaseGone, renewalClients, within, type EtcdConnectOptions } from './etcd.js';
import { describeFailedAttempts, Renewer, type FailedAttempt, type RenewalTarget } from './renewer.js';
import { RenewalThread } from './renewal-thread.js';
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
  /**
   * Every renewal attempt that failed since the last acknowledged one, timed from its send:
   * which endpoints were tried, how each failed and how long it took (describeFailedAttempts).
   */
  failedRenewals?: string;
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
  /**
   * Renew from a thread of its own, with clients of its own made from these settings (the
   * same etcd as `client`). Needs the system clock. Default: renew in this thread.
   */
  renewalThread?: EtcdConnectOptions;
}

/** Where the renewals run: this thread, or a renewal thread. */
export interface RenewalEngine {
  /** Renew every keepalive interval until stop(). */
  start(): void;
  stop(): void;
  /** The latest acknowledged renewal known right now, if the engine keeps its own record. */
  latest(): { sentAt: number; sentWall: number } | undefined;
  /** Why the latest renewal attempt failed, until one is acknowledged. */
  readonly lastError: string | undefined;
  /** The attempts that failed since the last acknowledged renewal (sentAt on the session's clock). */
  readonly failedAttempts: readonly FailedAttempt[];
  /** Where and at what priority renewals run, for the operator. */
  readonly where?: string;
}

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
  private engine!: RenewalEngine;
  /** Cancels the timer that raises must-stop at the self-fence deadline. */
  private cancelFenceTimer: (() => void) | undefined;
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
    readonly clock: Clock,
  ) {
    super();
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
    if (opts.renewalThread && clock !== systemClock) {
      throw new Error(
        `node ${opts.node}: a renewal thread runs on the system clock only; leave renewalThread out with another clock`,
      );
    }
    // The thread loads and connects before there is a lease to lose.
    const thread = opts.renewalThread
      ? new RenewalThread(opts.renewalThread, timing, renewBoundMs(timing))
      : undefined;
    if (thread) {
      try {
        await thread.ready();
      } catch (err) {
        throw new Error(`node ${opts.node}: could not open an etcd session: ${(err as Error).message}`, {
          cause: err,
        });
      }
    }
    const sentAt = clock.monotonicMs();
    let granted;
    try {
      granted = await client.leaseClient.leaseGrant({ TTL: timing.ttlSeconds, ID: 0 }, within(LEASE_CALL_MS));
    } catch (err) {
      thread?.stop();
      throw new Error(
        `node ${opts.node}: could not open an etcd session (lease grant, ${LEASE_CALL_MS} ms): ${(err as Error).message}; check the etcd endpoints and that etcd is healthy`,
        { cause: err },
      );
    }
    const revoke = () => {
      thread?.stop();
      return client.leaseClient.leaseRevoke({ ID: granted.ID }, within(LEASE_CALL_MS)).catch(() => undefined);
    };
    // The fence arithmetic assumes etcd expires the lease T after a renewal: a TTL raised by
    // etcd (below its minimum) or lowered by a proxy would break it either way.
    if (Number(granted.TTL) !== timing.ttlSeconds) {
      await revoke();
      throw new Error(
        `node ${opts.node}: etcd granted a lease TTL of ${granted.TTL} s for the ${timing.ttlSeconds} s asked (lease.ttlSeconds); ` +
          `set lease.ttlSeconds to at least etcd's minimum (1.5 × its election timeout) or check what sits between this node and etcd`,
      );
    }
    const session = new Session(client, opts.node, granted.ID, timing, keys, sentAt, clock);
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
    const target: RenewalTarget = {
      leaseId: granted.ID,
      sessionKey: session.sessionKey,
      sessionValue: session.sessionValue,
    };
    const report = {
      renewed: (sentAt: number, sentWall: number) => session.onRenewed(sentAt, sentWall),
      gone: () => session.onGone(),
    };
    if (thread) thread.begin(target, sentAt, report);
    session.engine = thread
      ? thread
      : localRenewal(
          new Renewer(
            opts.renewVia ?? renewalClients(client),
            target,
            renewBoundMs(timing),
            clock,
            () => session.mayAct(),
            report,
          ),
          timing.keepaliveIntervalMs,
          clock,
        );
    session.armFenceTimer();
    session.engine.start();
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

  /** Where renewals run: "main thread", or the renewal thread and its priority. */
  get renewals(): string {
    return this.engine?.where ?? 'main thread';
  }

  /** Monotonic ms left before the self-fence deadline (0 once passed). */
  msUntilSelfFence(): number {
    if (this.stateValue !== 'alive') return 0;
    return Math.max(0, this.timing.selfFenceMs - this.sinceRenewalMs());
  }

  /** Time since the send of the last acknowledged renewal, by whichever clock says more. */
  private sinceRenewalMs(): number {
    // A renewal thread records its acknowledgements where this thread reads them at once,
    // however busy it is: a renewal is never missed for want of this thread's attention.
    const latest = this.stateValue === 'alive' ? this.engine?.latest() : undefined;
    if (latest && latest.sentAt > this.renewedSentAt) {
      this.renewedSentAt = latest.sentAt;
      this.renewedSentWall = latest.sentWall;
    }
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

  /** The renewal sent at `sentAt` was acknowledged (in time, the engine checked). */
  private onRenewed(sentAt: number, sentWall: number): void {
    if (this.stateValue !== 'alive') return;
    if (sentAt > this.renewedSentAt) {
      this.renewedSentAt = sentAt;
      this.renewedSentWall = sentWall;
    }
    // An answer processed after the deadline (a stall) must not un-fence: check first.
    if (!this.mayAct()) return;
    this.armFenceTimer();
    this.emit('renewed', { sentAt, rttMs: this.clock.monotonicMs() - sentAt });
  }

  /** etcd no longer has the lease: revoked by someone else, or expired. */
  private onGone(): void {
    if (this.stateValue !== 'alive') return;
    this.raiseMustStop('lease-gone');
    this.finish({ reason: 'lease-gone', at: this.clock.wallMs(), revoked: false });
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
    this.engine?.stop();
    this.cancelFenceTimer?.();
    const since = this.sinceRenewalMs();
    const failed = this.engine?.failedAttempts ?? [];
    this.mustStopEvent = {
      reason,
      at: this.clock.wallMs(),
      sinceRenewalMs: since,
      mustBeOutBy: this.clock.monotonicMs() - since + this.timing.mustBeOutByMs,
      ...(this.engine?.lastError ? { lastError: this.engine.lastError } : {}),
      ...(failed.length > 0 ? { failedRenewals: describeFailedAttempts(failed, this.renewedSentAt) } : {}),
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

function renewBoundMs(timing: LeaseTiming): number {
  return Math.max(RENEW_CALL_MIN_MS, Math.floor(timing.ttlMs * RENEW_CALL_SHARE));
}

/** Renewals in this thread: a round now and every `intervalMs` after, until stopped. */
function localRenewal(renewer: Renewer, intervalMs: number, clock: Clock): RenewalEngine {
  let cancel: (() => void) | undefined;
  let stopped = false;
  const every = () => {
    if (stopped) return;
    renewer.round();
    cancel = clock.after(intervalMs, every);
  };
  return {
    start() {
      renewer.warmUp();
      every();
    },
    stop() {
      stopped = true;
      cancel?.();
    },
    latest: () => undefined,
    get lastError() {
      return renewer.lastError;
    },
    get failedAttempts() {
      return renewer.failedAttempts;
    },
  };
}

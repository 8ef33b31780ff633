// An agent's session: one etcd lease, kept alive every T/3, and the self-fence clock.
//
// The clock runs on this process's monotonic time from the *send* time of the last keepalive
// that etcd acknowledged with a live TTL. etcd received that keepalive after we sent it, so
// it cannot expire the lease before `sent + T`. At `sent + D` the session raises must-stop:
// whoever acts under it (a logged-in service) must be out by `sent + T × (1 − drift)`
// (see timing.ts). A session that raised must-stop is finished: it stops renewing, revokes
// its lease when it can, and a new session must be opened to act again. Recovering the old
// one would let a leader that already began logging out resume without a new term.
import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import { TypedEmitter } from './emitter.js';
import { within } from './etcd.js';
import { leaseTiming, type LeaseTiming, type LeaseTimingInput } from './timing.js';

/** Bound on a grant or revoke call; well under any TTL etcd grants. */
const LEASE_CALL_MS = 1_500;
/** Pause before reopening a broken keepalive stream (gRPC reconnects underneath). */
const STREAM_REOPEN_MS = 100;
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
  /** Monotonic deadline (performance.now()) by which the service must be out. */
  mustBeOutBy: number;
}

export interface Lost {
  reason: StopReason;
  at: number;
  /** True when this session revoked its own lease (standbys may proceed at once). */
  revoked: boolean;
}

export interface SessionEvents extends Record<string, unknown> {
  renewed: { sentAt: number; rttMs: number; ttlSeconds: number };
  'must-stop': MustStop;
  lost: Lost;
}

export type SessionState = 'alive' | 'stopping' | 'lost';

export interface SessionOptions {
  timing: LeaseTimingInput | LeaseTiming;
  /** Name of the node (for errors and records). */
  node: string;
}

type KeepaliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

/** Validate either form: a precomputed LeaseTiming is checked again, never trusted. */
function validTiming(t: LeaseTimingInput | LeaseTiming, context: string): LeaseTiming {
  const { ttlSeconds, selfFenceMs, logoutBudgetMs, driftMargin } = t;
  return leaseTiming({ ttlSeconds, selfFenceMs, logoutBudgetMs, driftMargin }, context);
}

export class Session extends TypedEmitter<SessionEvents> {
  private stateValue: SessionState = 'alive';
  /** performance.now() at the send of the last keepalive acknowledged with TTL > 0. */
  private renewedSentAt: number;
  /**
   * The current keepalive stream and the send times of its keepalives awaiting an answer.
   * etcd answers on a stream in order, so an answer belongs to the oldest send *of its own
   * stream*: a late answer from a replaced stream must never be matched to a newer send.
   */
  private stream: { rpc: KeepaliveStream; inFlight: number[] } | undefined;
  private keepaliveTimer: NodeJS.Timeout | undefined;
  private fenceTimer: NodeJS.Timeout | undefined;
  private mustStopEvent: MustStop | undefined;
  private lostEvent: Lost | undefined;
  private readonly mustStopWaiters: Array<(e: MustStop) => void> = [];
  private readonly lostWaiters: Array<(e: Lost) => void> = [];

  private constructor(
    readonly client: Etcd3,
    readonly node: string,
    readonly leaseId: string,
    readonly timing: LeaseTiming,
    grantSentAt: number,
  ) {
    super();
    this.renewedSentAt = grantSentAt;
  }

  /** Grant a lease and start keeping it alive. Rejects (naming the cause) if etcd does not answer. */
  static async open(client: Etcd3, opts: SessionOptions): Promise<Session> {
    const timing = validTiming(opts.timing, `session of ${opts.node}`);
    const sentAt = performance.now();
    let granted;
    try {
      granted = await client.leaseClient.leaseGrant({ TTL: timing.ttlSeconds, ID: 0 }, within(LEASE_CALL_MS));
    } catch (err) {
      throw new Error(
        `node ${opts.node}: could not open an etcd session (lease grant, ${LEASE_CALL_MS} ms): ${(err as Error).message}; check the etcd endpoints and that etcd is healthy`,
        { cause: err },
      );
    }
    // etcd may grant more than asked (never less). More only delays expiry: the fence
    // arithmetic, which uses our T, stays on the safe side.
    const session = new Session(client, opts.node, granted.ID, timing, sentAt);
    session.armFenceTimer();
    session.openStream();
    session.keepaliveTimer = setInterval(() => session.sendKeepalive(), timing.keepaliveIntervalMs);
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
    if (performance.now() - this.renewedSentAt >= this.timing.selfFenceMs) {
      this.raiseMustStop('keepalive-timeout');
      return false;
    }
    return true;
  }

  /** Monotonic ms left before the self-fence deadline (0 once passed). */
  msUntilSelfFence(): number {
    if (this.stateValue !== 'alive') return 0;
    return Math.max(0, this.renewedSentAt + this.timing.selfFenceMs - performance.now());
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
   * End the session: stop renewing and revoke the lease, so every key bound to it goes at
   * once and standbys take over without waiting for the TTL. Resolves once revoked or known
   * gone; never rejects.
   */
  async close(): Promise<Lost> {
    this.raiseMustStop('closed');
    return this.lost();
  }

  private openStream(): void {
    if (this.stateValue !== 'alive') return;
    this.client.leaseClient
      .leaseKeepAlive()
      .then((rpc) => {
        if (this.stateValue !== 'alive') {
          rpc.end();
          return;
        }
        const stream = { rpc, inFlight: [] as number[] };
        this.stream = stream;
        rpc.on('data', (res: ILeaseKeepAliveResponse) => this.onKeepaliveAnswer(stream, res));
        rpc.on('error', () => this.onStreamBroken(stream));
        rpc.on('end', () => this.onStreamBroken(stream));
        this.sendKeepalive();
      })
      .catch(() => this.onStreamBroken(undefined));
  }

  private onStreamBroken(stream: typeof this.stream): void {
    if (stream && stream !== this.stream) return;
    // Answers to what was sent on the broken stream will never come; they go with it.
    this.stream = undefined;
    if (this.stateValue === 'alive') setTimeout(() => this.openStream(), STREAM_REOPEN_MS).unref();
  }

  private sendKeepalive(): void {
    if (this.stateValue !== 'alive' || !this.stream) return;
    if (!this.mayAct()) return;
    this.stream.inFlight.push(performance.now());
    this.stream.rpc.write({ ID: this.leaseId });
  }

  private onKeepaliveAnswer(stream: NonNullable<typeof this.stream>, res: ILeaseKeepAliveResponse): void {
    // Answers come in order: this one belongs to the oldest keepalive in flight on its stream.
    const sentAt = stream.inFlight.shift();
    if (stream !== this.stream || this.stateValue !== 'alive' || sentAt === undefined) return;
    if (res.TTL === '0') {
      this.raiseMustStop('lease-gone');
      this.finish({ reason: 'lease-gone', at: Date.now(), revoked: false });
      return;
    }
    // An answer processed after the deadline (a stall) must not un-fence: check first.
    if (!this.mayAct()) return;
    this.renewedSentAt = Math.max(this.renewedSentAt, sentAt);
    this.armFenceTimer();
    this.emit('renewed', { sentAt, rttMs: performance.now() - sentAt, ttlSeconds: Number(res.TTL) });
  }

  private armFenceTimer(): void {
    clearTimeout(this.fenceTimer);
    this.fenceTimer = setTimeout(() => this.mayAct(), this.msUntilSelfFence() + 1);
  }

  private raiseMustStop(reason: StopReason): void {
    if (this.stateValue !== 'alive') return;
    this.stateValue = 'stopping';
    clearInterval(this.keepaliveTimer);
    clearTimeout(this.fenceTimer);
    this.stream?.rpc.end();
    this.stream = undefined;
    const now = performance.now();
    this.mustStopEvent = {
      reason,
      at: Date.now(),
      sinceRenewalMs: now - this.renewedSentAt,
      mustBeOutBy: this.renewedSentAt + this.timing.mustBeOutByMs,
    };
    this.emit('must-stop', this.mustStopEvent);
    for (const resolve of this.mustStopWaiters.splice(0)) resolve(this.mustStopEvent);
    if (reason !== 'lease-gone') void this.revokeUntilGone(reason);
  }

  /**
   * Revoke our own lease, retrying while etcd is unreachable, for a bounded window. Also
   * declares the lease lost by our own clock once etcd must have expired it.
   */
  private async revokeUntilGone(reason: StopReason): Promise<void> {
    const expiredByClockAt = this.renewedSentAt + this.timing.ttlMs;
    const giveUpAt = performance.now() + REVOKE_RETRY_WINDOW_FACTOR * this.timing.ttlMs;
    const expiryTimer = setTimeout(
      () => this.finish({ reason, at: Date.now(), revoked: false }),
      Math.max(0, expiredByClockAt - performance.now()),
    );
    expiryTimer.unref();
    while (performance.now() < giveUpAt) {
      try {
        await this.client.leaseClient.leaseRevoke({ ID: this.leaseId }, within(LEASE_CALL_MS));
        clearTimeout(expiryTimer);
        this.finish({ reason, at: Date.now(), revoked: true });
        return;
      } catch (err) {
        if ((err as Error).name === 'EtcdLeaseInvalidError') {
          clearTimeout(expiryTimer);
          this.finish({ reason, at: Date.now(), revoked: false });
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, REVOKE_RETRY_MS).unref());
      }
    }
  }

  private finish(event: Lost): void {
    if (this.lostEvent) return;
    this.stateValue = 'lost';
    this.lostEvent = event;
    this.emit('lost', event);
    for (const resolve of this.lostWaiters.splice(0)) resolve(event);
  }
}

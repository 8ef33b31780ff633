// The renewal I/O of a session: every round, a keepalive (it keeps the lease) and a rewrite of
// the session's own key bound to the lease (it proves the lease alive *and* shows the renewal
// to every other node: keepalives leave no trace anyone else can see). Both go to one
// endpoint at a time, through a client of its own (etcd.ts), each bounded; one that does not
// answer in time moves the renewals to the next endpoint at once. An etcd member that died,
// froze or lost its leader therefore costs a renewal or two, not the seconds gRPC takes to
// notice.
//
// It runs where the session puts it: in the session's own thread, or in a renewal thread of
// its own (renewal-thread.ts) so that nothing the identities do can hold a renewal back.
import type { Etcd3, IDuplexStream, ILeaseKeepAliveRequest, ILeaseKeepAliveResponse } from 'etcd3';
import type { Clock } from '../clock/index.js';
import { isLeaseGone, within } from './etcd.js';

/** Pause before retrying a failed renewal write. */
const RENEW_RETRY_MS = 50;

/** A warm-up call's deadline, in renewal bounds: it only opens a connection, and nothing waits for it. */
const WARM_UP_BOUNDS = 4;

/**
 * Failed attempts remembered since the last acknowledged renewal: at T/10 a self-fence
 * deadline of 0.7 T spans about seven rounds of a keepalive and a write, each possibly retried
 * once; more than that says nothing new. They are the operator's account of a fence: which
 * endpoint failed, how, and how long each attempt took.
 */
export const FAILED_ATTEMPTS_KEPT = 24;

/** One renewal call that failed: the operator's (and the chaos report's) account of a fence. */
export interface FailedAttempt {
  call: 'write' | 'keepalive';
  /** 1-based, in the order of the configured endpoints. */
  endpoint: number;
  /** Monotonic ms at the send. */
  sentAt: number;
  tookMs: number;
  error: string;
}

/**
 * The failed attempts as one line, each timed from `since` (the send of the last acknowledged
 * renewal): "write to endpoint 2 at +512 ms failed after 500 ms: deadline exceeded; …".
 */
export function describeFailedAttempts(attempts: readonly FailedAttempt[], since: number): string {
  return attempts
    .map(
      (a) =>
        `${a.call} to endpoint ${a.endpoint} at +${Math.round(a.sentAt - since)} ms ` +
        `failed after ${Math.round(a.tookMs)} ms: ${a.error}`,
    )
    .join('; ');
}

type KeepaliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse> & {
  /** gRPC's cancel: `end()` is only a half-close, which a frozen member never completes. */
  cancel?: () => void;
};

export interface RenewalTarget {
  leaseId: string;
  sessionKey: string;
  sessionValue: string;
}

export interface RenewerReport {
  /** etcd acknowledged the session-key write sent at `sentAt` (monotonic) / `sentWall` (wall). */
  renewed(sentAt: number, sentWall: number): void;
  /** etcd no longer has the lease: revoked by someone else, or expired. */
  gone(): void;
}

export class Renewer {
  private endpoint = 0;
  private keepaliveInFlight = false;
  private writing = false;
  /** Why the latest renewal attempt failed; cleared by an acknowledged one. */
  lastError: string | undefined;
  private failures: FailedAttempt[] = [];

  constructor(
    private readonly via: Etcd3[],
    private readonly target: RenewalTarget,
    /** Bound on each call: one not answered by then is abandoned and retried elsewhere. */
    private readonly boundMs: number,
    private readonly clock: Clock,
    /** Asked before each attempt and after each answer: false once the session must stop. */
    private readonly mayRenew: () => boolean,
    private readonly report: RenewerReport,
  ) {}

  /**
   * Open the renewal channels to every endpoint now, with a read of the session key and of
   * the lease's TTL (answers and failures alike are ignored): when renewals have to move to
   * another member (its leader died, say), its channels are already connected, and the move
   * waits for neither a DNS lookup nor a handshake.
   */
  warmUp(): void {
    const deadline = () => within(this.boundMs * WARM_UP_BOUNDS);
    const quietly = (call: () => Promise<unknown>) => void call().catch(() => undefined);
    for (const client of this.via) {
      quietly(async () => client.get(this.target.sessionKey).options(deadline()));
      quietly(async () => client.leaseClient.leaseTimeToLive({ ID: this.target.leaseId }, deadline()));
    }
  }

  /** One renewal round: a keepalive and a write of the session key, unless one is in flight. */
  round(): void {
    if (!this.mayRenew()) return;
    if (!this.keepaliveInFlight) void this.keepaliveOnce();
    if (!this.writing) void this.writeSessionKey();
  }

  /** Failed attempts since the last acknowledged renewal, oldest first (the latest FAILED_ATTEMPTS_KEPT). */
  get failedAttempts(): readonly FailedAttempt[] {
    return this.failures;
  }

  private current(): Etcd3 {
    return this.via[this.endpoint % this.via.length]!;
  }

  /** The endpoint `used` did not answer: the next call goes to the next one. */
  private moveOn(used: Etcd3, call: FailedAttempt['call'], sentAt: number, why: string): void {
    const endpoint = this.via.indexOf(used) + 1;
    this.lastError = `${why} (endpoint ${endpoint} of ${this.via.length})`;
    this.failures.push({ call, endpoint, sentAt, tookMs: this.clock.monotonicMs() - sentAt, error: why });
    if (this.failures.length > FAILED_ATTEMPTS_KEPT) this.failures.shift();
    if (this.current() === used) this.endpoint = (this.endpoint + 1) % this.via.length;
  }

  /**
   * Write the session key until etcd acknowledges it, each attempt bounded: a write stuck on
   * a frozen member or lost in a raft election is sent again at once to the next endpoint.
   */
  private async writeSessionKey(): Promise<void> {
    this.writing = true;
    try {
      while (this.mayRenew()) {
        const client = this.current();
        const sentAt = this.clock.monotonicMs();
        const sentWall = this.clock.wallMs();
        try {
          await client
            .put(this.target.sessionKey)
            .value(this.target.sessionValue)
            .lease(this.target.leaseId)
            .options(within(this.boundMs));
        } catch (err) {
          if (isLeaseGone(err)) return this.report.gone();
          this.moveOn(client, 'write', sentAt, `session-key write failed: ${(err as Error).message}`);
          await this.clock.sleep(RENEW_RETRY_MS, undefined, { background: true });
          continue;
        }
        // An answer processed after the deadline (a stall) must not un-fence: check first.
        if (!this.mayRenew()) return;
        this.lastError = undefined;
        this.failures = [];
        this.report.renewed(sentAt, sentWall);
        return;
      }
    } finally {
      this.writing = false;
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
    const sentAt = this.clock.monotonicMs();
    let rpc: KeepaliveStream | undefined;
    let settled = false;
    let cancelBound: (() => void) | undefined;
    const drop = (stream: KeepaliveStream) => {
      stream.on('error', () => undefined); // a cancelled stream reports its cancellation
      if (stream.cancel) stream.cancel();
      else stream.end();
    };
    try {
      const answer = await new Promise<ILeaseKeepAliveResponse | string>((resolve) => {
        const unanswered = `keepalive unanswered within ${this.boundMs} ms`;
        cancelBound = this.clock.after(this.boundMs, () => resolve(unanswered));
        const failed = (err: unknown) =>
          resolve(`keepalive failed: ${(err as Error)?.message ?? String(err)}`);
        client.leaseClient
          .leaseKeepAlive()
          .then((stream) => {
            const s = stream as KeepaliveStream;
            // Opened after the bound ran out: drop it at once, or it stays open for good.
            if (settled) return drop(s);
            rpc = s;
            s.on('data', (res: ILeaseKeepAliveResponse) => resolve(res));
            s.on('error', failed);
            s.on('end', () => resolve('keepalive failed: the stream ended unanswered'));
            s.write({ ID: this.target.leaseId });
          })
          .catch(failed);
      });
      if (typeof answer === 'string') {
        this.moveOn(client, 'keepalive', sentAt, answer);
        return;
      }
      if (answer.TTL === '0' && this.mayRenew()) this.report.gone();
      // A live answer keeps the lease; only the session-key write renews the fence clock.
    } finally {
      settled = true;
      cancelBound?.();
      this.keepaliveInFlight = false;
      if (rpc) drop(rpc);
    }
  }
}

// The agent's one etcd session, shared by every identity it hosts (cost is per agent, not
// per identity). A session that must stop is finished for good (pkg/lease): the keeper opens
// a fresh one for the campaigns that follow, retrying while etcd is away.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import { Session, type EtcdConnectOptions, type LeaseTiming } from '../lease/index.js';
import { describeRetry, RetryStreak, sameReason, type Retry } from './retries.js';

/** Pause between attempts to open a session while etcd does not answer. */
const REOPEN_RETRY_MS = 1_000;

export class SessionKeeper {
  private session: Session | undefined;
  private opening: Promise<Session> | undefined;
  private closed = false;
  /** Why opening a session is being retried, while it is. */
  private retry: Retry | undefined;

  constructor(
    private readonly client: Etcd3,
    private readonly node: string,
    private readonly timing: LeaseTiming,
    private readonly logger: Logger,
    private readonly hooks: {
      opened?(): void;
      /**
       * Bind what must live and die with the session to its lease (the node key) before any
       * campaign runs on it; a failure closes the session and the open is retried.
       */
      register?(session: Session): Promise<void>;
      renewed?(session: Session): void;
      /** The session had to stop (every identity led on it logs out). */
      stopped?(reason: string): void;
      /** Opening a session is being retried (once per change of reason), or no longer (undefined). */
      retrying?(retry: Retry | undefined): void;
    } = {},
    private readonly clock: Clock = systemClock,
    /** Renew from a thread of its own with these settings (system clock only); see renewal-thread.ts. */
    private readonly renewalThread?: EtcdConnectOptions,
  ) {}

  /** The alive session, if any, without waiting. */
  get alive(): Session | undefined {
    return this.session?.state === 'alive' ? this.session : undefined;
  }

  describe(): string {
    const s = this.session;
    const retrying = this.retry ? `; ${describeRetry(this.retry)}` : '';
    return (s ? `${s.state} (lease ${s.leaseId})` : 'none') + retrying;
  }

  /** The alive session, opening a new one if needed; rejects only once the keeper is closed. */
  current(signal?: AbortSignal): Promise<Session> {
    const alive = this.alive;
    if (alive) return Promise.resolve(alive);
    this.opening ??= this.open(signal).finally(() => (this.opening = undefined));
    return this.opening;
  }

  private async open(signal?: AbortSignal): Promise<Session> {
    const streak = new RetryStreak('opening an etcd session', () => this.clock.wallMs());
    let shown: Retry | undefined;
    for (;;) {
      if (this.closed || signal?.aborted) throw new Error(`agent ${this.node} is shutting down`);
      try {
        const session = await Session.open(this.client, {
          node: this.node,
          timing: this.timing,
          clock: this.clock,
          ...(this.renewalThread && this.clock === systemClock ? { renewalThread: this.renewalThread } : {}),
        });
        if (this.hooks.register) {
          try {
            await this.hooks.register(session);
          } catch (err) {
            await session.close().catch(() => undefined);
            throw err;
          }
        }
        this.session = session;
        this.retry = undefined;
        if (shown) this.hooks.retrying?.(undefined);
        this.hooks.opened?.();
        session.on('renewed', () => this.hooks.renewed?.(session));
        this.logger.info(
          { lease: session.leaseId, ttlSeconds: this.timing.ttlSeconds, renewals: session.renewals },
          'etcd session opened',
        );
        session.on('must-stop', (e) => {
          this.hooks.stopped?.(e.reason);
          this.logger.warn(
            {
              lease: session.leaseId,
              reason: e.reason,
              sinceRenewalMs: Math.round(e.sinceRenewalMs),
              ...(e.lastError ? { lastError: e.lastError } : {}),
              ...(e.failedRenewals ? { failedRenewals: e.failedRenewals } : {}),
            },
            'etcd session must stop: identities led on it log out now',
          );
        });
        session.on('revoke-abandoned', (e) =>
          this.logger.warn(
            { lease: session.leaseId, err: e.error },
            'could not revoke the ended etcd session; etcd expires it by its TTL (successors wait that long)',
          ),
        );
        void session
          .lost()
          .then((e) => this.logger.info({ lease: session.leaseId, ...e }, 'etcd session ended'));
        return session;
      } catch (err) {
        // Logged once per reason, not per attempt: etcd may be away for a while.
        const retry = streak.failed(err);
        if (!sameReason(shown, retry)) {
          this.logger.error(
            { err: retry.error, failures: retry.attempts },
            "cannot open an etcd session; retrying. Check the etcd endpoints in the config and etcd's health",
          );
          this.hooks.retrying?.(retry);
        }
        shown = this.retry = retry;
        await this.clock.sleep(REOPEN_RETRY_MS, signal);
      }
    }
  }

  /** Close (revoke) the current session: every key on it goes at once. */
  async close(): Promise<void> {
    this.closed = true;
    await this.session?.close();
  }
}

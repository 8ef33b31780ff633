// The agent's one etcd session, shared by every identity it hosts (cost is per agent, not
// per identity). A session that must stop is finished for good (pkg/lease): the keeper opens
// a fresh one for the campaigns that follow, retrying while etcd is away.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { Session, type LeaseTiming } from '../lease/index.js';

/** Pause between attempts to open a session while etcd does not answer. */
const REOPEN_RETRY_MS = 1_000;

export class SessionKeeper {
  private session: Session | undefined;
  private opening: Promise<Session> | undefined;
  private closed = false;

  constructor(
    private readonly client: Etcd3,
    private readonly node: string,
    private readonly timing: LeaseTiming,
    private readonly logger: Logger,
    private readonly hooks: { opened?(): void; renewed?(): void } = {},
  ) {}

  /** The alive session, if any, without waiting. */
  get alive(): Session | undefined {
    return this.session?.state === 'alive' ? this.session : undefined;
  }

  describe(): string {
    const s = this.session;
    return s ? `${s.state} (lease ${s.leaseId})` : 'none';
  }

  /** The alive session, opening a new one if needed; rejects only once the keeper is closed. */
  current(signal?: AbortSignal): Promise<Session> {
    const alive = this.alive;
    if (alive) return Promise.resolve(alive);
    this.opening ??= this.open(signal).finally(() => (this.opening = undefined));
    return this.opening;
  }

  private async open(signal?: AbortSignal): Promise<Session> {
    let failures = 0;
    for (;;) {
      if (this.closed || signal?.aborted) throw new Error(`agent ${this.node} is shutting down`);
      try {
        const session = await Session.open(this.client, { node: this.node, timing: this.timing });
        this.session = session;
        this.hooks.opened?.();
        session.on('renewed', () => this.hooks.renewed?.());
        this.logger.info(
          { lease: session.leaseId, ttlSeconds: this.timing.ttlSeconds },
          'etcd session opened',
        );
        session.on('must-stop', (e) =>
          this.logger.warn(
            { lease: session.leaseId, reason: e.reason, sinceRenewalMs: Math.round(e.sinceRenewalMs) },
            'etcd session must stop: identities led on it log out now',
          ),
        );
        void session
          .lost()
          .then((e) => this.logger.info({ lease: session.leaseId, ...e }, 'etcd session ended'));
        return session;
      } catch (err) {
        // Log the first failure and then every tenth: etcd may be away for a while.
        if (failures++ % 10 === 0)
          this.logger.error(
            { err: (err as Error).message, failures },
            'cannot open an etcd session; retrying',
          );
        await new Promise((resolve) => setTimeout(resolve, REOPEN_RETRY_MS));
      }
    }
  }

  /** Close (revoke) the current session: every key on it goes at once. */
  async close(): Promise<void> {
    this.closed = true;
    await this.session?.close();
  }
}

// Retries made visible. Every loop of a campaign and of the term it wins that retries after a
// failure reports here, so a persistent fault (etcd unreachable, RBAC denying a read, a
// malformed record) never looks like plain "campaigning": the owner is told when a streak of
// failures starts, when its reason changes, and when attempts get through again.
import type { Clock } from '../clock/index.js';

/** Pause after a failed etcd call before a loop tries again. */
export const RETRY_MS = 200;

/** Why a candidate is retrying instead of campaigning normally. */
export interface CampaignRetry {
  /** What failed, for the operator: "reading the candidates to rank this node", … */
  what: string;
  /** The error's message. */
  error: string;
  /** Wall-clock ms of the first failure of this streak. */
  since: number;
  /** Failed attempts in this streak. */
  attempts: number;
}

/**
 * The loops that retry on their own. They can run at once (a term re-watches its key while its
 * login gate reads), so each keeps its own streak: one getting through does not hide another.
 */
export type RetryLoop = 'campaign' | 'own-key watch' | 'login gate' | 'peer view';

interface Streak {
  retry: CampaignRetry;
  /** The reason without its figures: a new deadline or count in a message is no new reason. */
  gist: string;
  /** Order of the latest failure across loops: the newest is the one shown. */
  seq: number;
}

export class RetryReport {
  private readonly streaks = new Map<RetryLoop, Streak>();
  private seq = 0;

  constructor(
    private readonly clock: Clock,
    private readonly onRetry?: (retry: CampaignRetry | undefined) => void,
  ) {}

  /** The failure being retried now (the newest of any loop); undefined while every loop gets through. */
  get current(): CampaignRetry | undefined {
    let newest: Streak | undefined;
    for (const s of this.streaks.values()) if (!newest || s.seq > newest.seq) newest = s;
    return newest ? { ...newest.retry } : undefined;
  }

  /** An attempt of `loop` failed: `what` it was doing, and the error. */
  failed(loop: RetryLoop, what: string, err: unknown): void {
    const error = err instanceof Error ? err.message : String(err);
    const gist = `${what}\n${error.replace(/\d+/g, '#')}`;
    const streak = this.streaks.get(loop);
    if (streak) {
      const changed = streak.gist !== gist;
      streak.retry = { ...streak.retry, what, error, attempts: streak.retry.attempts + 1 };
      streak.gist = gist;
      streak.seq = ++this.seq;
      if (changed) this.tell();
      return;
    }
    const retry = { what, error, since: this.clock.wallMs(), attempts: 1 };
    this.streaks.set(loop, { retry, gist, seq: ++this.seq });
    this.tell();
  }

  /** An attempt of `loop` got through: its streak, if any, is over. */
  succeeded(loop: RetryLoop): void {
    if (this.streaks.delete(loop)) this.tell();
  }

  private tell(): void {
    try {
      this.onRetry?.(this.current);
    } catch (err) {
      // The owner's bug must not break the campaign that reported to it; make it loud.
      process.emitWarning(`onRetry threw: ${String(err)}`, 'UnderstudyListenerError');
    }
  }
}

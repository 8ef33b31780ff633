// Retries made visible. Every loop of a campaign and of the term it wins that retries after a
// failure reports here, so a persistent fault (etcd unreachable, RBAC denying a read, a
// malformed record) never looks like plain "campaigning": the owner is told when a streak of
// failures starts, when its reason changes, and when attempts get through again.
import type { Clock } from '../clock/index.js';

/** First pause after a failed etcd call before a loop tries again; doubled per failure. */
export const RETRY_MS = 200;
/**
 * Longest pause between a loop's attempts. A fixed pause turned an overloaded etcd into a
 * retry storm: 2,000 candidates per agent, each retrying every 200 ms calls that had just
 * timed out, kept etcd saturated and the agents busy building errors (10,000 identities on
 * 10 agents, one machine). Well under T, so a campaign notices a recovered etcd in time.
 */
export const RETRY_MAX_MS = 3_000;

export interface Backoff {
  firstMs: number;
  maxMs: number;
}

/**
 * The pause before attempt `failures` + 1: exponential, with jitter over the upper half so
 * that the retries of many loops (and of many processes) that failed together spread out.
 */
export function backoffMs(
  failures: number,
  { firstMs, maxMs }: Backoff = { firstMs: RETRY_MS, maxMs: RETRY_MAX_MS },
  random: () => number = Math.random,
): number {
  const ceiling = Math.min(maxMs, firstMs * 2 ** Math.max(0, failures - 1));
  return Math.round(ceiling / 2 + (ceiling / 2) * random());
}

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

  /** An attempt of `loop` failed: `what` it was doing, and the error. Returns the failures in the streak. */
  failed(loop: RetryLoop, what: string, err: unknown): number {
    const error = err instanceof Error ? err.message : String(err);
    const gist = `${what}\n${error.replace(/\d+/g, '#')}`;
    const streak = this.streaks.get(loop);
    if (streak) {
      const changed = streak.gist !== gist;
      streak.retry = { ...streak.retry, what, error, attempts: streak.retry.attempts + 1 };
      streak.gist = gist;
      streak.seq = ++this.seq;
      if (changed) this.tell();
      return streak.retry.attempts;
    }
    const retry = { what, error, since: this.clock.wallMs(), attempts: 1 };
    this.streaks.set(loop, { retry, gist, seq: ++this.seq });
    this.tell();
    return 1;
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

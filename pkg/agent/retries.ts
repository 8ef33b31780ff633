// What one identity is retrying right now, and why: the campaign (pkg/lease's onRetry), the
// runner's own loop, a warm service that does not start. A persistent fault must never look
// like plain "campaigning": each reason shows in the identity's status detail and in metrics,
// and is logged once when it begins or changes, and once when it clears (not per attempt).
import type { Logger } from 'pino';
import type { CampaignRetry } from '../lease/index.js';

/** Where a retry comes from: its kind, as metrics label it. */
export type RetrySource = 'campaign' | 'loop' | 'warm-service' | 'leader-observer';

export type Retry = CampaignRetry;

export type RetryChange = {
  source: RetrySource;
  /** The retry now in force; undefined: it cleared. */
  retry: Retry | undefined;
  previous: Retry | undefined;
};

/**
 * A reason without its figures: "deadline exceeded after 2.001s" and "after 2.003s" are one
 * reason. Compared exactly, every attempt of a timing-out call was a new reason: logged,
 * counted and passed on 60,000 times on one agent in three minutes of a login storm.
 */
export function gistOf(text: string): string {
  return text.replace(/\d+/g, '#');
}

/** Whether two reports are the same reason (attempt counts and figures may differ): no new log line. */
export function sameReason(a: Retry | undefined, b: Retry | undefined): boolean {
  if (a === undefined || b === undefined) return a === b;
  return a.what === b.what && (a.error === b.error || gistOf(a.error) === gistOf(b.error));
}

export function describeRetry(r: Retry): string {
  return (
    `retrying ${r.what}: ${r.error} (${r.attempts} attempt${r.attempts === 1 ? '' : 's'} ` +
    `since ${new Date(r.since).toISOString()})`
  );
}

export class RetryBoard {
  private readonly current = new Map<RetrySource, Retry>();

  /** `onChange` hears each new, changed or cleared reason, once. */
  constructor(private readonly onChange: (c: RetryChange) => void) {}

  report(source: RetrySource, retry: Retry | undefined): void {
    const previous = this.current.get(source);
    if (retry) this.current.set(source, retry);
    else this.current.delete(source);
    if (!sameReason(previous, retry)) this.onChange({ source, retry, previous });
  }

  get retrying(): boolean {
    return this.current.size > 0;
  }

  /** Every reason in force, for the identity's detail; undefined when nothing is retried. */
  describe(): string | undefined {
    if (this.current.size === 0) return undefined;
    return [...this.current.values()].map(describeRetry).join('; ');
  }
}

/** A fault shared by many identities is logged in full once per this window, not once per identity. */
export const SHARED_RETRY_WINDOW_MS = 60_000;

/**
 * The log of retry changes across every identity of an agent. A fault of something they
 * share (etcd slow, the view of other nodes' sessions, the change feed) begins for hundreds of
 * identities at once: the first says it, and the others within SHARED_RETRY_WINDOW_MS are
 * logged at debug (their status detail and understudy_identity_retrying still show each).
 */
export class SharedRetryLog {
  /** When each gist was last logged in full (wall ms). */
  private readonly seen = new Map<string, number>();
  private prunedAt = 0;

  constructor(private readonly wallMs: () => number) {}

  /**
   * `identity`: whose change it is. Its name is taken out of the reason's gist ("reading
   * s00042's leader key" is the same fault as "reading s00043's leader key"); left in, every
   * identity had a gist of its own, logged its own warning, and the map of gists grew with
   * the identities.
   */
  log(log: Logger, change: RetryChange, identity?: string): void {
    const shown = change.retry ?? change.previous;
    if (!shown) return;
    const what = identity ? shown.what.replaceAll(identity, '<identity>') : shown.what;
    const gist = `${change.retry ? 'retrying' : 'cleared'}\n${change.source}\n${what}\n${gistOf(shown.error)}`;
    const now = this.wallMs();
    this.prune(now);
    const at = this.seen.get(gist);
    if (at !== undefined && now - at < SHARED_RETRY_WINDOW_MS) {
      // Built only when it is written: a storm passes here thousands of times a second.
      if (log.isLevelEnabled('debug')) {
        log.debug(
          { source: change.source, what: shown.what, err: shown.error, cleared: !change.retry },
          `${change.retry ? 'retrying' : 'no longer retrying'} ${shown.what}`,
        );
      }
      return;
    }
    this.seen.set(gist, now);
    logRetryChange(log, change);
  }

  /** Forget gists older than the window, at most once per window (not at every call). */
  private prune(now: number): void {
    if (now - this.prunedAt < SHARED_RETRY_WINDOW_MS) return;
    this.prunedAt = now;
    for (const [g, t] of this.seen) if (now - t >= SHARED_RETRY_WINDOW_MS) this.seen.delete(g);
  }
}

/** The one log line of a change: a loop error is an error, other retries are warnings. */
export function logRetryChange(log: Logger, { source, retry, previous }: RetryChange): void {
  if (retry) {
    log[source === 'loop' ? 'error' : 'warn'](
      { source, what: retry.what, err: retry.error, attempts: retry.attempts },
      `retrying ${retry.what}: ${retry.error}`,
    );
  } else if (previous) {
    log.info({ source, what: previous.what }, `no longer retrying ${previous.what}`);
  }
}

/**
 * Counts the attempts of a retry loop and turns a failure into a Retry report (the first
 * failure's time is the streak's start).
 */
export class RetryStreak {
  private since: number | undefined;
  private attempts = 0;

  constructor(
    private readonly what: string,
    private readonly wallMs: () => number,
  ) {}

  failed(err: unknown): Retry {
    this.since ??= this.wallMs();
    this.attempts++;
    return {
      what: this.what,
      error: err instanceof Error ? err.message : String(err),
      since: this.since,
      attempts: this.attempts,
    };
  }

  get failures(): number {
    return this.attempts;
  }

  reset(): void {
    this.since = undefined;
    this.attempts = 0;
  }
}

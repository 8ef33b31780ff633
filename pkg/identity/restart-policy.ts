// When a crashed service is started again, and when the driver gives up on it: pure rules over
// the spec's restart policy. A crash under a term is restarted with backoff until maxAttempts
// restarts have failed; a warm standby is always started again, with the same backoff.
import type { ProcessService } from '../spec/schema.js';

export type RestartPolicy = ProcessService['restart'];

/** Delay before restart attempt `attempt` (1-based): backoffMs, doubling, capped at maxBackoffMs. */
export function backoffDelayMs(
  attempt: number,
  policy: Pick<RestartPolicy, 'backoffMs' | 'maxBackoffMs'>,
): number {
  const doublings = Math.min(Math.max(attempt - 1, 0), 30); // 2^30 × 10 ms is past any cap
  return Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** doublings);
}

/** Consecutive crashes after one more: a run of at least resetAfterMs was healthy, so it starts over. */
export function countCrash(previous: number, ranMs: number, resetAfterMs: number): number {
  return (ranMs >= resetAfterMs ? 0 : previous) + 1;
}

export type RestartDecision =
  | { action: 'restart'; attempt: number; delayMs: number }
  | { action: 'give-up'; crashes: number }
  | { action: 'term-ended' };

/**
 * maxAttempts restarts are tried; the crash after the last one gives the identity up. A crash
 * once the term may no longer act is not restarted at all: a restart would log in under a term
 * whose key may already be someone else's (S3). Nor is it a give-up: the term's end, not the
 * service, is what the runner is already handling.
 */
export function restartDecision(
  crashes: number,
  policy: RestartPolicy,
  termMayActNow = true,
): RestartDecision {
  if (!termMayActNow) return { action: 'term-ended' };
  if (crashes > policy.maxAttempts) return { action: 'give-up', crashes };
  return { action: 'restart', attempt: crashes, delayMs: backoffDelayMs(crashes, policy) };
}

export interface TermCrash {
  /** Consecutive crashes under the term before this one. */
  previous: number;
  /** How long the crashed process ran. */
  ranMs: number;
  /** May the term still act right now (LoginContext.mayAct)? */
  termMayAct: boolean;
  /** How it crashed, for the operator. */
  crash: string;
}

/** A crash under a term: the decision, the crash count it leaves, and why, in words. */
export type TermCrashDecision = RestartDecision & { crashes: number; reason: string };

/**
 * A crash after the term ended is not counted: it says nothing about the service's health (the
 * term's end may well be why it died), and counting it would bring a later give-up closer.
 */
export function decideTermCrash(c: TermCrash, policy: RestartPolicy): TermCrashDecision {
  if (!c.termMayAct) {
    return {
      action: 'term-ended',
      crashes: c.previous,
      reason: `${c.crash}; not restarted: the term has ended (its logout is on its way)`,
    };
  }
  const crashes = countCrash(c.previous, c.ranMs, policy.resetAfterMs);
  const decision = restartDecision(crashes, policy);
  if (decision.action === 'give-up') {
    return {
      ...decision,
      crashes,
      reason: `${c.crash}; gave up after ${crashes} crashes in a row (service.restart.maxAttempts ${policy.maxAttempts})`,
    };
  }
  return {
    ...decision,
    crashes,
    reason: `${c.crash}; restart ${crashes} of ${policy.maxAttempts} under the same term in ${backoffDelayMs(crashes, policy)} ms`,
  };
}

/** A warm standby that died: started again after a backoff, never given up. */
export function decideStandbyCrash(
  previous: number,
  ranMs: number,
  policy: RestartPolicy,
): { crashes: number; delayMs: number; reason: string } {
  const crashes = countCrash(previous, ranMs, policy.resetAfterMs);
  const delayMs = backoffDelayMs(crashes, policy);
  return {
    crashes,
    delayMs,
    reason: `standby crash ${crashes} in a row: starting it again in ${delayMs} ms`,
  };
}

// Giving an identity back to its old leader when a handover is cancelled or aborted, as pure
// decisions (table-tested in test/unit/workflow-rollback.test.ts).
//
// A drain is asynchronous: the agent answers once its service is out, which can be after
// the operator cancelled. An abort that only looked at the login record at that instant saw
// "still logged in", declared the old leader kept, and the agent then sat drained until its
// hold expired (up to an hour) with nobody logged in. So an abort that may race a drain is a
// short phase of its own: the workflow stays open until the old leader is back (undrain
// confirmed), provably never drained, or its term ended.

/** The old leader's drain hold outlasts the hold-off by this much (see drainHoldMs). */
export const HOLD_AFTER_HOLD_OFF_MS = 1_500;
/** The agent refuses longer holds (pkg/control/protocol.ts: drain.holdMs max). */
export const MAX_DRAIN_HOLD_MS = 3_600_000;
/** The agent refuses shorter holds (pkg/control/protocol.ts: drain.holdMs min). */
export const MIN_DRAIN_HOLD_MS = 100;

/**
 * How long the old leader stays drained without a transfer before logging back in by itself:
 * past the workflow's deadline (rounded up to a second) plus a margin, so if no controller
 * ever comes back the hold-off lapses first and the old leader then logs back in (rollback).
 */
export function drainHoldMs(deadline: number, now: number): number {
  const ms = Math.ceil((deadline - now) / 1000) * 1000 + HOLD_AFTER_HOLD_OFF_MS;
  return Math.min(MAX_DRAIN_HOLD_MS, Math.max(MIN_DRAIN_HOLD_MS, ms));
}

/** Agent states (pkg/agent/states.ts) in which a drain is under way or done but not given back. */
const DRAIN_STATES: ReadonlySet<string> = new Set(['logging-out', 'drained']);

export interface RollbackInput {
  identity: string;
  /** The term being given back. */
  from: { node: string; token: string };
  /** Token of the identity's current leader key (undefined: no leader). */
  leaderToken: string | undefined;
  /** That term's login record: false = confirmed logged out (drained); undefined = none. */
  loggedIn: boolean | undefined;
  /** The old leader's agent's last reported state for the identity under `from.token`. */
  agentState: string | undefined;
  /** When this workflow sent its drain (ms); undefined: it never did. */
  drainSentAt: number | undefined;
  /** How long a drain may take to be confirmed (controller config switchover.drainTimeoutMs). */
  drainTimeoutMs: number;
  /** When the old leader's drain hold ends by itself (ms). */
  holdEndsAt: number;
  now: number;
}

export type RollbackStep =
  /** Nothing (more) to give back: the workflow is aborted with this outcome. */
  | { kind: 'done'; outcome: string }
  /** The old leader is drained: ask it to log back in (retry on the next round if it fails). */
  | { kind: 'undrain' }
  /** A drain may still be on its way: look again on the next round. */
  | { kind: 'wait'; why: string };

export function rollbackStep(i: RollbackInput): RollbackStep {
  const { node, token } = i.from;
  if (i.leaderToken !== token) {
    return {
      kind: 'done',
      outcome: `${node}'s term ${token} ended meanwhile; ${i.identity} fails over by itself`,
    };
  }
  if (i.now >= i.holdEndsAt) {
    return {
      kind: 'done',
      outcome:
        i.loggedIn === false
          ? `${node} did not confirm the undrain; its drain hold has ended, so it logs back in by itself`
          : `${node} stays leader`,
    };
  }
  if (i.drainSentAt === undefined) {
    // Never drained by this workflow: a logout on record is someone else's doing (an
    // operator's drain), not ours to undo — and with no drain of ours, no hold ends by itself
    // to bound asking.
    return {
      kind: 'done',
      outcome:
        i.loggedIn === false
          ? `${node} is logged out, but not by this workflow: left as it is`
          : `${node} stays leader`,
    };
  }
  if (i.loggedIn === false) return { kind: 'undrain' };
  // Logged in as far as etcd shows, but the drain may be between "service stopping" and
  // "logout recorded": wait while the drain can still complete, or the agent says it is at it.
  if (i.now < i.drainSentAt + i.drainTimeoutMs) {
    return { kind: 'wait', why: `the drain sent to ${node} may still complete` };
  }
  if (i.agentState !== undefined && DRAIN_STATES.has(i.agentState)) {
    return { kind: 'wait', why: `${node} reports ${i.agentState}` };
  }
  return { kind: 'done', outcome: `${node} stays leader` };
}

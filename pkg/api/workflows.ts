// Switchover, failover and pause: the workflow document and the bodies that start one, with
// the bounds of a schedule and a deadline.
import { z } from 'zod';
import { Name } from '../lease/keys.js';

// --- workflows ----------------------------------------------------------------------------

export const WORKFLOW_STATES = [
  /** Waiting for its scheduled time (`at`). */
  'scheduled',
  'requested',
  /** The old leader was asked to log out (polite) or is being forced out (escalation). */
  'draining',
  /** The old leader is proved out: confirmed logout, or revoked and its deadline waited out. */
  'logged-out',
  /** The leader key is on the target's lease; the target is logging in. */
  'transferred',
  /** The target answers PING under the new token. */
  'logged-in',
  'done',
  'aborted',
] as const;
export const WorkflowState = z.enum(WORKFLOW_STATES);
export type WorkflowState = z.infer<typeof WorkflowState>;
export const TERMINAL_STATES: ReadonlySet<WorkflowState> = new Set(['done', 'aborted']);

export const WorkflowKind = z.enum(['switchover', 'failover', 'probe-failover', 'node-fence']);
export type WorkflowKind = z.infer<typeof WorkflowKind>;

export const Workflow = z.object({
  id: z.string(),
  identity: z.string(),
  kind: WorkflowKind,
  state: WorkflowState,
  actor: z.string(),
  reason: z.string().optional(),
  /** Node and token of the term being ended. */
  from: z.object({ node: z.string(), token: z.string() }).optional(),
  /** Node asked for; the controller picks the best healthy standby when absent. */
  target: z.string().optional(),
  /** Chosen target once known. */
  chosen: z.string().optional(),
  newToken: z.string().optional(),
  createdAt: z.string(),
  /** Scheduled start (ISO). */
  at: z.string().optional(),
  /** The workflow completes or is rolled back by this time (ISO). */
  deadline: z.string(),
  /** Escalations taken to prove the old leader out, in order. */
  escalation: z.array(z.enum(['drain', 'revoke', 'self-fence-wait', 'fence-command'])),
  /** For node-fence workflows: the node being fenced for maintenance. */
  fencingNode: z.string().optional(),
  /** Why it aborted, or a note on how it finished. */
  outcome: z.string().optional(),
  steps: z.array(z.object({ state: WorkflowState, at: z.string(), note: z.string().optional() })),
  updatedAt: z.string(),
  /** Controller that last advanced it. */
  controller: z.string(),
  /** Nodes held off the identity for the duration, and the etcd lease their keys share. */
  holdOff: z.object({ lease: z.string(), nodes: z.array(z.string()) }).optional(),
  /** When the polite logout request was sent (ISO). */
  drainSentAt: z.string().optional(),
  /** The old leader's lease was revoked at `at`; it is provably out from `until` (ISO). */
  revoked: z.object({ at: z.string(), until: z.string() }).optional(),
  /** An operator asked to cancel: it rolls back at its next step, if it still can. */
  cancelRequested: z.object({ actor: z.string(), at: z.string() }).optional(),
  /**
   * Aborting: the old leader is being given the identity back (an undrain, or waiting for a
   * drain in flight to settle) before the workflow ends as aborted. `reason` is why it aborts.
   */
  rollback: z.object({ reason: z.string(), since: z.string() }).optional(),
});
export type Workflow = z.infer<typeof Workflow>;

const IsoTime = z.iso.datetime({
  offset: true,
  message: 'must be an ISO 8601 time, e.g. 2026-11-21T03:00:00Z',
});

/**
 * How far ahead a switchover may be scheduled. A week covers "next maintenance window"; a
 * scheduled workflow occupies its identity (no other handover may start meanwhile), so a
 * typo such as 9999-12-31 would block it for good.
 */
export const MAX_SCHEDULE_AHEAD_MS = 7 * 24 * 3_600_000;
/** A scheduled time this far in the past still counts as "now" (client and controller clocks). */
export const SCHEDULE_PAST_SLACK_MS = 1_000;

/** Why `at` cannot be a switchover's scheduled time, or undefined when it can. */
export function scheduledAtProblem(at: string, now: number): string | undefined {
  const t = Date.parse(at);
  if (Number.isNaN(t)) return `at ${at} is not a time; give an ISO 8601 time such as 2026-11-21T03:00:00Z`;
  if (t < now - SCHEDULE_PAST_SLACK_MS) return `at ${at} is in the past; leave it out to switch over now`;
  if (t > now + MAX_SCHEDULE_AHEAD_MS) {
    return `at ${at} is more than 7 days ahead (latest ${new Date(now + MAX_SCHEDULE_AHEAD_MS).toISOString()}); schedule it closer, or later once it is within a week`;
  }
  return undefined;
}

/** Shortest handover deadline: a drain, a transfer and a login take a second or two. */
export const MIN_DEADLINE_MS = 2_000;
/**
 * Longest handover deadline. The old leader's drain hold and the hold-off lease both follow
 * the deadline, and the agent refuses holds over an hour (pkg/control/protocol.ts); it is also
 * far under what a Node timer can hold (2^31 − 1 ms, about 24.8 days).
 */
export const MAX_DEADLINE_MS = 3_600_000;

/** A duration field in ms, bounded, with errors that name the bound and the unit. */
function durationMs(field: string, min: number, max: number) {
  return z
    .number({ message: `${field} must be a number of milliseconds` })
    .int({ message: `${field} must be a whole number of milliseconds` })
    .min(min, { message: `${field} must be at least ${min} ms` })
    .max(max, { message: `${field} must be at most ${max} ms (${max / 60_000} min)` });
}

export const SwitchoverBody = z.strictObject({
  /** Target node; absent: the best healthy standby. */
  to: Name.optional(),
  /** Start at this time instead of now: not in the past, at most 7 days ahead. */
  at: IsoTime.refine((at) => Date.parse(at) <= Date.now() + MAX_SCHEDULE_AHEAD_MS, {
    message: 'must be at most 7 days ahead; schedule it closer',
  }).optional(),
  /** Complete or roll back within this many ms after the start (default from config). */
  deadlineMs: durationMs('deadlineMs', MIN_DEADLINE_MS, MAX_DEADLINE_MS).optional(),
  reason: z.string().min(1).max(500).optional(),
});
export type SwitchoverBody = z.infer<typeof SwitchoverBody>;

export const FailoverBody = z.strictObject({
  /** Required: a forced move names where to go. */
  to: Name,
  deadlineMs: durationMs('deadlineMs', MIN_DEADLINE_MS, MAX_DEADLINE_MS).optional(),
  reason: z.string().min(1).max(500).optional(),
});
export type FailoverBody = z.infer<typeof FailoverBody>;

export const PauseBody = z.strictObject({ reason: z.string().min(1).max(500).optional() });
export type PauseBody = z.infer<typeof PauseBody>;

/** Resume and unfence: why, for the audit record (optional; the body itself may be absent). */
export const ReasonBody = z.strictObject({ reason: z.string().min(1).max(500).optional() });
export type ReasonBody = z.infer<typeof ReasonBody>;

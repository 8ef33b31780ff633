// What the session's main thread and its renewal thread share (renewal-thread.ts).
import type { EtcdConnectOptions } from './etcd.js';
import type { FailedAttempt, RenewalTarget } from './renewer.js';

/**
 * Nice value asked for this thread: on a host whose CPUs are saturated (a login storm of many
 * agents) the scheduler runs it ahead of the other tasks of its CPU cgroup, the services
 * included (under autogroup, where every session is a group of its own, only ahead of this
 * agent's other threads: README, "Leadership and fencing"). Needs a raised RLIMIT_NICE (the
 * shipped unit's LimitNICE=-10) or CAP_SYS_NICE; without either the thread runs at the
 * process's own priority and the agent says so.
 */
export const RENEWAL_NICE = -10;

/** Milliseconds on the process-wide monotonic clock, the same in every thread. */
export function hrMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

/** Slots of the shared BigInt64Array. Each only grows, so a torn pair reads as older, never newer. */
export const SLOT = {
  /** hrMs × 1e6 at the send of the latest acknowledged renewal (0: none yet). */
  sentAt: 0,
  /** Wall-clock ms at that send. */
  sentWall: 1,
  /** hrMs × 1e6 of the main thread's latest sign of life. */
  mainTick: 2,
} as const;

export interface ThreadInput {
  connect: EtcdConnectOptions;
  boundMs: number;
  intervalMs: number;
  selfFenceMs: number;
  mainStallMs: number;
  shared: SharedArrayBuffer;
}

/** Sent once the session has its lease: what to renew, and the renewal it opened with. */
export interface ThreadBegin {
  type: 'begin';
  target: RenewalTarget;
  /** hrMs and wall ms at the send of the session's first write. */
  sentAtHr: number;
  sentWall: number;
}

export type ThreadMessage =
  /** Loaded and connected: ready to begin; at `nice`, or why its priority could not be raised. */
  | { type: 'ready'; nice?: number; priority?: string }
  | { type: 'renewed'; sentAtHr: number; sentWall: number }
  | { type: 'gone' }
  /** Renewals are failing (or stopped): why, and the attempts failed since the last acknowledged one (sentAt in hrMs). */
  | { type: 'trouble'; error: string; attempts: FailedAttempt[] };

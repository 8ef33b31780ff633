// What the session's main thread and its renewal thread share (renewal-thread.ts).
import type { EtcdConnectOptions } from './etcd.js';
import type { FailedAttempt, RenewalTarget } from './renewer.js';

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

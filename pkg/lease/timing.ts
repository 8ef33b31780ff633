// Lease timing and the self-fencing inequality.
//
// An agent's etcd lease (TTL T) is renewed every T/10. The agent measures from the *send*
// time of its last acknowledged renewal: etcd received it after it was sent, so neither
// etcd's expiry nor any other node's sighting of it can come before `sent`. At `sent + D`
// without a newer renewal the agent must stop acting and log out, and the logout must be
// finished `logoutBudget` later. Being out strictly before T has passed needs
//
//     D + logoutBudget <= T × (1 − driftMargin)
//
// where driftMargin covers clock-rate differences and timer lateness (event-loop stalls, GC).
import { z } from 'zod';
import { durationMs, durationSeconds } from '../clock/duration.js';

/**
 * etcd refuses to grant less than 1.5 × election timeout (1 s by default), rounded up: a
 * shorter request is silently raised, which would break the inequality's assumptions.
 */
export const ETCD_MIN_TTL_S = 2;

/**
 * Renewals per TTL. Ten, not etcd's customary three: the self-fence clock runs from the last
 * acknowledged renewal, and the closer that is to a fault, the more of D is left to ride it
 * out. A renewal lost in an election or stuck on a frozen member is retried at once on the
 * next endpoint.
 */
export const KEEPALIVES_PER_TTL = 10;

/**
 * Default D as a share of T. No renewal is answered while etcd elects a new raft leader:
 * measured here, answers resumed 1.2–2.3 s after the leader died (elections took up to
 * 3.5 s on a loaded machine). At T = 5 s, 0.7 T = 3.5 s covers one renewal interval plus
 * such an election, and leaves a logout budget of 0.2 T = 1 s before the must-be-out
 * instant at 0.9 T. Measured false failovers: README, "Riding out an etcd election".
 */
export const DEFAULT_SELF_FENCE_SHARE = 0.7;

/** A TTL over an hour means an hour of downtime before any failover: not a failover tool. */
export const TTL_MAX_SECONDS = 3_600;
/** T when a config file leaves it out: rides out an etcd election (README) and fails over in seconds. */
export const DEFAULT_TTL_SECONDS = 5;

/**
 * The lease timing fields, declared once: leaseTiming() validates them, and the agent's
 * config uses them as its `lease:` section (LeaseTimingSection).
 */
export const LeaseTimingInput = z.strictObject({
  /** Lease TTL in whole seconds (etcd's unit). */
  ttlSeconds: durationSeconds(ETCD_MIN_TTL_S, TTL_MAX_SECONDS),
  /** Self-fence deadline D, ms after the send time of the last acknowledged renewal (inside T). */
  selfFenceMs: durationMs(1, TTL_MAX_SECONDS * 1_000).optional(),
  /** Time the service may take to log out once told to (SIGTERM → SIGKILL → confirmed; inside T). */
  logoutBudgetMs: durationMs(1, TTL_MAX_SECONDS * 1_000).optional(),
  /** Fraction of T kept in reserve for clock drift and timer lateness. */
  driftMargin: z.number().min(0.01).max(0.5).default(0.1),
});
export type LeaseTimingInput = z.input<typeof LeaseTimingInput>;

/** The same fields as a config file's `lease:` section: T defaults, the section may be left out. */
export const LeaseTimingSection = LeaseTimingInput.extend({
  ttlSeconds: LeaseTimingInput.shape.ttlSeconds.default(DEFAULT_TTL_SECONDS),
}).prefault({});

export interface LeaseTiming {
  ttlSeconds: number;
  ttlMs: number;
  keepaliveIntervalMs: number;
  selfFenceMs: number;
  logoutBudgetMs: number;
  driftMargin: number;
  /** T × (1 − driftMargin): the latest instant (after the renewal's send) the service may still run. */
  mustBeOutByMs: number;
}

export class LeaseTimingError extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
    this.name = 'LeaseTimingError';
  }
}

/**
 * Validate and complete lease timing. Defaults: D = 0.7 T, logout budget = what remains of
 * the safe window after D. Throws LeaseTimingError naming the field and the values.
 */
export function leaseTiming(input: LeaseTimingInput, context = 'lease timing'): LeaseTiming {
  const parsed = LeaseTimingInput.safeParse(input);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.join('.') || '(root)';
    throw new LeaseTimingError(`${context}: ${field}: ${issue.message}`, field);
  }
  const { ttlSeconds, driftMargin } = parsed.data;
  const ttlMs = ttlSeconds * 1000;
  const mustBeOutByMs = Math.floor(ttlMs * (1 - driftMargin));
  const selfFenceMs = parsed.data.selfFenceMs ?? Math.floor(ttlMs * DEFAULT_SELF_FENCE_SHARE);
  const logoutBudgetMs = parsed.data.logoutBudgetMs ?? mustBeOutByMs - selfFenceMs;
  const keepaliveIntervalMs = Math.floor(ttlMs / KEEPALIVES_PER_TTL);

  if (selfFenceMs <= keepaliveIntervalMs) {
    throw new LeaseTimingError(
      `${context}: selfFenceMs (${selfFenceMs}) must exceed the keepalive interval T/${KEEPALIVES_PER_TTL} ` +
        `(${keepaliveIntervalMs} ms), or a single late keepalive would fence a healthy leader; raise selfFenceMs or ttlSeconds`,
      'selfFenceMs',
    );
  }
  if (logoutBudgetMs <= 0 || selfFenceMs + logoutBudgetMs > mustBeOutByMs) {
    throw new LeaseTimingError(
      `${context}: selfFenceMs (${selfFenceMs}) + logoutBudgetMs (${logoutBudgetMs}) = ${selfFenceMs + logoutBudgetMs} ms ` +
        `exceeds ttlSeconds × (1 − driftMargin) = ${ttlSeconds} s × ${1 - driftMargin} = ${mustBeOutByMs} ms: ` +
        `the service could still be logged in when etcd expires the lease; lower selfFenceMs or logoutBudgetMs, or raise ttlSeconds`,
      selfFenceMs > mustBeOutByMs ? 'selfFenceMs' : 'logoutBudgetMs',
    );
  }
  return { ttlSeconds, ttlMs, keepaliveIntervalMs, selfFenceMs, logoutBudgetMs, driftMargin, mustBeOutByMs };
}

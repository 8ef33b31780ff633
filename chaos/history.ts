// The history of a chaos run: one JSON object per line, appended by every observer of the run
// (the witnesses, the workload, the nemesis, watchers of etcd and of the agents' logs) and
// read back by the checker (checker.ts), during the run or from a saved file.
//
// Time: `t` is milliseconds on the host kernel's CLOCK_MONOTONIC, read with
// process.hrtime.bigint() (which is CLOCK_MONOTONIC on Linux) — never performance.now(), which
// counts from each process's own start. Containers share the host kernel's monotonic clock
// (the harness never gives them a time namespace), so a witness in a container and the
// nemesis on the host stamp one timeline; `clock` events let the checker verify that: each
// process reports its reading next to the harness's, and a skew beyond CLOCK_SKEW_MAX_MS
// makes the whole history untrustworthy, which the checker says before anything else.
import { z } from 'zod';

export const HISTORY_VERSION = 1;

/**
 * Largest difference tolerated between a process's monotonic reading and the harness's, taken
 * within the same round trip: more means the two do not share a clock (a time namespace, a
 * different host) and no interval in the history can be compared with another.
 */
export const CLOCK_SKEW_MAX_MS = 50;

const T = z.number().finite().nonnegative();
/** Fencing tokens are etcd revisions: decimal strings, since JSON numbers lose them. */
const Token = z.string().regex(/^\d+$/);
const Name = z.string().min(1).max(100);

/** The bounds the run was configured with, which the checks take theirs from. */
export const RunConfig = z.strictObject({
  kind: z.literal('config'),
  t: T,
  v: z.literal(HISTORY_VERSION),
  seed: z.number().int().optional(),
  /** The agents' lease TTL. */
  ttlMs: z.number().positive(),
  /** L1: a standby logs in within ttlMs + this after the leader's host dies. */
  failoverMarginMs: z.number().nonnegative(),
  /** L2: a workflow ends within this after its deadline (the controller's tick, a slow etcd). */
  switchoverSlackMs: z.number().nonnegative(),
  /** How late an etcd watcher may see a leader key change that an agent already acted on. */
  observeSlackMs: z.number().nonnegative(),
  /**
   * The workload's wait for a core answer: a request younger than this at the history's end
   * is in flight, not lost (a durable one may also wait out a failover: T + margin more).
   */
  requestTimeoutMs: z.number().positive().optional(),
  /** The run watched the login records: every service login must follow its term's record (S3). */
  loginRecordsObserved: z.boolean().optional(),
});
export type RunConfig = z.infer<typeof RunConfig>;

export const HistoryEvent = z.discriminatedUnion('kind', [
  RunConfig,
  /** A process's monotonic reading next to the harness's (see the file's header). */
  z.strictObject({ kind: z.literal('clock'), t: T, source: Name, reading: T }),
  /**
   * The witness service's own record: it logged in under `token`, is still logged in, logged
   * out, or its process was seen gone (`exit`, written by whoever saw it: the witness cannot).
   */
  z.strictObject({
    kind: z.literal('witness'),
    t: T,
    identity: Name,
    node: Name,
    token: Token,
    what: z.enum(['login', 'alive', 'logout', 'exit']),
  }),
  /**
   * Who answered one PING of the identity (within its window). `t` is when it was sent; `at`,
   * when each answer came: a responder holds a PING sent while its service logs in and answers
   * it once in, so the send time alone would date that answer too early.
   */
  z.strictObject({
    kind: z.literal('ping'),
    t: T,
    identity: Name,
    /** `error`: it answered that it cannot serve (its service did not answer in time). */
    responders: z.array(
      z.strictObject({ node: Name, token: Token, at: T.optional(), error: z.string().max(40).optional() }),
    ),
  }),
  /** The identity's leader key as an etcd watcher saw it change (absent node: no leader). */
  z.strictObject({
    kind: z.literal('leader'),
    t: T,
    identity: Name,
    node: Name.optional(),
    token: Token.optional(),
  }),
  /**
   * A term's login record in etcd as a watcher saw it written: `true` before its service
   * starts, `false` once it is confirmed stopped. It is how a successor that never saw the term
   * knows to wait it out.
   */
  z.strictObject({
    kind: z.literal('login-record'),
    t: T,
    identity: Name,
    node: Name,
    token: Token,
    loggedIn: z.boolean(),
  }),
  /** An agent's state change for an identity, from its log. */
  z.strictObject({
    kind: z.literal('transition'),
    t: T,
    identity: Name,
    node: Name,
    from: z.string(),
    to: z.string(),
    token: Token.optional(),
  }),
  z.strictObject({ kind: z.literal('fence'), t: T, node: Name, fenced: z.boolean() }),
  /** A controller's probe verdict on an identity's leader, as it logged it (when it changed). */
  z.strictObject({
    kind: z.literal('probe'),
    t: T,
    identity: Name,
    controller: Name,
    failures: z.number().int().nonnegative(),
    verdict: z.string().max(1_000),
  }),
  /** The workload: a request sent, and its answer (a reply naming who served it, or an error). */
  z.strictObject({
    kind: z.literal('request'),
    t: T,
    identity: Name,
    id: Name,
    what: z.enum(['send', 'reply', 'error']),
    durable: z.boolean().optional(),
    node: Name.optional(),
    token: Token.optional(),
    error: z.string().optional(),
    /**
     * The reply's serve id (pkg/identity/wire.ts, H.serve): two replies of one term with the
     * same one are one answer sent again to a second delivery of the request (answered.ts),
     * not two.
     */
    serve: z.string().max(100).optional(),
  }),
  /** A write guarded by a fencing token (a fenced write), and whether the store took it. */
  z.strictObject({ kind: z.literal('write'), t: T, identity: Name, token: Token, accepted: z.boolean() }),
  /** A workflow step; `deadline` (same clock) once it has one. */
  z.strictObject({
    kind: z.literal('workflow'),
    t: T,
    identity: Name,
    id: Name,
    state: z.string(),
    deadline: T.optional(),
  }),
  /** A fault, as the nemesis began and ended it. */
  z.strictObject({
    kind: z.literal('nemesis'),
    t: T,
    id: Name,
    /** e.g. kill, freeze, cut-etcd, cut-nats, revoke, etcd-leader, nats-restart. */
    action: Name,
    targets: z.array(Name),
    phase: z.enum(['start', 'end']),
    /**
     * On an end: when lifting it began (the end is marked once the lift returned, which for
     * a host freeze is some time after the host already runs again).
     */
    liftFrom: T.optional(),
  }),
  /** An operator's API call made by the nemesis, and what the controller answered. */
  z.strictObject({
    kind: z.literal('operator'),
    t: T,
    /** The fault it belongs to. */
    id: Name,
    call: z.string().max(200),
    /** HTTP status, or 0 when no answer came (timeout, connection refused). */
    status: z.number().int().nonnegative(),
    /** What the controller said when it refused (the problem's detail), or why no answer came. */
    detail: z.string().max(500).optional(),
  }),
]);
export type HistoryEvent = z.infer<typeof HistoryEvent>;
export type EventOf<K extends HistoryEvent['kind']> = Extract<HistoryEvent, { kind: K }>;

/** Read the monotonic clock the history uses, in milliseconds. */
export function monotonicMs(): number {
  return Number(process.hrtime.bigint()) / 1e6;
}

export class HistoryParseError extends Error {
  constructor(
    readonly line: number,
    message: string,
  ) {
    super(`history line ${line}: ${message}`);
    this.name = 'HistoryParseError';
  }
}

/** Parse a JSONL history; a bad line is an error naming the line and the field. */
export function parseHistory(text: string): HistoryEvent[] {
  const events: HistoryEvent[] = [];
  text.split('\n').forEach((raw, index) => {
    const line = raw.trim();
    if (line === '') return;
    let json: unknown;
    try {
      json = JSON.parse(line);
    } catch (err) {
      throw new HistoryParseError(index + 1, `not JSON (${(err as Error).message})`);
    }
    const parsed = HistoryEvent.safeParse(json);
    if (!parsed.success) {
      const issue = parsed.error.issues[0]!;
      throw new HistoryParseError(index + 1, `${issue.path.join('.') || 'event'}: ${issue.message}`);
    }
    events.push(parsed.data);
  });
  // Observers append as they see things: order by time, keeping each observer's own order.
  return events
    .map((e, i) => ({ e, i }))
    .sort((a, b) => a.e.t - b.e.t || a.i - b.i)
    .map(({ e }) => e);
}

// An identity's spec: what runs under the shared name, who may talk to it, and where. It
// lives in etcd (one JSON document per identity) so every node hosting the identity runs
// the same thing with the same access lists: a standby enforces them the moment it logs in.
import { z } from 'zod';
import { durationMs } from '../clock/duration.js';
import { Name } from '../lease/keys.js';

/** A NATS user nkey's public key: 'U' + 55 base32 characters. */
export const PublicNkey = z
  .string()
  .regex(/^U[A-Z2-7]{55}$/, "must be a NATS user public nkey (56 characters starting with 'U')");

// ---- durations (pkg/clock/duration.ts; re-exported for the spec's and configs' users) ----

export { TIMER_MAX_MS, formatMs, durationMs, durationSeconds } from '../clock/duration.js';
// Sensible upper bounds of spec durations, each well under TIMER_MAX_MS.
/** A restart delay longer than a minute leaves the identity down longer than a failover would. */
const RESTART_BACKOFF_MAX_MS = 60_000;
/** The cap of the doubling backoff: five minutes down is already a failed service. */
const RESTART_MAX_BACKOFF_MAX_MS = 300_000;
/** A healthy run longer than an hour says nothing more about the next crash. */
const RESTART_RESET_AFTER_MAX_MS = 3_600_000;
/** A stop must fit the logout budget, which is under the lease TTL (at most an hour). */
const STOP_TIMEOUT_MAX_MS = 60_000;
/** A service that needs more than two minutes to start cannot take over within any sane TTL. */
const START_TIMEOUT_MAX_MS = 120_000;
/** Requests older than a week are not worth answering (and JetStream keeps them on disk). */
const INBOX_MAX_AGE_MAX_MS = 7 * 86_400_000;
/** The server redelivers an unacknowledged request after this; ten minutes is a stuck handler. */
const INBOX_ACK_WAIT_MAX_MS = 600_000;
/** Probing less often than every ten minutes is not health checking. */
const PROBE_INTERVAL_MAX_MS = 600_000;
/** A PING answered after a minute proves nothing about now; longer only delays the verdict. */
const PROBE_TIMEOUT_MAX_MS = 60_000;
/** A caller waiting a minute for a reply has given up already. */
const REQUEST_TIMEOUT_MAX_MS = 60_000;
/**
 * Snapshots more often than every 10 s cost the leader a full copy of its state each time;
 * less often than daily leaves a standby a day behind, which no FIX or SMPP peer accepts.
 */
const SNAPSHOT_EVERY_MIN_MS = 10_000;
const SNAPSHOT_EVERY_MAX_MS = 86_400_000;
/** A standby looking for a newer snapshot more often than every 5 s only loads NATS. */
const REFRESH_EVERY_MIN_MS = 5_000;
/** Lag allowed before a standby is held back: a week is already a different service. */
const MAX_LAG_MAX_MS = 7 * 86_400_000;

export const Caller = z.strictObject({ name: Name, nkey: PublicNkey });
export type Caller = z.infer<typeof Caller>;

/** A blocked caller is matched by name, by key, or both (either matching blocks). */
export const BlockedCaller = z
  .strictObject({ name: Name.optional(), nkey: PublicNkey.optional() })
  .refine((b) => b.name !== undefined || b.nkey !== undefined, 'give a name, an nkey, or both');
export type BlockedCaller = z.infer<typeof BlockedCaller>;

export const AccessLists = z.strictObject({
  /** Anyone (even unsigned callers) may use the service's commands; STATUS stays for contacts. */
  open: z.boolean().default(false),
  /** Admins: the only callers allowed STATUS and admin commands; also authorized. */
  contacts: z.array(Caller).default([]),
  /** Callers allowed to use the service's commands. */
  authorized: z.array(Caller).default([]),
  /** Callers whose messages are dropped unanswered, before any handler. */
  blocked: z.array(BlockedCaller).default([]),
});
export type AccessLists = z.infer<typeof AccessLists>;

export const RestartPolicy = z.strictObject({
  /** Crashes tolerated while logged in before the node gives the identity up. */
  maxAttempts: z.number().int().min(0).max(100).default(3),
  backoffMs: durationMs(10, RESTART_BACKOFF_MAX_MS).default(200),
  maxBackoffMs: durationMs(10, RESTART_MAX_BACKOFF_MAX_MS).default(5_000),
  /** A service that ran this long counts as healthy again: its crash count starts over. */
  resetAfterMs: durationMs(1_000, RESTART_RESET_AFTER_MAX_MS).default(60_000),
});

export const ProcessService = z.strictObject({
  driver: z.literal('process'),
  /** argv of the service; argv[0] is looked up on PATH. Secrets never go here (see credential). */
  command: z.array(z.string().min(1)).min(1),
  cwd: z.string().optional(),
  env: z.record(z.string(), z.string()).default({}),
  /** warm: started while standing by and told to log in/out over the control channel (fd 3). */
  mode: z.enum(['cold', 'warm']).default('cold'),
  /** fd3: the service speaks understudy's JSON-lines channel on fd 3 (requests, login, status). */
  channel: z.enum(['none', 'fd3']).default('none'),
  /** SIGTERM, then SIGKILL after this long; must fit the node's logout budget. */
  stopTimeoutMs: durationMs(50, STOP_TIMEOUT_MAX_MS).default(1_000),
  /** A warm service must report ready this fast after start; a cold one must confirm login. */
  startTimeoutMs: durationMs(100, START_TIMEOUT_MAX_MS).default(10_000),
  restart: RestartPolicy.prefault({}),
  /**
   * The service's version, when the spec declares it. Absent, a node's version is the sha256
   * of the executable `command[0]` resolves to on that node: two nodes running different
   * builds are told apart without anyone declaring anything.
   */
  version: z.string().min(1).max(100).optional(),
});
export type ProcessService = z.infer<typeof ProcessService>;

export const NatsService = z.strictObject({
  driver: z.literal('nats-service'),
  /** Name of a handler registered with the agent (library use) or exported by `module`. */
  handler: Name,
  /** Module exporting `handlers` (a record of name → handler), loaded by cmd/agent. */
  module: z.string().optional(),
});
export type NatsService = z.infer<typeof NatsService>;

export const Credential = z.discriminatedUnion('source', [
  z.strictObject({ source: z.literal('none') }),
  /** A file on each node (e.g. provisioned by config management), read at login only. */
  z.strictObject({ source: z.literal('file'), path: z.string().min(1) }),
  /** Stored in etcd under the identity (see store.ts putCredential); read at login only. */
  z.strictObject({ source: z.literal('etcd') }),
]);
export type Credential = z.infer<typeof Credential>;

export const Inbox = z.strictObject({
  /** Requests go to a JetStream work queue; requests sent while no one is logged in wait. */
  durable: z.boolean().default(false),
  /** Oldest request kept waiting; older ones are discarded by the server. */
  maxAgeMs: durationMs(1_000, INBOX_MAX_AGE_MAX_MS).default(24 * 3_600_000),
  maxMessages: z.number().int().min(1).default(100_000),
  /** A request a leader took but did not acknowledge is offered again after this. */
  ackWaitMs: durationMs(500, INBOX_ACK_WAIT_MAX_MS).default(5_000),
  /**
   * Copies JetStream keeps of the inbox. 1 suits a single NATS server; on a NATS cluster set 3,
   * so that waiting requests survive the loss of the server holding them.
   */
  replicas: z.number().int().min(1).max(5).default(1),
});

export const Probe = z.strictObject({
  intervalMs: durationMs(100, PROBE_INTERVAL_MAX_MS).default(1_000),
  /** Wait for PING answers; its end with no answer counts as a failed probe. */
  timeoutMs: durationMs(50, PROBE_TIMEOUT_MAX_MS).default(500),
  /** Consecutive failed probes of a leader holding its lease before the controller fences it. */
  failures: z.number().int().min(1).default(3),
});

export const CandidateSettings = z.strictObject({
  priority: z.number().int().min(-1000).max(1000).default(0),
  nofailover: z.boolean().default(false),
});

/** Replaced by the node's name in state.dir. */
export const STATE_DIR_NODE = '{node}';

/** What makes a standby drifted (each compared with what the identity runs now). */
export const DriftChecks = z.strictObject({
  /** The spec revision it runs (anything in the spec, access lists included). */
  spec: z.boolean().default(true),
  /** Its access lists (contacts, authorized, blocked, open). */
  access: z.boolean().default(true),
  /** Its service version (declared, or the hash of its executable). */
  version: z.boolean().default(true),
  /** The snapshot it holds, against state.maxLagMs. */
  snapshot: z.boolean().default(true),
});
export type DriftChecks = z.infer<typeof DriftChecks>;

/**
 * The service's state: a directory the leader snapshots into the object store and standbys
 * restore, so the one that takes over carries the sequence numbers, offsets and queues of the
 * one before (docs/state.md).
 */
export const ServiceState = z.strictObject({
  /**
   * Absolute path of the state directory on every node (the service's working state; the
   * service finds it in UNDERSTUDY_STATE_DIR). `{node}` is replaced by the node's name, for
   * several agents on one host (a demo, a test).
   */
  dir: z
    .string()
    .min(2)
    .max(1000)
    .refine((p) => p.startsWith('/'), 'must be an absolute path')
    .refine((p) => !p.endsWith('/') && !p.split('/').includes('..'), 'must not end in / or contain ..')
    .refine((p) => !/[{}]/.test(p.replaceAll(STATE_DIR_NODE, '')), 'the only placeholder is {node}'),
  /** The leader snapshots this often, on demand (`understudy snapshot`), and at a clean logout. */
  snapshotEveryMs: durationMs(SNAPSHOT_EVERY_MIN_MS, SNAPSHOT_EVERY_MAX_MS).default(300_000),
  /** Snapshots kept; older ones are deleted after each new one. */
  keep: z.number().int().min(1).max(100).default(5),
  /** A standby looks for a newer snapshot this often and applies it. */
  refreshEveryMs: durationMs(REFRESH_EVERY_MIN_MS, SNAPSHOT_EVERY_MAX_MS).default(60_000),
  /**
   * How long a standby may lack the newest snapshot before it is drifted and held back from
   * elections (Patroni's maximum_lag_on_failover, in time).
   */
  maxLagMs: durationMs(REFRESH_EVERY_MIN_MS, MAX_LAG_MAX_MS).default(900_000),
  drift: DriftChecks.prefault({}),
  /**
   * When the leader is gone and every standby is drifted: `stay-down` (no one takes over until
   * one is back in sync, or an operator switches over) or `freshest` (the one holding the
   * newest snapshot is let through, and the history says so).
   */
  whenNoneInSync: z.enum(['stay-down', 'freshest']).default('stay-down'),
});
export type ServiceState = z.infer<typeof ServiceState>;

/** The state directory of `node`: the spec's path with `{node}` replaced. */
export function stateDirFor(state: Pick<ServiceState, 'dir'>, node: string): string {
  return state.dir.replaceAll(STATE_DIR_NODE, node);
}

export const IdentitySpec = z.strictObject({
  name: Name,
  description: z.string().max(500).optional(),
  service: z.discriminatedUnion('driver', [ProcessService, NatsService]),
  credential: Credential.default({ source: 'none' }),
  access: AccessLists.prefault({}),
  inbox: Inbox.prefault({}),
  probe: Probe.prefault({}),
  /** The service's state directory and its snapshots; absent, the service keeps no state. */
  state: ServiceState.optional(),
  /** Nodes allowed to host the identity, with their priority. Absent: every agent that lists it. */
  candidates: z.record(Name, CandidateSettings).optional(),
  /** Lines HELP prints after the built-in commands (the service's own commands). */
  help: z.array(z.string().max(200)).max(50).default([]),
  /** Time a request may take before the caller gets `unavailable`. */
  requestTimeoutMs: durationMs(50, REQUEST_TIMEOUT_MAX_MS).default(5_000),
});
export type IdentitySpec = z.infer<typeof IdentitySpec>;
export type IdentitySpecInput = z.input<typeof IdentitySpec>;

/** A pending authorization request: a caller who signed a request but is on no list. */
export const PendingRequest = z.strictObject({
  name: Name,
  nkey: PublicNkey,
  /** The request that caused it (first line, truncated). */
  request: z.string().max(200),
  node: z.string(),
  at: z.number(),
});
export type PendingRequest = z.infer<typeof PendingRequest>;

// The agent's configuration: who this node is, how it reaches etcd and NATS, its lease timing
// and the identities it may host. Identity specs themselves live in etcd (pkg/spec).
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { LeaseTimingError, LeaseTimingSection, leaseTiming, Name } from '../lease/index.js';
import { HISTORY_KEEP } from '../history/index.js';
import { entryProblem } from '../identity/allow.js';
import { UPTIME_RESOLUTION_MS } from '../clock/uptime.js';
import { KILL_COST_PER_SERVICE_MS } from '../identity/lifeline.js';
import { durationMs, PublicNkey } from '../spec/schema.js';
import { ConfigError, loadConfig, parseConfig, type EnvOverride } from './load.js';

// Upper bounds of agent durations (each far below what a Node timer holds: spec/schema.ts).
/** Heartbeats rarer than a minute leave the controller's view of agents stale for too long. */
const HEARTBEAT_INTERVAL_MAX_MS = 60_000;
/** Entries per allow-list: a list longer than this is no longer read by anyone. */
const ALLOW_LIST_MAX = 256;

export const Url = (schemes: string[]) =>
  z.string().refine(
    (v) => {
      try {
        return schemes.includes(new URL(v).protocol.replace(/:$/, ''));
      } catch {
        return false;
      }
    },
    `must be a URL with scheme ${schemes.join(' or ')}, e.g. ${schemes[0]}://127.0.0.1`,
  );

export const TlsFiles = z.strictObject({
  ca: z.string().optional(),
  cert: z.string().optional(),
  key: z.string().optional(),
});

export const HostPort = z
  .string()
  .regex(/^[^\s:]+:\d{1,5}$/, 'must be host:port, e.g. 127.0.0.1:9464 (the agent listens on nothing else)');

/** How agents and controllers reach etcd. */
export const EtcdSection = z.strictObject({
  /** etcd client URLs (every member: the renewals move to the next one that answers). */
  endpoints: z.array(Url(['http', 'https'])).min(1),
  /** CA, client certificate and key files, for https endpoints. */
  tls: TlsFiles.optional(),
  /** etcd user (RBAC); the password may come from UNDERSTUDY_ETCD_PASSWORD instead. */
  auth: z.strictObject({ username: z.string().min(1), password: z.string().min(1) }).optional(),
});

/** How agents and controllers reach NATS. */
export const NatsSection = z.strictObject({
  /** NATS server URLs. */
  servers: z.array(Url(['nats', 'tls'])).min(1),
  /** A NATS credentials file (JWT + nkey seed), as `nats context` uses. */
  credsFile: z.string().optional(),
  /**
   * A NATS user nkey seed file ('SU...', mode 0600): this component's NATS user when the
   * server authorizes by nkey (docs/nats-authorization.md). Not the signing key (keyFile).
   */
  nkeyFile: z.string().min(1).optional(),
  /** A NATS token (prefer nkeys: docs/nats-authorization.md). */
  token: z.string().optional(),
  /** A NATS user and password (prefer nkeys). */
  user: z.string().optional(),
  pass: z.string().optional(),
  /** CA, client certificate and key files, for tls:// servers. */
  tls: TlsFiles.optional(),
});

/** Environment overrides of the connection sections, the same for every component. */
export const CONNECTION_ENV_OVERRIDES: EnvOverride[] = [
  { env: 'UNDERSTUDY_ETCD_ENDPOINTS', path: ['etcd', 'endpoints'], parse: 'list' },
  { env: 'UNDERSTUDY_ETCD_PASSWORD', path: ['etcd', 'auth', 'password'], parse: 'string' },
  { env: 'UNDERSTUDY_NATS_SERVERS', path: ['nats', 'servers'], parse: 'list' },
  { env: 'UNDERSTUDY_NATS_TOKEN', path: ['nats', 'token'], parse: 'string' },
  { env: 'UNDERSTUDY_NATS_PASS', path: ['nats', 'pass'], parse: 'string' },
  { env: 'UNDERSTUDY_NATS_NKEY_FILE', path: ['nats', 'nkeyFile'], parse: 'string' },
];

/** An allow-list entry: an absolute plain path, a directory when it ends in '/' (allow.ts). */
const AllowEntry = z.string().superRefine((v, ctx) => {
  const problem = entryProblem(v);
  if (problem) ctx.addIssue({ code: 'custom', message: problem });
});

/**
 * What a spec's service.command, service.module, credential.path and state.dir may lead to on this
 * node (pkg/identity/allow.ts has the matching rule). Anyone who may write specs would
 * otherwise choose what this node runs: nothing is allowed unless listed here.
 */
export const AllowSection = z
  .strictObject({
    commands: z.array(AllowEntry).max(ALLOW_LIST_MAX).default([]),
    modules: z.array(AllowEntry).max(ALLOW_LIST_MAX).default([]),
    credentialPaths: z.array(AllowEntry).max(ALLOW_LIST_MAX).default([]),
    /** Directories a spec's state.dir may be (exactly, or directly inside one ending in /). */
    stateDirs: z.array(AllowEntry).max(ALLOW_LIST_MAX).default([]),
    /** Allow whatever specs name. For development only: spec writers become this node's users. */
    unrestricted: z.boolean().default(false),
  })
  .refine(
    (a) =>
      !a.unrestricted ||
      a.commands.length + a.modules.length + a.credentialPaths.length + a.stateDirs.length === 0,
    'unrestricted: true allows everything, so lists next to it would mislead: keep one or the other',
  )
  .prefault({});

/** A user or group: a name as useradd takes it, or a number. */
const Account = z
  .string()
  .regex(
    /^(?:[a-z_][a-z0-9_-]{0,31}|\d{1,10})$/,
    'must be a user or group name (lower case, e.g. understudy-svc) or a numeric id',
  );

/** Who process services run as; an agent running as root never runs them as root unasked. */
export const ServiceSection = z
  .strictObject({
    user: Account.optional(),
    /** Default: the user's primary group. */
    group: Account.optional(),
    /** Run services as root when the agent is root and no user is set (or the user is root). */
    allowRoot: z.boolean().default(false),
  })
  .refine((s) => s.group === undefined || s.user !== undefined, {
    message: 'service.group needs service.user (the group of the user services run as)',
    path: ['group'],
  })
  .prefault({});

/**
 * Identities given Prometheus series of their own by default (nine for the state, one each for
 * token, retrying, …): 500 identities is about 6,000 series per agent. Past it, only the totals
 * without an identity label count them.
 */
export const DEFAULT_AGENT_IDENTITY_SERIES_LIMIT = 500;

export const AgentConfig = z
  .strictObject({
    /** This host's name: unique among the agents, shown everywhere (in logs, list, history). */
    node: Name,
    etcd: EtcdSection,
    nats: NatsSection,
    /** Lease timing: its schema lives with the self-fencing inequality it feeds (pkg/lease/timing.ts). */
    lease: LeaseTimingSection,
    /** Default priority of this node for every identity it hosts (higher wins free elections). */
    priority: z.number().int().min(-1000).max(1000).default(0),
    /** `nofailover: true`: this node never leads (Patroni's tag of the same name). */
    tags: z.strictObject({ nofailover: z.boolean().default(false) }).prefault({}),
    /** Identities this node may host, with per-identity overrides. */
    identities: z
      .record(
        Name,
        z
          .strictObject({
            /** This node's priority for this identity (overrides `priority`). */
            priority: z.number().int().min(-1000).max(1000).optional(),
            /** Never lead this identity from this node. */
            nofailover: z.boolean().optional(),
          })
          .nullable()
          .transform((v) => v ?? {}),
      )
      .default({}),
    /**
     * Bootstrap as a cold standby of this identity (`understudy-agent --clone ID`): pull the
     * bundle `understudy clone ID --to NODE` recorded, restore its snapshot, then stand by. The
     * identity is hosted even when `identities` does not list it.
     */
    clone: Name.optional(),
    /**
     * A NATS user seed file ('SU...', mode 0600) with this node's signing key: it signs PONGs,
     * replies and credential requests, and is registered in etcd bound to the node's session.
     * Absent: a fresh key per start (trusted the same way). Set it to pin the key.
     */
    keyFile: z.string().min(1).optional(),
    /**
     * Pinned controller keys. The agent obeys a control request only when it is signed by the
     * active controller's key as registered in etcd; if this list is set, that key must also be
     * in it (for etcd users you do not fully trust). Empty: the registered key suffices.
     */
    controllerKeys: z.array(PublicNkey).default([]),
    /** A YAML file of identity specs written to etcd at start when absent there (never overwrites). */
    bootstrapSpecs: z.string().optional(),
    /** Where the agent keeps per-identity runtime files (credential files, 0700). */
    runDir: z.string().optional(),
    /**
     * Optional listener for /healthz, /metrics and the load balancers' /identities/<id>/leader;
     * the agent opens no other port.
     */
    health: z
      .strictObject({
        /** host:port; keep it on loopback or a private interface (no tokens). */
        listen: HostPort,
      })
      .optional(),
    /** How often the agent tells the controllers its state over NATS (the heartbeat). */
    heartbeatIntervalMs: durationMs(200, HEARTBEAT_INTERVAL_MAX_MS).default(2_000),
    /** Transitions kept in etcd per identity; older ones are pruned (pkg/history). */
    history: z
      .strictObject({ keepPerIdentity: z.number().int().min(10).max(1_000_000).default(HISTORY_KEEP) })
      .prefault({}),
    /** Identities with Prometheus series of their own (the first added); understudy_identities{state} counts all. */
    metrics: z
      .strictObject({
        identityLimit: z.number().int().min(0).max(100_000).default(DEFAULT_AGENT_IDENTITY_SERIES_LIMIT),
      })
      .prefault({}),
    /** Log records below this level are dropped (JSON lines on stdout; readable on a terminal). */
    logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /** What identity specs may run and read on this node; empty lists allow nothing. */
    allow: AllowSection,
    /** Who process services run as (docs/running-unprivileged.md). */
    service: ServiceSection,
  })
  .refine((c) => Object.keys(c.identities).length > 0 || c.clone !== undefined, {
    message: 'list at least one identity this node may host (or start with --clone ID)',
    path: ['identities'],
  });
export type AgentConfig = z.infer<typeof AgentConfig>;

/** The identities this node hosts: those listed, and the one it was cloned for. */
export function hostedIdentities(config: AgentConfig): AgentConfig['identities'] {
  if (config.clone === undefined || config.clone in config.identities) return config.identities;
  return { ...config.identities, [config.clone]: {} };
}

export const AGENT_ENV_OVERRIDES: EnvOverride[] = [
  { env: 'UNDERSTUDY_NODE', path: ['node'], parse: 'string' },
  ...CONNECTION_ENV_OVERRIDES,
  { env: 'UNDERSTUDY_LEASE_TTL_SECONDS', path: ['lease', 'ttlSeconds'], parse: 'int' },
  { env: 'UNDERSTUDY_PRIORITY', path: ['priority'], parse: 'int' },
  { env: 'UNDERSTUDY_NOFAILOVER', path: ['tags', 'nofailover'], parse: 'bool' },
  { env: 'UNDERSTUDY_RUN_DIR', path: ['runDir'], parse: 'string' },
  { env: 'UNDERSTUDY_HEALTH_LISTEN', path: ['health', 'listen'], parse: 'string' },
  { env: 'UNDERSTUDY_BOOTSTRAP_SPECS', path: ['bootstrapSpecs'], parse: 'string' },
  { env: 'UNDERSTUDY_LOG_LEVEL', path: ['logLevel'], parse: 'string' },
  { env: 'UNDERSTUDY_CLONE', path: ['clone'], parse: 'string' },
];

/**
 * Can every service of a session be killed by the must-be-out instant? The lifeline's reaper
 * starts killing ahead of it by what the kernel takes per service (KILL_COST_PER_SERVICE_MS),
 * so that time comes out of the logout budget, which ends at the same instant. It may take
 * all of it (the reaper then fires at the self-fence deadline D, when the agent would have
 * started logging out had it not been frozen) but never more: before D the agent is not yet
 * late. Refused, with the numbers, when the services hosted could need more.
 */
export function killBudgetProblem(identities: number, timing: { ttlMs: number; logoutBudgetMs: number }) {
  // The reaper's clock (/proc/uptime) is read twice in hundredths: its timer may be that much
  // early on top of the head start (pkg/identity/lifeline.ts, fireAt).
  const clockMs = 2 * UPTIME_RESOLUTION_MS;
  const needMs = identities * KILL_COST_PER_SERVICE_MS + clockMs;
  if (needMs <= timing.logoutBudgetMs) return undefined;
  return (
    `${identities} identities on one agent may need ${Math.round(needMs)} ms to be killed by the must-be-out instant ` +
    `(${KILL_COST_PER_SERVICE_MS} ms each, and ${clockMs} ms of clock margin), more than the ${timing.logoutBudgetMs} ms logout budget of the ${timing.ttlMs / 1000} s lease: ` +
    `spread them over more agents (at most ${Math.floor((timing.logoutBudgetMs - clockMs) / KILL_COST_PER_SERVICE_MS)} here) or raise lease.ttlSeconds`
  );
}

/** Cross-field checks the schema cannot express: the self-fence inequality of the lease. */
function checkLease(config: AgentConfig, file: string): AgentConfig {
  let timing;
  try {
    timing = leaseTiming(config.lease, 'lease');
  } catch (err) {
    if (err instanceof LeaseTimingError) {
      throw new ConfigError(file, [
        { field: `lease.${err.field}`, message: err.message.replace(/^lease: /, ''), source: file },
      ]);
    }
    throw err;
  }
  const problem = killBudgetProblem(Object.keys(hostedIdentities(config)).length, timing);
  if (problem) throw new ConfigError(file, [{ field: 'identities', message: problem, source: file }]);
  return config;
}

export async function loadAgentConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<AgentConfig> {
  return checkLease(await loadConfig(AgentConfig, file, AGENT_ENV_OVERRIDES, env), file);
}

export function parseAgentConfig(text: string, file: string, env: NodeJS.ProcessEnv = {}): AgentConfig {
  return checkLease(parseConfig(AgentConfig, text, file, AGENT_ENV_OVERRIDES, env), file);
}

export function defaultRunDir(node: string): string {
  return join(tmpdir(), `understudy-${node}`);
}

export { ConfigError };

// The controller's configuration: how it reaches etcd and NATS, where it listens, who may call
// it with which role, how it probes identities, how long a handover may take and how it
// escalates when an old leader does not confirm its logout.
import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { MAX_DEADLINE_MS, MIN_DEADLINE_MS, Role } from '../api/schema.js';
import { Name } from '../lease/index.js';
import { durationMs, durationSeconds } from '../spec/schema.js';
import { CONNECTION_ENV_OVERRIDES, EtcdSection, HostPort, NatsSection, Url } from './agent.js';
import { ConfigError, loadConfig, parseConfig, type EnvOverride } from './load.js';

// Upper bounds of controller durations (each far below what a Node timer holds: spec/schema.ts).
/**
 * Per-identity series kept by default: five gauges × 1,000 identities is a few thousand series,
 * which any Prometheus takes; at 10,000 identities the totals carry the picture.
 */
export const DEFAULT_IDENTITY_SERIES_LIMIT = 1_000;

/**
 * Enough to PING 100 identities every second (the spec's default interval), as before there
 * was a budget; a sample of 100 a second reaches each of 10,000 identities every 100 s.
 */
export const DEFAULT_MAX_PINGS_PER_SECOND = 100;

/** A controller election slower than a minute leaves switchovers and probes unattended too long. */
const CONTROLLER_TTL_MAX_SECONDS = 60;
/** An agent silent for ten minutes is dead by any measure. */
const HEARTBEAT_TIMEOUT_MAX_MS = 600_000;
/** Each step of a handover (drain, login) and a fence command get ten minutes at most. */
const STEP_TIMEOUT_MAX_MS = 600_000;

/** A bearer token, given inline (tests, demos) or, better, in a file (a mounted secret). */
const ApiToken = z
  .strictObject({
    /** Who this token is: the actor written in history for every change made with it. */
    name: z.string().min(1).max(100),
    role: Role,
    token: z.string().min(16, 'must be at least 16 characters').optional(),
    tokenFile: z.string().min(1).optional(),
  })
  .refine((t) => (t.token === undefined) !== (t.tokenFile === undefined), {
    message: 'give exactly one of token and tokenFile',
  });

export const ControllerConfig = z.strictObject({
  /** This controller's name (in logs, history and the controller election). */
  name: Name,
  etcd: EtcdSection,
  nats: NatsSection,
  /**
   * A NATS user seed file ('SU...', mode 0600) with the key this controller signs control
   * requests with; its public key goes into the controller's member record in etcd, where
   * agents look it up. Absent: a fresh key per start. Set it to pin the key (agents that list
   * trusted controller keys in their config need that).
   */
  keyFile: z.string().min(1).optional(),
  http: z.strictObject({
    listen: HostPort.default('127.0.0.1:8480'),
    /** URL clients use to reach this controller; standbys point writes at it. */
    advertiseUrl: Url(['http', 'https']).optional(),
    tls: z.strictObject({ cert: z.string().min(1), key: z.string().min(1) }).optional(),
    /**
     * Who may read /metrics: `none` (default: Prometheus scrapes without a token) or `viewer`
     * (a bearer token of any role). See docs/credentials.md, "What the metrics reveal".
     */
    metricsAuth: z.enum(['none', 'viewer']).default('none'),
    /**
     * Identities that get series of their own in /metrics (the first this many); the
     * understudy_identities totals count all of them. Each costs Prometheus five series.
     */
    metricsIdentityLimit: z.number().int().min(0).max(100_000).default(DEFAULT_IDENTITY_SERIES_LIMIT),
    /**
     * Serve the dashboard at `/` (sign in with an API token; viewers see, operators act). Off,
     * `/` answers 404 and only the API remains.
     */
    dashboard: z.boolean().default(true),
  }),
  /**
   * Credentials stored in etcd (spec credential.source: etcd) are sealed with this key and
   * released only to the node holding the identity's term (docs/credentials.md).
   */
  credentials: z
    .strictObject({
      /** 32 random bytes (or 64 hex digits), mode 0600, the same file on every controller. */
      keyFile: z.string().min(1).optional(),
    })
    .prefault({}),
  auth: z.strictObject({ tokens: z.array(ApiToken).min(1, 'configure at least one API token') }),
  /** The controller election lease (controllers elect one active with pkg/lease). */
  lease: z
    .strictObject({ ttlSeconds: durationSeconds(2, CONTROLLER_TTL_MAX_SECONDS).default(5) })
    .prefault({}),
  probes: z
    .strictObject({
      /** An agent whose heartbeat is older than this is shown dead and its standbys unhealthy. */
      heartbeatTimeoutMs: durationMs(500, HEARTBEAT_TIMEOUT_MAX_MS).default(6_000),
      /** Probe-driven failover: on (default) unless the identity is paused. */
      failover: z.boolean().default(true),
      /**
       * PINGs sent per second at most, over all identities. Under it every identity is PINGed
       * at its spec's interval; over it, identities whose leader's heartbeat vouches for its
       * service are judged from that, and the PINGs go to suspects and a rotating sample
       * (pkg/controller/probe-plan.ts). Each PING costs a signature check here.
       */
      maxPingsPerSecond: z.number().int().min(1).max(100_000).default(DEFAULT_MAX_PINGS_PER_SECOND),
    })
    .prefault({}),
  switchover: z
    .strictObject({
      /** A handover completes or is rolled back within this unless the request says otherwise. */
      deadlineMs: durationMs(MIN_DEADLINE_MS, MAX_DEADLINE_MS).default(60_000),
      /** Time given to the old leader to confirm its logout before escalating. */
      drainTimeoutMs: durationMs(500, STEP_TIMEOUT_MAX_MS).default(10_000),
      /** Time given to the target to answer PING after the transfer. */
      loginTimeoutMs: durationMs(500, STEP_TIMEOUT_MAX_MS).default(20_000),
      /**
       * The old leader hands the key to the target itself, in the transaction that records
       * its logout: no controller round between the logout and the target's login (about a
       * third of the switchover's gap). false: it only logs out and the controller moves the
       * key, as with agents that do not announce it in their heartbeats.
       */
      handOver: z.boolean().default(true),
    })
    .prefault({}),
  /** Last escalation step when an old leader cannot be proved out politely. */
  fencing: z
    .strictObject({
      /**
       * argv run with UNDERSTUDY_FENCE_NODE / _IDENTITY / _TOKEN in its environment (power
       * off, cut the switch port...). Exit 0 means the node is out.
       */
      command: z.array(z.string().min(1)).min(1).optional(),
      /** Delete the node's pod (node name = pod name) through the Kubernetes API. */
      kubernetes: z
        .strictObject({
          namespace: z.string().min(1),
          /** Default: in-cluster (KUBERNETES_SERVICE_HOST and the service account token). */
          apiServer: Url(['https', 'http']).optional(),
          tokenFile: z.string().default('/var/run/secrets/kubernetes.io/serviceaccount/token'),
          caFile: z.string().default('/var/run/secrets/kubernetes.io/serviceaccount/ca.crt'),
          /** Pod name from the node name; `{node}` is replaced. */
          podName: z.string().default('{node}'),
        })
        .optional(),
      timeoutMs: durationMs(100, STEP_TIMEOUT_MAX_MS).default(30_000),
    })
    .prefault({}),
  logLevel: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
});
export type ControllerConfig = z.infer<typeof ControllerConfig>;

export const CONTROLLER_ENV_OVERRIDES: EnvOverride[] = [
  { env: 'UNDERSTUDY_CONTROLLER_NAME', path: ['name'], parse: 'string' },
  ...CONNECTION_ENV_OVERRIDES,
  { env: 'UNDERSTUDY_HTTP_LISTEN', path: ['http', 'listen'], parse: 'string' },
  { env: 'UNDERSTUDY_HTTP_ADVERTISE_URL', path: ['http', 'advertiseUrl'], parse: 'string' },
  { env: 'UNDERSTUDY_LOG_LEVEL', path: ['logLevel'], parse: 'string' },
];

/** A token as the server checks it: the secret read from the config or its file. */
export interface ResolvedToken {
  name: string;
  role: Role;
  secret: string;
}

/** Read token files; a missing or empty one is a config error naming the field. */
export function resolveTokens(config: ControllerConfig, file: string): ResolvedToken[] {
  const problems: { field: string; message: string; source: string }[] = [];
  const tokens = config.auth.tokens.flatMap((t, i) => {
    let secret = t.token;
    if (t.tokenFile !== undefined) {
      try {
        secret = readFileSync(t.tokenFile, 'utf8').trim();
      } catch (err) {
        problems.push({
          field: `auth.tokens.${i}.tokenFile`,
          message: `cannot read ${t.tokenFile}: ${(err as Error).message}`,
          source: file,
        });
        return [];
      }
      if (secret.length < 16) {
        problems.push({
          field: `auth.tokens.${i}.tokenFile`,
          message: `${t.tokenFile} holds fewer than 16 characters; put a long random token in it`,
          source: file,
        });
        return [];
      }
    }
    return [{ name: t.name, role: t.role, secret: secret! }];
  });
  const seen = new Set<string>();
  tokens.forEach((t, i) => {
    if (seen.has(t.secret)) {
      problems.push({
        field: `auth.tokens.${i}`,
        message: 'two entries share one token: each actor needs its own, or history cannot say who acted',
        source: file,
      });
    }
    seen.add(t.secret);
  });
  const names = new Set<string>();
  config.auth.tokens.forEach((t, i) => {
    if (names.has(t.name)) {
      problems.push({
        field: `auth.tokens.${i}.name`,
        message: `two entries are named '${t.name}': history names the actor by it, and a dashboard session is bound to it; give each its own name`,
        source: file,
      });
    }
    names.add(t.name);
  });
  if (problems.length > 0) throw new ConfigError(file, problems);
  return tokens;
}

export async function loadControllerConfig(
  file: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<ControllerConfig> {
  return loadConfig(ControllerConfig, file, CONTROLLER_ENV_OVERRIDES, env);
}

export function parseControllerConfig(
  text: string,
  file: string,
  env: NodeJS.ProcessEnv = {},
): ControllerConfig {
  return parseConfig(ControllerConfig, text, file, CONTROLLER_ENV_OVERRIDES, env);
}

export { ConfigError };

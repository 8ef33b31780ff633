// Connecting to etcd and NATS from a config section, the same way for agents and
// controllers: never giving up on NATS, noticing a frozen server in seconds, logging every
// connection change.
import { readFileSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import {
  connect,
  credsAuthenticator,
  ErrorCode,
  NatsError,
  nkeyAuthenticator,
  type ConnectionOptions,
  type Status,
  type NatsConnection,
} from 'nats';
import type { Logger } from 'pino';
import { connectEtcd, type EtcdConnectOptions } from '../lease/index.js';
import { withoutUserinfo } from '../log/index.js';
import { readUserSeed } from '../natsauth/keys.js';

/** NATS pings: a dead or frozen server is noticed in ~PING_INTERVAL × MAX_PINGS_OUT, not 4 min. */
const NATS_PING_INTERVAL_MS = 2_000;
const NATS_MAX_PINGS_OUT = 2;

interface TlsFiles {
  ca?: string | undefined;
  cert?: string | undefined;
  key?: string | undefined;
}

export interface EtcdSettings {
  endpoints: string[];
  tls?: TlsFiles | undefined;
  auth?: { username: string; password: string } | undefined;
}

export interface NatsSettings {
  servers: string[];
  credsFile?: string | undefined;
  /** A NATS user seed file (0600): connect as that nkey user (docs/nats-authorization.md). */
  nkeyFile?: string | undefined;
  token?: string | undefined;
  user?: string | undefined;
  pass?: string | undefined;
  tls?: TlsFiles | undefined;
}

export function etcdFromSettings(e: EtcdSettings): Etcd3 {
  return connectEtcd(etcdConnectOptions(e));
}

/** The connection settings themselves (a session's renewal thread connects with them too). */
export function etcdConnectOptions(e: EtcdSettings): EtcdConnectOptions {
  return {
    endpoints: e.endpoints,
    ...(e.tls
      ? {
          credentials: {
            rootCertificate: readFileSync(e.tls.ca ?? ''),
            ...(e.tls.key ? { privateKey: readFileSync(e.tls.key) } : {}),
            ...(e.tls.cert ? { certChain: readFileSync(e.tls.cert) } : {}),
          },
        }
      : {}),
    ...(e.auth ? { auth: e.auth } : {}),
  };
}

/** What the server refused, from a status event of nats.js (undefined: not a refusal). */
function permissionRefusal(s: Status): { operation: string; subject: string } | undefined {
  const ctx = (s as Status & { permissionContext?: { operation: string; subject: string } })
    .permissionContext;
  return s.type === 'error' && s.data === ErrorCode.PermissionsViolation && ctx ? ctx : undefined;
}

const permissionAdvice = (r: { operation: string; subject: string }) =>
  `NATS refused ${r.operation === 'publish' ? 'a publish to' : 'a subscription to'} ${r.subject}: this NATS user lacks the permission; compare the server's authorization block with docs/nats-authorization.md`;

/** What to do about a failed connect. */
function connectAdvice(err: unknown): string {
  return err instanceof NatsError && err.code === ErrorCode.AuthorizationViolation
    ? 'the server refused our credentials: check nats.nkeyFile holds the seed of a user its authorization block lists (docs/nats-authorization.md)'
    : 'check nats.servers and that NATS runs';
}

/** How to authenticate: an nkey seed file or a creds file (one of them), or none. */
async function authenticator(n: NatsSettings): Promise<Pick<ConnectionOptions, 'authenticator'>> {
  if (n.nkeyFile !== undefined && n.credsFile !== undefined) {
    throw new Error(
      'nats.nkeyFile and nats.credsFile both set: give one (nkeyFile for a server with nkey users, credsFile for JWT accounts)',
    );
  }
  if (n.nkeyFile !== undefined)
    return { authenticator: nkeyAuthenticator(await readUserSeed(n.nkeyFile, 'nats.nkeyFile')) };
  if (n.credsFile !== undefined) return { authenticator: credsAuthenticator(readFileSync(n.credsFile)) };
  return {};
}

export async function connectNats(n: NatsSettings, name: string, logger: Logger): Promise<NatsConnection> {
  const options: ConnectionOptions = {
    servers: n.servers,
    name,
    // Never give up: agents and controllers outlive NATS restarts (the default closes after 10 attempts).
    maxReconnectAttempts: -1,
    reconnectTimeWait: 500,
    pingInterval: NATS_PING_INTERVAL_MS,
    maxPingOut: NATS_MAX_PINGS_OUT,
    ...(n.token ? { token: n.token } : {}),
    ...(n.user ? { user: n.user, pass: n.pass } : {}),
    ...(await authenticator(n)),
    ...(n.tls
      ? {
          tls: {
            ...(n.tls.ca ? { caFile: n.tls.ca } : {}),
            ...(n.tls.cert ? { certFile: n.tls.cert } : {}),
            ...(n.tls.key ? { keyFile: n.tls.key } : {}),
          },
        }
      : {}),
  };
  let nc: NatsConnection;
  try {
    nc = await connect(options);
  } catch (err) {
    throw new Error(
      `cannot connect to NATS at ${n.servers.map(withoutUserinfo).join(', ')}: ${withoutUserinfo((err as Error).message)}; ${connectAdvice(err)}`,
      { cause: err },
    );
  }
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'pingTimer') continue;
      const refused = permissionRefusal(s);
      if (refused !== undefined) {
        // The server refused one of our publishes or subscriptions: a server config that lacks
        // an entry for this role, or a bug. Either way something will not work: an error line.
        logger.error({ nats: 'permissions-violation', ...refused }, permissionAdvice(refused));
        continue;
      }
      const level =
        s.type === 'disconnect' || s.type === 'error' || s.type === 'staleConnection' ? 'warn' : 'info';
      logger[level](
        { nats: s.type, data: typeof s.data === 'string' ? withoutUserinfo(s.data) : undefined },
        `NATS ${s.type}`,
      );
    }
  })();
  return nc;
}

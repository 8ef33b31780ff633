// Connecting to etcd and NATS from a config section, the same way for agents and
// controllers: never giving up on NATS, noticing a frozen server in seconds, logging every
// connection change.
import { readFileSync } from 'node:fs';
import type { Etcd3 } from 'etcd3';
import { connect, credsAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { connectEtcd } from '../lease/index.js';
import { withoutUserinfo } from '../log/index.js';

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
  token?: string | undefined;
  user?: string | undefined;
  pass?: string | undefined;
  tls?: TlsFiles | undefined;
}

export function etcdFromSettings(e: EtcdSettings): Etcd3 {
  return connectEtcd({
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
  });
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
    ...(n.credsFile ? { authenticator: credsAuthenticator(readFileSync(n.credsFile)) } : {}),
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
      `cannot connect to NATS at ${n.servers.map(withoutUserinfo).join(', ')}: ${withoutUserinfo((err as Error).message)}; check nats.servers and that NATS runs`,
      { cause: err },
    );
  }
  void (async () => {
    for await (const s of nc.status()) {
      if (s.type === 'pingTimer') continue;
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

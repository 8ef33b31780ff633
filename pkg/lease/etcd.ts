// The etcd client as pkg/lease needs it: bounded calls, no hidden circuit breaker.
import { ExponentialBackoff, handleWhen, noop, retry, type IBackoff } from 'cockatiel';
import { ClientClosedError, Etcd3, EtcdLeaseInvalidError, isRecoverableError, type IOptions } from 'etcd3';
import { CallSlots } from './call-slots.js';

/**
 * gRPC keepalive on the channel: a frozen (not dead) etcd becomes visible to watches and
 * streams in ~6 s instead of never. 5 s is the least etcd accepts by default.
 */
const GRPC_KEEPALIVE_TIME_MS = 5_000;
const GRPC_KEEPALIVE_TIMEOUT_MS = 1_000;

const GRPC_OPTIONS = {
  'grpc.keepalive_time_ms': GRPC_KEEPALIVE_TIME_MS,
  'grpc.keepalive_timeout_ms': GRPC_KEEPALIVE_TIMEOUT_MS,
  // Only while calls or streams are open (watches, keepalives): etcd counts idle pings as
  // abuse and makes the client back off to 10 s.
  'grpc.keepalive_permit_without_calls': 0,
};

export interface EtcdConnectOptions {
  endpoints: string[];
  credentials?: IOptions['credentials'];
  auth?: IOptions['auth'];
}

/**
 * Unary calls one client has at etcd at once; more wait their turn in the client, in order.
 * Unbounded, 10 agents of 2,000 identities each kept thousands of calls queued at an etcd
 * sharing two cores with them: most passed their 2 s deadline there, and each timed-out call
 * cost both ends work for nothing (the agents spent a tenth of their time cancelling streams)
 * and was retried. A call that waits here past its deadline fails without reaching etcd.
 * Generous for a failover of hundreds of identities onto one agent (32 logins in flight, a
 * few calls each). Streams (watches, the renewal thread's keepalives) are not counted.
 */
export const ETCD_CALLS_IN_FLIGHT = 64;

/** Each client's bound on calls in flight, to see how many run and wait (metrics). */
const CALL_SLOTS = new WeakMap<Etcd3, CallSlots>();

/**
 * The longest wait between attempts to re-establish watches after etcd was lost. The library's
 * default backoff grows to 30 s, so after a whole-cluster outage of ten seconds a standby (or a
 * controller) learned of the new leader keys some ten seconds late, and a vacated key that late
 * is a failover that late. The price is one reconnection attempt per second per client while
 * etcd is down.
 */
export const WATCH_RETRY_MAX_MS = 1_000;
const WATCH_RETRY_FIRST_MS = 100;

/** Calls of `client` at etcd now and waiting for a slot (undefined for a client not made here). */
export function etcdCalls(client: Etcd3): { running: number; waiting: number } | undefined {
  return CALL_SLOTS.get(client)?.stats;
}

/**
 * A client whose failures are visible: the library's per-host circuit breaker would refuse
 * every call for 5 s after one missed deadline (seen during a raft re-election), which is
 * longer than a self-fence deadline. Calls are retried on another endpoint instead, within
 * the caller's deadline, and at most ETCD_CALLS_IN_FLIGHT are at etcd at once.
 */
export function connectEtcd(opts: EtcdConnectOptions): Etcd3 {
  const grpcOptions = GRPC_OPTIONS;
  const slots = new CallSlots(ETCD_CALLS_IN_FLIGHT, ETCD_CALL_MS);
  const retries = retry(handleWhen(isRecoverableError), {
    maxAttempts: opts.endpoints.length > 1 ? 2 : 0,
  });
  // The library only calls execute() on its global policy.
  const global = {
    execute: <T>(fn: (context: unknown) => PromiseLike<T> | T) => slots.run(() => retries.execute(fn)),
  } as unknown as typeof retries;
  const client = new Etcd3({
    hosts: opts.endpoints,
    credentials: opts.credentials,
    auth: opts.auth,
    grpcOptions,
    faultHandling: {
      host: () => noop,
      global,
      // The library's type asks for a backoff step, but it only calls next() on it, as on its
      // own default (a factory like this one).
      watchBackoff: new ExponentialBackoff({
        initialDelay: WATCH_RETRY_FIRST_MS,
        maxDelay: WATCH_RETRY_MAX_MS,
      }) as unknown as IBackoff<unknown>,
    },
  });
  CALL_SLOTS.set(client, slots);
  const perEndpoint = perEndpointClients(opts);
  RENEWAL_CLIENTS.set(client, perEndpoint);
  const closeMain = client.close.bind(client);
  client.close = () => {
    for (const c of perEndpoint) c.close();
    closeMain();
  };
  return client;
}

const RENEWAL_CLIENTS = new WeakMap<Etcd3, Etcd3[]>();

/**
 * A renewal channel's options: connections of its own (a renewal never waits behind the
 * watches' traffic), never dropped for idleness (grpc-js forgets an idle channel's connection
 * after 30 min, and the first renewal sent to that endpoint after a failover between members
 * would wait for a DNS lookup and a handshake), and a dead member retried at least every
 * second once it is back (grpc-js's reconnect backoff otherwise grows to two minutes).
 */
const RENEWAL_GRPC_OPTIONS = {
  ...GRPC_OPTIONS,
  'grpc.use_local_subchannel_pool': 1,
  'grpc.client_idle_timeout_ms': 2_147_483_647, // the largest a Node timer takes
  'grpc.max_reconnect_backoff_ms': 1_000,
};

/**
 * One client per endpoint, with connections of its own, for a session's renewals: the
 * session picks the endpoint itself and moves on when one does not answer. Its connections
 * are kept (keepConnections): see there why.
 */
export function perEndpointClients(opts: EtcdConnectOptions): Etcd3[] {
  return opts.endpoints.map((endpoint) =>
    keepConnections(
      new Etcd3({
        hosts: [endpoint],
        credentials: opts.credentials,
        auth: opts.auth,
        grpcOptions: RENEWAL_GRPC_OPTIONS,
        faultHandling: { host: () => noop, global: noop },
      }),
    ),
  );
}

/** The library's per-host record of its gRPC channels (etcd3 1.x's connection-pool.js). */
interface LibraryHost {
  closed: boolean;
  resetAllServices(): void;
  close(): void;
}

/**
 * Stop the library from tearing down `client`'s channels on every failed or cancelled call:
 * it does so on any deadline, on UNAVAILABLE and even on the cancel that ends each keepalive
 * stream, so every renewal opened fresh channels, each waiting for a DNS lookup of the
 * member's name. Node runs those lookups on libuv's four shared threads; when an etcd
 * member died its name took 5 s to fail in Docker's DNS, a few such lookups (the watches'
 * reconnections, ours) held all four, and renewals to the members still alive waited behind
 * them until the holder fenced itself: a healthy leader thrown out by an ordinary raft
 * election. grpc-js reconnects (and resolves again) a channel whose connection broke by
 * itself, so kept channels to live members never wait for DNS. close() still closes them.
 */
export function keepConnections(client: Etcd3): Etcd3 {
  const hosts = (client as unknown as { pool?: { hosts?: unknown } }).pool?.hosts;
  const valid =
    Array.isArray(hosts) &&
    hosts.every(
      (h: Partial<LibraryHost>) => typeof h?.resetAllServices === 'function' && typeof h.close === 'function',
    );
  if (!valid) {
    throw new Error(
      "etcd3's connection pool no longer has the shape understudy relies on (pool.hosts[].resetAllServices): " +
        'pin etcd3 to the version in package-lock.json',
    );
  }
  for (const host of hosts as LibraryHost[]) {
    const reset = host.resetAllServices.bind(host);
    host.resetAllServices = () => undefined;
    host.close = () => {
      reset();
      host.closed = true;
    };
  }
  return client;
}

/** The clients a session renews through: one per endpoint when made by connectEtcd. */
export function renewalClients(client: Etcd3): Etcd3[] {
  return RENEWAL_CLIENTS.get(client) ?? [client];
}

/**
 * The deadline of one ordinary etcd call (a read, a transaction, a lease grant or revoke).
 * Long enough to ride out a raft election on a healthy cluster (about 1 s with etcd's
 * defaults) plus one retry on another endpoint, short enough that a loop which cannot reach
 * etcd says so within a couple of seconds. Renewals use their own, shorter bound (T/10).
 */
export const ETCD_CALL_MS = 2_000;

/** Call options with an absolute deadline `ms` from now (shared by the library's retries). */
export function within(ms: number): { deadline: Date } {
  return { deadline: new Date(Date.now() + ms) };
}

/**
 * etcd no longer has the lease (expired or revoked). The library's error classes leave
 * `name` as "Error", so test the class, never the name.
 */
export function isLeaseGone(err: unknown): boolean {
  return err instanceof EtcdLeaseInvalidError;
}

/** The client was closed: it will never answer again. */
export function isClientClosed(err: unknown): boolean {
  return err instanceof ClientClosedError || /client was already closed/.test((err as Error)?.message ?? '');
}

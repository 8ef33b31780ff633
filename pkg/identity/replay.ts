// Has this signed request been acted on before? One answer for every leader of an identity:
// the nonce is recorded in a JetStream key-value bucket shared by all agents before the
// request is acted on, so a request captured and replayed to the next leader after a
// failover is refused there too. An in-memory cache answers first (no round trip for the
// common replay, and it keeps working between a KV refusal and the next request).
//
// Only callers the access lists name (contacts, authorized callers) go through here: their
// signature is what grants them something, so only their replays matter, and an
// unauthenticated or unlisted flood cannot fill the cache and push honest callers out.
import type { KV, NatsConnection } from 'nats';
import { CLOCK_WINDOW_MS, FUTURE_SKEW_MS, REPLAY_CACHE_MAX_ENTRIES } from './authenticator.js';

/** The shared replay bucket (one for every identity; keys start with the identity). */
export const REPLAY_BUCKET = 'UNDERSTUDY_REPLAY';
/**
 * How long a nonce must be remembered after it was first seen: a request is accepted while its
 * signed time is at most FUTURE_SKEW_MS ahead of now and at most CLOCK_WINDOW_MS behind, so one
 * that arrived at `a` may still be accepted until a + FUTURE_SKEW_MS + CLOCK_WINDOW_MS. The
 * bucket's TTL (max age, counted from the write) is this.
 */
export const REPLAY_MEMORY_MS = CLOCK_WINDOW_MS + FUTURE_SKEW_MS;
/** Bound on one KV write: a slow NATS refuses the request (retryable) rather than holding it. */
const REPLAY_STORE_TIMEOUT_MS = 2_000;

/** Where nonces are recorded across leaders. */
export interface ReplayStore {
  /**
   * Record `value` under `key` unless present: 'recorded', or the value already there. Throws
   * when the store cannot say (then nothing may be accepted).
   */
  record(key: string, value: string): Promise<'recorded' | { existing: string }>;
}

export type Admission = { ok: true } | { ok: false; code: 'unauthenticated' | 'unavailable'; reason: string };

export interface SignedRequest {
  identity: string;
  key: string;
  nonce: string;
  signedAt: number;
}

/**
 * A core request is acted on once. A durable request may be delivered again by JetStream
 * (the leader that took it died before its ack): the same stored message (same stream
 * sequence) is a redelivery and passes; a copy stored again under another sequence is a replay.
 */
export type Arrival = { mode: 'core'; now: number } | { mode: 'durable'; seq: number };

const recordValue = (a: Arrival) => (a.mode === 'core' ? 'core' : `durable ${a.seq}`);

/** The (key, nonce) pairs seen within the window, bounded in memory (see REPLAY_CACHE_MAX_ENTRIES). */
class MemoryCache {
  private readonly seen = new Map<string, { signedAt: number; value: string }>();
  private clock = 0;
  /** Every request signed at or before this has been forgotten: it can no longer be admitted. */
  forgottenUpTo = -Infinity;

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries: number,
  ) {}

  get size(): number {
    return this.seen.size;
  }

  get(entry: string): string | undefined {
    return this.seen.get(entry)?.value;
  }

  add(entry: string, value: string, signedAt: number, now: number): void {
    this.clock = Math.max(this.clock, now);
    this.seen.set(entry, { signedAt, value });
    // Arrival order approximates signed-time order; an entry that expires out of order waits
    // for the head, which only delays freeing it.
    for (const [e, { signedAt: at }] of this.seen) {
      const expired = at < this.clock - this.windowMs;
      if (!expired && this.seen.size <= this.maxEntries) break;
      this.seen.delete(e);
      this.forgottenUpTo = Math.max(this.forgottenUpTo, at);
    }
  }
}

/** The replay rule, given what the memory or the store already holds for a nonce. Pure. */
export function replayVerdict(existing: string | undefined, arrival: Arrival, nonce: string): Admission {
  if (existing === undefined) return { ok: true };
  if (arrival.mode === 'durable' && existing === recordValue(arrival)) return { ok: true };
  return {
    ok: false,
    code: 'unauthenticated',
    reason: `replayed request: this key already used nonce '${nonce}'; sign every request afresh`,
  };
}

export class ReplayGuard {
  private readonly memory: MemoryCache;

  constructor(
    private readonly store: ReplayStore | undefined,
    opts: { clockWindowMs?: number; maxEntries?: number } = {},
  ) {
    this.memory = new MemoryCache(
      opts.clockWindowMs ?? CLOCK_WINDOW_MS,
      opts.maxEntries ?? REPLAY_CACHE_MAX_ENTRIES,
    );
  }

  /** Nonces remembered in memory (for metrics and tests). */
  get size(): number {
    return this.memory.size;
  }

  /**
   * Admit a verified request once: refused when its nonce was seen (here or by any leader),
   * or when the shared store cannot be asked (refuse, not accept: a replay must never pass
   * because NATS was slow). Records the nonce before returning ok, so the caller acts after.
   */
  async admit(req: SignedRequest, arrival: Arrival): Promise<Admission> {
    const entry = `${req.identity}.${req.key}.${req.nonce}`;
    const value = recordValue(arrival);
    const local = replayVerdict(this.memory.get(entry), arrival, req.nonce);
    if (!local.ok) return local;
    if (arrival.mode === 'core' && req.signedAt <= this.memory.forgottenUpTo) {
      return {
        ok: false,
        code: 'unauthenticated',
        reason:
          'request was signed too long ago for this node to rule out a replay; sign it again and resend',
      };
    }
    if (this.store !== undefined) {
      let result: 'recorded' | { existing: string };
      try {
        result = await this.store.record(entry, value);
      } catch (err) {
        return {
          ok: false,
          code: 'unavailable',
          reason: `cannot check this request against the shared replay cache (${(err as Error).message}); nothing was done, retry in a moment`,
        };
      }
      if (result !== 'recorded') {
        const shared = replayVerdict(result.existing, arrival, req.nonce);
        if (!shared.ok) return shared;
      }
    }
    // Durable requests can be old (they waited in the inbox): only core ones use the memory's
    // signed-time expiry, which an old durable request would push forward for nothing.
    if (arrival.mode === 'core') this.memory.add(entry, value, req.signedAt, arrival.now);
    return { ok: true };
  }
}

/** Shared stores per connection: every identity of an agent uses one bucket handle. */
const stores = new WeakMap<NatsConnection, Promise<KV>>();

async function openBucket(nc: NatsConnection): Promise<KV> {
  const kv = await nc.jetstream().views.kv(REPLAY_BUCKET, { ttl: REPLAY_MEMORY_MS, history: 1 });
  const ttl = (await kv.status()).ttl;
  if (ttl !== 0 && ttl < REPLAY_MEMORY_MS) {
    throw new Error(
      `the KV bucket ${REPLAY_BUCKET} forgets nonces after ${ttl} ms, sooner than the ${REPLAY_MEMORY_MS} ms a replay stays possible; ` +
        `delete it (nats kv del ${REPLAY_BUCKET}) and let the agents create it again`,
    );
  }
  return kv;
}

/** The JetStream KV replay store on `nc` (bucket created on first use, TTL REPLAY_MEMORY_MS). */
export function natsReplayStore(nc: NatsConnection): ReplayStore {
  const bucket = async () => {
    let p = stores.get(nc);
    if (p === undefined) {
      p = openBucket(nc);
      stores.set(nc, p);
      // A failed open is retried at the next request, not cached.
      p.catch(() => stores.delete(nc));
    }
    return p;
  };
  return {
    async record(key, value) {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`no answer from JetStream within ${REPLAY_STORE_TIMEOUT_MS} ms`)),
          REPLAY_STORE_TIMEOUT_MS,
        );
      });
      try {
        return await Promise.race([
          (async () => {
            const kv = await bucket();
            try {
              await kv.create(key, new TextEncoder().encode(value));
              return 'recorded' as const;
            } catch (err) {
              // create() fails when the key exists; anything else (no JetStream) is rethrown.
              const current = await kv.get(key);
              if (current === null || current.operation !== 'PUT') throw err;
              return { existing: current.string() };
            }
          })(),
          timeout,
        ]);
      } finally {
        clearTimeout(timer);
      }
    },
  };
}

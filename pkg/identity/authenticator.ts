// Who signed a request, proven: checks the five signature headers, the clock window and the
// replay cache, then the ed25519 signature over the canonical payload (request-signing.ts).
// Pure logic apart from the replay cache each authenticator keeps.
import { NAME_PATTERN } from '../lease/keys.js';
import { isUserPublicKey, verifySignature } from '../keys/nkey.js';
import { canonicalPayload, NONCE_PATTERN } from './request-signing.js';
import { headers as H } from './wire.js';

/**
 * How far a request's signed time may be from the verifier's clock, either way. Hosts running
 * NTP agree to well under a second; 30 s also covers a laptop with a sloppy clock and a slow
 * network. The window is also how long a captured request stays replayable, hence how long the
 * replay cache must remember each nonce: wider costs memory, narrower refuses honest callers.
 */
export const CLOCK_WINDOW_MS = 30_000;

/**
 * Most (key, nonce) pairs remembered at once. An entry costs ~250 bytes, so this caps the cache
 * near 12 MB; an entry is kept ~30-60 s, so it absorbs over 800 signed requests per second, far
 * above what one identity serves. Beyond it the oldest entries are forgotten and the effective
 * window shrinks (see ReplayCache): honest requests may be refused in a flood, replays never pass.
 */
export const REPLAY_CACHE_MAX_ENTRIES = 50_000;

/**
 * A durable request may wait in the inbox for hours (handover, nobody logged in), so it is not
 * checked against the replay cache: its nonce must equal its Nats-Msg-Id, and JetStream drops a
 * re-published copy with the same id within the stream's duplicate window. That window must be
 * longer than this (a copy stored later than that is outside the clock window). JetStream's
 * default, 2 minutes, satisfies it.
 */
export const MIN_INBOX_DUPLICATE_WINDOW_MS = 2 * CLOCK_WINDOW_MS;

const TIME_PATTERN = /^(0|[1-9][0-9]{0,15})$/;
/** An ed25519 signature is 64 bytes: 86 base64url characters without padding. */
const SIGNATURE_PATTERN = /^[A-Za-z0-9_-]{86}$/;

export type AuthResult =
  | { kind: 'anonymous' }
  | { kind: 'verified'; name: string; key: string }
  | { kind: 'invalid'; reason: string };

/** Header lookup; NATS MsgHdrs.get returns '' for a missing header, which counts as absent. */
export type HeaderLookup = (name: string) => string | undefined;

const read = (headers: HeaderLookup, name: string) => {
  const v = headers(name);
  return v === undefined || v === '' ? undefined : v;
};

/** The name and key a request claims, signed or not: enough to drop a blocked caller unheard. */
export function claimedCaller(headers: HeaderLookup): { name?: string; key?: string } {
  const name = read(headers, H.caller);
  const key = read(headers, H.key);
  return { ...(name !== undefined && { name }), ...(key !== undefined && { key }) };
}

/**
 * The (key, nonce) pairs seen within the clock window. Memory is bounded by `maxEntries`;
 * whenever an entry leaves (expired or evicted), `forgottenUpTo` rises to its signed time and
 * any request signed at or before that is refused: a replay of a forgotten nonce can never pass.
 * Pruning follows the highest `now` seen, so a clock stepping back cannot revive a nonce.
 */
class ReplayCache {
  private readonly seen = new Map<string, number>();
  private clock = 0;
  forgottenUpTo = -Infinity;

  constructor(
    private readonly windowMs: number,
    private readonly maxEntries: number,
  ) {}

  get size(): number {
    return this.seen.size;
  }

  has(key: string, nonce: string): boolean {
    return this.seen.has(`${key} ${nonce}`);
  }

  add(key: string, nonce: string, signedAt: number, now: number): void {
    this.clock = Math.max(this.clock, now);
    this.seen.set(`${key} ${nonce}`, signedAt);
    // Arrival order approximates signed-time order; an entry that expires out of order waits
    // for the head, which only delays freeing it.
    for (const [entry, at] of this.seen) {
      const expired = at < this.clock - this.windowMs;
      if (!expired && this.seen.size <= this.maxEntries) break;
      this.seen.delete(entry);
      this.forgottenUpTo = Math.max(this.forgottenUpTo, at);
    }
  }
}

export interface AuthenticateInput {
  /** The identity this node answers for (not taken from the request). */
  identity: string;
  headers: HeaderLookup;
  body: Uint8Array | string;
  /** When the request arrived (default Date.now()). */
  now?: number;
  /**
   * Set for a request taken from the durable inbox: `storedAtMs` is when JetStream stored it
   * (its server timestamp, which the sender cannot set) and replaces `now` for the clock
   * window, so a request that waited through a handover is still accepted. `messageId` is its
   * Nats-Msg-Id; the nonce must equal it (see MIN_INBOX_DUPLICATE_WINDOW_MS).
   */
  durable?: { storedAtMs: number; messageId: string };
}

/**
 * Verifies request signatures. Keep one per identity for core requests (its replay cache is
 * per instance: a nonce seen by one node is unknown to the next leader, which a replay within
 * the clock window across a failover could exploit; durable requests do not have that gap).
 */
export class RequestAuthenticator {
  private readonly replay: ReplayCache;
  readonly clockWindowMs: number;

  constructor(opts: { clockWindowMs?: number; maxReplayEntries?: number } = {}) {
    this.clockWindowMs = opts.clockWindowMs ?? CLOCK_WINDOW_MS;
    this.replay = new ReplayCache(this.clockWindowMs, opts.maxReplayEntries ?? REPLAY_CACHE_MAX_ENTRIES);
  }

  /** Nonces currently remembered (for metrics and tests). */
  get replayCacheSize(): number {
    return this.replay.size;
  }

  authenticate(input: AuthenticateInput): AuthResult {
    const names = [H.caller, H.key, H.time, H.nonce, H.signature] as const;
    const values = names.map((n) => read(input.headers, n));
    if (values.every((v) => v === undefined)) return { kind: 'anonymous' };
    const missing = names.filter((_, i) => values[i] === undefined);
    if (missing.length > 0) {
      return invalid(
        `request is partly signed (missing ${missing.join(', ')}); send all five signature headers (signRequest) or none`,
      );
    }
    const [caller, key, time, nonce, signature] = values as string[] as [
      string,
      string,
      string,
      string,
      string,
    ];

    if (!NAME_PATTERN.test(caller)) return invalid(`${H.caller} '${caller}' is not a valid caller name`);
    if (!isUserPublicKey(key))
      return invalid(`${H.key} is not a NATS user public nkey ('U' + 55 characters)`);
    if (!TIME_PATTERN.test(time))
      return invalid(`${H.time} must be milliseconds since the epoch, in decimal`);
    if (!NONCE_PATTERN.test(nonce)) return invalid(`${H.nonce} must be 8-64 characters of [A-Za-z0-9_-]`);
    if (!SIGNATURE_PATTERN.test(signature))
      return invalid(`${H.signature} must be a base64url ed25519 signature`);

    const signedAt = Number(time);
    const now = input.durable?.storedAtMs ?? input.now ?? Date.now();
    const skew = signedAt - now;
    if (Math.abs(skew) > this.clockWindowMs) {
      const seconds = Math.round(Math.abs(skew) / 1000);
      return invalid(
        `request time is ${seconds} s ${skew > 0 ? 'ahead of' : 'behind'} this node's clock (allowed ±${this.clockWindowMs / 1000} s); ` +
          `sync the caller's clock (NTP) and sign the request again`,
      );
    }

    if (input.durable !== undefined) {
      if (nonce !== input.durable.messageId) {
        return invalid(
          `a durable request's ${H.nonce} must equal its message id; send it with IdentityClient.send`,
        );
      }
    } else {
      if (this.replay.has(key, nonce)) {
        return invalid(`replayed request: this key already used nonce '${nonce}'; sign every request afresh`);
      }
      if (signedAt <= this.replay.forgottenUpTo) {
        return invalid(
          `request was signed too long ago for this node to rule out a replay; sign it again and resend`,
        );
      }
    }

    const payload = canonicalPayload({
      identity: input.identity,
      caller,
      key,
      time,
      nonce,
      body: input.body,
    });
    if (!verifySignature(key, payload, Buffer.from(signature, 'base64url'))) {
      return invalid(
        `signature does not verify; sign the exact body sent, for identity '${input.identity}' as '${caller}', with the seed of ${key}`,
      );
    }
    if (input.durable === undefined) this.replay.add(key, nonce, signedAt, now);
    return { kind: 'verified', name: caller, key };
  }
}

const invalid = (reason: string): AuthResult => ({ kind: 'invalid', reason });

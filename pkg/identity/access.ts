// Who is calling an identity, and what may they do. Pure logic: the agent feeds it the headers
// and body of each request before any handler sees the message (DESIGN "Login": access lists
// are enforced before a handler sees a message).
//
// Callers sign each request with their NATS user nkey (ed25519). The signed bytes are the
// canonical payload, seven lines joined by '\n' with no trailing newline:
//
//   understudy-request-v1
//   <identity>                the identity addressed: a request signed for one identity fails on another
//   <caller name>             Understudy-Caller
//   <public key>              Understudy-Key (the caller's 'U...' public nkey)
//   <time ms>                 Understudy-Time, decimal milliseconds since the epoch, as sent
//   <nonce>                   Understudy-Nonce, 8-64 characters of [A-Za-z0-9_-]
//   <sha256 hex of body>      lowercase hex digest of the exact body bytes sent
//
// The signature travels base64url-encoded (no padding) in Understudy-Signature.
import {
  createHash,
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign as ed25519Sign,
  verify as ed25519Verify,
  type KeyObject,
} from 'node:crypto';
import { NAME_PATTERN } from '../lease/keys.js';
import type { AccessLists } from '../spec/schema.js';
import { CONTACT_VERBS, headers as H, OPEN_VERBS, type ErrorCode } from './wire.js';

export const SIGNATURE_VERSION = 'understudy-request-v1';

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

const NONCE_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
const PUBLIC_NKEY_PATTERN = /^U[A-Z2-7]{55}$/;
const TIME_PATTERN = /^(0|[1-9][0-9]{0,15})$/;
/** An ed25519 signature is 64 bytes: 86 base64url characters without padding. */
const SIGNATURE_PATTERN = /^[A-Za-z0-9_-]{86}$/;
const NONCE_BYTES = 16;

const utf8 = new TextEncoder();
const toBytes = (data: Uint8Array | string) => (typeof data === 'string' ? utf8.encode(data) : data);

// ---- NATS user nkeys over node:crypto's ed25519 ---------------------------------------------
// nkeys.js (re-exported by `nats`) signs and verifies in pure JavaScript, ~5 ms each: a flood
// of signed requests would stall the event loop that also keeps the lease alive. OpenSSL's
// ed25519 is ~100 times faster, so only the key encoding is done here. An nkey is base32
// (RFC 4648, no padding) of: prefix byte(s), the 32-byte key, CRC-16/XMODEM little-endian.

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
/** 'U': a user's public key. */
const PREFIX_USER = 20 << 3;
/** 'S': a seed; its second 5 bits name the key type ('SU...' for a user). */
const PREFIX_SEED = 18 << 3;
/** DER header of a PKCS#8 ed25519 private key; the 32-byte seed follows it. */
const PKCS8_ED25519 = Buffer.from('302e020100300506032b657004220420', 'hex');

function crc16(bytes: Uint8Array): number {
  let crc = 0;
  for (const b of bytes) {
    crc ^= b << 8;
    for (let bit = 0; bit < 8; bit++)
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
  }
  return crc;
}

function base32Encode(bytes: Uint8Array): string {
  let out = '';
  let value = 0;
  let bits = 0;
  for (const b of bytes) {
    value = (value << 8) | b;
    bits += 8;
    while (bits >= 5) {
      bits -= 5;
      out += BASE32[(value >>> bits) & 31];
    }
    value &= (1 << bits) - 1;
  }
  return bits > 0 ? out + BASE32[(value << (5 - bits)) & 31] : out;
}

function base32Decode(text: string): Uint8Array | undefined {
  const out: number[] = [];
  let value = 0;
  let bits = 0;
  for (const ch of text) {
    const v = BASE32.indexOf(ch);
    if (v < 0) return undefined;
    value = (value << 5) | v;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((value >>> bits) & 0xff);
    }
    value &= (1 << bits) - 1;
  }
  return Uint8Array.from(out);
}

/** Prefix and key bytes of an encoded nkey whose checksum holds; undefined otherwise. */
function decodeNkey(text: string): Uint8Array | undefined {
  const raw = base32Decode(text);
  if (raw === undefined || raw.length < 3) return undefined;
  const body = raw.subarray(0, raw.length - 2);
  const crc = raw[raw.length - 2]! | (raw[raw.length - 1]! << 8);
  return crc16(body) === crc ? body : undefined;
}

function encodeNkey(body: Uint8Array): string {
  const crc = crc16(body);
  return base32Encode(Uint8Array.from([...body, crc & 0xff, crc >> 8]));
}

/** The raw ed25519 key of a user public nkey ('U...'), or undefined if it is not one. */
function userKeyBytes(key: string): Uint8Array | undefined {
  const body = decodeNkey(key);
  return body?.length === 33 && body[0] === PREFIX_USER ? body.subarray(1) : undefined;
}

function publicKeyObject(raw: Uint8Array): KeyObject {
  return createPublicKey({
    key: { kty: 'OKP', crv: 'Ed25519', x: Buffer.from(raw).toString('base64url') },
    format: 'jwk',
  });
}

interface UserSigner {
  publicKey: string;
  sign(payload: Uint8Array): Uint8Array;
}

/** A signer for a user seed ('SU...'); errors never echo the seed. */
function userSigner(seed: Uint8Array | string): UserSigner {
  const text = (typeof seed === 'string' ? seed : new TextDecoder().decode(seed)).trim();
  const body = decodeNkey(text);
  if (body === undefined || body.length !== 34 || (body[0]! & 0xf8) !== PREFIX_SEED) {
    throw new Error(
      "caller seed is not a valid NATS nkey seed; use the user seed ('SU...') of the caller's nkey",
    );
  }
  const type = ((body[0]! & 0x07) << 5) | (body[1]! >> 3);
  if (type !== PREFIX_USER)
    throw new Error("caller seed is not a NATS *user* seed; use a seed starting with 'SU'");
  const privateKey = createPrivateKey({
    key: Buffer.concat([PKCS8_ED25519, body.subarray(2)]),
    format: 'der',
    type: 'pkcs8',
  });
  const x = createPublicKey(privateKey).export({ format: 'jwk' }).x ?? '';
  const publicKey = encodeNkey(Uint8Array.from([PREFIX_USER, ...Buffer.from(x, 'base64url')]));
  return { publicKey, sign: (payload) => ed25519Sign(null, payload, privateKey) };
}

function verifySignature(key: string, payload: Uint8Array, signature: Uint8Array): boolean {
  const raw = userKeyBytes(key);
  if (raw === undefined) return false;
  try {
    return ed25519Verify(null, payload, publicKeyObject(raw), signature);
  } catch {
    return false;
  }
}

/** A fresh user nkey for a caller: keep `seed` secret, give `publicKey` to the identity's admins. */
export function generateCallerKey(): { seed: string; publicKey: string } {
  const seed = encodeNkey(
    Uint8Array.from([PREFIX_SEED | (PREFIX_USER >> 5), (PREFIX_USER & 31) << 3, ...randomBytes(32)]),
  );
  return { seed, publicKey: userSigner(seed).publicKey };
}

/** Is `key` a user public nkey with a valid checksum? */
export const isUserPublicKey = (key: string) =>
  PUBLIC_NKEY_PATTERN.test(key) && userKeyBytes(key) !== undefined;

// ---- signing and verifying requests ----------------------------------------------------------

/** A fresh random nonce (also a valid durable request id). */
export const newNonce = () => randomBytes(NONCE_BYTES).toString('base64url');

/** The bytes that are signed; see the top of this file. */
export function canonicalPayload(p: {
  identity: string;
  caller: string;
  key: string;
  time: string;
  nonce: string;
  body: Uint8Array | string;
}): Uint8Array {
  const digest = createHash('sha256').update(toBytes(p.body)).digest('hex');
  return utf8.encode([SIGNATURE_VERSION, p.identity, p.caller, p.key, p.time, p.nonce, digest].join('\n'));
}

/**
 * Sign a request as `caller` for `identity`. Returns the headers to send (name → value). Sign
 * every attempt afresh: a retried request with the same nonce is refused as a replay.
 */
export function signRequest(opts: {
  identity: string;
  caller: string;
  seed: Uint8Array | string;
  body: Uint8Array | string;
  now?: number;
  nonce?: string;
}): Record<string, string> {
  if (!NAME_PATTERN.test(opts.caller)) {
    throw new Error(
      `caller name '${opts.caller}' must be 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit`,
    );
  }
  const nonce = opts.nonce ?? newNonce();
  if (!NONCE_PATTERN.test(nonce)) throw new Error(`nonce must be 8-64 characters of [A-Za-z0-9_-]`);
  const signer = userSigner(opts.seed);
  const key = signer.publicKey;
  const time = String(Math.round(opts.now ?? Date.now()));
  const signature = signer.sign(
    canonicalPayload({ identity: opts.identity, caller: opts.caller, key, time, nonce, body: opts.body }),
  );
  return {
    [H.caller]: opts.caller,
    [H.key]: key,
    [H.time]: time,
    [H.nonce]: nonce,
    [H.signature]: Buffer.from(signature).toString('base64url'),
  };
}

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

export type Decision =
  | { action: 'drop' }
  | { action: 'allow'; caller?: string; role: 'contact' | 'authorized' | 'anyone' }
  | { action: 'refuse'; code: ErrorCode; message: string; pending?: { name: string; nkey: string } };

const isBlocked = (lists: AccessLists, who: { name?: string | undefined; key?: string | undefined }) =>
  lists.blocked.some(
    (b) => (b.name !== undefined && b.name === who.name) || (b.nkey !== undefined && b.nkey === who.key),
  );

/**
 * What to do with a request. `claimed` is what the headers claim (claimedCaller), `auth` what
 * the signature proves, `verb` the request's verb. `identity` only words the messages.
 * Rules, in order: blocked → drop; invalid signature → unauthenticated; a verified name or key
 * on file with a different counterpart → unauthenticated; PING/HELP → anyone; STATUS →
 * contacts; service commands → open identities, contacts and authorized callers.
 */
export function decide(
  lists: AccessLists,
  claimed: { name?: string; key?: string },
  auth: AuthResult,
  verb: string,
  identity = 'this identity',
): Decision {
  // Checked before the signature: dropping costs the claimer only its own message, and a
  // blocked caller learns nothing, not even whether its signature was good.
  if (isBlocked(lists, claimed) || (auth.kind === 'verified' && isBlocked(lists, auth)))
    return { action: 'drop' };

  if (auth.kind === 'invalid') {
    return {
      action: 'refuse',
      code: 'unauthenticated',
      message: `request not authenticated: ${auth.reason}`,
    };
  }

  const verified = auth.kind === 'verified' ? auth : undefined;
  let role: 'contact' | 'authorized' | undefined;
  if (verified !== undefined) {
    const onFile = [...lists.contacts, ...lists.authorized];
    const byName = onFile.find((c) => c.name === verified.name);
    if (byName !== undefined && byName.nkey !== verified.key) {
      return {
        action: 'refuse',
        code: 'unauthenticated',
        message:
          `key does not match the one on file for ${verified.name}; sign with the nkey registered for ` +
          `${verified.name}, or ask an admin of ${identity} to update it`,
      };
    }
    const byKey = onFile.find((c) => c.nkey === verified.key);
    if (byKey !== undefined && byKey.name !== verified.name) {
      return {
        action: 'refuse',
        code: 'unauthenticated',
        message: `this key is on file for caller '${byKey.name}', not '${verified.name}'; send requests as ${byKey.name}`,
      };
    }
    const matches = (c: { name: string; nkey: string }) =>
      c.name === verified.name && c.nkey === verified.key;
    if (lists.contacts.some(matches)) role = 'contact';
    else if (lists.authorized.some(matches)) role = 'authorized';
  }
  const caller = verified?.name;
  const allow = (r: 'contact' | 'authorized' | 'anyone'): Decision => ({
    action: 'allow',
    ...(caller !== undefined && { caller }),
    role: r,
  });

  const v = verb.toUpperCase();
  if (OPEN_VERBS.has(v)) return allow(role ?? 'anyone');

  if (CONTACT_VERBS.has(v)) {
    if (role === 'contact') return allow('contact');
    const how =
      verified === undefined
        ? `sign requests with your nkey, and ask an admin of ${identity} to add you as a contact`
        : `ask an admin of ${identity} to add ${verified.name} as a contact`;
    return {
      action: 'refuse',
      code: 'not-a-contact',
      message: `${v} is for the contacts of ${identity} only; ${how}`,
    };
  }

  if (role !== undefined) return allow(role);
  if (lists.open) return allow('anyone');
  if (verified !== undefined) {
    return {
      action: 'refuse',
      code: 'not-authorized',
      message: `${verified.name} is not authorized to use ${identity}; your request for authorization is pending; an admin of ${identity} can approve it`,
      pending: { name: verified.name, nkey: verified.key },
    };
  }
  return {
    action: 'refuse',
    code: 'not-authorized',
    message: `${identity} answers only authorized callers; sign requests with your NATS user nkey (Understudy-* signature headers) so an admin can authorize you`,
  };
}

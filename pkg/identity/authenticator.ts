// Who signed a request, proven: checks the five signature headers, the clock window, the
// delivery (core or durable, and a durable request's message id and reply-to), then the
// ed25519 signature over the canonical payload (request-signing.ts). Pure: whether the nonce
// was seen before is asked afterwards (replay.ts), and only for callers the access lists name.
import { NAME_PATTERN } from '../lease/keys.js';
import { isUserPublicKey, verifySignature } from '../keys/nkey.js';
import { canonicalPayload, NONCE_PATTERN, SIGNATURE_VERSION, type Delivery } from './request-signing.js';
import { headers as H } from './wire.js';

/**
 * How far behind the verifier's clock a request's signed time may be. Hosts running NTP agree
 * to well under a second; 30 s also covers a laptop with a sloppy clock, a slow network and a
 * busy agent. The window is also how long a captured request stays replayable, hence how long
 * the replay cache must remember each nonce: wider costs memory, narrower refuses honest callers.
 */
export const CLOCK_WINDOW_MS = 30_000;

/**
 * How far ahead of the verifier's clock a request's signed time may be. Delay on the way only
 * makes a request look older, so a request from the future means the two clocks disagree, and
 * nothing else: 5 s covers any host that runs NTP, with margin. A wider bound would keep a
 * captured request replayable for longer (until its signed time + CLOCK_WINDOW_MS) and make
 * every nonce cost longer memory (replay.ts REPLAY_MEMORY_MS).
 */
export const FUTURE_SKEW_MS = 5_000;

/**
 * Most (key, nonce) pairs the in-memory replay cache holds at once (replay.ts). An entry costs
 * ~250 bytes, so this caps it near 12 MB; an entry is kept ~30-60 s, so it absorbs over 800
 * signed requests per second from listed callers, far above what one identity serves. Beyond
 * it the oldest entries are forgotten and the effective window shrinks: honest requests may be
 * refused in a flood, replays never pass. Only callers on an access list are admitted, so an
 * unauthenticated flood cannot fill it.
 */
export const REPLAY_CACHE_MAX_ENTRIES = 50_000;

/**
 * A durable request may wait in the inbox for hours (handover, nobody logged in); its nonce
 * must equal its Nats-Msg-Id, and JetStream drops a re-published copy with the same id within
 * the stream's duplicate window. A copy is accepted only if stored within CLOCK_WINDOW_MS after
 * its signed time, and the original was stored at most FUTURE_SKEW_MS before it, so the window
 * must be at least their sum; twice the clock window leaves margin. Checked at login (inbox.ts).
 */
export const MIN_INBOX_DUPLICATE_WINDOW_MS = 2 * CLOCK_WINDOW_MS;

const TIME_PATTERN = /^(0|[1-9][0-9]{0,15})$/;
/** An ed25519 signature is 64 bytes: 86 base64url characters without padding. */
const SIGNATURE_PATTERN = /^[A-Za-z0-9_-]{86}$/;

export type AuthResult =
  | { kind: 'anonymous' }
  | { kind: 'verified'; name: string; key: string; nonce: string; signedAt: number }
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

export interface AuthenticateInput {
  /** The identity this node answers for (not taken from the request). */
  identity: string;
  headers: HeaderLookup;
  body: Uint8Array | string;
  /** When the request arrived (default Date.now()). */
  now?: number;
  /**
   * How the request arrived (default core). For a request taken from the durable inbox,
   * `storedAtMs` is when JetStream stored it (its server timestamp, which the sender cannot
   * set) and replaces `now` for the clock window, so a request that waited through a handover
   * is still accepted; `messageId` is its Nats-Msg-Id (the nonce must equal it) and `replyTo`
   * its Understudy-Reply-To (signed).
   */
  delivery?:
    | { mode: 'core' }
    | { mode: 'durable'; storedAtMs: number; messageId: string | undefined; replyTo: string | undefined };
}

/** Verifies request signatures. Stateless: replays are replay.ts's business. */
export class RequestAuthenticator {
  readonly clockWindowMs: number;
  readonly futureSkewMs: number;

  constructor(opts: { clockWindowMs?: number; futureSkewMs?: number } = {}) {
    this.clockWindowMs = opts.clockWindowMs ?? CLOCK_WINDOW_MS;
    this.futureSkewMs = opts.futureSkewMs ?? FUTURE_SKEW_MS;
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
    const arrival = input.delivery ?? { mode: 'core' as const };
    const now = arrival.mode === 'durable' ? arrival.storedAtMs : (input.now ?? Date.now());
    const skew = signedAt - now;
    if (skew > this.futureSkewMs || -skew > this.clockWindowMs) {
      const seconds = Math.round(Math.abs(skew) / 1000);
      return invalid(
        `request time is ${seconds} s ${skew > 0 ? 'ahead of' : 'behind'} this node's clock ` +
          `(allowed: ${this.futureSkewMs / 1000} s ahead, ${this.clockWindowMs / 1000} s behind); ` +
          `sync the caller's clock (NTP) and sign the request again`,
      );
    }

    let delivery: Delivery = { mode: 'core' };
    if (arrival.mode === 'durable') {
      if (arrival.messageId !== nonce) {
        return invalid(
          `a durable request's Nats-Msg-Id must equal its ${H.nonce}; send it with IdentityClient.send`,
        );
      }
      if (arrival.replyTo === undefined) {
        return invalid(
          `a signed durable request needs ${H.replyTo} (signed with it); send it with IdentityClient.send`,
        );
      }
      if (arrival.replyTo.includes('\n')) return invalid(`${H.replyTo} may not contain a newline`);
      delivery = { mode: 'durable', replyTo: arrival.replyTo };
    }

    const payload = canonicalPayload({
      identity: input.identity,
      caller,
      key,
      time,
      nonce,
      delivery,
      body: input.body,
    });
    if (!verifySignature(key, payload, Buffer.from(signature, 'base64url'))) {
      return invalid(
        `signature does not verify; sign the exact body sent, for identity '${input.identity}' as '${caller}', ` +
          `for ${delivery.mode} delivery${delivery.mode === 'durable' ? ' with this reply-to' : ''}, ` +
          `with the seed of ${key} (${SIGNATURE_VERSION}; older clients sign v1: upgrade them)`,
      );
    }
    return { kind: 'verified', name: caller, key, nonce, signedAt };
  }
}

const invalid = (reason: string): AuthResult => ({ kind: 'invalid', reason });

// Signing a request as a caller. Callers sign each request with their NATS user nkey (ed25519).
// The signed bytes are the canonical payload, nine lines joined by '\n' with no trailing newline:
//
//   understudy-request-v2
//   <identity>                the identity addressed: a request signed for one identity fails on another
//   <caller name>             Understudy-Caller
//   <public key>              Understudy-Key (the caller's 'U...' public nkey)
//   <time ms>                 Understudy-Time, decimal milliseconds since the epoch, as sent
//   <nonce>                   Understudy-Nonce, 8-64 characters of [A-Za-z0-9_-]
//   <delivery>                'core' (request/reply on the identity's subject) or 'durable'
//                             (published to its inbox): a request signed for one is refused on the other
//   <reply-to>                Understudy-Reply-To of a durable request ('' for core): an attacker
//                             cannot re-send it with the answer redirected to himself
//   <sha256 hex of body>      lowercase hex digest of the exact body bytes sent
//
// The signature travels base64url-encoded (no padding) in Understudy-Signature.
//
// Version 1 (without delivery and reply-to) is refused: a v1 signature left both open to
// replay. Clients and agents ship together (pkg/identity/client.ts signs v2); a v1 request
// fails verification with a message that names the version to sign.
import { createHash, randomBytes } from 'node:crypto';
import { NAME_PATTERN } from '../lease/keys.js';
import { userSigner } from '../keys/nkey.js';
import { headers as H } from './wire.js';

export const SIGNATURE_VERSION = 'understudy-request-v2';

/** How a request travels; signed, so a request cannot be moved from one path to the other. */
export type Delivery = { mode: 'core' } | { mode: 'durable'; replyTo: string };

export const NONCE_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
const NONCE_BYTES = 16;

const utf8 = new TextEncoder();
const toBytes = (data: Uint8Array | string) => (typeof data === 'string' ? utf8.encode(data) : data);

/** A fresh random nonce (also a valid durable request id). */
export const newNonce = () => randomBytes(NONCE_BYTES).toString('base64url');

/** The bytes that are signed; see the top of this file. */
export function canonicalPayload(p: {
  identity: string;
  caller: string;
  key: string;
  time: string;
  nonce: string;
  delivery: Delivery;
  body: Uint8Array | string;
}): Uint8Array {
  const digest = createHash('sha256').update(toBytes(p.body)).digest('hex');
  const replyTo = p.delivery.mode === 'durable' ? p.delivery.replyTo : '';
  if (replyTo.includes('\n')) throw new Error('a reply-to subject may not contain a newline');
  return utf8.encode(
    [SIGNATURE_VERSION, p.identity, p.caller, p.key, p.time, p.nonce, p.delivery.mode, replyTo, digest].join(
      '\n',
    ),
  );
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
  /** Default core. A durable request's reply-to is sent in Understudy-Reply-To as well. */
  delivery?: Delivery;
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
  const delivery = opts.delivery ?? { mode: 'core' };
  const signature = signer.sign(
    canonicalPayload({
      identity: opts.identity,
      caller: opts.caller,
      key,
      time,
      nonce,
      delivery,
      body: opts.body,
    }),
  );
  return {
    [H.caller]: opts.caller,
    [H.key]: key,
    [H.time]: time,
    [H.nonce]: nonce,
    [H.signature]: Buffer.from(signature).toString('base64url'),
    ...(delivery.mode === 'durable' && { [H.replyTo]: delivery.replyTo }),
  };
}

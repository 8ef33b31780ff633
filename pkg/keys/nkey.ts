// NATS user nkeys (ed25519) over node:crypto: decoding and encoding keys, signing with a user
// seed, verifying a signature. nkeys.js (re-exported by `nats`) signs and verifies in pure
// JavaScript, ~5 ms each: a flood of signed requests would stall the event loop that also keeps
// the lease alive. OpenSSL's ed25519 is ~100 times faster, so only the key encoding is done
// here. An nkey is base32 (RFC 4648, no padding) of: prefix byte(s), the 32-byte key,
// CRC-16/XMODEM little-endian.
import {
  createPrivateKey,
  createPublicKey,
  randomBytes,
  sign as ed25519Sign,
  verify as ed25519Verify,
  type KeyObject,
} from 'node:crypto';

const PUBLIC_NKEY_PATTERN = /^U[A-Z2-7]{55}$/;
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

export interface UserSigner {
  publicKey: string;
  sign(payload: Uint8Array): Uint8Array;
}

/** A signer for a user seed ('SU...'); errors never echo the seed. */
export function userSigner(seed: Uint8Array | string): UserSigner {
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

export function verifySignature(key: string, payload: Uint8Array, signature: Uint8Array): boolean {
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

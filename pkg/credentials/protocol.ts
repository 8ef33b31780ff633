// The credential release protocol between an agent logging in and the controllers: what the
// agent sends on `understudy.credential.<identity>`, what a controller answers, and the
// cryptography around both. No I/O here (pkg/agent/credential-request.ts sends,
// pkg/controller/credentials.ts answers).
//
// The request is signed with the agent's node key over identity, node, token, time, nonce and
// an ephemeral X25519 public key; the secret comes back encrypted to that key (ECDH, HKDF,
// AES-256-GCM), because a plain reply could be read by anyone subscribed to `_INBOX.>`. The
// reply is signed by the answering controller's key (its member record in etcd), so a forged
// reply is not taken for a credential.
import {
  createCipheriv,
  createDecipheriv,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  type KeyObject,
} from 'node:crypto';
import { z } from 'zod';
import { signFields, verifyFields, type UserSigner } from '../keys/index.js';
import { Name } from '../lease/keys.js';

/** Controllers subscribe to every identity's subject with one queue group: one answers. */
export const CREDENTIAL_SUBJECT_WILDCARD = 'understudy.credential.*';
export const credentialSubject = (identity: string) => `understudy.credential.${identity}`;
export const CREDENTIAL_QUEUE = 'understudy-controllers';

/** Kind lines (pkg/keys/signed.ts): a request signature never verifies as anything else. */
export const REQUEST_KIND = 'understudy credential request v1';
export const REPLY_KIND = 'understudy credential reply v1';
/** HKDF info and AEAD data of the reply: binds the ciphertext to this one request. */
const REPLY_CONTEXT = 'understudy credential reply key v1';

/**
 * How far a request's time may be from the controller's clock, either way. A request lives
 * this long (and a replay cache must remember its nonce this long); agents and controllers
 * are expected to run NTP, so seconds of skew are plenty and a captured request goes stale fast.
 */
export const REQUEST_WINDOW_MS = 30_000;

const B64URL = /^[A-Za-z0-9_-]+$/;
/** An X25519 public key: 32 bytes, base64url without padding. */
const X25519Key = z.string().regex(/^[A-Za-z0-9_-]{43}$/, 'must be a 32-byte X25519 key in base64url');

export const CredentialRequest = z.strictObject({
  v: z.literal(1),
  identity: Name,
  node: Name,
  /** The fencing token of the term the node says it holds (decimal). */
  token: z.string().regex(/^[1-9][0-9]{0,18}$/, 'must be a decimal fencing token'),
  /** Wall-clock ms when signed. */
  at: z.number().int().nonnegative(),
  /** 16 random bytes or more, base64url: the replay cache's key. */
  nonce: z.string().regex(/^[A-Za-z0-9_-]{22,64}$/, 'must be 16-48 random bytes in base64url'),
  replyKey: X25519Key,
  sig: z.string().max(200),
});
export type CredentialRequest = z.infer<typeof CredentialRequest>;
export type UnsignedRequest = Omit<CredentialRequest, 'sig' | 'v'>;

const requestFields = (r: UnsignedRequest) => [
  r.identity,
  r.node,
  r.token,
  String(r.at),
  r.nonce,
  r.replyKey,
];

export function signRequest(signer: UserSigner, r: UnsignedRequest): CredentialRequest {
  return { v: 1, ...r, sig: signFields(signer, REQUEST_KIND, requestFields(r), '') };
}

/** Does the request's signature verify under the node key `key`? */
export function requestSignedBy(key: string, r: CredentialRequest): boolean {
  return verifyFields(key, r.sig, REQUEST_KIND, requestFields(r), '');
}

/** Why a controller refused; each comes with a sentence. */
export const REFUSAL_CODES = [
  'bad-request',
  'stale-request',
  'unknown-node',
  'bad-signature',
  'replayed',
  'not-leader',
  'stale-token',
  'wrong-session',
  'no-credential',
  'unreadable-credential',
  'busy',
  'unavailable',
] as const;
export const RefusalCode = z.enum(REFUSAL_CODES);
export type RefusalCode = z.infer<typeof RefusalCode>;

export const SealedReply = z.strictObject({
  /** The controller's ephemeral X25519 public key. */
  epk: X25519Key,
  iv: z.string().regex(B64URL),
  tag: z.string().regex(B64URL),
  ct: z.string().regex(B64URL),
});
export type SealedReply = z.infer<typeof SealedReply>;

export const CredentialReply = z.discriminatedUnion('ok', [
  z.strictObject({
    v: z.literal(1),
    ok: z.literal(true),
    /** The controller that answered: its member record holds the key that signed `sig`. */
    controller: Name,
    sealed: SealedReply,
    sig: z.string().max(200),
  }),
  z.strictObject({
    v: z.literal(1),
    ok: z.literal(false),
    code: RefusalCode,
    reason: z.string().max(2_000),
  }),
]);
export type CredentialReply = z.infer<typeof CredentialReply>;

/** What a reply answers: the request it was made for. */
export interface ReplyContext {
  identity: string;
  node: string;
  token: string;
  nonce: string;
}

const contextFields = (c: ReplyContext) => [c.identity, c.node, c.token, c.nonce];
const sealedBody = (s: SealedReply) => [s.epk, s.iv, s.tag, s.ct].join('.');

export function signReply(signer: UserSigner, controller: string, c: ReplyContext, sealed: SealedReply) {
  return signFields(signer, REPLY_KIND, [...contextFields(c), controller], sealedBody(sealed));
}

export function replySignedBy(
  key: string,
  controller: string,
  c: ReplyContext,
  sealed: SealedReply,
  sig: string,
) {
  return verifyFields(key, sig, REPLY_KIND, [...contextFields(c), controller], sealedBody(sealed));
}

// --- encryption to the requester's ephemeral key ------------------------------------------------

function rawPublicKey(key: KeyObject): string {
  const x = key.export({ format: 'jwk' }).x;
  if (!x) throw new Error('X25519 key without a public part');
  return x;
}

function x25519PublicKey(raw: string): KeyObject {
  return createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x: raw }, format: 'jwk' });
}

/** A fresh X25519 key pair for one request; the private key never leaves the process. */
export function replyKeyPair(): { publicKey: string; privateKey: KeyObject } {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  return { publicKey: rawPublicKey(publicKey), privateKey };
}

function replyCipherKey(shared: Buffer, c: ReplyContext): Buffer {
  const info = [REPLY_CONTEXT, ...contextFields(c)].join('\n');
  return Buffer.from(hkdfSync('sha256', shared, Buffer.from(c.nonce, 'utf8'), info, 32));
}

const replyAad = (c: ReplyContext, epk: string) =>
  Buffer.from([REPLY_CONTEXT, ...contextFields(c), epk].join('\n'), 'utf8');

/** Encrypt `secret` so only the holder of `replyKey`'s private half can read it. */
export function sealReply(secret: Buffer, replyKey: string, c: ReplyContext): SealedReply {
  const mine = generateKeyPairSync('x25519');
  const shared = diffieHellman({ privateKey: mine.privateKey, publicKey: x25519PublicKey(replyKey) });
  const epk = rawPublicKey(mine.publicKey);
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', replyCipherKey(shared, c), iv, { authTagLength: 16 });
  cipher.setAAD(replyAad(c, epk));
  const ct = Buffer.concat([cipher.update(secret), cipher.final()]);
  return {
    epk,
    iv: iv.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
    ct: ct.toString('base64url'),
  };
}

/** Decrypt a sealed reply with the request's private key; throws if it was not made for it. */
export function openReply(sealed: SealedReply, privateKey: KeyObject, c: ReplyContext): Buffer {
  const shared = diffieHellman({ privateKey, publicKey: x25519PublicKey(sealed.epk) });
  const decipher = createDecipheriv(
    'aes-256-gcm',
    replyCipherKey(shared, c),
    Buffer.from(sealed.iv, 'base64url'),
    { authTagLength: 16 },
  );
  decipher.setAAD(replyAad(c, sealed.epk));
  decipher.setAuthTag(Buffer.from(sealed.tag, 'base64url'));
  return Buffer.concat([decipher.update(Buffer.from(sealed.ct, 'base64url')), decipher.final()]);
}

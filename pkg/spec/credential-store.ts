// Where an identity's credential is stored in etcd (spec credential.source: etcd), and how it
// is sealed there: AES-256-GCM under a key only controllers hold (controller config
// credentials.keyFile), with the identity as additional authenticated data, so a value copied
// under another identity's key does not open. Agents never read this key: the controller
// hands the secret to the lease holder at login (pkg/controller/credentials.ts). Sealing and
// opening are pure; nothing here logs, and no error quotes the stored value.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { assertName } from '../lease/keys.js';
import { SpecKeys } from './store.js';

/** AES-256: the key is 32 bytes. */
export const CREDENTIAL_KEY_BYTES = 32;
/**
 * Largest secret accepted: passwords, tokens and certificate bundles fit many times over, and
 * the sealed value (base64, ~4/3) stays far below etcd's 1.5 MiB request limit and the API's
 * 1 MiB body limit.
 */
export const MAX_CREDENTIAL_BYTES = 64 * 1024;
/** GCM's standard nonce size; a fresh random one per seal (a key seals few values). */
const IV_BYTES = 12;
const TAG_BYTES = 16;
/** What the additional authenticated data starts with: a sealed credential and nothing else. */
const AAD_KIND = 'understudy credential at rest v1';

const base64url = (bytes: number | undefined) =>
  z
    .string()
    .regex(/^[A-Za-z0-9_-]*$/)
    .refine((s) => bytes === undefined || Buffer.from(s, 'base64url').length === bytes, {
      message: `must be ${bytes} bytes`,
    });

/** The value stored at understudy/secrets/<identity>/credential. */
export const SealedCredential = z.strictObject({
  v: z.literal(1),
  alg: z.literal('aes-256-gcm'),
  /** Names the key that sealed it (keyId): tells a wrong key file from a damaged value. */
  kid: z.string().regex(/^[0-9a-f]{16}$/),
  iv: base64url(IV_BYTES),
  tag: base64url(TAG_BYTES),
  ct: base64url(undefined),
});
export type SealedCredential = z.infer<typeof SealedCredential>;

/**
 * A short public name of a key: the first 8 bytes of its sha256. Says which key file sealed
 * a value without revealing anything usable about the key.
 */
export function keyId(key: Buffer): string {
  return createHash('sha256').update(key).digest('hex').slice(0, 16);
}

function aad(identity: string): Buffer {
  return Buffer.from(`${AAD_KIND}\n${identity}`, 'utf8');
}

function checkKey(key: Buffer): void {
  if (key.length !== CREDENTIAL_KEY_BYTES) {
    throw new Error(`a credential key is ${CREDENTIAL_KEY_BYTES} bytes, got ${key.length}`);
  }
}

/** Seal `secret` for `identity` under `key`. */
export function sealCredential(key: Buffer, identity: string, secret: Buffer): SealedCredential {
  checkKey(key);
  assertName('identity', identity);
  if (secret.length === 0) throw new Error('an empty credential cannot be stored');
  if (secret.length > MAX_CREDENTIAL_BYTES) {
    throw new Error(`a credential is at most ${MAX_CREDENTIAL_BYTES} bytes, got ${secret.length}`);
  }
  const iv = randomBytes(IV_BYTES);
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES });
  cipher.setAAD(aad(identity));
  const ct = Buffer.concat([cipher.update(secret), cipher.final()]);
  return {
    v: 1,
    alg: 'aes-256-gcm',
    kid: keyId(key),
    iv: iv.toString('base64url'),
    tag: cipher.getAuthTag().toString('base64url'),
    ct: ct.toString('base64url'),
  };
}

export type OpenFailure = 'absent' | 'plaintext' | 'wrong-key' | 'tampered';
export type OpenResult = { ok: true; secret: Buffer } | { ok: false; code: OpenFailure; reason: string };

/**
 * Open the value stored for `identity` (raw bytes from etcd, or undefined when absent). Never
 * throws and never quotes the value: each failure says what the operator does next.
 */
export function openCredential(key: Buffer, identity: string, raw: Buffer | undefined): OpenResult {
  checkKey(key);
  const storeAgain = `store it again with \`understudy credential set ${identity} --from-file FILE\``;
  if (raw === undefined) {
    return { ok: false, code: 'absent', reason: `no credential is stored for ${identity}; ${storeAgain}` };
  }
  let sealed: SealedCredential | undefined;
  try {
    const parsed = SealedCredential.safeParse(JSON.parse(raw.toString('utf8')));
    if (parsed.success) sealed = parsed.data;
  } catch {
    sealed = undefined;
  }
  if (sealed === undefined) {
    return {
      ok: false,
      code: 'plaintext',
      reason:
        `the credential stored for ${identity} is not sealed (left in plain text by an older ` +
        `version, or written by hand): it is never handed out as it is; ${storeAgain}, which ` +
        'encrypts it and replaces the plain value',
    };
  }
  if (sealed.kid !== keyId(key)) {
    return {
      ok: false,
      code: 'wrong-key',
      reason:
        `the credential of ${identity} was sealed with key ${sealed.kid}, but this controller's ` +
        `credentials.keyFile is key ${keyId(key)}: give every controller the same key file, or ${storeAgain}`,
    };
  }
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(sealed.iv, 'base64url'), {
      authTagLength: TAG_BYTES,
    });
    decipher.setAAD(aad(identity));
    decipher.setAuthTag(Buffer.from(sealed.tag, 'base64url'));
    const secret = Buffer.concat([decipher.update(Buffer.from(sealed.ct, 'base64url')), decipher.final()]);
    return { ok: true, secret };
  } catch {
    return {
      ok: false,
      code: 'tampered',
      reason:
        `the credential stored for ${identity} does not decrypt for this identity (copied from ` +
        `another identity, or changed in etcd); ${storeAgain}`,
    };
  }
}

/** The raw stored value (sealed, or plain text left by an older version), or undefined. */
export async function readStoredCredential(
  client: Etcd3,
  identity: string,
  keys = new SpecKeys(),
): Promise<Buffer | undefined> {
  assertName('identity', identity);
  const value = await client.get(keys.credential(identity)).options(within(ETCD_CALL_MS)).buffer();
  return value ?? undefined;
}

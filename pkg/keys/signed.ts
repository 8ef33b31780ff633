// The one shape of everything understudy signs besides caller requests: a kind line naming
// what is signed (so a signature for one purpose never verifies for another), the fields in a
// fixed order, and the sha256 of the body, joined by '\n'. Fields may not contain '\n', so no
// two different field lists give the same bytes.
import { createHash } from 'node:crypto';
import { verifySignature, type UserSigner } from './nkey.js';

const utf8 = new TextEncoder();
const SIGNATURE_PATTERN = /^[A-Za-z0-9_-]{86}$/;

export function canonical(kind: string, fields: readonly string[], body: Uint8Array | string): Uint8Array {
  for (const f of [kind, ...fields]) {
    if (f.includes('\n')) throw new Error('a signed field may not contain a newline');
  }
  const digest = createHash('sha256')
    .update(typeof body === 'string' ? utf8.encode(body) : body)
    .digest('hex');
  return utf8.encode([kind, ...fields, digest].join('\n'));
}

/** base64url (no padding) signature over canonical(kind, fields, body). */
export function signFields(
  signer: UserSigner,
  kind: string,
  fields: readonly string[],
  body: Uint8Array | string,
): string {
  return Buffer.from(signer.sign(canonical(kind, fields, body))).toString('base64url');
}

/** Does `signature` (base64url) verify under `key` for exactly these fields and body? */
export function verifyFields(
  key: string,
  signature: string | undefined,
  kind: string,
  fields: readonly string[],
  body: Uint8Array | string,
): boolean {
  if (signature === undefined || !SIGNATURE_PATTERN.test(signature)) return false;
  if (fields.some((f) => f.includes('\n'))) return false;
  return verifySignature(key, canonical(kind, fields, body), Buffer.from(signature, 'base64url'));
}

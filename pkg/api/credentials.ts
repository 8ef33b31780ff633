// Storing an identity's credential (spec credential.source: etcd) through the API. The secret
// goes in, base64 in a JSON body; no route ever sends it back.
import { z } from 'zod';

/** Base64 (standard alphabet, padding optional) of at most 64 KiB (MAX_CREDENTIAL_BYTES). */
const BASE64_MAX_CHARS = Math.ceil((64 * 1024) / 3) * 4;

export const CredentialBody = z.strictObject({
  /** The secret, base64-encoded (any bytes: a password, a token, a key file). */
  value: z
    .string()
    .min(1, 'must not be empty')
    .max(BASE64_MAX_CHARS, 'must be at most 64 KiB once decoded')
    .regex(/^[A-Za-z0-9+/]+={0,2}$/, 'must be base64'),
});
export type CredentialBody = z.infer<typeof CredentialBody>;

export const CredentialResult = z.object({
  identity: z.string(),
  /** etcd revision of the write. */
  revision: z.string(),
  /** Which controller key sealed it (a key id, not the key). */
  keyId: z.string(),
});
export type CredentialResult = z.infer<typeof CredentialResult>;

// The key a component signs with: agents sign presence (PONGs, replies) and credential
// requests with their node key, controllers sign control requests with theirs. Each key is
// registered in etcd bound to the signer's session lease (registry.ts), so a verifier trusts
// exactly the keys of live sessions. A key file pins the key across restarts (for operators
// who list trusted keys in config); without one a fresh key is made at start, which the
// session binding makes as good: it is trusted from the moment it is registered.
import { readFile, stat } from 'node:fs/promises';
import { generateCallerKey, userSigner, type UserSigner } from './nkey.js';

/**
 * Load the signing key from a NATS user seed file ('SU...', as `nsc` or `nk -gen user` write
 * it), or make a fresh one. The file must be readable by its owner only: a seed others can
 * read is a key anyone on the host can sign with.
 */
export async function loadSigner(file: string | undefined, field = 'keyFile'): Promise<UserSigner> {
  if (file === undefined) return userSigner(generateCallerKey().seed);
  let mode: number;
  try {
    mode = (await stat(file)).mode;
  } catch (err) {
    throw new Error(
      `${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code}); give the path of a NATS user seed file, or leave ${field} out to use a fresh key per start`,
    );
  }
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `${field}: ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); run chmod 600 ${file}`,
    );
  }
  try {
    return userSigner(await readFile(file, 'utf8'));
  } catch (err) {
    throw new Error(`${field}: ${(err as Error).message} (in ${file})`);
  }
}

export type { UserSigner };

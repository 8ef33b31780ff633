// The credential file handed to a process service: the agent fetches the secret at login,
// writes it here, passes only the path (env UNDERSTUDY_CREDENTIAL_FILE / the login message),
// and removes it at logout. The secret never goes into argv (world-readable in /proc) nor logs.
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { NAME_PATTERN } from '../lease/keys.js';

const FILE_MODE = 0o600;
const DIR_MODE = 0o700;

/** Where an identity's credential lives inside `dir`. */
export const credentialPath = (dir: string, identity: string) => join(dir, `credential-${identity}`);

/**
 * Write `secret` to `dir`/credential-<identity>, mode 0600, and return the path. The file is
 * created under a fresh temporary name with O_EXCL (never following a planted file or link),
 * filled, synced, then renamed over the final name: a reader sees the whole old file or the
 * whole new one, never a partial secret. Keep `dir` on tmpfs (e.g. under /run) if the secret
 * must not reach a disk: unlinking does not erase blocks on journaling or copy-on-write filesystems.
 */
export async function writeCredentialFile(
  dir: string,
  identity: string,
  secret: Buffer | string,
): Promise<string> {
  if (!NAME_PATTERN.test(identity)) {
    throw new Error(
      `credential file: '${identity}' is not a valid identity name, refusing to build a path from it`,
    );
  }
  await mkdir(dir, { recursive: true, mode: DIR_MODE });
  // mkdir's mode is filtered by the umask and ignored for an existing directory: set it outright.
  await chmod(dir, DIR_MODE);
  const target = credentialPath(dir, identity);
  const temp = join(dir, `.credential-${identity}.${process.pid}.${randomBytes(6).toString('hex')}.tmp`);
  const handle = await open(temp, 'wx', FILE_MODE);
  try {
    await handle.chmod(FILE_MODE); // the umask may only remove bits; make the mode exact anyway
    await handle.writeFile(secret);
    await handle.sync();
    await handle.close();
    await rename(temp, target);
  } catch (err) {
    await handle.close().catch(() => undefined); // may already be closed
    await unlink(temp).catch(() => undefined); // best effort: the original error matters more
    throw new Error(`could not write the credential file in ${dir}: ${(err as Error).message}`);
  }
  return target;
}

/** Remove a credential file; a file that is already gone is fine. */
export async function removeCredentialFile(path: string): Promise<void> {
  try {
    await unlink(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
}

/** Before a login: the file must exist and be readable by its owner only. */
export async function checkCredentialFile(identity: string, path: string): Promise<void> {
  let info;
  try {
    info = await stat(path);
  } catch (err) {
    throw new Error(
      `identity '${identity}': credential file ${path} is not readable (${(err as NodeJS.ErrnoException).code}); the agent must write it before login`,
    );
  }
  if (!info.isFile() || (info.mode & 0o077) !== 0) {
    throw new Error(
      `identity '${identity}': credential file ${path} must be a regular file readable by its owner only (mode is ${(info.mode & 0o777).toString(8)}); write it with writeCredentialFile`,
    );
  }
}

// The credential file handed to a process service: the agent fetches the secret at login,
// writes it here, passes only the path (env UNDERSTUDY_CREDENTIAL_FILE / the login message),
// and removes it at logout. The secret never goes into argv (world-readable in /proc) nor logs.
import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { chmod, mkdir, open, rename, stat, unlink } from 'node:fs/promises';
import { dirname, join, parse } from 'node:path';
import { NAME_PATTERN } from '../lease/keys.js';
import type { RunAs } from './run-as.js';

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

/** Search (x) permission for others: the service user may pass through, not list. */
const OTHERS_SEARCH = 0o001;

/**
 * Give the credential file to the service user, still 0600, so the service can read it and
 * nobody else can. Its directory stays the agent's, with search permission only (0711): the
 * service reaches the file by name and can neither list the directory nor plant a link where
 * the agent writes. The file is changed through a descriptor opened without following a link,
 * and only if it is the plain file the agent wrote (one link, owned by the agent or already by
 * the user). The run directory gets search permission for others too, and every directory
 * above it must already let the user through.
 */
export async function handCredentialTo(path: string, runAs: RunAs, runDir: string): Promise<void> {
  const handle = await open(path, constants.O_RDONLY | constants.O_NOFOLLOW);
  try {
    const info = await handle.stat();
    const agentUid = process.getuid?.();
    if (!info.isFile() || info.nlink !== 1 || (info.uid !== agentUid && info.uid !== runAs.uid)) {
      throw new Error(
        `credential file ${path} is not the plain file the agent wrote (a link, or owned by uid ${info.uid}); not handing it to ${runAs.user}`,
      );
    }
    await handle.chown(runAs.uid, runAs.gid);
    await handle.chmod(FILE_MODE);
  } finally {
    await handle.close();
  }
  await chmod(dirname(path), DIR_MODE | OTHERS_SEARCH);
  const top = await stat(runDir);
  if ((top.mode & OTHERS_SEARCH) === 0) await chmod(runDir, (top.mode & 0o7777) | OTHERS_SEARCH);
  await checkReachable(dirname(runDir), runAs);
}

/** Every directory from `dir` up to / must let `who` through (search permission). */
async function checkReachable(dir: string, who: RunAs): Promise<void> {
  for (let d = dir; ; d = dirname(d)) {
    const info = await stat(d);
    const bit = info.uid === who.uid ? 0o100 : info.gid === who.gid ? 0o010 : OTHERS_SEARCH;
    if ((info.mode & bit) === 0) {
      throw new Error(
        `the service user ${who.user} cannot reach the credential file: ${d} (mode ${(info.mode & 0o777).toString(8)}) does not let it through. Put the agent's runDir under a directory it may pass, such as /run/understudy (systemd RuntimeDirectory=understudy)`,
      );
    }
    if (d === parse(d).root) return;
  }
}

/** Before a login: the file must exist and be readable by its owner only (that owner, if given). */
export async function checkCredentialFile(identity: string, path: string, ownerUid?: number): Promise<void> {
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
  if (ownerUid !== undefined && info.uid !== ownerUid) {
    throw new Error(
      `identity '${identity}': credential file ${path} is owned by uid ${info.uid}, not by the service user (uid ${ownerUid}), so the service could not read it`,
    );
  }
}

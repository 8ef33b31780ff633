// Restoring a snapshot, atomically: unpack into a sibling temporary directory (same
// filesystem, so the final rename is atomic), check every file against the manifest, fsync,
// then swap it in with renames, keeping the previous directory as `<dir>.prev`. Whatever goes
// wrong before the swap, the temporary directory is removed and `dir` is as it was: nothing
// half-restored is ever left in its place.
import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import tar from 'tar-stream';
import { Manifest, MANIFEST_ENTRY, SnapshotError, StatePath, type ManifestEntry } from './manifest.js';

/** Largest manifest read into memory: about a million entries. */
const MAX_MANIFEST_BYTES = 256 * 1024 * 1024;

/** The previous state directory, kept beside it after a restore. */
export function previousDir(dir: string): string {
  return `${dir}.prev`;
}

function tempPrefix(dir: string): string {
  return `.${basename(dir)}.restore-`;
}

export interface RestoreOptions {
  /**
   * Who owns the restored tree: the service's user when the agent (root) runs services as
   * another user (service.user), so the service can use its own state. Absent: the agent.
   */
  owner?: { uid: number; gid: number };
}

/** What the caller's record says the snapshot is; anything else is refused. */
export interface SnapshotExpectation {
  identity?: string;
  token?: string;
  /** sha256 of the manifest's bytes (the record's `manifestSha256`). */
  manifestSha256?: string;
}

export interface RestoreResult {
  manifest: Manifest;
  /** The directory that was replaced, if there was one (now at previousDir(dir)). */
  previous?: string;
}

/**
 * Restore the archive read from `source` into `dir`. `expect` lets the caller insist on the
 * snapshot it chose (the identity and token its record names): a different one is refused.
 */
export async function restoreSnapshot(
  source: Readable,
  dir: string,
  expect: SnapshotExpectation = {},
  opts: RestoreOptions = {},
): Promise<RestoreResult> {
  await recoverInterruptedSwap(dir);
  const parent = dirname(dir);
  await mkdir(parent, { recursive: true });
  const temp = join(parent, `${tempPrefix(dir)}${randomBytes(6).toString('hex')}`);
  await mkdir(temp, { mode: 0o700 });
  try {
    const { manifest, manifestSha256, written } = await unpack(source, temp);
    if (expect.manifestSha256 !== undefined && manifestSha256 !== expect.manifestSha256) {
      throw new SnapshotError(
        `the manifest's sha256 ${manifestSha256.slice(0, 12)}… is not the ${expect.manifestSha256.slice(0, 12)}… its record names: ` +
          'the archive was replaced or damaged',
      );
    }
    verify(manifest, written, expect);
    await syncTree(temp, manifest.entries, opts.owner);
    const previous = await swapIn(temp, dir);
    return { manifest, ...(previous && { previous }) };
  } catch (err) {
    await rm(temp, { recursive: true, force: true });
    if (err instanceof SnapshotError) throw err;
    throw new SnapshotError(`snapshot refused: ${(err as Error).message}; ${dir} is unchanged`);
  }
}

interface Written {
  type: 'file' | 'dir';
  size: number;
  sha256?: string;
  mode: number;
}

/** Unpack into `temp`, hashing each file; the manifest entry is parsed, not written. */
async function unpack(
  source: Readable,
  temp: string,
): Promise<{ manifest: Manifest; manifestSha256: string; written: Map<string, Written> }> {
  const extract = tar.extract();
  const written = new Map<string, Written>();
  let manifestText: string | undefined;

  // Feed the extractor while its entries are consumed below; an error on either side ends both.
  const feeding = (async () => {
    for await (const chunk of source as AsyncIterable<Buffer>) {
      if (!extract.write(chunk)) await once(extract, 'drain');
    }
    (extract as unknown as { end(): void }).end();
  })();
  feeding.catch((err: unknown) => extract.destroy(err as Error));

  for await (const entry of extract) {
    const { header } = entry;
    const name = header.name.replace(/\/$/, '');
    if (name === MANIFEST_ENTRY) {
      if (header.size > MAX_MANIFEST_BYTES)
        throw new SnapshotError(`the manifest is ${header.size} bytes: too large`);
      manifestText = (await readAll(entry as AsyncIterable<Buffer>)).toString('utf8');
      continue;
    }
    if (manifestText !== undefined) throw new SnapshotError(`entry ${name} follows the manifest`, name);
    const path = StatePath.safeParse(name);
    if (!path.success) throw new SnapshotError(`entry '${name}': ${path.error.issues[0]!.message}`, name);
    if (written.has(name)) throw new SnapshotError(`entry ${name} appears twice`, name);
    const target = join(temp, ...name.split('/'));
    const mode = header.mode & 0o7777;
    if (header.type === 'directory') {
      await mkdir(target, { recursive: true, mode: 0o700 });
      written.set(name, { type: 'dir', size: 0, mode });
      entry.resume();
    } else if (header.type === 'file') {
      await mkdir(dirname(target), { recursive: true, mode: 0o700 });
      const { size, sha256 } = await writeFile(entry as AsyncIterable<Buffer>, target);
      written.set(name, { type: 'file', size, sha256, mode });
    } else {
      throw new SnapshotError(
        `entry ${name} is a ${header.type}: a snapshot holds only files and directories`,
        name,
      );
    }
  }
  await feeding;
  if (manifestText === undefined) {
    throw new SnapshotError('the archive ends without its manifest: it is truncated or not a snapshot');
  }
  let json: unknown;
  try {
    json = JSON.parse(manifestText);
  } catch (err) {
    throw new SnapshotError(`the manifest is not JSON (${(err as Error).message}): the snapshot is corrupt`);
  }
  const parsed = Manifest.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new SnapshotError(`the manifest's ${issue.path.join('.') || '(root)'}: ${issue.message}`);
  }
  const manifestSha256 = createHash('sha256').update(manifestText, 'utf8').digest('hex');
  return { manifest: parsed.data, manifestSha256, written };
}

async function writeFile(
  entry: AsyncIterable<Buffer>,
  target: string,
): Promise<{ size: number; sha256: string }> {
  const hash = createHash('sha256');
  let size = 0;
  const out = createWriteStream(target, { mode: 0o600, flags: 'wx' });
  try {
    for await (const chunk of entry) {
      size += chunk.length;
      hash.update(chunk);
      if (!out.write(chunk)) await once(out, 'drain');
    }
    out.end();
    await once(out, 'close');
  } catch (err) {
    out.destroy();
    throw err;
  }
  return { size, sha256: hash.digest('hex') };
}

async function readAll(entry: AsyncIterable<Buffer>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of entry) chunks.push(chunk);
  return Buffer.concat(chunks);
}

/** Every file the manifest lists is there with its size and digest, and nothing else is. */
function verify(
  manifest: Manifest,
  written: Map<string, Written>,
  expect: { identity?: string; token?: string },
): void {
  if (expect.identity !== undefined && manifest.identity !== expect.identity) {
    throw new SnapshotError(`the snapshot is of ${manifest.identity}, not ${expect.identity}`);
  }
  if (expect.token !== undefined && manifest.token !== expect.token) {
    throw new SnapshotError(
      `the snapshot was taken under token ${manifest.token}, not ${expect.token} as its record says`,
    );
  }
  const listed = new Set<string>();
  for (const e of manifest.entries) {
    listed.add(e.path);
    const got = written.get(e.path);
    if (!got)
      throw new SnapshotError(
        `${e.path} is in the manifest but not in the archive: the snapshot is truncated`,
        e.path,
      );
    if (got.type !== e.type)
      throw new SnapshotError(
        `${e.path} is a ${got.type} in the archive, a ${e.type} in the manifest`,
        e.path,
      );
    if (e.type === 'file' && (got.size !== e.size || got.sha256 !== e.sha256)) {
      throw new SnapshotError(
        `${e.path} does not match the manifest (${got.size} bytes, sha256 ${got.sha256?.slice(0, 12)}…; ` +
          `expected ${e.size} bytes, sha256 ${e.sha256.slice(0, 12)}…): the snapshot is corrupt`,
        e.path,
      );
    }
  }
  for (const path of written.keys()) {
    if (!listed.has(path)) throw new SnapshotError(`${path} is in the archive but not in the manifest`, path);
  }
}

/** Set each entry's mode and flush files and directories to disk before anything is swapped. */
async function syncTree(
  temp: string,
  entries: ManifestEntry[],
  owner: RestoreOptions['owner'],
): Promise<void> {
  // Deepest first, so a directory's own mode (perhaps read-only) is set after its contents.
  const ordered = [...entries].sort((a, b) => b.path.split('/').length - a.path.split('/').length);
  for (const e of ordered) await syncPath(join(temp, ...e.path.split('/')), e.mode, owner);
  await syncPath(temp, 0o700, owner);
}

async function syncPath(path: string, mode: number, owner?: RestoreOptions['owner']): Promise<void> {
  const handle = await open(path, 'r');
  try {
    if (owner) await handle.chown(owner.uid, owner.gid);
    await handle.chmod(mode);
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * `dir` → `dir.prev`, then the restored directory → `dir`, then the parent is synced. A crash
 * between the two renames leaves only `dir.prev`: recoverInterruptedSwap puts it back.
 */
async function swapIn(temp: string, dir: string): Promise<string | undefined> {
  const prev = previousDir(dir);
  const existed = await exists(dir);
  if (existed) {
    await rm(prev, { recursive: true, force: true });
    await rename(dir, prev);
  }
  await rename(temp, dir);
  await syncPath(dirname(dir), (await stat(dirname(dir))).mode & 0o7777);
  return existed ? prev : undefined;
}

/**
 * Undo what a crash mid-restore left: the previous directory put back when the new one never
 * arrived, and leftover temporary directories removed. Run before every restore, and by the
 * agent before it starts a service on `dir`. One restore per directory at a time: a second one
 * started meanwhile would take the first one's temporary directory for a leftover.
 */
export async function recoverInterruptedSwap(dir: string): Promise<void> {
  const prev = previousDir(dir);
  if (!(await exists(dir)) && (await exists(prev))) await rename(prev, dir);
  const parent = dirname(dir);
  if (!(await exists(parent))) return;
  for (const name of await readdir(parent)) {
    if (name.startsWith(tempPrefix(dir))) await rm(join(parent, name), { recursive: true, force: true });
  }
}

async function exists(path: string): Promise<boolean> {
  return stat(path).then(
    () => true,
    () => false,
  );
}

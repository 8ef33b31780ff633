// Taking a snapshot: the state directory as a tar stream, files in name order, each hashed
// as it passes, the manifest last. Streamed end to end: memory does not grow with the size of
// the directory (bench/snapshot measures it), only with the number of entries (the manifest).
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { once } from 'node:events';
import { Readable } from 'node:stream';
import tar from 'tar-stream';

type HeaderArgument = Parameters<tar.Pack['entry']>[0];
import {
  MANIFEST_ENTRY,
  MANIFEST_VERSION,
  SnapshotError,
  type Manifest,
  type ManifestEntry,
} from './manifest.js';

export interface SnapshotMeta {
  identity: string;
  node: string;
  token: string;
  /** The service confirmed a quiescent state (see Manifest.quiesced). */
  quiesced: boolean;
  /** Wall-clock ms the copy started. */
  startedMs: number;
}

export interface PackedSnapshot {
  /** The archive; it ends after the manifest. Read it to the end or destroy it. */
  stream: Readable;
  /** Resolves with the manifest once the archive is complete; rejects if the copy failed. */
  manifest: Promise<Manifest>;
  /**
   * sha256 of the manifest entry's bytes, once complete. Kept in the snapshot's record (etcd,
   * written under the token), it anchors every file's digest: an archive replaced in the object
   * store, even with a self-consistent manifest, is refused at restore.
   */
  manifestSha256: Promise<string>;
}

/** Archive `dir` (the service's `spec.state.dir`). Symbolic links and special files are refused. */
export function packSnapshot(dir: string, meta: SnapshotMeta): PackedSnapshot {
  const pack = tar.pack();
  let manifestSha256!: (digest: string) => void;
  const digest = new Promise<string>((resolve) => (manifestSha256 = resolve));
  const manifest = writeEntries(pack, dir, meta, manifestSha256).then(
    (m) => {
      pack.finalize();
      return m;
    },
    (err: unknown) => {
      pack.destroy(err as Error);
      throw err;
    },
  );
  // The caller learns of a failure from the stream; this keeps an unread rejection quiet.
  manifest.catch(() => undefined);
  // A node stream for node consumers (the object store, files, sockets).
  return { stream: Readable.from(pack), manifest, manifestSha256: digest };
}

async function writeEntries(
  pack: tar.Pack,
  dir: string,
  meta: SnapshotMeta,
  manifestDigest: (sha256: string) => void,
): Promise<Manifest> {
  const entries: ManifestEntry[] = [];
  let bytes = 0;
  for (const path of await listTree(dir)) {
    const full = join(dir, ...path.split('/'));
    const info = await lstat(full);
    const mode = info.mode & 0o7777;
    if (info.isDirectory()) {
      await addEntry(pack, { name: `${path}/`, type: 'directory', mode });
      entries.push({ type: 'dir', path, mode });
      continue;
    }
    if (!info.isFile()) {
      throw new SnapshotError(
        `${full} is not a regular file or directory (a link, socket or device): a state directory holds only files and directories`,
        path,
      );
    }
    const sha256 = await addFile(pack, full, path, info.size, mode);
    entries.push({ type: 'file', path, size: info.size, mode, sha256 });
    bytes += info.size;
  }
  const manifest: Manifest = {
    version: MANIFEST_VERSION,
    identity: meta.identity,
    node: meta.node,
    token: meta.token,
    takenAt: new Date(meta.startedMs).toISOString(),
    quiesced: meta.quiesced,
    entries,
    bytes,
  };
  const text = JSON.stringify(manifest);
  manifestDigest(createHash('sha256').update(text, 'utf8').digest('hex'));
  await addEntry(pack, { name: MANIFEST_ENTRY, type: 'file', mode: 0o600 }, text);
  return manifest;
}

/** Every path under `dir`, relative and '/'-separated, parents before children, in name order. */
async function listTree(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  const names = (await readdir(join(dir, ...prefix.split('/').filter(Boolean)), { withFileTypes: true }))
    .map((d) => ({ name: d.name, dir: d.isDirectory() }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  for (const d of names) {
    const path = prefix ? `${prefix}/${d.name}` : d.name;
    out.push(path);
    if (d.dir) out.push(...(await listTree(dir, path)));
  }
  return out;
}

function addEntry(pack: tar.Pack, header: HeaderArgument, body?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    pack.entry(header, body ?? '', (err) => (err ? reject(err) : resolve()));
  });
}

/**
 * Stream one file into the archive, hashing it on the way. Its size is fixed by the header:
 * a file that shrinks while it is copied cannot be archived as it was (quiesce the service,
 * or take the snapshot again); bytes appended meanwhile are left out.
 */
async function addFile(
  pack: tar.Pack,
  full: string,
  path: string,
  size: number,
  mode: number,
): Promise<string> {
  const hash = createHash('sha256');
  let seen = 0;
  let settle!: (err?: Error | null) => void;
  const finished = new Promise<void>((resolve, reject) => {
    settle = (err) => (err ? reject(err) : resolve());
  });
  const entry = pack.entry({ name: path, type: 'file', size, mode }, (err) => settle(err));
  try {
    if (size > 0) {
      for await (const chunk of createReadStream(full, {
        start: 0,
        end: size - 1,
      }) as AsyncIterable<Buffer>) {
        seen += chunk.length;
        hash.update(chunk);
        if (!entry.write(chunk)) await once(entry, 'drain');
      }
    }
    if (seen !== size) throw new Error('the file shrank');
    // streamx's typings want an argument; ending with none is its documented use.
    (entry as unknown as { end(): void }).end();
    await finished;
  } catch (err) {
    throw new SnapshotError(
      `${full} changed while it was copied (${seen} of ${size} bytes read: ${(err as Error).message}); ` +
        'quiesce the service (fd-3 snapshot request) or take the snapshot again',
      path,
    );
  }
  return hash.digest('hex');
}

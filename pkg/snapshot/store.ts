// Where snapshots live: the archive in a NATS JetStream object store, and its record in etcd,
// written only while the term that took it still holds the identity (the leader key's mod
// revision is the fencing token). An archive without a record is ignored; a record is written
// in the same transaction that checks the term, so a snapshot taken under a stale token never
// becomes one a standby would restore (S2 for state).
import type { Etcd3 } from 'etcd3';
import type { NatsConnection, ObjectStore } from 'nats';
import { PassThrough, Readable } from 'node:stream';
import type { ReadableStream as WebReadableStream } from 'node:stream/web';
import { newer } from './held.js';
import { SnapshotRecord } from './record.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { Keys } from '../lease/keys.js';
import { SnapshotError } from './manifest.js';
import { packSnapshot } from './pack.js';
import { restoreSnapshot, type RestoreOptions, type RestoreResult } from './restore.js';

/** The object store bucket holding every identity's archives. */
export const SNAPSHOT_BUCKET = 'understudy-snapshots';

/**
 * An archive that sends no byte for this long is given up (upload or download): a NATS server
 * gone quiet must not hold a logout or a standby's refresh forever. Long enough for a loaded
 * JetStream to write a chunk to disk.
 */
export const SNAPSHOT_STALL_MS = 30_000;

/** NATS's per-request limit for each chunk of an upload. */
const PUT_REQUEST_MS = 10_000;

export { SnapshotRecord } from './record.js';

/** A snapshot refused because its term no longer holds the identity. */
export class StaleSnapshotError extends SnapshotError {
  constructor(identity: string, token: bigint, now: bigint | undefined) {
    super(
      `snapshot of ${identity} under token ${token} refused: ${now === undefined ? 'nobody holds' : `token ${now} holds`} ` +
        `${identity} now (a fenced write: only the current term may publish its state)`,
    );
    this.name = 'StaleSnapshotError';
  }
}

export function snapshotPrefix(keys: Keys, identity: string): string {
  return `${keys.prefix}/snapshots/${identity}/`;
}

/** Keys sort by token, then time: the last is the newest of the newest term. */
function recordKey(keys: Keys, r: { identity: string; token: string; takenAt: string }): string {
  return `${snapshotPrefix(keys, r.identity)}${r.token.padStart(20, '0')}-${String(Date.parse(r.takenAt)).padStart(15, '0')}`;
}

export interface PublishOptions {
  identity: string;
  node: string;
  token: bigint;
  /** The service's state directory. */
  dir: string;
  quiesced: boolean;
  /** Snapshots kept per identity; older ones are deleted after a publish. */
  keep: number;
  nowMs: number;
}

export class SnapshotStore {
  private bucket: Promise<ObjectStore> | undefined;

  constructor(
    private readonly etcd: Etcd3,
    private readonly nc: NatsConnection,
    private readonly keys = new Keys(),
  ) {}

  private store(): Promise<ObjectStore> {
    this.bucket ??= this.nc.jetstream().views.os(SNAPSHOT_BUCKET);
    // A failed open is tried again next time rather than remembered.
    this.bucket.catch(() => (this.bucket = undefined));
    return this.bucket;
  }

  /** The token holding `identity` now (its leader key's mod revision), if anyone holds it. */
  private async holder(identity: string): Promise<bigint | undefined> {
    const kv = (await this.etcd.get(this.keys.leader(identity)).options(within(ETCD_CALL_MS)).exec()).kvs[0];
    return kv ? BigInt(kv.mod_revision) : undefined;
  }

  /** Take a snapshot of `dir` and publish it, if `token` still holds the identity at the end. */
  async publish(o: PublishOptions): Promise<SnapshotRecord> {
    const before = await this.holder(o.identity);
    if (before !== o.token) throw new StaleSnapshotError(o.identity, o.token, before);
    const object = `${o.identity}/${o.token}-${o.nowMs}`;
    const packed = packSnapshot(o.dir, {
      identity: o.identity,
      node: o.node,
      token: String(o.token),
      quiesced: o.quiesced,
      startedMs: o.nowMs,
    });
    const os = await this.store();
    // A copy that fails fails the upload with it, and the client purges what it had sent:
    // no half archive is left (test: a link in the state directory).
    await os.put(
      { name: object },
      Readable.toWeb(
        watchStall(packed.stream, `upload of ${object}`),
      ) as unknown as ReadableStream<Uint8Array>,
      { timeout: PUT_REQUEST_MS },
    );
    const manifest = await packed.manifest;
    const record: SnapshotRecord = {
      identity: o.identity,
      node: o.node,
      token: String(o.token),
      takenAt: manifest.takenAt,
      object,
      bytes: manifest.bytes,
      files: manifest.entries.filter((e) => e.type === 'file').length,
      quiesced: o.quiesced,
      manifestSha256: await packed.manifestSha256,
    };
    const leader = this.keys.leader(o.identity);
    const txn = await this.etcd
      .if(leader, 'Mod', '==', String(o.token))
      .then(this.etcd.put(recordKey(this.keys, record)).value(JSON.stringify(record)))
      .options(within(ETCD_CALL_MS))
      .commit();
    if (!txn.succeeded) {
      await os.delete(object).catch(() => undefined);
      throw new StaleSnapshotError(o.identity, o.token, await this.holder(o.identity));
    }
    await this.prune(o.identity, o.keep);
    return record;
  }

  /** Records of `identity`, newest first. */
  list(identity: string): Promise<SnapshotRecord[]> {
    return listSnapshots(this.etcd, identity, this.keys);
  }

  /**
   * Restore the newest snapshot that passes every check into `dir`. A corrupt or truncated one
   * is refused and the next older one is tried, never one at or below `above` (what the
   * directory already holds); each refusal is returned with its reason.
   */
  async restoreLatest(
    identity: string,
    dir: string,
    opts: { above?: Pick<SnapshotRecord, 'token' | 'takenAt'> } & RestoreOptions = {},
  ): Promise<
    RestoreResult & { record: SnapshotRecord; refused: { record: SnapshotRecord; reason: string }[] }
  > {
    const refused: { record: SnapshotRecord; reason: string }[] = [];
    const os = await this.store();
    const above = opts.above;
    // Only newer than what the directory holds: falling back below it would roll state back.
    const candidates = (await this.list(identity)).filter((r) => !above || newer(r, above));
    for (const record of candidates) {
      try {
        const object = await os.get(record.object);
        if (!object) throw new SnapshotError(`archive ${record.object} is missing from the object store`);
        const source = watchStall(
          Readable.fromWeb(object.data as unknown as WebReadableStream<Uint8Array>),
          `download of ${record.object}`,
        );
        // A stream cut short is caught by the manifest check, before anything is swapped in.
        const result = await restoreSnapshot(
          source,
          dir,
          { identity, token: record.token, manifestSha256: record.manifestSha256 },
          opts.owner ? { owner: opts.owner } : {},
        );
        return { ...result, record, refused };
      } catch (err) {
        refused.push({ record, reason: (err as Error).message });
      }
    }
    const why = refused.map((r) => `${r.record.object}: ${r.reason}`).join('; ');
    throw new SnapshotError(
      `no snapshot of ${identity} could be restored${why ? ` (${why})` : ': there is none'}`,
    );
  }

  /** Keep the newest `keep` records; delete the others' records, then their archives. */
  private async prune(identity: string, keep: number): Promise<void> {
    const old = (await this.list(identity)).slice(keep);
    if (old.length === 0) return;
    const os = await this.store();
    for (const record of old) {
      await this.etcd.delete().key(recordKey(this.keys, record)).options(within(ETCD_CALL_MS));
      await os.delete(record.object).catch(() => undefined);
    }
  }
}

/** Records of `identity` in etcd, newest first; one that does not parse is skipped. */
export async function listSnapshots(
  etcd: Etcd3,
  identity: string,
  keys = new Keys(),
): Promise<SnapshotRecord[]> {
  const res = await etcd
    .getAll()
    .prefix(snapshotPrefix(keys, identity))
    .sort('Key', 'Descend')
    .options(within(ETCD_CALL_MS))
    .strings();
  return Object.values(res).flatMap((text) => {
    try {
      const parsed = SnapshotRecord.safeParse(JSON.parse(text));
      return parsed.success ? [parsed.data] : [];
    } catch {
      return [];
    }
  });
}

/** `source`, failed with a clear error once it sends nothing for SNAPSHOT_STALL_MS. */
function watchStall(source: Readable, what: string): Readable {
  const out = new PassThrough();
  let timer: NodeJS.Timeout | undefined;
  const arm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      const err = new SnapshotError(
        `${what} stalled: no byte for ${SNAPSHOT_STALL_MS / 1000} s; check NATS (JetStream) and try again`,
      );
      source.destroy(err);
      out.destroy(err);
    }, SNAPSHOT_STALL_MS);
  };
  arm();
  source.on('data', arm);
  source.once('error', (err) => out.destroy(err));
  const stop = () => clearTimeout(timer);
  out.once('close', stop);
  source.once('end', stop);
  source.pipe(out);
  return out;
}

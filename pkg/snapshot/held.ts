// Which snapshot a node's state directory holds, and when a node should replace it with a newer
// one: pure rules over the store's records, plus the small record kept beside the directory so
// the answer survives an agent restart.
import { randomBytes } from 'node:crypto';
import { open, readFile, rename, rm } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { z } from 'zod';
import type { SnapshotRecord } from './store.js';

/**
 * The snapshot a state directory was last restored from, or last published from by this node.
 * A node that published it kept writing after: its directory is that snapshot or newer.
 */
export const HeldSnapshot = z.strictObject({
  object: z.string().min(1),
  token: z.string().regex(/^\d+$/),
  takenAt: z.string(),
  manifestSha256: z.string().regex(/^[0-9a-f]{64}$/),
  /** How it came here: restored from the store, or published by this node while leading. */
  how: z.enum(['restored', 'published']),
});
export type HeldSnapshot = z.infer<typeof HeldSnapshot>;

export function heldOf(record: SnapshotRecord, how: HeldSnapshot['how']): HeldSnapshot {
  return {
    object: record.object,
    token: record.token,
    takenAt: record.takenAt,
    manifestSha256: record.manifestSha256,
    how,
  };
}

/** Where the held record of `dir` is kept: beside it, so a restore's swap never touches it. */
export function heldPath(dir: string): string {
  return join(dirname(dir), `.${basename(dir)}.understudy-snapshot.json`);
}

/** Snapshots order by term, then time (as their keys do in etcd). */
export function newer(
  a: Pick<SnapshotRecord, 'token' | 'takenAt'>,
  b: Pick<SnapshotRecord, 'token' | 'takenAt'>,
) {
  const ta = BigInt(a.token);
  const tb = BigInt(b.token);
  if (ta !== tb) return ta > tb;
  return Date.parse(a.takenAt) > Date.parse(b.takenAt);
}

export type CatchUp = { restore: true; reason: string } | { restore: false; reason: string };

/**
 * Should a node about to lead (or standing by) replace its state directory with the newest
 * snapshot? Only when someone else's state is newer than what it holds: a node holding the
 * newest snapshot keeps its directory, since if it published that snapshot it went on
 * writing after, and a restore would throw those writes away.
 */
export function decideCatchUp(held: HeldSnapshot | undefined, newest: SnapshotRecord | undefined): CatchUp {
  if (!newest)
    return { restore: false, reason: 'no snapshot has been published yet: the directory stays as it is' };
  const what = `snapshot ${newest.object} (term ${newest.token}, taken ${newest.takenAt})`;
  if (!held) return { restore: true, reason: `this node holds no snapshot; restoring ${what}` };
  if (held.object === newest.object) {
    return {
      restore: false,
      reason:
        held.how === 'published'
          ? `this node published the newest ${what} and its directory has only gone on from there`
          : `this node already holds the newest ${what}`,
    };
  }
  if (!newer(newest, held)) {
    return {
      restore: false,
      reason: `this node holds ${held.object}, newer than any snapshot on record (${what}); keeping it`,
    };
  }
  return { restore: true, reason: `${what} is newer than the ${held.object} this node holds` };
}

/** The held record of `dir`; undefined when there is none or it does not parse (then: hold nothing). */
export async function readHeld(dir: string): Promise<HeldSnapshot | undefined> {
  try {
    const parsed = HeldSnapshot.safeParse(JSON.parse(await readFile(heldPath(dir), 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** Record what `dir` holds: written to a temporary file, synced, renamed over the old record. */
export async function writeHeld(dir: string, held: HeldSnapshot): Promise<void> {
  const path = heldPath(dir);
  const temp = `${path}.${randomBytes(4).toString('hex')}`;
  const file = await open(temp, 'wx', 0o600);
  try {
    await file.writeFile(`${JSON.stringify(held)}\n`);
    await file.sync();
  } finally {
    await file.close();
  }
  await rename(temp, path).catch(async (err: Error) => {
    await rm(temp, { force: true });
    throw err;
  });
}

// A snapshot's record in etcd, as zod: what the store writes, standbys read and the API shows.
// Kept apart from the store, so the API schema (and the CLI) read it without tar or NATS.
import { z } from 'zod';

export const SnapshotRecord = z.strictObject({
  identity: z.string(),
  node: z.string(),
  token: z.string().regex(/^\d+$/),
  takenAt: z.string(),
  /** Name of the archive in the object store. */
  object: z.string(),
  /** Bytes of the state directory's files (not of the archive). */
  bytes: z.number().int().min(0),
  files: z.number().int().min(0),
  quiesced: z.boolean(),
  /** sha256 of the archive's manifest: restore refuses an archive whose manifest differs. */
  manifestSha256: z.string().regex(/^[0-9a-f]{64}$/),
});
export type SnapshotRecord = z.infer<typeof SnapshotRecord>;

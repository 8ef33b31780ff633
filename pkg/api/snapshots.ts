// Snapshots of an identity's state directory through the API: take one now, list those kept.
import { z } from 'zod';
import { SnapshotRecord } from '../snapshot/record.js';

export { SnapshotRecord };

export const SnapshotBody = z.strictObject({
  /** Why, for the log and the history (e.g. "before the vendor's upgrade"). */
  reason: z.string().min(1).max(500).optional(),
});
export type SnapshotBody = z.infer<typeof SnapshotBody>;

export const SnapshotList = z.strictObject({
  identity: z.string(),
  /** Newest first; the first is what a standby restores. */
  snapshots: z.array(SnapshotRecord),
});
export type SnapshotList = z.infer<typeof SnapshotList>;

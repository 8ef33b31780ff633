// What a snapshot of a service's state directory claims to hold: every file with its size,
// mode and sha256, stamped with the fencing token of the term that took it. A restore
// believes nothing it cannot check against this list.
import { z } from 'zod';

/** The manifest is the archive's last entry: its digests are known only once every file passed. */
export const MANIFEST_ENTRY = '.understudy-manifest.json';

export const MANIFEST_VERSION = 1;

/**
 * A path inside the state directory: relative, '/'-separated, no '.' or '..' segment, no
 * empty segment. Anything else could write outside the directory being restored.
 */
export const StatePath = z
  .string()
  .min(1)
  .max(4096)
  .refine(
    (p) => !p.startsWith('/') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..'),
    'must be a relative path inside the state directory, without "." or ".." segments',
  )
  .refine((p) => p !== MANIFEST_ENTRY, `${MANIFEST_ENTRY} is reserved for the manifest`);

export const ManifestEntry = z.discriminatedUnion('type', [
  z.strictObject({
    type: z.literal('file'),
    path: StatePath,
    size: z.number().int().min(0),
    /** Permission bits only (0o7777 at most). */
    mode: z.number().int().min(0).max(0o7777),
    sha256: z.string().regex(/^[0-9a-f]{64}$/),
  }),
  z.strictObject({
    type: z.literal('dir'),
    path: StatePath,
    mode: z.number().int().min(0).max(0o7777),
  }),
]);
export type ManifestEntry = z.infer<typeof ManifestEntry>;

export const Manifest = z.strictObject({
  version: z.literal(MANIFEST_VERSION),
  identity: z.string().min(1),
  node: z.string().min(1),
  /** Fencing token of the term that took it: a restore and a drift check compare it. */
  token: z.string().regex(/^\d+$/),
  /** ISO time the copy started. */
  takenAt: z.string(),
  /**
   * The service confirmed a quiescent state before the copy (fd-3 `snapshot` request); false:
   * the files were copied as they were, and a file written meanwhile may be torn.
   */
  quiesced: z.boolean(),
  entries: z.array(ManifestEntry),
  /** Sum of the files' sizes. */
  bytes: z.number().int().min(0),
});
export type Manifest = z.infer<typeof Manifest>;

/** Why a snapshot was refused; `path` names the entry at fault when there is one. */
export class SnapshotError extends Error {
  constructor(
    message: string,
    readonly path?: string,
  ) {
    super(message);
    this.name = 'SnapshotError';
  }
}

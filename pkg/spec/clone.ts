// A clone: a node registered as a cold standby of an identity, with the bundle it needs to
// take over as a faithful copy — the spec revision, the credential reference (never the
// secret), the access lists, the service version and the snapshot of the state. Written by
// the controller (`understudy clone ID --to NODE`), read by the agent started with --clone.
import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { assertName, Name } from '../lease/keys.js';
import { SnapshotRecord } from '../snapshot/record.js';
import { AccessLists, Credential } from './schema.js';

export const CloneBundle = z.strictObject({
  /** The spec revision the clone was made from; the node runs the current one once it starts. */
  specRevision: z.string().regex(/^\d+$/),
  /** Where the credential comes from (file path or etcd): provision it on the node. */
  credential: Credential,
  access: AccessLists,
  /** Digest of `access` (pkg/spec/fingerprint.ts), as heartbeats report it. */
  accessDigest: z.string(),
  /** The leader's service version when the clone was made (declared, or its executable's hash). */
  version: z.string().optional(),
  /** The newest snapshot then; the node restores the newest good one when it starts. */
  snapshot: SnapshotRecord.optional(),
});
export type CloneBundle = z.infer<typeof CloneBundle>;

export const CloneRecord = z.strictObject({
  identity: Name,
  node: Name,
  createdAt: z.string(),
  actor: z.string(),
  reason: z.string().optional(),
  bundle: CloneBundle,
  /** When an agent last bootstrapped from it (`understudy-agent --clone`). */
  bootstrappedAt: z.string().optional(),
});
export type CloneRecord = z.infer<typeof CloneRecord>;

export function clonesPrefix(prefix: string, identity: string): string {
  return `${prefix}/clones/${identity}/`;
}

export function cloneKey(prefix: string, identity: string, node: string): string {
  return `${clonesPrefix(prefix, identity)}${node}`;
}

export async function readClone(
  etcd: Etcd3,
  identity: string,
  node: string,
  prefix = 'understudy',
): Promise<CloneRecord | undefined> {
  assertName('identity', identity);
  assertName('node', node);
  const text = await etcd
    .get(cloneKey(prefix, identity, node))
    .options(within(ETCD_CALL_MS))
    .string();
  if (text === null) return undefined;
  const parsed = CloneRecord.safeParse(JSON.parse(text));
  if (!parsed.success) {
    throw new Error(
      `the clone record of ${identity} for ${node} does not parse (${parsed.error.issues[0]?.message}); register it again with understudy clone ${identity} --to ${node}`,
    );
  }
  return parsed.data;
}

export async function listClones(
  etcd: Etcd3,
  identity: string,
  prefix = 'understudy',
): Promise<CloneRecord[]> {
  const res = await etcd
    .getAll()
    .prefix(clonesPrefix(prefix, identity))
    .options(within(ETCD_CALL_MS))
    .strings();
  return Object.values(res).flatMap((text) => {
    try {
      const parsed = CloneRecord.safeParse(JSON.parse(text));
      return parsed.success ? [parsed.data] : [];
    } catch {
      return [];
    }
  });
}

// Where the public keys of live signers are found: one etcd key per agent node, bound to the
// agent's session lease (so it is gone when the session is, and the lease names the session
// that holds it), and the controllers' keys in their member records (also on their session
// lease, pkg/controller/store.ts). Verifiers that read etcd (controllers, agents) look keys up
// here; clients without etcd get them from the controller's API.
import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { isUserPublicKey } from './nkey.js';

export const NodeKeyRecord = z.strictObject({
  node: z.string(),
  /** The node's public nkey ('U...'). */
  key: z.string().refine(isUserPublicKey, 'must be a NATS user public nkey'),
  /** The session lease the key is bound to (decimal lease id). */
  lease: z.string(),
});
export type NodeKeyRecord = z.infer<typeof NodeKeyRecord>;

export const nodeKeysPrefix = (prefix = 'understudy') => `${prefix}/keys/nodes/`;
export const nodeKeyPath = (node: string, prefix = 'understudy') => `${nodeKeysPrefix(prefix)}${node}`;

/** Register `key` as `node`'s key for the life of session lease `leaseId`. */
export async function registerNodeKey(
  client: Etcd3,
  node: string,
  key: string,
  leaseId: string,
  prefix = 'understudy',
): Promise<void> {
  const record: NodeKeyRecord = { node, key, lease: leaseId };
  await client
    .put(nodeKeyPath(node, prefix))
    .value(JSON.stringify(record))
    .lease(leaseId)
    .options(within(ETCD_CALL_MS));
}

/** Parse a stored node key record; undefined if it is not one (never trusted then). */
export function parseNodeKey(raw: string | null | undefined): NodeKeyRecord | undefined {
  if (raw === null || raw === undefined) return undefined;
  try {
    const parsed = NodeKeyRecord.safeParse(JSON.parse(raw));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** The key `node` registered for its live session, if any. */
export async function readNodeKey(
  client: Etcd3,
  node: string,
  prefix = 'understudy',
): Promise<NodeKeyRecord | undefined> {
  const raw = await client.get(nodeKeyPath(node, prefix)).options(within(ETCD_CALL_MS)).string();
  const record = parseNodeKey(raw);
  return record?.node === node ? record : undefined;
}

/** Every live node's key, by node. */
export async function readNodeKeys(
  client: Etcd3,
  prefix = 'understudy',
): Promise<Map<string, NodeKeyRecord>> {
  const all = await client.getAll().prefix(nodeKeysPrefix(prefix)).options(within(ETCD_CALL_MS)).strings();
  const keys = new Map<string, NodeKeyRecord>();
  for (const [path, raw] of Object.entries(all)) {
    const record = parseNodeKey(raw);
    if (record !== undefined && path === nodeKeyPath(record.node, prefix)) keys.set(record.node, record);
  }
  return keys;
}

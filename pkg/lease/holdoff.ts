// Holding nodes off an identity for the length of a handover: they neither campaign for it
// nor log in as it. A hold-off's keys share one lease of their own, so whoever holds nodes off
// and then dies leaves nothing behind past that lease's TTL. Every write validates its record
// and, given an Authority, lands only while the caller still holds its term (see admin.ts).
import type { Etcd3, IOperation } from 'etcd3';
import { noAuthority, requireAuthority, type Authority } from './admin.js';
import { ETCD_CALL_MS, isLeaseGone, within } from './etcd.js';
import { assertName, HoldOffRecord, Keys } from './keys.js';
import { ETCD_MIN_TTL_S } from './timing.js';

/**
 * Hold `nodes` off `identity` until released or for `ttlMs` at most: they neither campaign for
 * it nor log in as it. The keys share one lease of their own, so a controller that dies
 * mid-handover leaves nothing behind for longer than the handover's deadline. Returns the
 * lease id (release with releaseHoldOff).
 */
export async function holdOff(
  client: Etcd3,
  opts: {
    identity: string;
    nodes: string[];
    ttlMs: number;
    record: HoldOffRecord;
    keys?: Keys;
    authority?: Authority;
  },
): Promise<string> {
  const keys = opts.keys ?? new Keys();
  const leaseId = await grantHoldOffLease(client, { ttlMs: opts.ttlMs, authority: opts.authority });
  const puts = holdOffPuts(client, { ...opts, keys, leaseId });
  if (puts.length > 0) {
    let txn = client.if(keys.leader(opts.identity), 'Create', '>', -1);
    if (opts.authority) txn = txn.and(opts.authority.key, 'Mod', '==', opts.authority.revision);
    const result = await txn
      .then(...puts)
      .options(within(ETCD_CALL_MS))
      .commit();
    if (!result.succeeded) {
      // Nothing was written under it: the lease is ours alone and of no use to anyone. If it
      // cannot be released now it lapses by itself; the error says so rather than hiding it.
      const unreleased = await releaseHoldOff(client, leaseId).then(
        () => undefined,
        (err: Error) => err.message,
      );
      const refusal = noAuthority(opts.authority!, `hold-off of ${opts.nodes.join(', ')}`);
      if (unreleased) {
        refusal.message += ` (its unused lease ${leaseId} could not be released: ${unreleased}; it lapses by itself within ${opts.ttlMs} ms)`;
      }
      throw refusal;
    }
  }
  return leaseId;
}

/** The lease a hold-off's keys will share: it lapses by itself after `ttlMs` (rounded up to s). */
export async function grantHoldOffLease(
  client: Etcd3,
  opts: { ttlMs: number; authority?: Authority | undefined },
): Promise<string> {
  const ttl = Math.max(ETCD_MIN_TTL_S, Math.ceil(opts.ttlMs / 1000));
  requireAuthority(opts.authority, 'hold-off lease grant');
  const granted = await client.leaseClient.leaseGrant({ TTL: ttl }, within(ETCD_CALL_MS));
  return granted.ID;
}

/**
 * The writes that hold `nodes` off `identity` under `leaseId`, for the caller to put in its
 * own txn (the controller writes them with the workflow step that records the lease, so a
 * step retried after a lost compare never leaves a hold-off no workflow knows of).
 */
export function holdOffPuts(
  client: Etcd3,
  opts: { identity: string; nodes: string[]; record: HoldOffRecord; leaseId: string; keys?: Keys },
): IOperation[] {
  const keys = opts.keys ?? new Keys();
  assertName('identity', opts.identity);
  for (const node of opts.nodes) assertName('node', node);
  const record = HoldOffRecord.parse(opts.record);
  return opts.nodes.map((node) =>
    client.put(keys.holdOff(opts.identity, node)).value(JSON.stringify(record)).lease(opts.leaseId),
  );
}

/**
 * Hold more nodes off under an existing hold-off's lease, so they are released together with
 * the first ones (a forced move widens the hold-off to every other candidate before it
 * revokes the old leader). The record is validated before anything is sent, and the keys are
 * written only while `authority` still holds its term: a caller deposed meanwhile (even one
 * that won a later term since) writes nothing and gets a 'no-authority' error.
 */
export async function extendHoldOff(
  client: Etcd3,
  opts: {
    identity: string;
    nodes: string[];
    record: HoldOffRecord;
    leaseId: string;
    authority: Authority;
    keys?: Keys;
  },
): Promise<void> {
  const puts = holdOffPuts(client, opts);
  if (puts.length === 0) return;
  const result = await client
    .if(opts.authority.key, 'Mod', '==', opts.authority.revision)
    .then(...puts)
    .options(within(ETCD_CALL_MS))
    .commit();
  if (!result.succeeded) throw noAuthority(opts.authority, `hold-off of ${opts.nodes.join(', ')}`);
}

/**
 * End a hold-off early (its keys go with its lease); a lease already gone is not an error.
 * With `authority`, only while the caller still holds its term (checked right before the
 * revoke, which cannot be part of a txn).
 */
export async function releaseHoldOff(client: Etcd3, leaseId: string, authority?: Authority): Promise<void> {
  requireAuthority(authority, `release of hold-off lease ${leaseId}`);
  try {
    await client.leaseClient.leaseRevoke({ ID: leaseId }, within(ETCD_CALL_MS));
  } catch (err) {
    if (!isLeaseGone(err)) throw err;
  }
}

/** Nodes currently held off an identity, with why. */
export async function listHoldOffs(
  client: Etcd3,
  identity: string,
  keys = new Keys(),
): Promise<Map<string, HoldOffRecord>> {
  const raw = await client.getAll().prefix(keys.holdOffs(identity)).options(within(ETCD_CALL_MS)).strings();
  const out = new Map<string, HoldOffRecord>();
  for (const [key, value] of Object.entries(raw)) {
    const parsed = HoldOffRecord.safeParse(JSON.parse(value));
    if (parsed.success) out.set(key.slice(keys.holdOffs(identity).length), parsed.data);
  }
  return out;
}

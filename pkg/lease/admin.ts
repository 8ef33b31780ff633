// Operations on someone else's leadership, for the controller: read, transfer, revoke,
// fence. Each is one etcd transaction guarded by what the caller last saw, so a change in
// between makes it fail cleanly instead of acting on a stale view.
import type { Etcd3 } from 'etcd3';
import type { FencingToken } from './campaign.js';
import { within } from './etcd.js';
import { ETCD_MIN_TTL_S } from './timing.js';
import {
  assertName,
  CandidateRecord,
  decode,
  FenceRecord,
  HoldOffRecord,
  Keys,
  LeaderRecord,
  LoginRecord,
  type TermEnd,
} from './keys.js';

const CALL_MS = 2_000;

export class LeaseOperationError extends Error {
  constructor(
    message: string,
    readonly code:
      'no-leader' | 'changed' | 'not-logged-out' | 'target-unavailable' | 'target-fenced' | 'same-node',
  ) {
    super(message);
    this.name = 'LeaseOperationError';
  }
}

export interface LeaderView {
  record: LeaderRecord;
  token: FencingToken;
  /** This term's login record, if the holder wrote one (`false` = confirmed logged out). */
  login: LoginRecord | undefined;
  /** Mod revision of that record: transfer compares it, so any later write aborts the move. */
  loginRevision: string | undefined;
}

export async function readLeader(
  client: Etcd3,
  identity: string,
  keys = new Keys(),
): Promise<LeaderView | undefined> {
  assertName('identity', identity);
  const result = await client
    .if(keys.leader(identity), 'Create', '>', -1)
    .then(client.get(keys.leader(identity)), client.get(keys.login(identity)))
    .options(within(CALL_MS))
    .commit();
  const leaderKv = result.responses[0]?.response_range?.kvs[0];
  if (!leaderKv) return undefined;
  const token = BigInt(leaderKv.mod_revision);
  const loginKv = result.responses[1]?.response_range?.kvs[0];
  const login = decode(LoginRecord, loginKv?.value, keys.login(identity));
  // A login record of an earlier term says nothing about this one.
  const current = login !== undefined && login.token === String(token);
  return {
    record: decode(LeaderRecord, leaderKv.value, keys.leader(identity))!,
    token,
    login: current ? login : undefined,
    loginRevision: current ? loginKv?.mod_revision : undefined,
  };
}

/**
 * Move leadership to `target` in one txn: only if the leader is still the term `expectToken`,
 * its holder recorded a confirmed logout, and the target is a live, unfenced candidate. The
 * target's campaign sees the key on its lease and leads with the new token (the txn's
 * revision, greater than the old one).
 */
export async function transfer(
  client: Etcd3,
  opts: { identity: string; target: string; expectToken: FencingToken; actor: string; keys?: Keys },
): Promise<FencingToken> {
  const keys = opts.keys ?? new Keys();
  assertName('node', opts.target);
  const current = await readLeader(client, opts.identity, keys);
  if (!current) throw new LeaseOperationError(`${opts.identity} has no leader to transfer from`, 'no-leader');
  if (current.token !== opts.expectToken) {
    throw new LeaseOperationError(
      `${opts.identity}: leader changed (token ${current.token}, expected ${opts.expectToken}); read the status again`,
      'changed',
    );
  }
  if (current.record.node === opts.target) {
    throw new LeaseOperationError(`${opts.identity} is already led by ${opts.target}`, 'same-node');
  }
  const loginRevision = current.login?.loggedIn === false ? current.loginRevision : undefined;
  if (loginRevision === undefined) {
    throw new LeaseOperationError(
      `${opts.identity}: ${current.record.node} has not confirmed logout of term ${current.token}; drain it first`,
      'not-logged-out',
    );
  }
  const candidateKey = keys.candidate(opts.identity, opts.target);
  const candidateKv = (await client.get(candidateKey).options(within(CALL_MS)).exec()).kvs[0];
  const candidate = decode(CandidateRecord, candidateKv?.value, candidateKey);
  if (!candidateKv || !candidate) {
    throw new LeaseOperationError(
      `${opts.target} is not a live candidate for ${opts.identity} (no agent session campaigning)`,
      'target-unavailable',
    );
  }
  const record: LeaderRecord = {
    node: opts.target,
    leaseId: candidate.leaseId,
    ttlMs: candidate.ttlMs,
    mustBeOutByMs: candidate.mustBeOutByMs,
    since: Date.now(),
  };
  const end: TermEnd = {
    token: String(current.token),
    node: current.record.node,
    leaseId: current.record.leaseId,
    how: 'transferred',
    loggedOut: true,
    holderTtlMs: current.record.ttlMs,
    at: Date.now(),
    actor: opts.actor,
  };
  const leaderKey = keys.leader(opts.identity);
  const result = await client
    .if(leaderKey, 'Mod', '==', String(current.token))
    .and(keys.login(opts.identity), 'Mod', '==', loginRevision)
    .and(candidateKey, 'Mod', '==', candidateKv.mod_revision)
    .and(keys.fence(opts.target), 'Create', '==', 0)
    .then(
      client.put(leaderKey).value(JSON.stringify(record)).lease(candidate.leaseId),
      client.delete().key(keys.login(opts.identity)),
      client.put(keys.termEnd(opts.identity)).value(JSON.stringify(end)),
    )
    .options(within(CALL_MS))
    .commit();
  if (!result.succeeded) {
    const fenced = await isFenced(client, opts.target, keys);
    if (fenced) throw new LeaseOperationError(`${opts.target} is fenced: unfence it first`, 'target-fenced');
    throw new LeaseOperationError(
      `${opts.identity}: leader, login state or target changed during the transfer; nothing was moved, read the status again`,
      'changed',
    );
  }
  return BigInt(result.header.revision);
}

/**
 * Forced fencing: revoke the holder's lease (every key bound to it goes at once). Records
 * the revocation first, so the successor waits out the holder's self-fence deadline (S3):
 * the holder learns of the revocation only at its next keepalive.
 */
export async function revokeHolder(
  client: Etcd3,
  opts: { identity: string; expectToken: FencingToken; actor: string; keys?: Keys },
): Promise<void> {
  const keys = opts.keys ?? new Keys();
  const current = await readLeader(client, opts.identity, keys);
  if (!current) throw new LeaseOperationError(`${opts.identity} has no leader to revoke`, 'no-leader');
  if (current.token !== opts.expectToken) {
    throw new LeaseOperationError(
      `${opts.identity}: leader changed (token ${current.token}, expected ${opts.expectToken}); read the status again`,
      'changed',
    );
  }
  const end: TermEnd = {
    token: String(current.token),
    node: current.record.node,
    leaseId: current.record.leaseId,
    how: 'revoked',
    loggedOut: current.login?.loggedIn === false,
    holderTtlMs: current.record.ttlMs,
    at: Date.now(),
    actor: opts.actor,
  };
  const recorded = await client
    .if(keys.leader(opts.identity), 'Mod', '==', String(current.token))
    .then(client.put(keys.termEnd(opts.identity)).value(JSON.stringify(end)))
    .options(within(CALL_MS))
    .commit();
  if (!recorded.succeeded) {
    throw new LeaseOperationError(
      `${opts.identity}: leader changed before the revocation; nothing was revoked`,
      'changed',
    );
  }
  try {
    await client.leaseClient.leaseRevoke({ ID: current.record.leaseId }, within(CALL_MS));
  } catch (err) {
    if ((err as Error).name !== 'EtcdLeaseInvalidError') throw err;
  }
}

/** Fence a node: it never campaigns (any identity) until unfenced. Survives restarts. */
export async function fence(
  client: Etcd3,
  opts: { node: string; reason: string; actor: string; keys?: Keys },
): Promise<void> {
  assertName('node', opts.node);
  const record = FenceRecord.parse({ reason: opts.reason, actor: opts.actor, at: Date.now() });
  await client
    .put((opts.keys ?? new Keys()).fence(opts.node))
    .value(JSON.stringify(record))
    .options(within(CALL_MS));
}

export async function unfence(client: Etcd3, opts: { node: string; keys?: Keys }): Promise<void> {
  assertName('node', opts.node);
  await client
    .delete()
    .key((opts.keys ?? new Keys()).fence(opts.node))
    .options(within(CALL_MS));
}

export async function isFenced(
  client: Etcd3,
  node: string,
  keys = new Keys(),
): Promise<FenceRecord | undefined> {
  const raw = await client.get(keys.fence(node)).options(within(CALL_MS)).buffer();
  return decode(FenceRecord, raw, keys.fence(node));
}

/**
 * Hold `nodes` off `identity` until released or for `ttlMs` at most: they neither campaign for
 * it nor log in as it. The keys share one lease of their own, so a controller that dies
 * mid-handover leaves nothing behind for longer than the handover's deadline. Returns the
 * lease id (release with releaseHoldOff).
 */
export async function holdOff(
  client: Etcd3,
  opts: { identity: string; nodes: string[]; ttlMs: number; record: HoldOffRecord; keys?: Keys },
): Promise<string> {
  const keys = opts.keys ?? new Keys();
  assertName('identity', opts.identity);
  for (const node of opts.nodes) assertName('node', node);
  const record = HoldOffRecord.parse(opts.record);
  const ttl = Math.max(ETCD_MIN_TTL_S, Math.ceil(opts.ttlMs / 1000));
  const granted = await client.leaseClient.leaseGrant({ TTL: ttl }, within(CALL_MS));
  const leaseId = granted.ID;
  if (opts.nodes.length > 0) {
    await client
      .if(keys.leader(opts.identity), 'Create', '>', -1)
      .then(
        ...opts.nodes.map((node) =>
          client.put(keys.holdOff(opts.identity, node)).value(JSON.stringify(record)).lease(leaseId),
        ),
      )
      .options(within(CALL_MS))
      .commit();
  }
  return leaseId;
}

/** End a hold-off early (its keys go with its lease); a lease already gone is not an error. */
export async function releaseHoldOff(client: Etcd3, leaseId: string): Promise<void> {
  try {
    await client.leaseClient.leaseRevoke({ ID: leaseId }, within(CALL_MS));
  } catch (err) {
    if ((err as Error).name !== 'EtcdLeaseInvalidError') throw err;
  }
}

/** Nodes currently held off an identity, with why. */
export async function listHoldOffs(
  client: Etcd3,
  identity: string,
  keys = new Keys(),
): Promise<Map<string, HoldOffRecord>> {
  const raw = await client.getAll().prefix(keys.holdOffs(identity)).options(within(CALL_MS)).strings();
  const out = new Map<string, HoldOffRecord>();
  for (const [key, value] of Object.entries(raw)) {
    const parsed = HoldOffRecord.safeParse(JSON.parse(value));
    if (parsed.success) out.set(key.slice(keys.holdOffs(identity).length), parsed.data);
  }
  return out;
}

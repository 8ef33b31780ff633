// Operations on someone else's leadership, for the controller: read, transfer, revoke,
// fence (hold-offs are in holdoff.ts). Each is one etcd transaction guarded by what the
// caller last saw, so a change in between makes it fail cleanly instead of acting on a stale
// view.
import type { Etcd3, IOperation } from 'etcd3';
import type { Guard, TxnBatcher } from './batch.js';
import { parseCandidates, successorOf } from './rank.js';
import type { FencingToken } from './campaign.js';
import { ETCD_CALL_MS, isLeaseGone, within } from './etcd.js';
import {
  assertName,
  CandidateRecord,
  decode,
  FenceRecord,
  Keys,
  LeaderRecord,
  LoginRecord,
  type TermEnd,
} from './keys.js';

/**
 * Rounds of "read the holder's keys, record their term ends" before a revoke gives up: each
 * lost compare means a term began or ended on that lease meanwhile, which settles in a round.
 */
const REVOKE_ATTEMPTS = 5;

export class LeaseOperationError extends Error {
  constructor(
    message: string,
    readonly code:
      | 'no-leader'
      | 'changed'
      | 'not-logged-out'
      | 'target-unavailable'
      | 'target-fenced'
      /** The target is held back as drifted from what the identity runs. */
      | 'target-drifted'
      | 'same-node'
      /** The caller's own authority (a controller's election term) ended: nothing was done. */
      | 'no-authority',
  ) {
    super(message);
    this.name = 'LeaseOperationError';
  }
}

/**
 * Whose word an operation acts on: the caller's own term (the active controller's election
 * key and its mod revision). etcd writes compare `key`'s mod revision with `revision` in the
 * same txn; calls that cannot be part of a txn (lease grant and revoke) ask `mayAct()`
 * synchronously right before they are sent. So a caller that froze, lost its term and
 * resumed does nothing, even before its own timers have noticed.
 */
export interface Authority {
  key: string;
  revision: string;
  mayAct(): boolean;
  /** For errors: whose authority ("controller c1, election term 42"). */
  describe?: string;
}

/** The refusal of an operation whose caller's term ended (nothing was done). */
export function noAuthority(authority: Authority, what: string): LeaseOperationError {
  return new LeaseOperationError(
    `${authority.describe ?? 'the caller'} no longer holds its term: ${what} not done; the current holder of that term decides now`,
    'no-authority',
  );
}

/** For calls etcd cannot guard in a txn (lease grant, revoke): refuse unless the caller still acts. */
export function requireAuthority(authority: Authority | undefined, what: string): void {
  if (authority && !authority.mayAct()) throw noAuthority(authority, what);
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
    .options(within(ETCD_CALL_MS))
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
  opts: {
    identity: string;
    target: string;
    expectToken: FencingToken;
    actor: string;
    keys?: Keys;
    authority?: Authority;
  },
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
  const target = await readTransferTarget(client, { identity: opts.identity, node: opts.target, keys });
  const move = transferWrites(client, {
    identity: opts.identity,
    from: { token: current.token, record: current.record },
    target,
    actor: opts.actor,
    at: Date.now(),
    keys,
  });
  const guards: Guard[] = [...move.guards, [keys.login(opts.identity), 'Mod', '==', loginRevision]];
  if (opts.authority) guards.push([opts.authority.key, 'Mod', '==', opts.authority.revision]);
  let txn = client.if(...guards[0]!);
  for (const guard of guards.slice(1)) txn = txn.and(...guard);
  const result = await txn
    .then(...move.ops)
    .options(within(ETCD_CALL_MS))
    .commit();
  if (!result.succeeded) {
    if (opts.authority && !(await holdsAuthority(client, opts.authority))) {
      throw noAuthority(opts.authority, `transfer of ${opts.identity}`);
    }
    const fenced = await isFenced(client, opts.target, keys);
    if (fenced) throw new LeaseOperationError(`${opts.target} is fenced: unfence it first`, 'target-fenced');
    const drifted = (
      await client.get(keys.drift(opts.identity, opts.target)).options(within(ETCD_CALL_MS)).string()
    )?.slice(0, 300);
    if (drifted !== undefined) {
      throw new LeaseOperationError(
        `${opts.target} is held back from ${opts.identity} as drifted (${drifted}): let it re-sync first`,
        'target-drifted',
      );
    }
    throw new LeaseOperationError(
      `${opts.identity}: leader, login state or target changed during the transfer; nothing was moved, read the status again`,
      'changed',
    );
  }
  return BigInt(result.header.revision);
}

/** A live candidate a term can be moved to, as read: its registration and that record's revision. */
export interface TransferTarget {
  node: string;
  candidate: CandidateRecord;
  /** The registration's mod revision: the move compares it, so a target that left stops it. */
  revision: string;
}

/** Read `node`'s registration as a candidate for `identity`; refused if it has none. */
export async function readTransferTarget(
  client: Etcd3,
  opts: { identity: string; node: string; keys?: Keys },
): Promise<TransferTarget> {
  const keys = opts.keys ?? new Keys();
  assertName('node', opts.node);
  const key = keys.candidate(opts.identity, opts.node);
  const kv = (await client.get(key).options(within(ETCD_CALL_MS)).exec()).kvs[0];
  return transferTargetOf(opts.identity, opts.node, kv, key);
}

/** `node`'s registration as read (`kv` at `key`), or the refusal when it has none. */
export function transferTargetOf(
  identity: string,
  node: string,
  kv: { value: Buffer; mod_revision: string } | undefined,
  key: string,
): TransferTarget {
  const candidate = decode(CandidateRecord, kv?.value, key);
  if (!kv || !candidate) {
    throw new LeaseOperationError(
      `${node} is not a live candidate for ${identity} (no agent session campaigning)`,
      'target-unavailable',
    );
  }
  return { node, candidate, revision: kv.mod_revision };
}

/**
 * The best healthy candidate for `identity` other than `me` among those `live` accepts
 * (rank.ts successorOf), with its registration's revision; undefined when there is none.
 * Malformed records are left out, as the election leaves them out (the campaigns report
 * them), and so are nodes held off the identity or held back as drifted, which would refuse
 * the term (a fenced one is refused by the move itself).
 */
export async function readBestStandby(
  batcher: TxnBatcher,
  client: Etcd3,
  opts: { identity: string; me: string; keys: Keys; live: (candidate: CandidateRecord) => boolean },
): Promise<TransferTarget | undefined> {
  const prefix = opts.keys.candidates(opts.identity);
  const holdOffs = opts.keys.holdOffs(opts.identity);
  const drifts = opts.keys.drifts(opts.identity);
  const step = await batcher.run(
    [client.getAll().prefix(prefix), client.getAll().prefix(holdOffs), client.getAll().prefix(drifts)],
    prefix,
  );
  const kvs = (i: number) => step.responses[i]?.response_range?.kvs ?? [];
  const held = new Set([
    ...kvs(1).map((kv) => kv.key.toString().slice(holdOffs.length)),
    ...kvs(2).map((kv) => kv.key.toString().slice(drifts.length)),
  ]);
  const read = new Map<string, TransferTarget>();
  for (const kv of kvs(0)) {
    const key = kv.key.toString();
    const [candidate] = parseCandidates({ [key]: kv.value.toString() }).candidates;
    // The move compares the key read: a record must name the node its key does.
    if (candidate && key === prefix + candidate.node && !held.has(candidate.node) && opts.live(candidate))
      read.set(candidate.node, { node: candidate.node, candidate, revision: kv.mod_revision });
  }
  const best = successorOf(
    opts.me,
    [...read.values()].map((t) => t.candidate),
  );
  return best && read.get(best.node);
}

/**
 * The one transaction that moves a term to `target`, whoever sends it (the controller, or the
 * holder itself in the drain that carries a target): the leader key put on the target's
 * lease, the term-end record saying "transferred, logged out" at that same revision (which is
 * how the target knows it may log in at once), and the login record cleared. Guarded by the
 * term's token and by the target's registration, fence and drift hold; the caller adds what
 * proves the logout and whose word it acts on.
 */
export function transferWrites(
  client: Etcd3,
  opts: {
    identity: string;
    from: { token: FencingToken; record: LeaderRecord };
    target: TransferTarget;
    actor: string;
    /** Wall-clock ms, for people reading the records. */
    at: number;
    keys?: Keys;
  },
): { guards: Guard[]; ops: IOperation[] } {
  const keys = opts.keys ?? new Keys();
  const { identity, from, target } = opts;
  const record: LeaderRecord = {
    node: target.node,
    leaseId: target.candidate.leaseId,
    ttlMs: target.candidate.ttlMs,
    mustBeOutByMs: target.candidate.mustBeOutByMs,
    since: opts.at,
  };
  const end: TermEnd = {
    token: String(from.token),
    node: from.record.node,
    leaseId: from.record.leaseId,
    how: 'transferred',
    loggedOut: true,
    holderTtlMs: from.record.ttlMs,
    at: opts.at,
    actor: opts.actor,
  };
  const leaderKey = keys.leader(identity);
  return {
    guards: [
      [leaderKey, 'Mod', '==', String(from.token)],
      [keys.candidate(identity, target.node), 'Mod', '==', target.revision],
      [keys.fence(target.node), 'Create', '==', 0],
      [keys.drift(identity, target.node), 'Create', '==', 0],
    ],
    ops: [
      client.put(leaderKey).value(JSON.stringify(record)).lease(target.candidate.leaseId),
      client.delete().key(keys.login(identity)),
      client.put(keys.termEnd(identity)).value(JSON.stringify(end)),
    ],
  };
}

/**
 * Forced fencing: revoke the holder's lease (every key bound to it goes at once). First, in
 * one txn guarded by each leader key's revision, record the end of term of *every* identity
 * whose leader key is on that lease, not only `identity`: each successor must learn that its
 * predecessor was revoked, not resigned, and wait out the holder's self-fence deadline (S3)
 * unless that term's own login record confirmed its logout. The holder learns of the
 * revocation only at its next keepalive.
 */
export async function revokeHolder(
  client: Etcd3,
  opts: { identity: string; expectToken: FencingToken; actor: string; keys?: Keys; authority?: Authority },
): Promise<{ leaseId: string; ended: string[] }> {
  const keys = opts.keys ?? new Keys();
  for (let attempt = 0; attempt < REVOKE_ATTEMPTS; attempt++) {
    const current = await readLeader(client, opts.identity, keys);
    if (!current) throw new LeaseOperationError(`${opts.identity} has no leader to revoke`, 'no-leader');
    if (current.token !== opts.expectToken) {
      throw new LeaseOperationError(
        `${opts.identity}: leader changed (token ${current.token}, expected ${opts.expectToken}); read the status again`,
        'changed',
      );
    }
    const leaseId = current.record.leaseId;
    const terms = await termsOnLease(client, leaseId, keys);
    // The target's own key is on that lease by definition; a lease already gone lists none.
    if (!terms.some((t) => t.identity === opts.identity)) {
      terms.push({
        identity: opts.identity,
        token: current.token,
        record: current.record,
        login: current.login,
      });
    }
    const at = Date.now();
    let txn = client.if(keys.leader(terms[0]!.identity), 'Mod', '==', String(terms[0]!.token));
    for (const t of terms.slice(1)) txn = txn.and(keys.leader(t.identity), 'Mod', '==', String(t.token));
    if (opts.authority) txn = txn.and(opts.authority.key, 'Mod', '==', opts.authority.revision);
    const recorded = await txn
      .then(
        ...terms.map((t) =>
          client.put(keys.termEnd(t.identity)).value(JSON.stringify(revokedTermEnd(t, opts.actor, at))),
        ),
      )
      .options(within(ETCD_CALL_MS))
      .commit();
    if (!recorded.succeeded) {
      if (opts.authority && !(await holdsAuthority(client, opts.authority))) {
        throw noAuthority(opts.authority, `revocation of ${opts.identity}'s holder`);
      }
      continue; // a term on that lease began or ended meanwhile: read again
    }
    // A revoke cannot be part of a txn: the caller's term is checked right before it.
    requireAuthority(opts.authority, `revocation of ${opts.identity}'s holder`);
    try {
      await client.leaseClient.leaseRevoke({ ID: leaseId }, within(ETCD_CALL_MS));
    } catch (err) {
      if (!isLeaseGone(err)) throw err;
    }
    return { leaseId, ended: terms.map((t) => t.identity) };
  }
  throw new LeaseOperationError(
    `${opts.identity}: the terms on its holder's lease kept changing during ${REVOKE_ATTEMPTS} attempts; nothing was revoked, retry`,
    'changed',
  );
}

/** One term bound to a lease, as a revocation records it. */
export interface TermOnLease {
  identity: string;
  token: FencingToken;
  record: LeaderRecord;
  /** That term's own login record (one of an earlier term is left out). */
  login: LoginRecord | undefined;
}

/**
 * The term end a revocation records. Logged out only on the term's own word: its login
 * record, for its own token, says `loggedIn: false` (a record of another term proves nothing).
 */
export function revokedTermEnd(term: TermOnLease, actor: string, at: number): TermEnd {
  return {
    token: String(term.token),
    node: term.record.node,
    leaseId: term.record.leaseId,
    how: 'revoked',
    loggedOut: term.login?.token === String(term.token) && term.login.loggedIn === false,
    holderTtlMs: term.record.ttlMs,
    at,
    actor,
  };
}

/** Parse the identity out of a leader key (`<prefix>/identities/<id>/leader`), else undefined. */
export function identityOfLeaderKey(key: string, keys: Keys): string | undefined {
  const root = `${keys.prefix}/identities/`;
  if (!key.startsWith(root) || !key.endsWith('/leader')) return undefined;
  const identity = key.slice(root.length, -'/leader'.length);
  return identity.length > 0 && !identity.includes('/') ? identity : undefined;
}

/** Every leader key bound to `leaseId`, with its token and its term's login record, at one revision. */
async function termsOnLease(client: Etcd3, leaseId: string, keys: Keys): Promise<TermOnLease[]> {
  let bound: Buffer[];
  try {
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: leaseId, keys: true }, within(ETCD_CALL_MS));
    bound = ttl.keys ?? [];
  } catch (err) {
    if (isLeaseGone(err)) return [];
    throw err;
  }
  const identities = [
    ...new Set(bound.map((k) => identityOfLeaderKey(k.toString(), keys)).filter((i) => i !== undefined)),
  ];
  if (identities.length === 0) return [];
  const read = await client
    .if(keys.leader(identities[0]!), 'Create', '>', -1) // always true: a multi-get at one revision
    .then(...identities.flatMap((id) => [client.get(keys.leader(id)), client.get(keys.login(id))]))
    .options(within(ETCD_CALL_MS))
    .commit();
  const terms: TermOnLease[] = [];
  identities.forEach((identity, i) => {
    const leaderKv = read.responses[2 * i]?.response_range?.kvs[0];
    const loginKv = read.responses[2 * i + 1]?.response_range?.kvs[0];
    const record = leaderKv ? decode(LeaderRecord, leaderKv.value, keys.leader(identity)) : undefined;
    // Moved to another lease or gone since the lease was listed: not this holder's term.
    if (!leaderKv || !record || record.leaseId !== leaseId) return;
    const token = BigInt(leaderKv.mod_revision);
    let login: LoginRecord | undefined;
    try {
      login = decode(LoginRecord, loginKv?.value, keys.login(identity));
    } catch {
      login = undefined; // unreadable: no proof of logout, so the successor waits (the safe side)
    }
    terms.push({ identity, token, record, login: login?.token === String(token) ? login : undefined });
  });
  return terms;
}

/** Does the caller still hold its term, as etcd sees it now? (Why a guarded txn failed.) */
async function holdsAuthority(client: Etcd3, authority: Authority): Promise<boolean> {
  const kv = (await client.get(authority.key).options(within(ETCD_CALL_MS)).exec()).kvs[0];
  return kv !== undefined && kv.mod_revision === authority.revision;
}

/** Fence a node: it never campaigns (any identity) until unfenced. Survives restarts. */
export async function fence(
  client: Etcd3,
  opts: { node: string; reason: string; actor: string; keys?: Keys; authority?: Authority },
): Promise<void> {
  assertName('node', opts.node);
  const record = FenceRecord.parse({ reason: opts.reason, actor: opts.actor, at: Date.now() });
  const put = client.put((opts.keys ?? new Keys()).fence(opts.node)).value(JSON.stringify(record));
  if (!opts.authority) {
    await put.options(within(ETCD_CALL_MS));
    return;
  }
  const result = await client
    .if(opts.authority.key, 'Mod', '==', opts.authority.revision)
    .then(put)
    .options(within(ETCD_CALL_MS))
    .commit();
  if (!result.succeeded) throw noAuthority(opts.authority, `fence of ${opts.node}`);
}

export async function unfence(client: Etcd3, opts: { node: string; keys?: Keys }): Promise<void> {
  assertName('node', opts.node);
  await client
    .delete()
    .key((opts.keys ?? new Keys()).fence(opts.node))
    .options(within(ETCD_CALL_MS));
}

export async function isFenced(
  client: Etcd3,
  node: string,
  keys = new Keys(),
): Promise<FenceRecord | undefined> {
  const raw = await client.get(keys.fence(node)).options(within(ETCD_CALL_MS)).buffer();
  return decode(FenceRecord, raw, keys.fence(node));
}

// Which controller may command this agent right now, as etcd says in one read: the election
// key (its mod revision is the active controller's term, its value names the holder and its
// session lease) and the controllers' member records (each on its own session lease, carrying
// the controller's public key). Pure parsing here; the agent does the one range read.
import { LeaderRecord } from '../lease/keys.js';
import { isUserPublicKey } from '../keys/index.js';
import { controllerElectionKey } from './term.js';

/** A key-value as read from etcd, reduced to what is judged. */
export interface StoredKv {
  key: string;
  value: string;
  modRevision: string;
  /** The lease the key is bound to ('0' for none). */
  lease: string;
}

export interface ControllerAuthority {
  /** The active controller's term (election key mod revision), if any controller is active. */
  term?: bigint;
  /**
   * The active controller's key: only when its member record sits on the same session lease
   * as the election key, so the key belongs to the session that holds the term.
   */
  activeKey?: string;
  /** Keys of every live controller (for read-only requests). */
  liveKeys: Set<string>;
}

export const controllersPrefix = (prefix = 'understudy') => `${prefix}/controllers/`;
const membersPrefix = (prefix: string) => `${prefix}/controllers/members/`;

function json(value: string): unknown {
  try {
    return JSON.parse(value);
  } catch {
    return undefined;
  }
}

/** Read the authority out of the kvs under controllersPrefix(), all at one revision. */
export function readAuthority(kvs: readonly StoredKv[], prefix = 'understudy'): ControllerAuthority {
  const electionKey = controllerElectionKey(prefix);
  const members = new Map<string, { key: string; lease: string }>();
  let election: { record: LeaderRecord; revision: string; lease: string } | undefined;
  for (const kv of kvs) {
    if (kv.key === electionKey) {
      const record = LeaderRecord.safeParse(json(kv.value));
      if (record.success) election = { record: record.data, revision: kv.modRevision, lease: kv.lease };
    } else if (kv.key.startsWith(membersPrefix(prefix))) {
      const name = kv.key.slice(membersPrefix(prefix).length);
      const member = json(kv.value) as { name?: unknown; key?: unknown } | undefined;
      if (member?.name === name && typeof member.key === 'string' && isUserPublicKey(member.key)) {
        members.set(name, { key: member.key, lease: kv.lease });
      }
    }
  }
  const liveKeys = new Set([...members.values()].map((m) => m.key));
  if (election === undefined) return { liveKeys };
  const holder = members.get(election.record.node);
  const sameSession = holder !== undefined && holder.lease === election.lease && holder.lease !== '0';
  return {
    term: BigInt(election.revision),
    ...(sameSession && { activeKey: holder.key }),
    liveKeys,
  };
}

/** Narrow trusted keys to the pinned ones, when the agent's config pins any. */
export function pinned(keys: Iterable<string>, pins: readonly string[]): Set<string> {
  const all = new Set(keys);
  if (pins.length === 0) return all;
  return new Set([...all].filter((k) => pins.includes(k)));
}

/**
 * The keys that may sign `op`: the active controller's alone for a state-changing request (a
 * standby or deposed controller is refused even with a valid signature), any live controller's
 * for `status`. Both narrowed to the pinned keys when the agent pins any.
 */
export function trustedFor(
  mutating: boolean,
  authority: ControllerAuthority,
  pins: readonly string[],
): Set<string> {
  if (!mutating) return pinned(authority.liveKeys, pins);
  return pinned(authority.activeKey === undefined ? [] : [authority.activeKey], pins);
}

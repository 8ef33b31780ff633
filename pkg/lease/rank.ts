// Who tries first in a free election. Elections are staggered by rank, not by raw priority:
// each candidate reads the registered candidates, ranks them (healthy before unhealthy, then
// priority desc, then name) and waits rank × STAGGER_STEP_MS before trying to create the
// leader key. The best live candidate tries first and wins unless it is slow by more than a
// step; a dead best candidate has no registration (its lease went with it), so no one waits
// for it. The rank only orders the attempts: the leader key's create-if-absent txn keeps the
// election safe whatever any node believes its rank to be.
import type { Etcd3 } from 'etcd3';
import type { TxnBatcher } from './batch.js';
import { CandidateRecord, decode, type Keys } from './keys.js';

/** Gap between ranks in a free election: well above a txn round trip on a LAN. */
export const STAGGER_STEP_MS = 250;

/**
 * The rank of a candidate that could not read the others. Not 0: a node blind to the
 * candidates cannot know it is the best, and ranking itself first would let it jump ahead of
 * a better candidate that can see them all. Eight steps (2 s) puts it behind every candidate
 * of an identity hosted on a handful of nodes, and still elects within 2 s when no node can
 * read the candidates (then all wait the same). The fault itself is reported, never hidden.
 */
export const RANK_WHEN_UNREADABLE = 8;

export interface MalformedCandidate {
  key: string;
  why: string;
}

/** The registered candidates as read from etcd, or why they could not be read. */
export type CandidatesRead =
  { candidates: CandidateRecord[]; malformed: MalformedCandidate[] } | { unreadable: string };

export interface RankDecision {
  rank: number;
  waitMs: number;
  /** Why this rank, for logs and status displays. */
  reason: string;
  /** A fault the operator must see (the read failed, or records were malformed). */
  problem?: { what: string; error: string };
}

/** Parse the candidate records under a prefix; a malformed one is named with why, never dropped unseen. */
export function parseCandidates(raw: Record<string, string>): {
  candidates: CandidateRecord[];
  malformed: MalformedCandidate[];
} {
  const candidates: CandidateRecord[] = [];
  const malformed: MalformedCandidate[] = [];
  for (const [key, value] of Object.entries(raw)) {
    try {
      candidates.push(decode(CandidateRecord, value, key)!);
    } catch (err) {
      malformed.push({ key, why: oneLine((err as Error).message.replace(`${key}: `, '')) });
    }
  }
  return { candidates, malformed };
}

/** zod's multi-line report as one line, for a log line or a status field. */
const oneLine = (text: string) =>
  text
    .replace(/✖ /g, '')
    .replace(/\n\s*→ at /g, ' at ')
    .replace(/\n+/g, '; ');

const describe = (c: CandidateRecord) =>
  `${c.node} (priority ${c.priority}${c.healthy ? '' : ', unhealthy'})`;

/** The order of a free election: healthy before unhealthy, then priority (highest first), then name. */
export function electionOrder(a: CandidateRecord, b: CandidateRecord): number {
  const score = (c: CandidateRecord) => (c.healthy ? 0 : 1_000_000) - c.priority;
  return score(a) - score(b) || a.node.localeCompare(b.node);
}

/**
 * Whom a leader that leaves hands its term to: the candidate a free election would let try
 * first, other than itself. Only a healthy one: with none, the election decides as usual.
 */
export function successorOf(me: string, candidates: readonly CandidateRecord[]): CandidateRecord | undefined {
  return [...candidates].filter((c) => c.node !== me && c.healthy).sort(electionOrder)[0];
}

/** 0 for the best healthy candidate; unhealthy ones rank after every healthy one. */
export function decideRank(me: string, read: CandidatesRead): RankDecision {
  if ('unreadable' in read) {
    return {
      rank: RANK_WHEN_UNREADABLE,
      waitMs: RANK_WHEN_UNREADABLE * STAGGER_STEP_MS,
      reason:
        `the candidates could not be read (${read.unreadable}): ${me} takes rank ${RANK_WHEN_UNREADABLE}, ` +
        `behind any candidate that can see them, rather than first`,
      problem: { what: 'reading the registered candidates to rank this node', error: read.unreadable },
    };
  }
  const all = [...read.candidates].sort(electionOrder);
  const index = all.findIndex((c) => c.node === me);
  const rank = index < 0 ? all.length : index;
  let reason =
    index < 0
      ? `${me} is not among the ${all.length} registered candidates read (its registration is missing): it ranks after all of them`
      : index === 0
        ? `${describe(all[0]!)} is the best of ${all.length} registered candidate${all.length === 1 ? '' : 's'}: it tries at once`
        : `${describe(all[index]!)} ranks ${index} of ${all.length}, behind ${all.slice(0, index).map(describe).join(', ')}`;
  let problem: RankDecision['problem'];
  if (read.malformed.length > 0) {
    const list = read.malformed.map((m) => `${m.key} (${m.why})`).join('; ');
    reason += `; left out of the ranking as malformed: ${list}`;
    problem = {
      what: 'ranking this node among the registered candidates',
      error: `malformed candidate record${read.malformed.length === 1 ? '' : 's'}, left out of the ranking: ${list}; fix or delete ${read.malformed.length === 1 ? 'it' : 'them'}`,
    };
  }
  return { rank, waitMs: rank * STAGGER_STEP_MS, reason, ...(problem ? { problem } : {}) };
}

/** The candidates' records as read, by key, with the revision of the read. */
export type CandidateValues = { revision: bigint; values: Map<string, string> } | { unreadable: string };

/**
 * Read the candidates registered for `identity`, merged with the other reads of this moment
 * (batch.ts); never throws (a failure is a fact to rank on). Its own step, not part of the
 * campaign's: a node that may not read the candidates (RBAC) still campaigns, ranked last.
 */
export async function readCandidateValues(
  batcher: TxnBatcher,
  client: Etcd3,
  keys: Keys,
  identity: string,
): Promise<CandidateValues> {
  const prefix = keys.candidates(identity);
  try {
    const step = await batcher.run([client.getAll().prefix(prefix)], prefix);
    const kvs = step.responses[0]?.response_range?.kvs ?? [];
    return {
      revision: BigInt(step.revision),
      values: new Map(kvs.map((kv) => [kv.key.toString(), kv.value.toString()])),
    };
  } catch (err) {
    return { unreadable: (err as Error).message };
  }
}

/** The candidates' records parsed for ranking (malformed ones named), or why they could not be read. */
export function candidatesOf(read: CandidateValues): CandidatesRead {
  return 'unreadable' in read ? read : parseCandidates(Object.fromEntries(read.values));
}

/** readCandidateValues, parsed for ranking. */
export async function readCandidates(
  batcher: TxnBatcher,
  client: Etcd3,
  keys: Keys,
  identity: string,
): Promise<CandidatesRead> {
  return candidatesOf(await readCandidateValues(batcher, client, keys, identity));
}

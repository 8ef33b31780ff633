// The situation the workflow tests start from: a switchover of `bot` from a (term 42) to b,
// and the identity's keys in etcd as the controller's snapshot holds them.
import type { Workflow } from '../../pkg/api/schema.js';
import type { IdentityKeys } from '../../pkg/controller/store.js';

/** The lease TTL of every term and candidacy here; the rules derive their waits from it. */
export const TERM_TTL_MS = 4_000;
/** How soon a holder must be out after its last renewal: under the TTL, as agents compute it. */
const MUST_BE_OUT_BY_MS = 3_600;

const iso = (ms: number) => new Date(ms).toISOString();

/** A switchover of `bot` from a (term 42) to b, requested at `requestedAt`, due at `dueAt`. */
export function switchover(
  times: { requestedAt: number; dueAt: number },
  over: Partial<Workflow> = {},
): Workflow {
  return {
    id: 'switchover-bot-1',
    identity: 'bot',
    kind: 'switchover',
    state: 'requested',
    actor: 'op',
    from: { node: 'a', token: '42' },
    target: 'b',
    createdAt: iso(times.requestedAt),
    deadline: iso(times.dueAt),
    escalation: [],
    steps: [{ state: 'requested', at: iso(times.requestedAt) }],
    updatedAt: iso(times.requestedAt),
    controller: 'c1',
    ...over,
  };
}

/** An identity's keys in etcd, said briefly. */
export interface IdentityState {
  /** The identity's leader key: node and token. */
  leader?: [string, number];
  /** That term's login record. */
  loggedIn?: boolean;
  /** Registered candidates (healthy), with their priority. */
  candidates?: Record<string, number>;
  /** The term-end record: how the term with that token on that node ended. */
  termEnd?: { node: string; token: number; how: 'resigned' | 'transferred' | 'revoked' };
}

/** a leads under term 42 and has logged in; a and b are candidates. */
export const A_LEADS: IdentityState = { leader: ['a', 42], loggedIn: true, candidates: { a: 0, b: 0 } };

/** The keys `world` describes, each node's lease named `lease-<node>`. */
export function identityKeys(world: IdentityState): IdentityKeys {
  const keys: IdentityKeys = { candidates: new Map(), holdOffs: new Map() };
  if (world.leader) {
    const [node, token] = world.leader;
    keys.leader = {
      record: {
        node,
        leaseId: `lease-${node}`,
        ttlMs: TERM_TTL_MS,
        mustBeOutByMs: MUST_BE_OUT_BY_MS,
        since: 0,
      },
      token: BigInt(token),
    };
    if (world.loggedIn !== undefined) {
      keys.login = {
        node,
        token: String(token),
        loggedIn: world.loggedIn,
        at: 0,
        leaseId: `lease-${node}`,
        ttlMs: TERM_TTL_MS,
      };
    }
  }
  for (const [node, priority] of Object.entries(world.candidates ?? {})) {
    keys.candidates.set(node, {
      node,
      leaseId: `lease-${node}`,
      ttlMs: TERM_TTL_MS,
      mustBeOutByMs: MUST_BE_OUT_BY_MS,
      priority,
      healthy: true,
    });
  }
  if (world.termEnd) {
    const { node, token, how } = world.termEnd;
    keys.termEnd = {
      token: String(token),
      node,
      leaseId: `lease-${node}`,
      how,
      loggedOut: true,
      holderTtlMs: TERM_TTL_MS,
      at: 0,
    };
  }
  return keys;
}

// Which identities get a real PING this round, as pure rules.
//
// A PING is the only proof that a leader answers on its identity's subject, but at 10,000
// identities one per identity per interval is 10,000 signed requests a second, each verified
// here. So PINGs have a budget (probes.maxPingsPerSecond). Under it nothing changes: every
// due identity is PINGed. Over it, the agents' heartbeats carry their own check of each
// logged-in service, and an identity whose leader's fresh heartbeat vouches for it is judged
// from that; the budget goes first to suspects (anything a heartbeat cannot vouch for), then
// to a rotating sample of the others, oldest PING first, so every identity still gets a real
// PING every few rounds and an answerer no heartbeat mentions is found.

/** What the leader's agent and the other agents said about one identity in their heartbeats. */
export interface HeartbeatWitness {
  identity: string;
  leader?: { node: string; token: string };
  /** The leader's login record says it is logged in under the current term. */
  loggedIn: boolean;
  /** The leader's agent heartbeat is fresh enough to vouch (received within its own period). */
  leaderBeatFresh: boolean;
  /** The leader's own entry in that heartbeat, if it lists the identity. */
  entry?: { state: string; token?: string; alive?: boolean };
  /** Other nodes whose fresh heartbeats list the identity in a logged-in state. */
  otherClaimants: string[];
  /** Misses in a row, and a split brain, from the last rounds. */
  failures: number;
  splitBrain: boolean;
}

export interface Suspicion {
  /** A heartbeat cannot stand in for a PING: PING it first. */
  suspect: boolean;
  /** Judged without a PING when the budget runs out: the leader answered (or owed nothing). */
  vouched?: { leaderAnswered: boolean };
  reason: string;
}

/** Heartbeat states in which a node's service may be logged in. */
const LOGGED_IN = new Set(['logging-in', 'leader', 'logging-out']);

export function claimsLoggedIn(state: string): boolean {
  return LOGGED_IN.has(state);
}

/** Can the heartbeats vouch for this identity, or does it need a PING? */
export function suspicion(w: HeartbeatWitness): Suspicion {
  const suspect = (reason: string): Suspicion => ({ suspect: true, reason: `${w.identity}: ${reason}` });
  if (w.splitBrain) return suspect('split brain at the last probe');
  if (w.failures > 0) return suspect(`${w.failures} probes missed in a row`);
  if (w.otherClaimants.length > 0) {
    return suspect(`${w.otherClaimants.join(', ')} also report it logged in`);
  }
  const leader = w.leader;
  if (!leader) {
    return {
      suspect: false,
      vouched: { leaderAnswered: false },
      reason: `${w.identity}: no leader, no claimant`,
    };
  }
  if (!w.leaderBeatFresh) return suspect(`${leader.node}'s heartbeat is late`);
  const entry = w.entry;
  const serving = entry?.state === 'leader' && entry.token === leader.token;
  if (!serving) {
    if (w.loggedIn) return suspect(`${leader.node} is logged in but its agent does not report it serving`);
    return {
      suspect: false,
      vouched: { leaderAnswered: false },
      reason: `${w.identity}: ${leader.node} is not logged in yet; no answer is owed`,
    };
  }
  if (entry.alive === undefined)
    return suspect(`${leader.node}'s agent does not report the service's liveness`);
  if (!entry.alive) return suspect(`${leader.node}'s agent reports its service not responding`);
  return {
    suspect: false,
    vouched: { leaderAnswered: true },
    reason: `${w.identity}: ${leader.node}'s heartbeat vouches for its service under token ${leader.token}`,
  };
}

export interface DueProbe {
  identity: string;
  /** Monotonic ms of its last real PING (-Infinity: never). */
  lastPingAt: number;
  suspicion: Suspicion;
}

export interface ProbePlan {
  ping: string[];
  /** Judged from heartbeats this round. */
  vouched: string[];
  /** Suspects the budget could not reach: judged at a later round. */
  waiting: string[];
}

/**
 * Spend `budget` PINGs on the due identities. Within budget every one is PINGed (a small
 * cluster is probed exactly as without a budget). Over it: suspects first, then the others,
 * each group oldest PING first, a tenth kept for the others whatever the suspects; the rest
 * are judged from heartbeats when they vouch, else wait.
 */
export function planProbes(due: readonly DueProbe[], budget: number): ProbePlan {
  const slots = Math.max(0, Math.floor(budget));
  if (due.length <= slots) return { ping: due.map((d) => d.identity), vouched: [], waiting: [] };
  const order = (a: DueProbe, b: DueProbe) =>
    a.lastPingAt - b.lastPingAt || (a.identity < b.identity ? -1 : a.identity > b.identity ? 1 : 0);
  const suspects = due.filter((d) => d.suspicion.suspect).sort(order);
  const others = due.filter((d) => !d.suspicion.suspect).sort(order);
  // A tenth of the budget (one PING at least, from two up) always goes to the sample: a flood
  // of suspects must not stop every other identity from ever getting a real PING.
  const reserved = Math.min(others.length, slots >= 2 ? Math.max(1, Math.floor(slots / 10)) : 0);
  const forSuspects = Math.min(suspects.length, slots - reserved);
  const pinged = new Set([...suspects.slice(0, forSuspects), ...others.slice(0, slots - forSuspects)]);
  const plan: ProbePlan = { ping: [], vouched: [], waiting: [] };
  for (const d of [...suspects, ...others]) {
    if (pinged.has(d)) plan.ping.push(d.identity);
    else if (d.suspicion.vouched) plan.vouched.push(d.identity);
    else plan.waiting.push(d.identity);
  }
  return plan;
}

/**
 * PINGs allowed now, refilled at `perSecond` up to one second's worth: a token bucket, so a
 * round that finds few identities due leaves room for a later, fuller one.
 */
export class PingBudget {
  private tokens: number;
  private at: number;

  constructor(
    private readonly perSecond: number,
    now: number,
  ) {
    this.tokens = perSecond;
    this.at = now;
  }

  available(now: number): number {
    this.tokens = Math.min(this.perSecond, this.tokens + ((now - this.at) / 1000) * this.perSecond);
    this.at = now;
    return Math.floor(this.tokens);
  }

  spend(count: number): void {
    this.tokens = Math.max(0, this.tokens - count);
  }
}

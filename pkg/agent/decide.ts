// Every choice of an identity's next state, as pure functions of what the runner knows. Each
// takes a plain snapshot of facts and returns the next state (or none: stay) with the reason
// sentence the runner logs, records in history and shows as the identity's detail. The
// runner does the I/O around them (etcd, NATS, the service) and never picks a state itself;
// the moves a decision may make are bounded by the table in states.ts.
//
// The life of a term, decision by decision:
//   decideIdle → decideCampaignStart → (decideCampaignView while campaigning)
//   → decideCampaignEnd → decideLogin → decideEndOfLead → decideAfterLogout
//   → (decideDrained while drained) — and every way out of a term ends in decideGiveBack,
//   including decideAbandonTerm after an unexpected error.
import type { IdentitySpec } from '../spec/schema.js';
import type { IdentityState } from './states.js';

export interface Decision {
  /** Where to move; undefined: stay where the identity is (the reason is only logged). */
  next?: IdentityState;
  /** Why, in a sentence an operator can act on. */
  reason: string;
}

/** Why a term's leadership phase ended. */
export type EndOfLead =
  | { kind: 'lost'; reason: string }
  | { kind: 'failed'; reason: string }
  | { kind: 'drain'; holdMs: number; actor: string }
  | { kind: 'fenced' }
  | { kind: 'ineligible'; reason: string }
  | { kind: 'respec'; reason: string }
  | { kind: 'stop' };

/** Settings of this node for the identity, from the agent's config and the spec. */
export interface NodeSettings {
  priority: number;
  nofailover: boolean;
}

/** This node's settings under `spec`: the spec's candidates override the agent config. */
export function nodeSettings(spec: IdentitySpec, node: string, config: NodeSettings): NodeSettings {
  const fromSpec = spec.candidates?.[node];
  return {
    priority: fromSpec?.priority ?? config.priority,
    nofailover: (fromSpec?.nofailover ?? false) || config.nofailover,
  };
}

/** Why this node may not lead the identity under `spec` (undefined: it may). */
export function ineligibility(
  spec: IdentitySpec | undefined,
  node: string,
  config: NodeSettings,
): string | undefined {
  if (!spec) return 'no spec for the identity in etcd';
  if (spec.candidates && !spec.candidates[node]) return `the spec's candidates do not include ${node}`;
  if (nodeSettings(spec, node, config).nofailover)
    return 'tagged nofailover: this node never leads the identity';
  return undefined;
}

/** What, in a spec, needs a new driver when it changes. */
export function serviceKey(spec: IdentitySpec): string {
  return JSON.stringify({ service: spec.service, credential: spec.credential, inbox: spec.inbox });
}

/** What every decision about leaving or staying out needs to know. */
export interface OutsideFacts {
  /** The agent is shutting down. */
  stopping: boolean;
  /** The operator's reason when this node is fenced; undefined when it is not. */
  fenceReason?: string;
}

/**
 * Where an identity goes once its term is given back (or never taken): stopped when the agent
 * is stopping, fenced when the node is fenced, standby otherwise. Written once, used by every
 * path out of a term.
 */
export function decideGiveBack(f: OutsideFacts, why: string): Decision & { next: IdentityState } {
  if (f.stopping) return { next: 'stopped', reason: why };
  if (f.fenceReason !== undefined) {
    return { next: 'fenced', reason: `${why}; staying out while fenced: ${f.fenceReason}` };
  }
  return { next: 'standby', reason: why };
}

export interface IdleFacts {
  state: IdentityState;
  /** Why this node may not lead now (no spec, not a candidate, nofailover). */
  ineligible?: string;
  fenceReason?: string;
  /** Why this node's allow-list or service user refuses what the spec would run or read. */
  refused?: string;
}

/** Before a campaign: stand by when not eligible, stay fenced while fenced, else campaign. */
export function decideIdle(f: IdleFacts): Decision & { then: 'wait' | 'recheck' | 'campaign' } {
  if (f.ineligible !== undefined) return { next: 'standby', reason: f.ineligible, then: 'wait' };
  if (f.fenceReason !== undefined) return { next: 'fenced', reason: f.fenceReason, then: 'wait' };
  // Never campaign for what this node would refuse to run: it would win and fail to log in.
  // The file system may change (a binary installed), so it is looked at again later.
  if (f.refused !== undefined) {
    return { next: 'standby', reason: `not campaigning: ${f.refused}`, then: 'recheck' };
  }
  // Fenced may only lead to standby (S4): the campaign starts from there.
  if (f.state === 'fenced') return { next: 'standby', reason: 'unfenced', then: 'campaign' };
  return { reason: 'eligible and not fenced: campaigning', then: 'campaign' };
}

/** The campaign begins; an unhealthy node still campaigns, ranked after every healthy one. */
export function decideCampaignStart(f: { healthy: boolean }): Decision {
  return {
    next: 'campaigning',
    reason: f.healthy ? 'competing for the leader key' : 'ranked last: recently failed',
  };
}

export interface CampaignViewFacts {
  state: IdentityState;
  /** A campaign is running (outside it, the leader key's holder does not move the state). */
  inCampaign: boolean;
  /** The node the leader key names, if any. */
  leaderNode?: string;
  node: string;
}

/** While campaigning, show whether another node leads (standby) or the key is free. */
export function decideCampaignView(f: CampaignViewFacts): Decision {
  if (!f.inCampaign) return { reason: 'not campaigning: the leader key does not move the state' };
  const other = f.leaderNode !== undefined && f.leaderNode !== f.node;
  if (other && f.state === 'campaigning') return { next: 'standby', reason: `${f.leaderNode} leads` };
  if (!other && f.state === 'standby') return { next: 'campaigning', reason: 'no leader' };
  return { reason: other ? `${f.leaderNode} still leads` : 'the key is still free' };
}

export type CampaignOutcome =
  | { kind: 'won'; previous?: { node: string; token: bigint; transferred: boolean } }
  | { kind: 'not-eligible'; message: string }
  | { kind: 'abandoned'; message: string };

/** What a campaign's end means: a term to wait out, a standby, or a fresh start. */
export function decideCampaignEnd(o: CampaignOutcome): Decision & { then: 'term' | 'wait' | 'again' } {
  switch (o.kind) {
    case 'won': {
      const p = o.previous;
      const reason = p
        ? `previous term ${p.token} on ${p.node}${p.transferred ? ' (transferred)' : ''}`
        : 'no previous term seen';
      return { next: 'waiting-out', reason, then: 'term' };
    }
    case 'not-eligible':
      return { next: 'standby', reason: o.message, then: 'wait' };
    case 'abandoned':
      return { reason: `campaign interrupted (${o.message}): starting over`, then: 'again' };
  }
}

export interface LoginFacts extends OutsideFacts {
  /** The login gate's sentence once the previous term is proven over; undefined: the term ended first. */
  cleared?: string;
  ineligible?: string;
}

/** After waiting out the previous term: log in, or give the term back unused. */
export function decideLogin(f: LoginFacts): Decision & { next: IdentityState } {
  if (f.cleared === undefined) return decideGiveBack(f, 'term ended while waiting out the previous one');
  if (f.stopping || f.fenceReason !== undefined || f.ineligible !== undefined) {
    const cause = f.ineligible ?? (f.stopping ? 'stopping' : 'fenced');
    return decideGiveBack(f, `not logged in: giving the term back (${cause})`);
  }
  return { next: 'logging-in', reason: `login gate open: ${f.cleared}` };
}

/** Leading ended: log out first, whatever the cause; the reason says what the cause was. */
export function decideEndOfLead(why: EndOfLead): Decision & { next: 'logging-out' } {
  return { next: 'logging-out', reason: describeEnd(why) };
}

export function describeEnd(why: EndOfLead): string {
  switch (why.kind) {
    case 'lost':
      return `leadership lost (${why.reason})`;
    case 'failed':
      return `service failed: ${why.reason}`;
    case 'drain':
      return `drain requested by ${why.actor}`;
    case 'fenced':
      return 'node fenced';
    case 'ineligible':
      return why.reason;
    case 'respec':
      return `${why.reason}: handing over so it takes effect`;
    case 'stop':
      return 'agent stopping';
  }
}

export interface AfterLogoutFacts extends OutsideFacts {
  why: EndOfLead;
  /** The service was confirmed out within the budget. */
  confirmed: boolean;
  /** The term may still act (key held, session alive). */
  mayAct: boolean;
}

/**
 * After logging out: hold the key for a transfer (a drain, only when the service is surely
 * out and the term still ours: login=false is recorded before moving), or give the term back.
 */
export function decideAfterLogout(
  f: AfterLogoutFacts,
): Decision & { next: IdentityState; then: 'hold' | 'give-back' } {
  if (f.why.kind === 'drain' && f.confirmed && f.mayAct) {
    return {
      next: 'drained',
      reason: `for ${f.why.actor}; logging back in after ${f.why.holdMs} ms unless transferred`,
      then: 'hold',
    };
  }
  return { ...decideGiveBack(f, describeEnd(f.why)), then: 'give-back' };
}

export interface DrainedFacts extends OutsideFacts {
  /** The term ended: the key was transferred away (or lost). */
  ended: boolean;
  ineligible?: string;
  undrainRequested: boolean;
  /** Time left of the drain hold; at or below zero it expired. */
  holdLeftMs: number;
}

/** Drained: wait for the transfer, an abort, the hold to expire, a fence or a stop. */
export function decideDrained(
  f: DrainedFacts,
): Decision & { then: 'done' | 'give-back' | 'relogin' | 'wait' } {
  if (f.ended) return { next: 'standby', reason: 'leadership transferred', then: 'done' };
  if (f.stopping || f.fenceReason !== undefined || f.ineligible !== undefined) {
    const why = f.ineligible ? `drained term given back (${f.ineligible})` : 'drained term given back';
    return { ...decideGiveBack(f, why), then: 'give-back' };
  }
  if (f.undrainRequested) return { reason: 'drain aborted: logging back in', then: 'relogin' };
  if (f.holdLeftMs <= 0) {
    return { reason: 'drain hold expired without a transfer: logging back in', then: 'relogin' };
  }
  return { reason: 'holding the key for a transfer', then: 'wait' };
}

export interface AbandonFacts extends OutsideFacts {
  state: IdentityState;
  error: string;
}

/**
 * The term broke on an unexpected error (a bug, a failure nobody expected): log out first if
 * the service may be running, then give the term back like any other way out.
 */
export function decideAbandonTerm(f: AbandonFacts): {
  logout?: Decision & { next: 'logging-out' };
  giveBack: Decision & { next: IdentityState };
} {
  const giveBack = decideGiveBack(f, 'term abandoned after an unexpected error (see the error above)');
  return f.state === 'logging-in' || f.state === 'leader'
    ? { logout: { next: 'logging-out', reason: `unexpected error: ${f.error}` }, giveBack }
    : { giveBack };
}

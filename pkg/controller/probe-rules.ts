// What a PING probe round means, as pure rules (no I/O, no clock): is there a split brain,
// can this controller trust an empty answer at all, did the leader miss an answer it owed,
// and should it be failed over (and to which node). Each rule returns its decision with a
// sentence saying why; probes.ts does the I/O and logs the sentences.
import type { TargetChoice } from './view.js';

/** A verified answer to a probe (presence.ts: forged answers never get this far). */
export interface Responder {
  node: string;
  token: string;
  error?: string;
  /** The session lease of the node key the answer verified under, when known. */
  lease?: string;
}

/** More than one node answering PING for one identity: two services are logged in. */
export function splitBrain(
  identity: string,
  responders: Responder[],
): { splitBrain: boolean; reason: string } {
  if (responders.length > 1) {
    const who = responders.map((r) => `${r.node}@${r.token}`).join(', ');
    return { splitBrain: true, reason: `${identity}: ${responders.length} nodes answer PING (${who})` };
  }
  return {
    splitBrain: false,
    reason: `${identity}: ${responders.length === 1 ? 'one responder' : 'no responder'}, no split brain`,
  };
}

export interface LinkState {
  /** The controller's NATS connection is up now. */
  natsUp: boolean;
  /** No NATS disconnect or reconnect happened while the probe ran. */
  linkSteadyDuringProbe: boolean;
  /** Agents this controller has ever heard, and how many of them it hears now. */
  agentsKnown: number;
  agentsAlive: number;
}

/**
 * A controller cut from NATS sees every leader silent: it must not take that for the
 * leaders' fault and fail them all over. It trusts an empty probe only when its link was up
 * across the whole probe and it hears at least one agent (or has never heard any).
 */
export function blindness(link: LinkState): { blind: boolean; reason: string } {
  if (!link.natsUp) return { blind: true, reason: 'its NATS connection is down' };
  if (!link.linkSteadyDuringProbe)
    return { blind: true, reason: 'its NATS connection dropped or reconnected during the probe' };
  if (link.agentsKnown > 0 && link.agentsAlive === 0)
    return { blind: true, reason: `it hears none of the ${link.agentsKnown} agents it knows` };
  return { blind: false, reason: 'its NATS link is up and it hears the agents' };
}

/**
 * How late a probe's own timer may fire before its silence proves nothing: a controller whose
 * event loop was held up runs the expired timer before it reads the answers waiting in its
 * socket, so a leader that answered in time looks silent. A tenth of a second is far beyond
 * an idle loop's jitter and far below any probe timeout worth configuring.
 */
export const PROBE_LATE_TOLERANCE_MS = 100;

/** Can a probe that ended `lateMs` after its timeout be trusted to have heard every answer? */
export function lateness(lateMs: number): { blind: boolean; reason: string } {
  if (lateMs > PROBE_LATE_TOLERANCE_MS) {
    return {
      blind: true,
      reason: `its own event loop ended the probe ${Math.round(lateMs)} ms late, so answers may have been waiting unread`,
    };
  }
  return { blind: false, reason: 'the probe ended on time' };
}

export interface LeaderObservation {
  identity: string;
  /** `lease`: the leader key's session lease, when known. */
  leader?: { node: string; token: string; lease?: string };
  /** The leader's login record says it is logged in under the current term. */
  loggedIn: boolean;
  /** The leader's own agent reports it serving under the current token. */
  serving: boolean;
  /** The leader's agent heartbeats are fresh. */
  agentAlive: boolean;
  responders: Responder[];
}

/**
 * Is this the leader's own answer? Same node and token, no error, and, when both leases are
 * known, signed with the node key bound to the session that holds the leader key: an answer
 * signed by the same node's key under another session (an old process of that node still
 * holding a pinned key) is not the term's answer.
 */
export function isLeaderAnswer(
  leader: { node: string; token: string; lease?: string },
  r: Responder,
): boolean {
  if (r.error !== undefined || r.node !== leader.node || r.token !== leader.token) return false;
  return leader.lease === undefined || r.lease === leader.lease;
}

/**
 * Did the leader miss an answer it owed? It owes one when it holds the key, says it is logged
 * in, and its agent either reports it serving or is silent itself (cut from NATS). A leader
 * still logging in owes nothing yet. Only verified answers reach this rule (probes.ts), so a
 * forged PONG never stands in for the leader's.
 */
export function leaderMissed(o: LeaderObservation): { missed: boolean; reason: string } {
  const leader = o.leader;
  if (!leader) return { missed: false, reason: `${o.identity} has no leader to probe` };
  const answered = o.responders.some((r) => isLeaderAnswer(leader, r));
  if (answered) return { missed: false, reason: `${leader.node} answered under token ${leader.token}` };
  if (!o.loggedIn) return { missed: false, reason: `${leader.node} is not logged in yet; no answer is owed` };
  if (!o.serving && o.agentAlive) {
    return {
      missed: false,
      reason: `${leader.node}'s agent does not report it serving yet; no answer is owed`,
    };
  }
  return {
    missed: true,
    reason: `${leader.node} is logged in under token ${leader.token} but did not answer PING`,
  };
}

/** What a controller remembers of an identity's probes between rounds. */
export interface ProbeMemory {
  /** Consecutive probes the leader missed. */
  failures: number;
  /** The unresponsive-leader alarm was raised for the current run of failures. */
  alarmed: boolean;
}

export interface FailoverPolicy {
  identity: string;
  leaderNode?: string;
  /** The spec's probe budget (undefined: no spec stored, nothing is judged). */
  probe?: { failures: number; intervalMs: number };
  pausedBy?: string;
  /** This controller is the active one. */
  active: boolean;
  /** probes.failover in the controller's config. */
  failoverEnabled: boolean;
  workflowRunning: boolean;
  /** Where a failover would go (view.ts chooseTarget). */
  target: TargetChoice;
}

/** The rule that decided the round, for tests and logs (the reason says it in words). */
export type ProbeOutcome =
  | 'answered' // no answer was owed, or it came: the misses reset
  | 'not-counted' // the controller was blind: the round proves nothing
  | 'counting' // a miss, the budget is not spent yet
  | 'already-alarmed'
  | 'paused'
  | 'standby'
  | 'failover-off'
  | 'workflow-running'
  | 'no-target'
  | 'failover';

export interface ProbeVerdict extends ProbeMemory {
  outcome: ProbeOutcome;
  /** False when this round proves nothing (the controller was blind): memory unchanged. */
  counted: boolean;
  alarm?: { alarm: 'leader-unresponsive' | 'probe-failover-paused'; message: string };
  failover?: { target: string; reason: string };
  reason: string;
}

/**
 * Should this leader be failed over? Count the missed answer, raise the alarm once when the
 * spec's budget of misses is spent, and start a probe-driven failover only if nothing holds
 * it back (a pause, a standby controller, failover turned off, a workflow already running,
 * no fit target).
 */
export function probeVerdict(
  memory: ProbeMemory,
  missed: { missed: boolean; reason: string },
  blind: { blind: boolean; reason: string },
  policy: FailoverPolicy,
): ProbeVerdict {
  if (missed.missed && blind.blind) {
    return {
      ...memory,
      outcome: 'not-counted',
      counted: false,
      reason: `${missed.reason}, but not counted: this controller is blind (${blind.reason})`,
    };
  }
  const failures = missed.missed ? memory.failures + 1 : 0;
  const alarmed = failures === 0 ? false : memory.alarmed;
  const { probe, leaderNode, identity } = policy;
  if (!probe || !leaderNode || failures === 0) {
    return {
      failures,
      alarmed,
      outcome: missed.missed ? 'counting' : 'answered',
      counted: true,
      reason: missed.reason,
    };
  }
  if (failures < probe.failures) {
    const reason = `${missed.reason} (${failures} of ${probe.failures} misses)`;
    return { failures, alarmed, outcome: 'counting', counted: true, reason };
  }
  if (alarmed) {
    const reason = `${missed.reason}; already alarmed for this run of misses`;
    return { failures, alarmed, outcome: 'already-alarmed', counted: true, reason };
  }
  const budget = `${failures} probes × ${probe.intervalMs} ms`;
  const unresponsive = `${identity}: ${leaderNode} holds the lease but does not answer (${budget})`;
  const verdict = (
    outcome: ProbeOutcome,
    reason: string,
    extra: Partial<ProbeVerdict> = {},
  ): ProbeVerdict => ({
    failures,
    alarmed: true,
    outcome,
    counted: true,
    alarm: { alarm: 'leader-unresponsive', message: unresponsive },
    reason,
    ...extra,
  });
  if (policy.pausedBy !== undefined) {
    const message = `${unresponsive}; paused by ${policy.pausedBy}, so nothing moves`;
    return verdict('paused', message, { alarm: { alarm: 'probe-failover-paused', message } });
  }
  if (!policy.active)
    return verdict('standby', `${unresponsive}; this controller is a standby, the active one decides`);
  if (!policy.failoverEnabled)
    return verdict('failover-off', `${unresponsive}; probe-driven failover is off (probes.failover)`);
  if (policy.workflowRunning)
    return verdict('workflow-running', `${unresponsive}; a workflow is already running for ${identity}`);
  if (!policy.target.target)
    return verdict('no-target', `${unresponsive}; no failover: ${policy.target.reason}`);
  const failoverReason = `${leaderNode} stopped answering (${budget})`;
  return verdict(
    'failover',
    `${unresponsive}; failing over to ${policy.target.target}: ${policy.target.reason}`,
    {
      failover: { target: policy.target.target, reason: failoverReason },
    },
  );
}

// The failure matrix (docs/failure-matrix.md) as named, deterministic scenarios: each row's
// fault at each duration that matters, aimed at whoever leads the identity when it starts, and
// what must follow besides the invariants the checker holds every run to: that the identity
// moves (a new term within T + margin, judged by L1 where the fault kills its leader), or
// that it stays (the same term throughout: a fault the system must ride out).
import { FAULTS, FOLLOWER, type Band, type FaultAction, type PlannedFault } from './nemesis.js';
import type { Topology } from './topology.js';

export type Expectation = 'moves' | 'stays' | 'either';

export interface Scenario {
  name: string;
  /** The failure-matrix row it plays. */
  row: string;
  action: FaultAction;
  /** For lasting faults: which band of the timing (see nemesis.ts), as a share of D and T. */
  band?: Band;
  /** The identity whose leader is hit (agent faults), or that is switched over. */
  identity: string;
  expect: Expectation;
  /**
   * For an etcd member fault: hit a member that is not the raft leader. etcd before 3.4.28 /
   * 3.5.11 lets a raft leader that was paused, once resumed, revoke leases its stale lessor
   * thinks expired although the new leader renewed them (etcd issues 12528 and 15247, fixed by
   * etcd PR 16822): a holder then loses its key with no fault of its own. Debian's etcd here is
   * 3.4.23, so a row that expects nothing to move pauses a follower; the raft leader's loss is
   * its own row (etcd-raft-leader-kill), and the nemesis still pauses any member.
   */
  member?: 'follower';
}

/**
 * A duration well inside a band (the middle of it): short of D, between D and T, past T
 * (one and a half T).
 */
export function bandDuration(band: Band, ttlMs: number, selfFenceMs: number): number {
  switch (band) {
    case 'short-of-D':
      return Math.round(selfFenceMs / 2);
    case 'between-D-and-T':
      return Math.round((selfFenceMs + ttlMs) / 2);
    case 'past-T':
      return Math.round(1.5 * ttlMs);
  }
}

/** w1 is hosted on a, b and c; w2 on a and b, and its witness stops slowly (see SLOW_IDENTITY). */
const HIT = 'w1';
/** The identity whose witness takes its time to log out (a bot closing its session). */
export const SLOW_IDENTITY = 'w2';

export const SCENARIOS: readonly Scenario[] = [
  { name: 'host-kill', row: 'Leader host killed', action: 'kill', identity: HIT, expect: 'moves' },
  {
    name: 'agent-stopped',
    row: 'Leader agent stopped (SIGTERM, as systemd does): a graceful leave',
    action: 'agent-term',
    identity: HIT,
    expect: 'moves',
  },
  {
    name: 'agent-kill',
    row: 'Agent SIGKILLed, service child alive',
    action: 'agent-kill',
    identity: HIT,
    expect: 'moves',
  },
  ...(['short-of-D', 'between-D-and-T', 'past-T'] as const).flatMap((band): Scenario[] => [
    {
      name: `agent-freeze-${band}`,
      row:
        band === 'past-T'
          ? 'Leader frozen past T, then resumed'
          : band === 'between-D-and-T'
            ? 'Leader frozen past D but short of T, service slow to stop'
            : 'Leader frozen short of D',
      action: 'freeze',
      band,
      identity: band === 'between-D-and-T' ? SLOW_IDENTITY : HIT,
      // Between D and T the leader logs out; whether it or another logs in next is a race.
      expect: band === 'short-of-D' ? 'stays' : band === 'past-T' ? 'moves' : 'either',
    },
    {
      name: `host-freeze-${band}`,
      row: 'Leader host frozen (agent, service and reaper), then resumed',
      action: 'host-freeze',
      band,
      identity: HIT,
      expect: band === 'short-of-D' ? 'stays' : band === 'past-T' ? 'moves' : 'either',
    },
    {
      name: `cut-etcd-${band}`,
      row: 'Leader cut from etcd only',
      action: 'cut-etcd',
      band,
      identity: HIT,
      expect: band === 'short-of-D' ? 'stays' : band === 'past-T' ? 'moves' : 'either',
    },
    {
      name: `cut-both-${band}`,
      row: 'Leader cut from etcd and NATS',
      action: 'cut-both',
      band,
      identity: HIT,
      // Its NATS half is judged by the controller's probes, not by D: no answer for longer
      // than the probe budget (3 failures a second apart), and TCP's retransmission backoff
      // keeps the connection silent for a second or more after the cut heals, is a failover
      // the probes exist for. Short of D it may therefore go either way; never two at once.
      expect: band === 'past-T' ? 'moves' : 'either',
    },
  ]),
  {
    name: 'cut-nats',
    row: 'Leader cut from NATS only',
    action: 'cut-nats',
    band: 'past-T',
    identity: HIT,
    expect: 'either',
  },
  {
    name: 'revoke-two-identities',
    row: 'Lease revoked out of band on an agent with several identities',
    action: 'revoke',
    identity: SLOW_IDENTITY,
    expect: 'moves',
  },
  {
    name: 'service-kill',
    row: 'Service killed under a live agent',
    action: 'witness-kill',
    identity: HIT,
    expect: 'moves',
  },
  {
    name: 'service-freeze',
    row: 'Service frozen under a live agent',
    action: 'witness-freeze',
    band: 'past-T',
    identity: HIT,
    expect: 'either',
  },
  {
    name: 'etcd-raft-leader-kill',
    row: 'etcd raft leader lost (3 members)',
    action: 'etcd-leader',
    identity: HIT,
    expect: 'stays',
  },
  {
    name: 'etcd-member-pause',
    row: 'An etcd member paused (3 members)',
    action: 'etcd-pause',
    band: 'past-T',
    identity: HIT,
    expect: 'stays',
    member: 'follower',
  },
  {
    name: 'etcd-member-isolated',
    row: 'One etcd member lost (3 members): cut from its peers',
    action: 'etcd-isolate',
    band: 'past-T',
    identity: HIT,
    expect: 'stays',
  },
  {
    name: 'etcd-all-short-of-D',
    row: 'All of etcd lost, briefly',
    action: 'etcd-all',
    band: 'short-of-D',
    identity: HIT,
    expect: 'stays',
  },
  {
    name: 'etcd-all-past-T',
    row: 'All of etcd lost',
    action: 'etcd-all',
    band: 'past-T',
    identity: HIT,
    expect: 'either',
  },
  {
    name: 'etcd-all-killed-past-T',
    row: 'All of etcd lost: every member killed, restarted from its data',
    action: 'etcd-down',
    band: 'past-T',
    identity: HIT,
    expect: 'either',
  },
  { name: 'nats-restart', row: 'NATS restart', action: 'nats-restart', identity: HIT, expect: 'stays' },
  {
    name: 'controller-crash-mid-switchover',
    row: 'Active controller crashes mid-switchover',
    action: 'controller-kill',
    identity: HIT,
    expect: 'either',
  },
  {
    name: 'controller-freeze-mid-switchover',
    row: 'Active controller frozen, loses its election, resumes',
    action: 'controller-freeze',
    band: 'past-T',
    identity: HIT,
    expect: 'either',
  },
  { name: 'switchover', row: 'Planned switchover', action: 'switchover', identity: HIT, expect: 'moves' },
  {
    name: 'switchover-cancelled',
    row: 'Switchover cancelled',
    action: 'cancel',
    identity: HIT,
    expect: 'either',
  },
  { name: 'fence', row: 'Node fenced for maintenance', action: 'fence', identity: HIT, expect: 'moves' },
  {
    name: 'operators-race',
    row: 'Switchovers, a cancel and a fence issued at once',
    action: 'operator-race',
    identity: HIT,
    expect: 'either',
  },
  {
    name: 'bad-input',
    row: 'Bad API input; a network client that is not a controller sends control',
    action: 'bad-input',
    identity: HIT,
    expect: 'stays',
  },
];

export class ScenarioError extends Error {}

export function scenarioNamed(name: string): Scenario {
  const found = SCENARIOS.find((s) => s.name === name);
  if (!found) {
    throw new ScenarioError(`no scenario '${name}'; known: ${SCENARIOS.map((s) => s.name).join(', ')}`);
  }
  return found;
}

/** The scenario as a fault of the nemesis, aimed at the identity's leader as it is now. */
export async function planScenario(s: Scenario, top: Topology, id: string): Promise<PlannedFault> {
  const leader = await top.leaderOf(s.identity);
  const agentFault = FAULTS[s.action].target === 'agent';
  if (agentFault && !leader) throw new ScenarioError(`${s.name}: ${s.identity} has no leader to hit`);
  const targets = agentFault
    ? [leader!.node]
    : FAULTS[s.action].target === 'identity'
      ? [s.identity]
      : s.member === 'follower'
        ? [FOLLOWER]
        : [s.action];
  return {
    id,
    at: 0,
    action: s.action,
    targets,
    ...(s.band ? { band: s.band, durationMs: bandDuration(s.band, top.ttlMs, top.selfFenceMs) } : {}),
  };
}

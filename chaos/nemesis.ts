// The nemesis's plan: which fault when, against what, for how long — drawn from a seed, so a
// run that found something is replayed exactly (`npm run chaos -- --seed N --minutes M`).
// Pure: the runner executes the plan and writes each fault's start and end to the history.
//
// Durations of freezes and cuts are drawn across the whole range that matters, in turn:
// short of the self-fence deadline D (the leader must keep its term), between D and the TTL
// T (it must log out, and its successor wait), and past T (a successor takes over). A real S1
// bug once hid in the middle band because freezes always outlasted T: every band is covered.

/** Faults the nemesis knows, and whether each lasts (has a duration) or is instantaneous. */
export const FAULTS = {
  /** The agent's host dies (its container killed). */
  kill: { lasts: false, target: 'agent' },
  /** The agent process alone is SIGKILLed; its host and service live on. */
  'agent-kill': { lasts: false, target: 'agent' },
  /** The agent is stopped as systemd stops it (SIGTERM): it hands its identities over. */
  'agent-term': { lasts: false, target: 'agent' },
  /** The agent process alone is SIGSTOPped, then SIGCONTed. */
  freeze: { lasts: true, target: 'agent' },
  /** The whole host freezes (agent, service, reaper). */
  'host-freeze': { lasts: true, target: 'agent' },
  /** A busy loop on each of the machine's cores, inside the agent's host. */
  'cpu-burn': { lasts: true, target: 'agent' },
  'witness-kill': { lasts: false, target: 'agent' },
  'witness-freeze': { lasts: true, target: 'agent' },
  'cut-etcd': { lasts: true, target: 'agent' },
  'cut-nats': { lasts: true, target: 'agent' },
  'cut-both': { lasts: true, target: 'agent' },
  'etcd-leader': { lasts: false, target: 'etcd' },
  'etcd-pause': { lasts: true, target: 'etcd' },
  'etcd-isolate': { lasts: true, target: 'etcd' },
  /** Every etcd member frozen at once (a stalled cluster: connections stay open). */
  'etcd-all': { lasts: true, target: 'etcd' },
  /** Every etcd member killed, restarted from its data after the duration (a lost cluster). */
  'etcd-down': { lasts: true, target: 'etcd' },
  'nats-restart': { lasts: false, target: 'nats' },
  'controller-kill': { lasts: false, target: 'controller' },
  'controller-freeze': { lasts: true, target: 'controller' },
  revoke: { lasts: false, target: 'agent' },
  switchover: { lasts: false, target: 'identity' },
  cancel: { lasts: false, target: 'identity' },
  fence: { lasts: false, target: 'agent' },
  /** Two switchovers, a cancel and a fence of the leader's node, all at once, as operators race. */
  'operator-race': { lasts: false, target: 'identity' },
  'bad-input': { lasts: false, target: 'controller' },
} as const;
export type FaultAction = keyof typeof FAULTS;
export type Band = 'short-of-D' | 'between-D-and-T' | 'past-T';
export const BANDS: readonly Band[] = ['short-of-D', 'between-D-and-T', 'past-T'];

/** The target of an etcd member fault that must not hit the raft leader (scenarios.ts, Scenario.member). */
export const FOLLOWER = 'etcd-follower';

export interface PlannedFault {
  id: string;
  /** Ms after the run's start. */
  at: number;
  action: FaultAction;
  targets: string[];
  /** For lasting faults: how long, and which band of the timing it falls in. */
  durationMs?: number;
  band?: Band;
}

export interface PlanOptions {
  seed: number;
  /** Length of the run: the last fault ends, and the system has recovered, before it. */
  minutes: number;
  ttlMs: number;
  selfFenceMs: number;
  /** Time to let the system settle after a fault before the next (recovery, L1's margin). */
  settleMs: number;
  agents: readonly string[];
  controllers: readonly string[];
  identities: readonly string[];
  /** Which faults to draw (default: all). */
  actions?: readonly FaultAction[];
}

/** mulberry32: a small, well-mixed 32-bit generator; the same seed gives the same run. */
export function random(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** A duration inside `band`, kept clear of its edges (20–80 % of it) so it is unambiguous. */
export function durationIn(band: Band, ttlMs: number, selfFenceMs: number, r: number): number {
  const within = (lo: number, hi: number) => Math.round(lo + (hi - lo) * (0.2 + 0.6 * r));
  switch (band) {
    case 'short-of-D':
      return within(0, selfFenceMs);
    case 'between-D-and-T':
      return within(selfFenceMs, ttlMs);
    case 'past-T':
      return within(ttlMs, 2 * ttlMs);
  }
}

export class PlanError extends Error {}

/** The whole run's faults, in time order; each lasting one followed by `settleMs` of quiet. */
export function planFaults(o: PlanOptions): PlannedFault[] {
  if (!(o.selfFenceMs > 0 && o.selfFenceMs < o.ttlMs)) {
    throw new PlanError(`selfFenceMs (${o.selfFenceMs}) must lie between 0 and ttlMs (${o.ttlMs})`);
  }
  if (o.agents.length === 0) throw new PlanError('give at least one agent to aim faults at');
  // Only faults that have something to aim at in this topology.
  const aimable = (a: FaultAction) =>
    FAULTS[a].target === 'controller'
      ? o.controllers.length > 0
      : FAULTS[a].target === 'identity'
        ? o.identities.length > 0
        : true;
  const actions = (o.actions ?? (Object.keys(FAULTS) as FaultAction[])).filter(aimable);
  if (actions.length === 0) throw new PlanError('no fault action has a target in this topology');
  const next = random(o.seed);
  const pick = <T>(list: readonly T[]): T => list[Math.floor(next() * list.length)]!;
  const endMs = o.minutes * 60_000;
  const faults: PlannedFault[] = [];
  let at = o.settleMs;
  // Each lasting action walks through the bands in turn, from a seeded start.
  const bandTurn = new Map<FaultAction, number>();
  for (let n = 1; ; n++) {
    const action = pick(actions);
    const spec = FAULTS[action];
    let durationMs: number | undefined;
    let band: Band | undefined;
    if (spec.lasts) {
      const turn = bandTurn.get(action) ?? Math.floor(next() * BANDS.length);
      bandTurn.set(action, turn + 1);
      band = BANDS[turn % BANDS.length]!;
      durationMs = durationIn(band, o.ttlMs, o.selfFenceMs, next());
    }
    const end = at + (durationMs ?? 0) + o.settleMs;
    if (end > endMs) break;
    const targets =
      spec.target === 'agent'
        ? [pick(o.agents)]
        : spec.target === 'controller'
          ? [pick(o.controllers)]
          : spec.target === 'identity'
            ? [pick(o.identities)]
            : [spec.target];
    faults.push({
      id: `f${n}`,
      at,
      action,
      targets,
      ...(durationMs !== undefined ? { durationMs, band } : {}),
    });
    // A little jitter, so faults do not land in step with the agents' renewals.
    at = end + Math.round(next() * 1_000);
  }
  return faults;
}

/** The plan as a table: what an operator reads before a run, and finds again in its report. */
export function describePlan(faults: readonly PlannedFault[]): string {
  const lines = ['  id      at (s)  action             targets      duration  band'];
  for (const f of faults) {
    lines.push(
      `  ${f.id.padEnd(6)} ${(f.at / 1000).toFixed(1).padStart(7)}  ${f.action.padEnd(18)} ${f.targets.join(',').padEnd(12)} ${
        f.durationMs === undefined ? '         ' : `${f.durationMs} ms`.padStart(9)
      }  ${f.band ?? ''}`.trimEnd(),
    );
  }
  return lines.join('\n');
}

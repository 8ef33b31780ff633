// Runs faults against a topology and judges the history: the matrix's named scenarios one
// after the other, or a seeded nemesis plan. Between faults it waits for the cluster to be
// whole again (every identity led and answering PING under its leader's token) — a condition,
// not a sleep; the only fixed times are the faults' own durations and the quiet windows in
// which "nothing moved" is observed.
import { collectResponders } from '../pkg/identity/client.js';
import { KEEPALIVES_PER_TTL } from '../pkg/lease/timing.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { waitFor } from '../test/support/wait.js';
import { check, momentOf, type Report, type Violation } from './checker.js';
import { Faults } from './faults.js';
import { monotonicMs, type HistoryEvent } from './history.js';
import { describePlan, planFaults, type FaultAction, type PlannedFault } from './nemesis.js';
import { planScenario, type Scenario } from './scenarios.js';
import type { Topology } from './topology.js';

/** Time a whole cluster gets to be led and answering again after a fault and its recovery. */
const STEADY_TIMEOUT_MS = 90_000;
/** A PING's window when checking the cluster is whole. */
const STEADY_PING_MS = 500;

export interface ScenarioResult {
  scenario: Scenario;
  fault: PlannedFault;
  /** Monotonic ms: the scenario's window in the history. */
  from: number;
  to: number;
  /** Identities whose term changed in the window. */
  moved: string[];
  /** What the scenario expected and did not see (the checker's violations are apart). */
  problems: string[];
  /** Why an outcome the scenario did not expect is nonetheless the right one. */
  notes?: string[];
  violations: Violation[];
}

/** Every identity has a leader whose node alone answers PING under its token. */
export async function waitSteady(top: Topology, what: string): Promise<void> {
  await waitFor(
    async () => {
      for (const identity of top.identities) {
        const leader = await top.leaderOf(identity.name);
        if (!leader) return false;
        const answers = await collectResponders(top.nc, identity.name, STEADY_PING_MS).catch(() => []);
        if (answers.length !== 1) return false;
        if (answers[0]!.node !== leader.node || String(answers[0]!.token) !== leader.token) return false;
      }
      return true;
    },
    { what: `every identity led and answering (${what})`, timeoutMs: STEADY_TIMEOUT_MS, intervalMs: 250 },
  );
}

async function terms(top: Topology): Promise<Map<string, string | undefined>> {
  const out = new Map<string, string | undefined>();
  for (const i of top.identities) out.set(i.name, (await top.leaderOf(i.name))?.token);
  return out;
}

/** Identities whose leader key changed between `from` and `to` in the history. */
function movedIn(
  events: readonly HistoryEvent[],
  from: number,
  to: number,
  before: Map<string, string | undefined>,
) {
  const moved = new Set<string>();
  for (const e of events) {
    if (e.kind !== 'leader' || e.t < from || e.t > to) continue;
    if (e.token !== before.get(e.identity)) moved.add(e.identity);
  }
  return [...moved].sort();
}

/**
 * One scenario: the cluster steady, the fault, then (for a fault that must change nothing) a
 * quiet window of T plus the failover margin in which any move would show, the recovery of
 * whatever the fault left dead, and the cluster steady again.
 */
export async function runScenario(
  top: Topology,
  faults: Faults,
  s: Scenario,
  id: string,
  opts: { recover?: boolean } = {},
): Promise<ScenarioResult> {
  await waitSteady(top, `before ${s.name}`);
  const before = await terms(top);
  const from = monotonicMs();
  const fault = await planScenario(s, top, id);
  await faults.apply(fault);
  if (s.expect === 'moves') {
    await waitFor(async () => (await top.leaderOf(s.identity))?.token !== before.get(s.identity), {
      what: `${s.identity} to move after ${s.name}`,
      timeoutMs: STEADY_TIMEOUT_MS,
    }).catch(() => undefined);
  } else {
    // Watching for a move that must not happen: the window is the observation itself.
    await sleep(top.ttlMs + top.opts.failoverMarginMs);
  }
  if (opts.recover !== false) {
    await faults.recover();
    await waitSteady(top, `after ${s.name}`);
  } else {
    // An unsafe agent may never let the cluster be whole again: what it does after the fault
    // is watched for one failover's time instead (the window is the observation).
    await sleep(top.ttlMs + top.opts.failoverMarginMs);
  }
  await top.tail();
  const to = monotonicMs();
  const moved = movedIn(top.opts.log.events, from, to, before);
  const problems: string[] = [];
  if (s.expect === 'moves' && !moved.includes(s.identity)) {
    problems.push(`${s.identity} was expected to move after ${s.name}, and kept its term`);
  }
  const notes: string[] = [];
  if (s.expect === 'stays' && moved.length > 0) {
    const stay = judgeStay({
      scenario: s.name,
      moved,
      etcdFault: s.action.startsWith('etcd'),
      commitGapMs: top.commits?.longestGap(from, to),
      selfFenceMs: top.selfFenceMs,
      ttlMs: top.ttlMs,
    });
    if (stay.problem) problems.push(stay.problem);
    if (stay.note) notes.push(stay.note);
  } else if (s.action.startsWith('etcd') && top.commits) {
    notes.push(`etcd’s longest stretch without a commit: ${Math.round(top.commits.longestGap(from, to))} ms`);
  }
  return {
    scenario: s,
    fault,
    from,
    to,
    moved,
    problems,
    ...(notes.length ? { notes } : {}),
    violations: [],
  };
}

/**
 * A move where nothing was to move: a false failover of ours, unless etcd itself committed
 * nothing for so long that a holder had to fence itself. A holder whose last renewal was one
 * renewal interval old when etcd stopped committing reaches D without an acknowledgement once
 * the stretch lasts D − T/KEEPALIVES_PER_TTL; it must then log out (safety first), and the
 * identity moves. A shorter stretch leaves every holder its renewal in time: a move is ours.
 */
export function judgeStay(f: {
  scenario: string;
  moved: string[];
  etcdFault: boolean;
  /** The longest stretch without an etcd commit in the scenario's window, if watched. */
  commitGapMs: number | undefined;
  selfFenceMs: number;
  ttlMs: number;
}): { problem?: string; note?: string } {
  const moved = `nothing was to move after ${f.scenario}, and ${f.moved.join(', ')} did`;
  if (!f.etcdFault || f.commitGapMs === undefined) return { problem: moved };
  const tolerated = f.selfFenceMs - f.ttlMs / KEEPALIVES_PER_TTL;
  const gap = Math.round(f.commitGapMs);
  if (f.commitGapMs < tolerated) {
    return {
      problem: `${moved}, though etcd was without a commit for ${gap} ms only, less than D − T/${KEEPALIVES_PER_TTL} = ${tolerated} ms: a holder should have had a renewal acknowledged in time`,
    };
  }
  return {
    note: `${f.moved.join(', ')} moved: etcd committed nothing for ${gap} ms, at least D − T/${KEEPALIVES_PER_TTL} = ${tolerated} ms, so its holder had to fence itself (an election this long needs a larger T)`,
  };
}

/** The history's violations that became one in [from, to] (see momentOf). */
export function violationsIn(events: readonly HistoryEvent[], from: number, to: number): Violation[] {
  return check([...events].sort((a, b) => a.t - b.t)).violations.filter(
    (v) => momentOf(v) >= from && momentOf(v) <= to,
  );
}

export function attribute(report: Report, results: ScenarioResult[]): Violation[] {
  const unplaced: Violation[] = [];
  for (const v of report.violations) {
    const home = results.find((r) => momentOf(v) >= r.from && momentOf(v) <= r.to);
    if (home) home.violations.push(v);
    else unplaced.push(v);
  }
  return unplaced;
}

/** Run the scenarios one after the other; judge the history once the topology is closed. */
export async function runMatrix(
  top: Topology,
  scenarios: readonly Scenario[],
  onResult: (r: ScenarioResult) => void = () => undefined,
): Promise<ScenarioResult[]> {
  const faults = new Faults(top);
  const results: ScenarioResult[] = [];
  let n = 0;
  for (const s of scenarios) {
    const id = `s${++n}-${s.name}`;
    const from = monotonicMs();
    let result: ScenarioResult;
    try {
      result = await runScenario(top, faults, s, id);
    } catch (err) {
      // A cluster that does not heal is a finding, not a reason to lose the run's report.
      const fault = { id, at: 0, action: s.action, targets: [] };
      result = {
        scenario: s,
        fault,
        from,
        to: monotonicMs(),
        moved: [],
        problems: [`${s.name} could not finish: ${(err as Error).message}`],
        violations: [],
      };
      results.push(result);
      onResult(result);
      break;
    }
    results.push(result);
    onResult(result);
  }
  return results;
}

/**
 * The whole history judged, each violation given to the scenario it happened in; call it once
 * the topology is closed (the workload's last answers are in).
 */
export function judgeMatrix(events: readonly HistoryEvent[], results: ScenarioResult[]) {
  const report = check([...events].sort((a, b) => a.t - b.t));
  for (const r of results) r.violations = [];
  const unplaced = attribute(report, results);
  return { report, unplaced };
}

export interface NemesisOptions {
  seed: number;
  minutes: number;
  /** Quiet time after each fault (the plan's settle). */
  settleMs: number;
  actions?: readonly FaultAction[];
  onFault?: (f: PlannedFault) => void;
}

/**
 * Execute a seeded plan: each fault at its time, or once the cluster has healed from the one
 * before if that took longer; lifted after its duration; after its settle time, what it killed
 * is brought back and the cluster must be steady again before the next. Judge the history
 * once the topology is closed.
 */
export async function runNemesis(top: Topology, o: NemesisOptions): Promise<PlannedFault[]> {
  const plan = planFaults({
    seed: o.seed,
    minutes: o.minutes,
    ttlMs: top.ttlMs,
    selfFenceMs: top.selfFenceMs,
    settleMs: o.settleMs,
    agents: [...top.agents.keys()],
    controllers: [...top.controllers.keys()],
    identities: top.identities.map((i) => i.name),
    ...(o.actions ? { actions: o.actions } : {}),
  });
  const faults = new Faults(top);
  await waitSteady(top, 'before the nemesis');
  const start = monotonicMs();
  // Healing takes what it takes; the run still ends: past its minutes and one more, the
  // faults left are not done (said through onFault's caller, which sees the plan).
  const hardEnd = start + (o.minutes + 1) * 60_000;
  for (const f of plan) {
    if (monotonicMs() > hardEnd) break;
    const wait = start + f.at - monotonicMs();
    if (wait > 0) await sleep(wait);
    o.onFault?.(f);
    await faults.apply(f);
    await sleep(o.settleMs);
    await faults.recover();
    await waitSteady(top, `after ${f.id} (${f.action})`);
  }
  return plan;
}

export { describePlan };

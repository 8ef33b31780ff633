// How long a service is gone, and how often it moves when nothing was wrong: understudy on
// the chaos suite's topology (chaos/topology.ts: a 3-member etcd, a JetStream cluster of three
// NATS servers, two controllers, agents a, b, c each in a container of its own, the witness as
// every identity's service), with the faults done for real by chaos/faults.ts. Every figure is
// read afterwards from the run's history (bench/measure.ts): the etcd watch, the witness's own
// login line and PINGs sent every 10 ms to the identities measured — never from what the
// agents say. Beside them, the kernel's CPU pressure and each container's CPU time (who had the
// cores during a handover: bench/cpu-use.ts).
//
// Parts, each at every T of the profile, aimed at identity w1 (a: 10, b: 5, c: 0):
//   failover    the leader's host killed; its host frozen for 2 T; it cut from etcd for 2 T.
//               Time from the fault to the successor's first PING answer, and its steps.
//   false       nothing wrong with the leader: the etcd raft leader killed, an etcd member
//               paused for 2 s, a 200 ms network stall of the leader's host, every core
//               saturated for 10 s. Moves per 100 faults (any identity's term changing).
//   switchover  through the controller's API: the window with no responder, and the time from
//               the command to the new leader's first answer.
//   leave       SIGTERM of the leader's agent (how systemd stops it): the same two figures.
//   probe       the warm service frozen under its live agent: the controller's probes find
//               it silent and fail it over; time to the successor's answer, against the
//               probe budget.
//   inbox       switchovers of w3 (durable inbox) while 500 requests a second go to it, on a
//               topology of its own: requests stored and never answered, or answered twice.
// Each trial starts from a whole cluster (every identity led and answering) and ends with it
// whole again; what a fault killed is brought back in between.
//
// Two identities are measured in every trial (see IDENTITIES): w1, a warm standby on the fd3
// channel, and w4, a cold channel-less process on the same hosts.
//
//   npx tsx bench/failover.ts [--profile quick|full] [--ttl 2,5,10] [--reps N|part=N,...] [--parts a,b]
//   npx tsx bench/failover.ts --reanalyze bench/results/failover-….json   (figures again, no run)
//   npm run bench                 (quick: T = 5 s, a few trials of each)
//   npm run bench -- --full       (T = 2, 5, 10 s; 20 failovers per fault, 25 faults per kind)
// Prints tables, writes bench/results/failover-<date>-<profile>.json and SVG plots next to it.
// Never fails on a timing: exits 1 if the run could not be done or the checker found a
// violation of S1-S5, 2 if it ran out of its time budget.
import { setTimeout as sleep } from 'node:timers/promises';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { collectResponders } from '../pkg/identity/client.js';
import { Probe } from '../pkg/spec/schema.js';
import { KEEPALIVES_PER_TTL } from '../pkg/lease/timing.js';
import { reapOrphans } from '../test/support/reaper.js';
import { waitFor } from '../test/support/wait.js';
import { check, formatViolation } from '../chaos/checker.js';
import { Faults } from '../chaos/faults.js';
import { monotonicMs, parseHistory, type HistoryEvent } from '../chaos/history.js';
import type { FaultAction, PlannedFault } from '../chaos/nemesis.js';
import { HistoryLog } from '../chaos/observe.js';
import { waitSteady } from '../chaos/runner.js';
import { Topology, type ChaosIdentity } from '../chaos/topology.js';
import {
  cpuWaitShare,
  measure,
  moveRate,
  STAGES,
  stagesOf,
  summarize,
  tallyInbox,
  type InboxTally,
  type PressureSample,
  type Stages,
  type Summary,
  type Trial,
  type TrialResult,
} from './measure.js';
import { CPU_GROUPS, cpuUseIn, sampleCpuUse, type CpuGroup, type CpuUseSample } from './cpu-use.js';
import { cpuWaitedUs, sampleEvery } from './sampling.js';
import { renderPlots, renderScalePlot } from './plots.js';
import { latestScaleRuns, machine, resultPath, versions, writeJson } from './results.js';

/**
 * The identities: w1 and w4 live on the same hosts with the same priorities, w1's service a
 * warm standby on the fd3 channel (login is a message), w4's a cold process started at login
 * (and counted logged in once it has run COLD_SETTLE_MS); every fault hits both, so each
 * trial measures both. w3 (durable inbox) keeps the topology's third host busy.
 */
const IDENTITIES: ChaosIdentity[] = [
  { name: 'w1', hosts: { a: 10, b: 5, c: 0 }, warm: true },
  { name: 'w4', hosts: { a: 10, b: 5, c: 0 } },
  { name: 'w3', hosts: { b: 0, c: 10 }, durable: true },
];
/** The identities measured, and how their service runs. */
const MEASURED = { w1: 'warm', w4: 'cold' } as const;
type Measured = keyof typeof MEASURED;
/** Every identity a trial may aim at: the measured ones, and w3 for the inbox part. */
const SERVICE = { ...MEASURED, w3: 'cold' } as const;
type Aimed = keyof typeof SERVICE;
/** The inbox part's load on w3, as the issue sets it. */
const INBOX_RATE_PER_S = 500;
/** The identity the faults aim at (its leader's host). */
const AIM: Measured = 'w1';
/** Margin past T for a move to show before a "nothing moved" window ends (the chaos suite's). */
const FAILOVER_MARGIN_MS = 3_000;
/** The PING period: the resolution of every gap and answer time below. */
const PING_EVERY_MS = 10;
/**
 * The PING period of an identity a topology runs but does not measure (w3 beside the measured
 * pair): the chaos suite's, enough for the checker. Each PING costs its leader's agent a
 * question to the service and a signature, and NATS a request and a reply; at PING_EVERY_MS
 * an unmeasured identity sampled as finely was a third of the PINGs for nothing.
 */
const UNMEASURED_PING_EVERY_MS = 50;
/**
 * How often the machine's CPU pressure is read: a few readings inside the shortest handover
 * step, at a cost (one small read) that does not add to what it measures.
 */
const PRESSURE_EVERY_MS = 50;

/**
 * Read the kernel's CPU pressure every PRESSURE_EVERY_MS until stopped: what says whether a
 * slow step waited for a core. Nothing on a kernel without PSI (the figures then say n/a).
 */
function samplePressure(): { stop(): PressureSample[] } {
  return sampleEvery(PRESSURE_EVERY_MS, (): PressureSample | undefined => {
    const waitedUs = cpuWaitedUs();
    return waitedUs === undefined ? undefined : [monotonicMs(), waitedUs];
  });
}

const pressurePath = (file: string) => file.replace(/\.json$/, '.cpu-pressure.json');
const cpuUsePath = (file: string) => file.replace(/\.json$/, '.cpu-use.json');
/** An etcd member paused this long, as the issue sets it. */
const ETCD_PAUSE_MS = 2_000;
/** A network stall: every packet to and from the leader's host dropped this long. */
const STALL_MS = 200;
/** Every core busy this long: longer than one lease at every T benched. */
const CPU_BURN_MS = 10_000;
/**
 * A service frozen this long: past the controller's probe budget at the spec's defaults
 * (PROBE_BUDGET_MS) plus a handover; the frozen service is killed by the handover anyway.
 */
const SERVICE_FREEZE_MS = 15_000;
/** The probe budget at the spec's defaults: failures × interval, plus the last probe's timeout. */
const PROBE = Probe.parse({});
const PROBE_BUDGET_MS = PROBE.failures * PROBE.intervalMs + PROBE.timeoutMs;
/** After a move, how long the successor gets to answer before the trial is given up. */
const ANSWER_MARGIN_MS = 30_000;

const PARTS = ['failover', 'false', 'switchover', 'leave', 'probe', 'inbox'] as const;
type Part = (typeof PARTS)[number];

interface Profile {
  ttls: number[];
  reps: Record<Part, number>;
}
const PROFILES: Record<'quick' | 'full', Profile> = {
  quick: { ttls: [5], reps: { failover: 3, false: 3, switchover: 10, leave: 5, probe: 2, inbox: 6 } },
  full: {
    ttls: [2, 5, 10],
    reps: { failover: 20, false: 25, switchover: 20, leave: 20, probe: 10, inbox: 20 },
  },
};

/** One kind of fault of a part: the chaos fault that does it, and for how long. */
interface FaultKind {
  name: string;
  action: FaultAction;
  /** A switchover's identity (other faults hit every measured identity at once). */
  identity?: Aimed;
  /** ms, from T. */
  duration?: (ttlMs: number) => number;
}
const FAULTS: Record<Part, FaultKind[]> = {
  failover: [
    { name: 'kill', action: 'kill' },
    { name: 'freeze-2T', action: 'host-freeze', duration: (t) => 2 * t },
    { name: 'cut-etcd-2T', action: 'cut-etcd', duration: (t) => 2 * t },
  ],
  false: [
    { name: 'etcd-leader-kill', action: 'etcd-leader' },
    { name: 'etcd-pause-2s', action: 'etcd-pause', duration: () => ETCD_PAUSE_MS },
    { name: 'stall-200ms', action: 'cut-both', duration: () => STALL_MS },
    { name: 'cpu-burn-10s', action: 'cpu-burn', duration: () => CPU_BURN_MS },
  ],
  switchover: [
    { name: 'switchover', action: 'switchover', identity: 'w1' },
    { name: 'switchover', action: 'switchover', identity: 'w4' },
  ],
  leave: [{ name: 'sigterm', action: 'agent-term' }],
  // Only a service that can say it is alive can be found frozen: the warm witness answers the
  // agent's liveness question on its channel; a channel-less cold one is alive while it exists.
  probe: [
    { name: 'service-freeze', action: 'witness-freeze', identity: 'w1', duration: () => SERVICE_FREEZE_MS },
  ],
  inbox: [{ name: 'switchover-inbox', action: 'switchover', identity: 'w3' }],
};

class UsageError extends Error {}

function parse(argv: string[]): {
  profile: string;
  ttls: number[];
  reps: Record<Part, number>;
  parts: Part[];
} {
  const { values } = parseArgs({
    args: argv,
    options: {
      profile: { type: 'string' },
      full: { type: 'boolean' },
      ttl: { type: 'string' },
      reps: { type: 'string' },
      parts: { type: 'string' },
    },
  });
  const name = values.full ? 'full' : (values.profile ?? 'quick');
  if (name !== 'quick' && name !== 'full')
    throw new UsageError(`--profile must be quick or full (got '${name}')`);
  const profile = PROFILES[name];
  const ttls = values.ttl ? values.ttl.split(',').map(Number) : profile.ttls;
  if (ttls.some((t) => !Number.isInteger(t) || t < 2 || t > 60)) {
    throw new UsageError(`--ttl must list whole seconds from 2 to 60 (got '${values.ttl}')`);
  }
  let reps = profile.reps;
  if (values.reps !== undefined) {
    // N for every part, or part=N pairs (the others keep the profile's).
    reps = { ...reps };
    for (const item of values.reps.split(',')) {
      const [part, count] = item.includes('=') ? item.split('=') : [undefined, item];
      const n = Number(count);
      if (
        !Number.isInteger(n) ||
        n < 1 ||
        (part !== undefined && !(PARTS as readonly string[]).includes(part))
      ) {
        throw new UsageError(
          `--reps: '${item}' is not a whole number ≥ 1 or part=N with a part of ${PARTS.join(', ')}`,
        );
      }
      for (const p of part === undefined ? PARTS : [part as Part]) reps[p] = n;
    }
  }
  const parts = values.parts ? values.parts.split(',') : [...PARTS];
  for (const p of parts) {
    if (!(PARTS as readonly string[]).includes(p)) {
      throw new UsageError(`--parts: unknown part '${p}' (known: ${PARTS.join(', ')})`);
    }
  }
  // A profile changed by flags is named for what it is, so its results are not taken for the profile's.
  const custom = values.ttl !== undefined || values.reps !== undefined || values.parts !== undefined;
  return { profile: custom ? `${name}-custom` : name, ttls, reps, parts: parts as Part[] };
}

/** A generous bound on the whole run, from its shape; past it the run stops itself. */
function budgetMs(o: ReturnType<typeof parse>): number {
  let ms = 0;
  for (const t of o.ttls) {
    ms += 3 * 60_000; // topology start and close
    for (const part of o.parts) {
      for (const kind of FAULTS[part])
        ms += o.reps[part] * (4 * t * 1000 + 40_000 + (kind.duration?.(t * 1000) ?? 0));
    }
  }
  return ms;
}

let current: Topology | undefined;

/** One trial: the cluster whole, the fault, the outcome awaited, the cluster whole again. */
async function runTrial(
  top: Topology,
  faults: Faults,
  part: Part,
  kind: FaultKind,
  id: string,
): Promise<Trial[]> {
  await waitSteady(top, `before ${id}`);
  // A false failover is counted once per fault, whichever identity moved.
  const measured: Aimed[] = kind.identity
    ? [kind.identity]
    : part === 'false'
      ? [AIM]
      : (Object.keys(MEASURED) as Measured[]);
  const before = new Map<Aimed, { node: string; token: string }>();
  for (const identity of measured) {
    const leader = await top.leaderOf(identity);
    if (!leader) throw new Error(`${identity} has no leader before ${id}`);
    before.set(identity, leader);
  }
  const aimed = (await top.leaderOf(kind.identity ?? AIM))!;
  const target =
    kind.action === 'switchover'
      ? kind.identity!
      : ['etcd-leader', 'etcd-pause'].includes(kind.action)
        ? kind.action
        : aimed.node;
  const durationMs = kind.duration?.(top.ttlMs);
  const fault: PlannedFault = {
    id,
    at: 0,
    action: kind.action,
    targets: [target],
    ...(durationMs ? { durationMs } : {}),
  };
  const started = monotonicMs();
  try {
    await faults.apply(fault);
  } catch (err) {
    // Not done (docker could not freeze a cgroup, say): nothing to measure, the run goes on.
    process.stdout.write(`  ${id}: the fault could not be done (${(err as Error).message}); not counted\n`);
    await faults.recover();
    await waitSteady(top, `after ${id}`);
    return [];
  }
  if (part === 'false') {
    // Watching for a move that must not happen: the window is the observation itself.
    await sleep(top.ttlMs + FAILOVER_MARGIN_MS);
  } else {
    // Only identities led from the host hit move; a switchover moves its own.
    const moving = measured.filter((i) => kind.identity !== undefined || before.get(i)!.node === aimed.node);
    // A handover that never completes is a figure too ("none" in the tables), not the end of
    // the run: the cluster is made whole again below, and the next trial goes on.
    await waitFor(
      async () => {
        for (const identity of moving) {
          const now = await top.leaderOf(identity);
          if (!now || now.token === before.get(identity)!.token) return false;
          const answers = await collectResponders(top.nc, identity, 200).catch(() => []);
          if (!answers.some((a) => String(a.token) === now.token)) return false;
        }
        return true;
      },
      {
        what: `${moving.join(', ')} answering on a successor after ${id}`,
        timeoutMs: 3 * top.ttlMs + ANSWER_MARGIN_MS,
        intervalMs: 50,
      },
    ).catch((err: Error) => process.stdout.write(`  ${id}: ${err.message}\n`));
  }
  await faults.recover();
  await waitSteady(top, `after ${id}`);
  await top.tail();
  const until = monotonicMs();
  // How long etcd itself accepted nothing, from its commits (outside the agents), over the
  // whole trial: a move is counted until the cluster is steady again, and so is what forced it
  // (after a member paused at T = 2 s had resumed, every agent's renewals once went unanswered
  // for 1.4–2.3 s, some 5 s later, past the observation window).
  const stalled = part === 'false' ? top.commits?.longestGap(started, until) : undefined;
  return measured.map((identity) => ({
    id,
    // An inbox trial is a switchover, under load.
    kind: part === 'inbox' ? 'switchover' : part,
    fault: kind.name,
    ...(part === 'false' ? {} : { service: SERVICE[identity] }),
    ttlS: top.ttlMs / 1000,
    ...(stalled === undefined
      ? {}
      : {
          etcdStall: {
            gapMs: Math.round(stalled),
            toleratedMs: top.selfFenceMs - top.ttlMs / KEEPALIVES_PER_TTL,
          },
        }),
    identity,
    node: before.get(identity)!.node,
    token: before.get(identity)!.token,
    at: started,
    until,
  }));
}

/** Each fault's own start as the history has it (the instant it was done, not planned), and its target. */
function faultStarts(events: readonly HistoryEvent[]): Map<string, { t: number; targets: string[] }> {
  const starts = new Map<string, { t: number; targets: string[] }>();
  for (const e of events) {
    if (e.kind === 'nemesis' && e.phase === 'start' && !starts.has(e.id))
      starts.set(e.id, { t: e.t, targets: e.targets });
  }
  return starts;
}

/**
 * A host fault measures the identities led from that host only: an identity whose leader was
 * elsewhere (w4 left on c by an earlier failover, say) had nothing to fail over.
 */
function hit(trial: Trial, targets: readonly string[] | undefined): boolean {
  if (trial.kind !== 'failover' && trial.kind !== 'leave' && trial.kind !== 'probe') return true;
  return targets === undefined || targets.includes(trial.node);
}

/**
 * The parts `parts` at T = `ttlS` on one topology. The inbox part gets a topology of its own
 * (`durableRatePerS`): its load would weigh on every other figure.
 */
async function runAt(
  ttlS: number,
  o: ReturnType<typeof parse>,
  log: HistoryLog,
  logDir: string,
  parts: readonly Part[],
  durableRatePerS?: number,
): Promise<Trial[]> {
  if (parts.length === 0) return [];
  const top = await Topology.start({
    ttlSeconds: ttlS,
    failoverMarginMs: FAILOVER_MARGIN_MS,
    pingEveryMs: PING_EVERY_MS,
    // The inbox part measures w3; the others measure w1 and w4 only.
    ...(durableRatePerS ? {} : { pingEveryMsOf: { w3: UNMEASURED_PING_EVERY_MS } }),
    // Under the inbox's load, w3 alone (on b and c): the other identities' PINGs would only
    // take CPU from it.
    identities: durableRatePerS ? IDENTITIES.filter((i) => i.durable) : IDENTITIES,
    ...(durableRatePerS ? { durableRatePerS } : {}),
    log,
    logDir,
  });
  current = top;
  const faults = new Faults(top);
  const trials: Trial[] = [];
  try {
    for (const part of parts) {
      for (const kind of FAULTS[part]) {
        for (let n = 1; n <= o.reps[part]; n++) {
          const id = `T${ttlS}-${kind.name}${kind.identity ? `-${kind.identity}` : ''}-${n}`;
          let made: Trial[];
          try {
            made = await runTrial(top, faults, part, kind, id);
          } catch (err) {
            // The cluster could not be made whole again: keep what was measured at this T.
            process.stdout.write(
              `  ${id}: ${(err as Error).message}; the trials at T = ${ttlS} s end here\n`,
            );
            return trials;
          }
          trials.push(...made);
          const trial = made[0];
          if (!trial) continue;
          process.stdout.write(
            `  ${id.padEnd(28)} leader ${trial.node}, ${((trial.until - trial.at) / 1000).toFixed(1)} s\n`,
          );
        }
      }
    }
  } finally {
    await top.close();
    current = undefined;
  }
  return trials;
}

// --- report ---------------------------------------------------------------------------------

const pct = (share: number) => `${Math.round(share * 100)} %`;
const ms = (v: number | undefined) => (v === undefined ? '—' : Math.round(v).toLocaleString('en-US'));

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) => r.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  '))
    .join('\n');
}

function group<T>(items: readonly T[], key: (t: T) => string): Map<string, T[]> {
  const out = new Map<string, T[]>();
  for (const i of items) {
    const k = key(i);
    out.set(k, [...(out.get(k) ?? []), i]);
  }
  return out;
}

const medianOf = (values: Array<number | undefined>) =>
  summarize(values.filter((v): v is number => v !== undefined))?.median;

export function summaries(results: readonly TrialFigures[]) {
  const byFault = group(
    results,
    (r) => `${r.trial.kind}|${r.trial.fault}|${r.trial.ttlS}|${r.trial.service}`,
  );
  return [...byFault.values()].map((rs) => {
    const { kind, fault, ttlS, service } = rs[0]!.trial;
    const h = rs.map((r) => r.handover);
    const faultsWithMoves = rs.filter((r) => r.moved.length > 0).length;
    const stalls = rs.flatMap((r) => (r.trial.etcdStall ? [r.trial.etcdStall] : []));
    return {
      kind,
      fault,
      service,
      ttlS,
      trials: rs.length,
      answer: summarize(h.flatMap((x) => (x.answerMs === undefined ? [] : [x.answerMs]))),
      gap: summarize(rs.flatMap((r) => (r.gapMs === undefined ? [] : [r.gapMs]))),
      noSuccessor: rs.filter((r) => r.handover.answerMs === undefined).length,
      // Each stage's own duration over the trials, and the slowest trial's (failovers).
      stages: Object.fromEntries(
        STAGES.map((stage) => [stage, summarize(rs.flatMap((r) => stageOf(r, stage)))]),
      ) as Record<(typeof STAGES)[number], Summary | undefined>,
      slowest: slowestOf(rs),
      cpuWait: summarize(rs.flatMap((r) => (r.cpuWait === undefined ? [] : [r.cpuWait]))),
      cpuUse: Object.fromEntries(
        (['machine', ...CPU_GROUPS, 'rest'] as const).map((g) => [g, medianOf(rs.map((r) => r.cpuUse?.[g]))]),
      ) as Record<CpuGroup | 'machine', number | undefined>,
      steps: {
        out: medianOf(h.map((x) => x.outMs)),
        released: medianOf(h.map((x) => x.releasedMs)),
        vacated: medianOf(h.map((x) => x.vacatedMs)),
        elected: medianOf(h.map((x) => x.electedMs)),
        recorded: medianOf(h.map((x) => x.recordedMs)),
        login: medianOf(h.map((x) => x.loginMs)),
        answer: medianOf(h.map((x) => x.answerMs)),
      },
      // etcd's longest stretch without a commit per fault, and the faults whose stretch left
      // a holder no renewal within D (a move is then the self-fence's answer, not a mistake).
      etcdStall: summarize(stalls.map((x) => x.gapMs)),
      forcedMoves: rs.filter(
        (r) =>
          r.moved.length > 0 && r.trial.etcdStall && r.trial.etcdStall.gapMs >= r.trial.etcdStall.toleratedMs,
      ).length,
      moves: {
        faultsWithMoves,
        identities: rs.reduce((n, r) => n + r.moved.length, 0),
        ...moveRate(faultsWithMoves, rs.length),
      },
      doubles: rs.reduce((n, r) => n + r.doubles, 0),
    };
  });
}
type Summaries = ReturnType<typeof summaries>;

function stageOf(r: TrialResult, stage: (typeof STAGES)[number]): number[] {
  const v = stagesOf(r.handover, r.trial.ttlS * 1000)[stage];
  return v === undefined ? [] : [v];
}

/** The trial whose successor answered last, with its stages: what the p99 is made of. */
function slowestOf(
  rs: readonly TrialFigures[],
): { id: string; answerMs: number; stages: Stages; cpuWait?: number } | undefined {
  let worst: TrialFigures | undefined;
  for (const r of rs) {
    if (r.handover.answerMs === undefined) continue;
    if (!worst || r.handover.answerMs > worst.handover.answerMs!) worst = r;
  }
  if (!worst) return undefined;
  return {
    id: worst.trial.id,
    answerMs: worst.handover.answerMs!,
    stages: stagesOf(worst.handover, worst.trial.ttlS * 1000),
    ...(worst.cpuWait !== undefined && { cpuWait: worst.cpuWait }),
  };
}

/** A trial's figures and how much of its handover waited for a core. */
type TrialFigures = TrialResult & {
  /** Share of the time from the old key gone to the successor's answer (ours) in which some runnable task waited for a core. */
  cpuWait?: number;
  /** Who had the cores meanwhile: % of one core by part of the topology (cpu-use.ts). */
  cpuUse?: Partial<Record<CpuGroup | 'machine', number>>;
};

function withCpuWait(
  r: TrialResult,
  pressure: readonly PressureSample[],
  use: readonly CpuUseSample[],
): TrialFigures {
  const { vacatedMs, answerMs } = r.handover;
  if (r.trial.kind !== 'failover' || vacatedMs === undefined || answerMs === undefined) return r;
  const [from, to] = [r.trial.at + vacatedMs, r.trial.at + answerMs];
  const share = cpuWaitShare(pressure, from, to);
  const cpuUse = cpuUseIn(use, from, to);
  return { ...r, ...(share !== undefined && { cpuWait: share }), ...(cpuUse && { cpuUse }) };
}

/** fault, service, T, then n, min, median, p99, max of the time to the successor's answer. */
function answerCells(x: Summaries[number]): string[] {
  const a = x.answer;
  return [
    x.fault,
    x.service ?? '',
    `${x.ttlS}`,
    `${a?.n ?? 0}`,
    ms(a?.min),
    ms(a?.median),
    ms(a?.p99),
    ms(a?.max),
  ];
}

/** The median times of the named handover steps, in that order (one table column each). */
function stepCells(x: Summaries[number], steps: ReadonlyArray<keyof Summaries[number]['steps']>): string[] {
  return steps.map((step) => ms(x.steps[step]));
}

function report(s: Summaries): string {
  const out: string[] = [];
  const failovers = s.filter((x) => x.kind === 'failover');
  if (failovers.length > 0) {
    out.push('Unplanned failover: fault → successor answers PING (ms); target p99 ≤ T + 300');
    out.push(
      table([
        ['fault', 'service', 'T', 'n', 'min', 'median', 'p99', 'max', 'target', 'none'],
        ...failovers.map((x) => [
          ...answerCells(x),
          x.answer ? (x.answer.p99 <= x.ttlS * 1000 + 300 ? 'ok' : 'MISSED') : '—',
          `${x.noSuccessor}`,
        ]),
      ]),
    );
    out.push('', 'Where the time goes (medians, ms after the fault)');
    out.push(
      table([
        ['fault', 'service', 'T', 'key gone', 'new key', 'login record', 'service login', 'answers'],
        ...failovers.map((x) => [
          x.fault,
          x.service ?? '',
          `${x.ttlS}`,
          ...stepCells(x, ['vacated', 'elected', 'recorded', 'login', 'answer']),
        ]),
      ]),
    );
  }
  if (failovers.length > 0) {
    out.push(
      '',
      "Each stage's own time, median / p90 / max (ms): lapse = key gone − T, elect = → new key, record = → its",
      'login record, login = → service login, answer = → first answer; the share of our part (key gone → answer)',
      'in which some runnable task waited for a core (/proc/pressure/cpu); then the slowest trial',
    );
    const cell = (x: Summary | undefined) => (x ? `${ms(x.median)} / ${ms(x.p90)} / ${ms(x.max)}` : '—');
    out.push(
      table([
        [
          'fault',
          'service',
          'T',
          ...STAGES,
          'CPU waited (key gone → answer)',
          'slowest trial: total = lapse + … + answer',
        ],
        ...failovers.map((x) => [
          x.fault,
          x.service ?? '',
          `${x.ttlS}`,
          ...STAGES.map((stage) => cell(x.stages[stage])),
          x.cpuWait ? `${pct(x.cpuWait.median)} / ${pct(x.cpuWait.p90)} / ${pct(x.cpuWait.max)}` : 'n/a',
          x.slowest
            ? `${x.slowest.id}: ${ms(x.slowest.answerMs)} = T ${STAGES.map((stage) => {
                const v = x.slowest!.stages[stage];
                return v === undefined ? '?' : `${v < 0 ? '−' : '+'} ${ms(Math.abs(v))}`;
              }).join(' ')}${x.slowest.cpuWait === undefined ? '' : `, CPU waited ${pct(x.slowest.cpuWait)}`}`
            : '—',
        ]),
      ]),
    );
  }
  if (failovers.some((x) => x.cpuUse.machine !== undefined)) {
    out.push(
      '',
      'Who had the cores during our part (key gone → answer): median % of one core (200 = both cores of this',
      "machine); agents = the agents' hosts (agent, services, lifelines), rest = the bench, the engine, the kernel",
    );
    const groups = ['machine', ...CPU_GROUPS, 'rest'] as const;
    out.push(
      table([
        ['fault', 'service', 'T', ...groups],
        ...failovers.map((x) => [
          x.fault,
          x.service ?? '',
          `${x.ttlS}`,
          ...groups.map((g) => (x.cpuUse[g] === undefined ? 'n/a' : `${Math.round(x.cpuUse[g])} %`)),
        ]),
      ]),
    );
  }
  const falses = s.filter((x) => x.kind === 'false');
  if (falses.length > 0) {
    out.push('', 'False failovers: faults with any identity moved, per 100 (95 % upper bound)');
    out.push(
      table([
        [
          'fault',
          'T',
          'faults',
          'with moves',
          'per 100',
          '≤ (95 %)',
          'identities moved',
          'etcd without commits median / max',
          'moves forced (≥ D − T/10)',
        ],
        ...falses.map((x) => [
          x.fault,
          `${x.ttlS}`,
          `${x.trials}`,
          `${x.moves.faultsWithMoves}`,
          x.moves.per100.toFixed(1),
          x.moves.upper95.toFixed(1),
          `${x.moves.identities}`,
          x.etcdStall ? `${ms(x.etcdStall.median)} / ${ms(x.etcdStall.max)}` : '—',
          `${x.forcedMoves}`,
        ]),
      ]),
    );
  }
  const planned = s.filter((x) => x.kind === 'switchover' || x.kind === 'leave');
  if (planned.length > 0) {
    out.push(
      '',
      `Planned handover: window with no responder, and command → new leader answers (ms, ± ${PING_EVERY_MS})`,
    );
    out.push(
      table([
        [
          'kind',
          'fault',
          'service',
          'T',
          'n',
          'gap median',
          'gap p99',
          'gap max',
          'target',
          'answer median',
          'answer p99',
          'doubles',
        ],
        ...planned.map((x) => [
          x.kind,
          x.fault,
          x.service ?? '',
          `${x.ttlS}`,
          `${x.gap?.n ?? 0}`,
          ms(x.gap?.median),
          ms(x.gap?.p99),
          ms(x.gap?.max),
          x.gap ? (x.gap.p99 <= (x.kind === 'switchover' ? 100 : 500) ? 'ok' : 'MISSED') : '—',
          ms(x.answer?.median),
          ms(x.answer?.p99),
          `${x.doubles}`,
        ]),
      ]),
    );
    out.push('', 'Where the time goes (medians, ms after the command or the SIGTERM)');
    out.push(
      table([
        [
          'kind',
          'fault',
          'service',
          'T',
          'old out',
          'old record out',
          'key moved',
          'new record',
          'new login',
          'answers',
        ],
        ...planned.map((x) => [
          x.kind,
          x.fault,
          x.service ?? '',
          `${x.ttlS}`,
          ...stepCells(x, ['out', 'released', 'elected', 'recorded', 'login', 'answer']),
        ]),
      ]),
    );
  }
  const probes = s.filter((x) => x.kind === 'probe');
  if (probes.length > 0) {
    out.push(
      '',
      `Probe-driven failover: service frozen under a live agent → successor answers (ms); probe budget ${PROBE_BUDGET_MS} (${PROBE.failures} × ${PROBE.intervalMs} + ${PROBE.timeoutMs})`,
    );
    out.push(
      table([
        ['fault', 'service', 'T', 'n', 'min', 'median', 'p99', 'max', 'none'],
        ...probes.map((x) => [...answerCells(x), `${x.noSuccessor}`]),
      ]),
    );
  }
  return out.join('\n');
}

/** Per T, the inbox part's requests: every durable send from its first switchover to its last. */
function inboxTallies(
  trials: readonly Trial[],
  events: readonly HistoryEvent[],
): Array<InboxTally & { ttlS: number; switchovers: number }> {
  const byT = group(
    trials.filter((t) => t.fault === 'switchover-inbox'),
    (t) => String(t.ttlS),
  );
  return [...byT.values()].map((ts) => {
    const until = Math.max(...ts.map((t) => t.until));
    // The inbox part's topology ends where the next one's config event is.
    const next = events.find((e) => e.kind === 'config' && e.t > until);
    return {
      ttlS: ts[0]!.ttlS,
      switchovers: ts.length,
      ...tallyInbox(events, ts[0]!.identity, Math.min(...ts.map((t) => t.at)), until, next?.t),
    };
  });
}

function inboxReport(tallies: ReturnType<typeof inboxTallies>): string {
  if (tallies.length === 0) return '';
  return [
    `Durable inbox during switchovers (target ${INBOX_RATE_PER_S} requests/s: 0 lost, 0 duplicated)`,
    table([
      [
        'T',
        'switchovers',
        'stored',
        'rate/s',
        'replied',
        'errors',
        'lost',
        'duplicated',
        'most owed',
        'drained in',
      ],
      ...tallies.map((x) => [
        `${x.ttlS}`,
        `${x.switchovers}`,
        x.stored.toLocaleString('en-US'),
        `${x.ratePerS}`,
        x.replied.toLocaleString('en-US'),
        `${x.errors}`,
        `${x.lost.length}`,
        `${x.duplicated.length}`,
        x.maxOwed.toLocaleString('en-US'),
        `${(x.drainMs / 1000).toFixed(1)} s`,
      ]),
    ]),
  ].join('\n');
}

async function main(): Promise<number> {
  const again = process.argv.indexOf('--reanalyze');
  if (again >= 0) {
    const file = process.argv[again + 1];
    if (!file) throw new UsageError('--reanalyze needs the results file (bench/results/failover-….json)');
    return reanalyze(file);
  }
  const o = parse(process.argv.slice(2));
  const limit = budgetMs(o);
  const date = new Date();
  const file = resultPath('failover', date, o.profile);
  process.stdout.write(
    `bench failover: profile ${o.profile}, T = ${o.ttls.join(', ')} s, parts ${o.parts.join(', ')}; stops itself after ${Math.round(limit / 60_000)} min\n`,
  );
  const timer = setTimeout(() => {
    process.stderr.write('bench failover: out of its time budget; removing its containers\n');
    closeAndExit(2);
  }, limit);
  timer.unref();
  await reapOrphans();
  const log = new HistoryLog(file.replace(/\.json$/, '.history.jsonl'));
  // Each agent's and controller's own log, beside the history (kept locally, like it).
  const logDir = file.replace(/\.json$/, '.logs');
  await mkdir(logDir, { recursive: true });
  const trials: Trial[] = [];
  const pressure = samplePressure();
  const cpuUse = sampleCpuUse(
    () => current?.harness.containerAliases() ?? new Map(),
    monotonicMs,
    PRESSURE_EVERY_MS,
  );
  for (const ttl of o.ttls) {
    process.stdout.write(`T = ${ttl} s\n`);
    trials.push(
      ...(await runAt(
        ttl,
        o,
        log,
        logDir,
        o.parts.filter((p) => p !== 'inbox'),
      )),
    );
    if (o.parts.includes('inbox'))
      trials.push(...(await runAt(ttl, o, log, logDir, ['inbox'], INBOX_RATE_PER_S)));
  }
  await log.flushed();
  clearTimeout(timer);
  const samples = pressure.stop();
  await writeFile(pressurePath(file), JSON.stringify(samples));
  const use = cpuUse.stop();
  await writeFile(cpuUsePath(file), JSON.stringify(use));
  return analyze(file, date, o, trials, log.sorted(), samples, use);
}

/**
 * Each topology's stretch of the history, from its config event to the next: the checker
 * judges each with its own T (one T's L1 bound is not another's).
 */
function perTopology(events: readonly HistoryEvent[]): HistoryEvent[][] {
  const starts = events.flatMap((e, i) => (e.kind === 'config' ? [i] : []));
  if (starts.length === 0) return [events.slice()];
  return starts.map((from, k) => events.slice(from, starts[k + 1] ?? events.length));
}

/** The figures of a run from its trials and its (time-ordered) history; written next to `file`. */
async function analyze(
  file: string,
  date: Date,
  o: ReturnType<typeof parse>,
  trials: readonly Trial[],
  events: readonly HistoryEvent[],
  pressure: readonly PressureSample[],
  use: readonly CpuUseSample[],
  /** How the run sampled (a re-analysis keeps the run's own, which may predate a change). */
  sampling: { pingEveryMs?: number; unmeasuredPingEveryMs?: number } = {
    pingEveryMs: PING_EVERY_MS,
    unmeasuredPingEveryMs: UNMEASURED_PING_EVERY_MS,
  },
  /** The machine and versions the run had: a re-analysis must not stamp its own on the run. */
  ran: { machine: unknown; versions: unknown } = { machine: machine(), versions: versions() },
): Promise<number> {
  const leaderKeys = events.filter((e) => e.kind === 'leader');
  const starts = faultStarts(events);
  const results = trials
    .filter((t) => hit(t, starts.get(t.id)?.targets))
    .map((t) =>
      withCpuWait(measure(events, { ...t, at: starts.get(t.id)?.t ?? t.at }, leaderKeys), pressure, use),
    );
  const s = summaries(results);
  const inbox = inboxTallies(trials, events);
  const violations = perTopology(events).flatMap((stretch) => check(stretch).violations);
  const text = [report(s), inboxReport(inbox)].filter((x) => x.length > 0).join('\n\n');
  process.stdout.write(`\n${text}\n\n`);
  process.stdout.write(
    violations.length === 0
      ? 'checker: no violation of S1-S5, L1, L2 in the whole run\n'
      : `checker: ${violations.length} violation(s)\n${violations.map(formatViolation).join('\n')}\n`,
  );
  const plots = await renderPlots(results, file.replace(/\.json$/, ''));
  const scale = await renderScalePlot(latestScaleRuns(), file.replace(/\.json$/, '-scale.svg'));
  if (scale) plots.push(scale);
  await writeJson(file, {
    bench: 'failover',
    date: date.toISOString(),
    machine: ran.machine,
    versions: ran.versions,
    settings: {
      probe: { ...PROBE, budgetMs: PROBE_BUDGET_MS },
      ...o,
      ...sampling,
      failoverMarginMs: FAILOVER_MARGIN_MS,
      etcdPauseMs: ETCD_PAUSE_MS,
      stallMs: STALL_MS,
      cpuBurnMs: CPU_BURN_MS,
    },
    summaries: s,
    // The ids of lost or doubled requests, a few of each: enough to look them up in the history.
    inbox: inbox.map((x) => ({
      ...x,
      lost: x.lost.length,
      duplicated: x.duplicated.length,
      lostIds: x.lost.slice(0, 20),
      duplicatedIds: x.duplicated.slice(0, 20),
    })),
    violations: violations.map(formatViolation),
    trials: results,
  });
  process.stdout.write(
    `results: ${file}\nplots: ${plots.map((p) => join('bench/results', p.split('/').at(-1)!)).join(', ')}\n`,
  );
  return violations.length > 0 ? 1 : 0;
}

/** `--reanalyze FILE`: the figures again from a run's saved trials and history, no containers. */
async function reanalyze(file: string): Promise<number> {
  const saved = JSON.parse(await readFile(file, 'utf8')) as {
    date: string;
    machine: unknown;
    versions: unknown;
    settings: ReturnType<typeof parse> & { pingEveryMs?: number; unmeasuredPingEveryMs?: number };
    trials: Array<{ trial: Trial }>;
  };
  const events = parseHistory(await readFile(file.replace(/\.json$/, '.history.jsonl'), 'utf8'));
  events.sort((a, b) => a.t - b.t);
  // Runs before 2026-12-04 (night) did not read the CPU pressure.
  const pressure = await readFile(pressurePath(file), 'utf8').then(
    (text) => JSON.parse(text) as PressureSample[],
    () => [],
  );
  // Runs before 2026-12-05 (night) did not read who used the cores.
  const use = await readFile(cpuUsePath(file), 'utf8').then(
    (text) => JSON.parse(text) as CpuUseSample[],
    () => [],
  );
  const { profile, ttls, reps, parts } = saved.settings;
  return analyze(
    file,
    new Date(saved.date),
    { profile, ttls, reps, parts },
    saved.trials.map((r) => r.trial),
    events,
    pressure,
    use,
    { pingEveryMs: saved.settings.pingEveryMs, unmeasuredPingEveryMs: saved.settings.unmeasuredPingEveryMs },
    { machine: saved.machine, versions: saved.versions },
  );
}

/** The engine removes a container in seconds; a removal taking longer is stuck, and waiting helps no one. */
const CLEANUP_BOUND_MS = 120_000;
let exiting = false;
/**
 * Remove the run's containers and exit with `code`, once: a second signal (a wrapper relaying
 * the terminal's Ctrl-C) or the time budget firing meanwhile must not cut the removal short.
 */
function closeAndExit(code: number): void {
  if (exiting) return;
  exiting = true;
  // Not unref'd: should the removal stall with nothing else pending, this still exits with `code`.
  setTimeout(() => {
    process.stderr.write(
      `bench failover: containers not removed within ${CLEANUP_BOUND_MS / 1000} s; exiting anyway (the next npm test, npm run chaos or failover bench removes what is left)\n`,
    );
    process.exit(code);
  }, CLEANUP_BOUND_MS);
  void (current?.close({ drain: false }) ?? Promise.resolve()).finally(() => process.exit(code));
}

for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  // `on`, not `once`: a second signal must find a handler, or it kills the process mid-removal.
  process.on(signal, () => {
    if (!exiting) process.stderr.write(`bench failover: ${signal}: removing its containers\n`);
    closeAndExit(130);
  });
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `bench failover: ${err instanceof UsageError ? '' : 'could not run: '}${(err as Error).message}\n`,
    );
    closeAndExit(1);
  },
);

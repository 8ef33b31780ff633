// Scale benchmark (issue 13): N identities spread over A agents as real processes, against
// real etcd and NATS containers, with one controller. Identity i is hosted by agent i mod A
// (priority 10) and by agent (i + 1) mod A (priority 0): leaders spread evenly and each has one
// warm standby node. Services are cold processes (`sleep`, or with --stop-ms a shell that
// takes that long to stop on SIGTERM).
//
// Phases and figures:
//   1. time to all logged in: all agents spawned → every identity has a leader key and a login
//      record saying loggedIn for that leader's token (read from etcd: a watch on the
//      identities prefix, so the bench adds almost nothing to etcd's load);
//      [--hold-min M: then M minutes watched, counting session stops and logged-in identities]
//   2. at rest for --rest-s: etcd requests/s and db size (etcd's /metrics), RSS and CPU % of
//      each agent and of the controller (/proc), then GET /v1/identities (`understudy list`)
//      timed three times;
//   3. worst event-loop delay of each agent (understudy_event_loop_delay_max_seconds);
//   4. failover: the agent leading most identities is SIGKILLed; time until every identity it
//      led is logged in on another node (first, median, last);
//   5. session stops (other than `closed`) and lifeline kills over the agents, with the agents'
//      'etcd session must stop' log lines as a cross-check.
// Targets are printed next to the figures, never asserted. A phase that does not complete
// within its bound is reported as "not reached within X s" with what was reached.
//
// Agents log at warn (at info, thousands of identities make parsing their logs in this process
// the bottleneck): their metrics port is chosen here, not read from their log.
//
// Exit: 0 when it ran to the end (figures that miss targets are not failures); 1 when it could
// not run (bad flag, containers or processes that would not start); 2 when its hard limit ran
// out (everything killed and removed first); 130/143 when interrupted (same cleanup).
//
//   npx tsx bench/scale.ts [--agents 10] [--identities 1000] [--ttl 5] [--stop-ms 0] [--rest-s 60]
//                          [--start-timeout-s 300] [--hold-min 0] [--profile quick|full]
//   (npm run bench -- scale …). Results: table on stdout, JSON in bench/results/.
import { execFileSync, spawn } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as tcpConnect } from 'node:net';
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import type { Etcd3, IKeyValue } from 'etcd3';
import { connectEtcd } from '../pkg/lease/index.js';
import { decode, Keys, LeaderRecord, LoginRecord } from '../pkg/lease/keys.js';
import { ResyncingWatch } from '../pkg/lease/watch.js';
import type { IdentitySpecInput } from '../pkg/spec/schema.js';
import { putSpec } from '../pkg/spec/store.js';
import { AgentProcess } from '../test/support/agents.js';
import { ControllerProcess, freePort, TEST_TOKENS } from '../test/support/controllers.js';
import { Harness } from '../test/support/harness.js';
import { images } from '../test/support/images.js';
import type { LoggedProcess } from '../test/support/logged-process.js';
import { delay } from '../test/support/wait.js';
import { parseProm, total } from './prom.js';
import { gitVersion, resultPath, writeJson } from './results.js';
import {
  agentsFor,
  FULL_PROFILE_AGENTS,
  FULL_PROFILE_IDENTITIES,
  hostsOf,
  type RunShape,
  shapeProblem,
} from './scale-shape.js';

// --- settings ----------------------------------------------------------------------------------

/** Priorities of an identity's two hosts: the first wins free elections, so leaders spread evenly. */
const LEADER_PRIORITY = 10;
const STANDBY_PRIORITY = 0;
/** Spec writes in flight at once: enough to write 10,000 specs in seconds, not enough to queue in etcd. */
const SPEC_WRITERS = 32;
/** After the last login, standbys' campaigns and status writes settle before "at rest" starts. */
const SETTLE_MS = 5_000;
/** Progress lines while waiting: often enough to see a collapse, rarely enough to read. */
const PROGRESS_EVERY_MS = 10_000;
/** Condition checks of the waits read in-memory state (the etcd watch), so they can be frequent. */
const CHECK_EVERY_MS = 100;
/** `understudy list` is timed this many times. */
const LIST_TRIES = 3;
/** Identities per page when listing, as `understudy list` asks for them. */
const LIST_PAGE = 500;
/** One list call, one metrics scrape: slow at scale is a figure, but not for ever. */
const HTTP_TIMEOUT_MS = 60_000;
/** A slow-stop service must stop within its stop time plus this (SIGKILL after). */
const STOP_TIMEOUT_MARGIN_MS = 1_000;
/** The failover bound: T × 3 plus this (the brief's bound; 60 s covers a slow machine's catch-up). */
const FAILOVER_MARGIN_S = 60;
/** An agent or controller gets this long to exit on SIGTERM (logging out every identity) before SIGKILL. */
const STOP_PROCESS_MS = 30_000;
/** Budget for what is not a phase: containers, controller start, specs, scrapes, cleanup. */
const OVERHEAD_MS = 5 * 60_000;
/** Spec writes count against the hard limit per identity (a loaded etcd takes a few ms each). */
const SPEC_WRITE_MS_PER_IDENTITY = 20;
/** If removing containers hangs after the hard limit, exit anyway after this long. */
const CLEANUP_GRACE_MS = 2 * 60_000;
/** Targets (issue 13), printed next to the figures. */
const TARGET = {
  failoverExtraS: 2,
  rssBaseMiB: 80,
  rssPerIdentityKiB: 50,
  restCpuPct: 1,
  listMs: 1_000,
} as const;

const IDENTITIES_PREFIX = `${new Keys().prefix}/identities/`;
/** Found in the command line of the process that runs each (main.ts through tsx, main.js built). */
const AGENT_SCRIPT = 'cmd/agent/main.';
const CONTROLLER_SCRIPT = 'cmd/controller/main.';

interface Settings {
  runs: RunShape[];
  profile: string | undefined;
  ttlS: number;
  stopMs: number;
  restS: number;
  startTimeoutS: number;
  holdMin: number;
}

class FlagError extends Error {}

function intFlag(name: string, text: string | undefined, fallback: number, min: number, max: number): number {
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!/^\d+$/.test(text) || value < min || value > max) {
    throw new FlagError(`--${name} ${text}: expected a whole number from ${min} to ${max}`);
  }
  return value;
}

function fullProfileAgents(ttlS: number): number {
  try {
    return agentsFor(FULL_PROFILE_IDENTITIES, ttlS, FULL_PROFILE_AGENTS);
  } catch (err) {
    throw new FlagError(`--profile full --ttl ${ttlS}: ${(err as Error).message}`);
  }
}

function parseFlags(args: string[]): Settings {
  let values;
  try {
    ({ values } = parseArgs({
      args,
      strict: true,
      allowPositionals: false,
      options: {
        agents: { type: 'string' },
        identities: { type: 'string' },
        ttl: { type: 'string' },
        'stop-ms': { type: 'string' },
        'rest-s': { type: 'string' },
        'start-timeout-s': { type: 'string' },
        'hold-min': { type: 'string' },
        profile: { type: 'string' },
      },
    }));
  } catch (err) {
    throw new FlagError((err as Error).message);
  }
  const ttlS = intFlag('ttl', values.ttl, 5, 2, 3600);
  // The spec's stopTimeoutMs (stop time + margin) may not exceed 60 s.
  const stopMs = intFlag('stop-ms', values['stop-ms'], 0, 0, 60_000 - STOP_TIMEOUT_MARGIN_MS);
  const restS = intFlag('rest-s', values['rest-s'], 60, 1, 3600);
  const startTimeoutS = intFlag('start-timeout-s', values['start-timeout-s'], 300, 1, 7200);
  const holdText = values['hold-min'];
  const holdMin = holdText === undefined ? 0 : Number(holdText);
  if (holdText !== undefined && (!/^\d+(\.\d+)?$/.test(holdText) || holdMin > 600)) {
    throw new FlagError(`--hold-min ${holdText}: expected minutes from 0 to 600 (e.g. 10 or 0.5)`);
  }
  let runs: RunShape[];
  const profile = values.profile;
  if (profile !== undefined) {
    if (values.agents !== undefined || values.identities !== undefined) {
      throw new FlagError(
        `--profile ${profile} sets the agents and identities itself: drop --agents/--identities, or drop --profile`,
      );
    }
    if (profile === 'quick') runs = [{ agents: 10, identities: 1000 }];
    else if (profile === 'full') {
      runs = [
        { agents: 10, identities: 1000 },
        { agents: fullProfileAgents(ttlS), identities: FULL_PROFILE_IDENTITIES },
      ];
    } else
      throw new FlagError(
        `--profile ${profile}: expected quick (10 × 1000) or full (10 × 1000, then 10000 on the fewest agents from 10 up that accept them at --ttl)`,
      );
  } else {
    runs = [
      {
        // Two hosts per identity need two agents; node names a00…a99 stay short.
        agents: intFlag('agents', values.agents, 10, 2, 100),
        identities: intFlag('identities', values.identities, 1000, 1, 100_000),
      },
    ];
  }
  for (const run of runs) {
    const problem = shapeProblem(run, ttlS);
    if (problem) throw new FlagError(`--identities/--agents/--ttl: ${problem}`);
  }
  return { runs, profile, ttlS, stopMs, restS, startTimeoutS, holdMin };
}

const nodeName = (k: number, agents: number) =>
  `a${String(k).padStart(Math.max(2, String(agents - 1).length), '0')}`;
const identityName = (i: number, count: number) =>
  `s${String(i).padStart(Math.max(5, String(count - 1).length), '0')}`;

// --- figures -----------------------------------------------------------------------------------

function median(values: number[]): number | undefined {
  if (values.length === 0) return undefined;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
}

interface Spread {
  min: number;
  median: number;
  max: number;
}

function spread(values: number[]): Spread | undefined {
  if (values.length === 0) return undefined;
  // reduce, not Math.min(...values): tens of thousands of arguments would overflow the stack.
  const min = values.reduce((a, b) => Math.min(a, b));
  const max = values.reduce((a, b) => Math.max(a, b));
  return { min, median: median(values)!, max };
}

const seconds = (ms: number | undefined) => (ms === undefined ? 'n/a' : `${(ms / 1000).toFixed(1)} s`);
const fixed = (v: number | undefined, digits = 1) => (v === undefined ? 'n/a' : v.toFixed(digits));
const spreadText = (s: Spread | undefined, digits: number, unit: string) =>
  s ? `${s.min.toFixed(digits)} / ${s.median.toFixed(digits)} / ${s.max.toFixed(digits)} ${unit}` : 'n/a';
const MiB = 1024 * 1024;

async function fetchText(url: string, init: RequestInit = {}): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { ...init, signal: AbortSignal.timeout(HTTP_TIMEOUT_MS) });
  return { status: res.status, text: await res.text() };
}

interface EtcdFigures {
  handled: number | undefined;
  messages: number | undefined;
  dbBytes: number | undefined;
  keys: number | undefined;
}

async function scrapeEtcd(endpoint: string): Promise<EtcdFigures> {
  const s = parseProm((await fetchText(`${endpoint}/metrics`)).text);
  return {
    handled: total(s, 'grpc_server_handled_total'),
    // Every message received, unary calls and stream messages (keepalives, watches) alike:
    // handled_total counts a stream only once, when it ends.
    messages: total(s, 'grpc_server_msg_received_total'),
    dbBytes: total(s, 'etcd_mvcc_db_total_size_in_bytes'),
    keys: total(s, 'etcd_debugging_mvcc_keys_total'),
  };
}

interface AgentScrape {
  node: string;
  /** By reason, `closed` left out (a shutdown, not a failure). */
  sessionStops: Record<string, number> | undefined;
  sessionStopsNotClosed: number | undefined;
  lifelineKills: number | undefined;
  loopDelayMaxMs: number | undefined;
  loopDelayRecentMaxMs: number | undefined;
  error?: string;
}

async function scrapeAgent(node: string, port: number): Promise<AgentScrape> {
  const empty = {
    node,
    sessionStops: undefined,
    sessionStopsNotClosed: undefined,
    lifelineKills: undefined,
    loopDelayMaxMs: undefined,
    loopDelayRecentMaxMs: undefined,
  };
  try {
    const res = await fetchText(`http://127.0.0.1:${port}/metrics`);
    if (res.status !== 200) return { ...empty, error: `GET /metrics: HTTP ${res.status}` };
    const s = parseProm(res.text);
    const stops = s.declared.has('understudy_session_stops_total')
      ? Object.fromEntries(
          s.samples
            .filter((x) => x.name === 'understudy_session_stops_total' && x.labels.reason !== 'closed')
            .map((x) => [x.labels.reason ?? '?', x.value]),
        )
      : undefined;
    const ms = (v: number | undefined) => (v === undefined ? undefined : v * 1000);
    return {
      node,
      sessionStops: stops,
      sessionStopsNotClosed: stops && Object.values(stops).reduce((a, b) => a + b, 0),
      lifelineKills: total(s, 'understudy_lifeline_kills_total'),
      loopDelayMaxMs: ms(total(s, 'understudy_event_loop_delay_max_seconds')),
      loopDelayRecentMaxMs: ms(total(s, 'understudy_event_loop_delay_recent_max_seconds')),
    };
  } catch (err) {
    return { ...empty, error: `GET /metrics: ${(err as Error).message}` };
  }
}

const sumOf = (scrapes: AgentScrape[], pick: (s: AgentScrape) => number | undefined) => {
  const values = scrapes.map(pick).filter((v): v is number => v !== undefined);
  return values.length === 0 ? undefined : values.reduce((a, b) => a + b, 0);
};

// --- processes ---------------------------------------------------------------------------------

const CLK_TCK = (() => {
  try {
    return Number(execFileSync('getconf', ['CLK_TCK']).toString().trim()) || 100;
  } catch {
    return 100;
  }
})();

interface ProcSample {
  atMs: number;
  cpuTicks: number;
  rssBytes: number;
}

function sampleProc(pid: number): ProcSample | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command (which may hold spaces): state is field 3, utime 14, stime 15.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const rssKiB = Number(/^VmRSS:\s+(\d+) kB/m.exec(status)?.[1] ?? NaN);
    return {
      atMs: performance.now(),
      cpuTicks: Number(fields[11]) + Number(fields[12]),
      rssBytes: rssKiB * 1024,
    };
  } catch {
    return undefined;
  }
}

const cpuPercent = (a: ProcSample, b: ProcSample) =>
  ((b.cpuTicks - a.cpuTicks) / CLK_TCK / ((b.atMs - a.atMs) / 1000)) * 100;

function cmdline(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ');
  } catch {
    return '';
  }
}

function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8')
      .trim()
      .split(/\s+/)
      .filter(Boolean)
      .map(Number);
  } catch {
    return [];
  }
}

/**
 * The pid of the process that actually runs `script`: the spawned node itself when tsx is
 * loaded with --import (the support code's way), a descendant when a wrapper forks.
 */
function runtimePid(pid: number, script: string): number | undefined {
  const queue = [pid];
  while (queue.length > 0) {
    const p = queue.shift()!;
    const line = cmdline(p);
    if (line.includes(script) && !/\bnpx\b|\/tsx\/dist\/cli/.test(line)) return p;
    queue.push(...childrenOf(p));
  }
  return undefined;
}

/** Agents and controllers of this bench still alive, found as children of this process. */
function strayChildren(): number[] {
  return childrenOf(process.pid).filter((pid) => {
    const line = cmdline(pid);
    return line.includes(AGENT_SCRIPT) || line.includes(CONTROLLER_SCRIPT);
  });
}

function tcpAnswers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tcpConnect({ host: '127.0.0.1', port });
    socket.setTimeout(1_000);
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
    socket.once('timeout', () => done(false));
  });
}

// --- identity specs ----------------------------------------------------------------------------

function slowStopScript(stopMs: number): string {
  // `wait` returns at once on the signal; the trap then takes stopMs and exits 0.
  return `trap 'sleep ${(stopMs / 1000).toFixed(3)}; exit 0' TERM; while :; do sleep 1 & wait; done`;
}

function serviceSpec(name: string, stopMs: number): IdentitySpecInput {
  return {
    name,
    service:
      stopMs === 0
        ? { driver: 'process', command: ['/bin/sleep', '1000000'], mode: 'cold' }
        : {
            driver: 'process',
            command: ['/bin/sh', '-c', slowStopScript(stopMs)],
            mode: 'cold',
            stopTimeoutMs: stopMs + STOP_TIMEOUT_MARGIN_MS,
          },
    access: { open: true },
  };
}

/** Run the slow-stop service once here and time its stop, so the figure it stands for is known. */
async function measureSlowStop(stopMs: number): Promise<number | undefined> {
  const child = spawn('/bin/sh', ['-c', slowStopScript(stopMs)], { detached: true, stdio: 'ignore' });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const pid = child.pid!;
  try {
    // Its first `sleep` child exists once the trap is set.
    const started = performance.now();
    while (childrenOf(pid).length === 0) {
      if (performance.now() - started > 5_000) return undefined;
      await delay(20);
    }
    const t0 = performance.now();
    process.kill(-pid, 'SIGTERM');
    const ok = await Promise.race([exited.then(() => true), delay(stopMs + 5_000).then(() => false)]);
    return ok ? performance.now() - t0 : undefined;
  } finally {
    try {
      process.kill(-pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
}

async function writeSpecs(client: Etcd3, names: string[], stopMs: number): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: SPEC_WRITERS }, async () => {
      while (next < names.length) await putSpec(client, serviceSpec(names[next++]!, stopMs));
    }),
  );
}

// --- who is logged in where (etcd watch) -------------------------------------------------------

interface Term {
  node: string;
  token: string;
}

/**
 * Every identity's leader (node, token = the leader key's mod revision) and login record, kept
 * current by one watch on the identities prefix. An identity is logged in on a node when its
 * leader key names that node and its login record says loggedIn for that leader's token.
 */
class LoginTracker {
  private readonly leaders = new Map<string, Term>();
  private readonly logins = new Map<string, Term & { loggedIn: boolean }>();
  private readonly on = new Map<string, string>();
  /** performance.now() when each identity was first seen logged in. */
  readonly firstLoggedInAt = new Map<string, number>();
  private readonly listeners = new Set<(identity: string, node: string | undefined, at: number) => void>();
  readonly troubles: string[] = [];
  private watch: ResyncingWatch | undefined;

  async start(client: Etcd3): Promise<void> {
    this.watch = await ResyncingWatch.start(
      client,
      { prefix: IDENTITIES_PREFIX },
      {
        snapshot: (kvs) => {
          const before = new Set([...this.leaders.keys(), ...this.logins.keys()]);
          this.leaders.clear();
          this.logins.clear();
          for (const kv of kvs) this.apply(kv, false);
          for (const kv of kvs) before.add(this.identityOf(kv)?.identity ?? '');
          for (const identity of before) if (identity) this.recompute(identity);
        },
        put: (kv) => this.recompute(this.apply(kv, false)),
        delete: (kv) => this.recompute(this.apply(kv, true)),
        trouble: (err, attempt) => {
          if (this.troubles.length < 20) this.troubles.push(`watch attempt ${attempt}: ${err.message}`);
        },
      },
    );
  }

  async close(): Promise<void> {
    await this.watch?.close();
  }

  get loggedIn(): number {
    return this.on.size;
  }

  get leaderCount(): number {
    return this.leaders.size;
  }

  /** Identities by the node named in their leader key. */
  leadersByNode(): Map<string, string[]> {
    const by = new Map<string, string[]>();
    for (const [identity, term] of this.leaders) {
      const list = by.get(term.node) ?? [];
      list.push(identity);
      by.set(term.node, list);
    }
    return by;
  }

  onChange(listener: (identity: string, node: string | undefined, at: number) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private identityOf(kv: IKeyValue): { identity: string; what: string } | undefined {
    const m = /^([^/]+)\/(leader|login)$/.exec(kv.key.toString().slice(IDENTITIES_PREFIX.length));
    return m ? { identity: m[1]!, what: m[2]! } : undefined;
  }

  private apply(kv: IKeyValue, deleted: boolean): string | undefined {
    const parsed = this.identityOf(kv);
    if (!parsed) return undefined;
    const { identity, what } = parsed;
    const key = kv.key.toString();
    try {
      if (what === 'leader') {
        const record = deleted ? undefined : decode(LeaderRecord, kv.value, key);
        if (record) this.leaders.set(identity, { node: record.node, token: String(kv.mod_revision) });
        else this.leaders.delete(identity);
      } else {
        const record = deleted ? undefined : decode(LoginRecord, kv.value, key);
        if (record) this.logins.set(identity, record);
        else this.logins.delete(identity);
      }
    } catch (err) {
      if (this.troubles.length < 20) this.troubles.push((err as Error).message);
    }
    return identity;
  }

  private recompute(identity: string | undefined): void {
    if (identity === undefined) return;
    const leader = this.leaders.get(identity);
    const login = this.logins.get(identity);
    const node =
      leader && login?.loggedIn && login.token === leader.token && login.node === leader.node
        ? leader.node
        : undefined;
    if (node === this.on.get(identity)) return;
    const at = performance.now();
    if (node === undefined) this.on.delete(identity);
    else {
      this.on.set(identity, node);
      if (!this.firstLoggedInAt.has(identity)) this.firstLoggedInAt.set(identity, at);
    }
    for (const listener of this.listeners) listener(identity, node, at);
  }
}

/** Wait for `done` (checked every CHECK_EVERY_MS) at most `boundMs`; prints progress. */
async function waitUntil(done: () => boolean, boundMs: number, progress: () => string): Promise<boolean> {
  const started = performance.now();
  let lastProgress = started;
  while (!done()) {
    const now = performance.now();
    if (now - started >= boundMs) return false;
    if (now - lastProgress >= PROGRESS_EVERY_MS) {
      lastProgress = now;
      console.log(`scale:   +${((now - started) / 1000).toFixed(0)} s: ${progress()}`);
    }
    await delay(Math.min(CHECK_EVERY_MS, boundMs - (now - started)));
  }
  return true;
}

// --- one run ------------------------------------------------------------------------------------

interface ProcFigures {
  name: string;
  pid: number | undefined;
  rssMiB: number | undefined;
  cpuPct: number | undefined;
  hostedIdentities?: number;
}

interface RunResult {
  bench: 'scale';
  date: string;
  machine: Record<string, unknown>;
  versions: Record<string, unknown>;
  settings: Record<string, unknown>;
  setup: Record<string, unknown>;
  start: {
    boundS: number;
    reached: boolean;
    ms?: number;
    firstMs?: number;
    medianMs?: number;
    loggedIn: number;
    leaders: number;
    agentsListeningMs: Record<string, number | null>;
  };
  hold?: {
    minutes: number;
    minLoggedIn: number;
    sessionStops: number | undefined;
    lifelineKills: number | undefined;
    mustStopLines: number;
  };
  rest?: {
    windowS: number;
    etcdRequestsPerS: number | undefined;
    etcdMessagesPerS: number | undefined;
    benchCpuPct: number;
    /** The whole machine's busy time over the window (/proc/stat), as % of all its cores. */
    machineCpuPct: number | undefined;
    loadAverage: number[];
    etcdDbBytes: number | undefined;
    etcdKeys: number | undefined;
    loggedInAtEnd: number;
    leadersPerAgent: Record<string, number>;
    agents: ProcFigures[];
    controller: ProcFigures | undefined;
    rssTargetMiB: number;
  };
  list?: Array<{
    ms?: number;
    status?: number;
    identities?: number;
    bytes?: number;
    pages?: number;
    error?: string;
  }>;
  failover?: {
    victim: string;
    led: number;
    boundS: number;
    reached: boolean;
    moved: number;
    ms?: number;
    firstMs?: number;
    medianMs?: number;
  };
  agentMetricsBeforeKill?: AgentScrape[];
  agentMetricsAtEnd?: AgentScrape[];
  loopDelayMaxMs?: number;
  stops?: {
    sessionStopsSurvivors: number | undefined;
    lifelineKillsSurvivors: number | undefined;
    sessionStopsAllBeforeKill: number | undefined;
    lifelineKillsAllBeforeKill: number | undefined;
    mustStopLinesSurvivors: number;
    mustStopLinesByAgent: Record<string, number>;
    /** Why, over all agents (the killed one too): reason and last renewal error, figures left out. */
    mustStopReasons: Record<string, number>;
  };
  problems: string[];
}

/** Everything alive that this bench started, for the hard limit and signals. */
const live = {
  processes: new Set<LoggedProcess>(),
  harness: undefined as Harness | undefined,
  /** Set once cleanup begins: process exits after it are ours, not findings. */
  stopping: false,
};

const mustStopRecords = (p: LoggedProcess) => p.records.filter((r) => /etcd session must stop/.test(r.msg));
const mustStopLines = (p: LoggedProcess) => mustStopRecords(p).length;
/** Why sessions had to stop, over the given agents: each reason without its figures, and how often. */
const mustStopReasons = (ps: LoggedProcess[]): Record<string, number> => {
  const reasons: Record<string, number> = {};
  for (const r of ps.flatMap(mustStopRecords)) {
    const why = `${String(r.reason)}: ${String(r.lastError ?? 'no error recorded')}`.replace(/\d+/g, '#');
    reasons[why] = (reasons[why] ?? 0) + 1;
  }
  return reasons;
};

async function runOnce(shape: RunShape, settings: Settings): Promise<RunResult> {
  const { agents: A, identities: N } = shape;
  const { ttlS, stopMs, restS, startTimeoutS, holdMin } = settings;
  const problems: string[] = [];
  const problem = (text: string) => {
    problems.push(text);
    console.log(`scale: PROBLEM: ${text}`);
  };
  const names = Array.from({ length: N }, (_, i) => identityName(i, N));
  const nodes = Array.from({ length: A }, (_, k) => nodeName(k, A));
  const result: RunResult = {
    bench: 'scale',
    date: new Date().toISOString(),
    machine: {
      cpus: os.cpus().length,
      cpuModel: os.cpus()[0]?.model,
      memoryBytes: os.totalmem(),
      kernel: `${os.type()} ${os.release()}`,
      loadAverageAtStart: os.loadavg(),
    },
    versions: {
      node: process.version,
      etcdImage: images().etcd,
      natsImage: images().nats,
      git: gitVersion(),
    },
    settings: {
      agents: A,
      identities: N,
      ttlS,
      stopMs,
      restS,
      startTimeoutS,
      holdMin,
      profile: settings.profile ?? null,
      // UNDERSTUDY_BUILT=1: agents and controller run the compiled dist/ (npm run build first).
      runs: process.env.UNDERSTUDY_BUILT === '1' ? 'built JavaScript (dist/)' : 'TypeScript through tsx',
      settleMs: SETTLE_MS,
      agentLogLevel: 'warn',
      service: stopMs === 0 ? 'sleep (stops at once)' : `sh taking ${stopMs} ms to stop`,
    },
    setup: {},
    start: { boundS: startTimeoutS, reached: false, loggedIn: 0, leaders: 0, agentsListeningMs: {} },
    problems,
  };
  console.log(
    `scale: ${N} identities on ${A} agents, T = ${ttlS} s, service ${String(result.settings.service)}; ` +
      `each identity: a leader (priority ${LEADER_PRIORITY}) and one standby`,
  );

  if (stopMs > 0) {
    const measured = await measureSlowStop(stopMs);
    result.setup.slowStopMeasuredMs = measured ?? null;
    if (measured === undefined)
      problem(`the slow-stop service did not stop within ${stopMs + 5_000} ms here`);
    else
      console.log(
        `scale: slow-stop service stopped ${measured.toFixed(0)} ms after SIGTERM (asked ${stopMs})`,
      );
  }

  const harness = await Harness.create();
  live.harness = harness;
  live.stopping = false;
  const agents = new Map<string, { process: AgentProcess; port: number; hosted: number }>();
  let controller: ControllerProcess | undefined;
  let client: Etcd3 | undefined;
  const tracker = new LoginTracker();
  result.setup.harnessRun = harness.run;
  try {
    const [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    try {
      result.versions.etcd = (
        JSON.parse((await fetchText(`${etcd.hostEndpoint}/version`)).text) as Record<string, string>
      ).etcdserver;
    } catch (err) {
      problem(`etcd /version: ${(err as Error).message}`);
    }

    let t = performance.now();
    await writeSpecs(client, names, stopMs);
    result.setup.specsWrittenMs = Math.round(performance.now() - t);
    console.log(`scale: ${N} specs written in ${seconds(performance.now() - t)}`);

    try {
      controller = await ControllerProcess.start({
        name: 'scale-ctl',
        etcd: [etcd.hostEndpoint],
        nats: [nats.hostUrl],
      });
      live.processes.add(controller);
      await controller.waitForActive({ timeoutMs: 60_000 });
    } catch (err) {
      problem(`controller: ${(err as Error).message}; list is not timed`);
    }

    await tracker.start(client);

    // Every agent's config: its identities with its priority for each.
    const hosted = nodes.map(() => ({}) as Record<string, { priority: number }>);
    names.forEach((name, i) => {
      const { leader, standby } = hostsOf(i, A);
      hosted[leader]![name] = { priority: LEADER_PRIORITY };
      hosted[standby]![name] = { priority: STANDBY_PRIORITY };
    });
    const ports = await Promise.all(nodes.map(() => freePort()));
    t = performance.now();
    for (const [k, node] of nodes.entries()) {
      const agent = await AgentProcess.start({
        node,
        etcd: [etcd.hostEndpoint],
        nats: [nats.hostUrl],
        identities: hosted[k]!,
        ttlSeconds: ttlS,
        priority: STANDBY_PRIORITY,
        extra: { health: { listen: `127.0.0.1:${ports[k]}` }, logLevel: 'warn' },
      });
      live.processes.add(agent);
      agents.set(node, { process: agent, port: ports[k]!, hosted: Object.keys(hosted[k]!).length });
    }
    const t0 = performance.now();
    result.setup.agentsSpawnedMs = Math.round(t0 - t);

    let victim: string | undefined;
    let exitedBeforeKill = 0;
    for (const [node, a] of agents) {
      void a.process.exited.then(({ code, signal }) => {
        // Not once the bench is stopping: a Ctrl-C reaches the agents too (one process group).
        if (victim === undefined && !live.stopping) exitedBeforeKill += 1;
        if (node !== victim && !live.stopping) {
          const last = a.process.output().split('\n').slice(-5).join('\n    ');
          problem(`agent ${node} exited (code ${code}, signal ${signal}); last lines:\n    ${last}`);
        }
      });
      // Listening on /metrics: the agent started (at warn it logs no 'agent started').
      void (async () => {
        while (performance.now() - t0 < startTimeoutS * 1000 && a.process.child.exitCode === null) {
          if (await tcpAnswers(a.port)) {
            result.start.agentsListeningMs[node] = Math.round(performance.now() - t0);
            return;
          }
          await delay(500);
        }
        result.start.agentsListeningMs[node] = null;
      })();
    }

    // --- 1. time to all logged in
    console.log(
      `scale: phase 1: waiting for all ${N} identities to be logged in (at most ${startTimeoutS} s)`,
    );
    const listening = () => Object.values(result.start.agentsListeningMs).filter((v) => v !== null).length;
    // With every agent gone nothing more can log in: the run could not run (its PROBLEM lines say why).
    result.start.reached = await waitUntil(
      () => tracker.loggedIn === N || exitedBeforeKill === A,
      startTimeoutS * 1000,
      () =>
        `${tracker.loggedIn}/${N} logged in, ${tracker.leaderCount} leader keys, ${listening()}/${A} agents listening`,
    );
    if (exitedBeforeKill === A) {
      throw new Error(
        `every agent exited before all identities were logged in (${tracker.loggedIn}/${N}): nothing to measure; the PROBLEM lines above say why`,
      );
    }
    const firsts = [...tracker.firstLoggedInAt.values()].map((v) => v - t0);
    result.start.loggedIn = tracker.loggedIn;
    result.start.leaders = tracker.leaderCount;
    result.start.firstMs = firsts.length ? Math.round(spread(firsts)!.min) : undefined;
    result.start.medianMs = firsts.length === N ? Math.round(median(firsts)!) : undefined;
    if (result.start.reached) {
      result.start.ms = Math.round(performance.now() - t0);
      console.log(`scale: all logged in after ${seconds(result.start.ms)}`);
    } else {
      console.log(
        `scale: all logged in: not reached within ${startTimeoutS} s (${tracker.loggedIn}/${N} logged in, ` +
          `${tracker.leaderCount} leader keys)`,
      );
    }

    // Pids of the processes that run the agent and controller code (not a wrapper).
    const pidOf = (p: LoggedProcess, script: string) => {
      const pid = runtimePid(p.pid, script);
      if (pid === undefined) problem(`${p.name}: no process running ${script} under pid ${p.pid}`);
      return pid;
    };
    const agentPids = new Map([...agents].map(([node, a]) => [node, pidOf(a.process, AGENT_SCRIPT)]));
    const controllerPid = controller && pidOf(controller, CONTROLLER_SCRIPT);
    const scrapeAll = (which: string[]) =>
      Promise.all(which.map((node) => scrapeAgent(node, agents.get(node)!.port)));

    // --- hold (optional)
    if (holdMin > 0) {
      console.log(`scale: holding for ${holdMin} min, watching logins and session stops`);
      const before = await scrapeAll(nodes);
      const linesBefore = [...agents.values()].reduce((n, a) => n + mustStopLines(a.process), 0);
      let minLoggedIn = tracker.loggedIn;
      await waitUntil(
        () => {
          minLoggedIn = Math.min(minLoggedIn, tracker.loggedIn);
          return false;
        },
        holdMin * 60_000,
        () => `${tracker.loggedIn}/${N} logged in (lowest ${minLoggedIn})`,
      );
      const after = await scrapeAll(nodes);
      const delta = (pick: (s: AgentScrape) => number | undefined) => {
        const a = sumOf(after, pick);
        const b = sumOf(before, pick);
        return a === undefined ? undefined : a - (b ?? 0);
      };
      result.hold = {
        minutes: holdMin,
        minLoggedIn,
        sessionStops: delta((s) => s.sessionStopsNotClosed),
        lifelineKills: delta((s) => s.lifelineKills),
        mustStopLines: [...agents.values()].reduce((n, a) => n + mustStopLines(a.process), 0) - linesBefore,
      };
    }

    // --- 2. at rest
    await delay(SETTLE_MS);
    console.log(`scale: phase 2: at rest for ${restS} s`);
    const etcdBefore = await scrapeEtcd(etcd.hostEndpoint);
    const procsBefore = new Map([...agentPids].map(([node, pid]) => [node, pid && sampleProc(pid)]));
    const ctlBefore = controllerPid && sampleProc(controllerPid);
    const restStarted = performance.now();
    const benchCpuBefore = process.cpuUsage();
    const machineBefore = machineTicks();
    await delay(restS * 1000);
    const benchCpu = process.cpuUsage(benchCpuBefore);
    const machineAfter = machineTicks();
    const etcdAfter = await scrapeEtcd(etcd.hostEndpoint);
    const windowS = (performance.now() - restStarted) / 1000;
    const figures = (name: string, pid: number | undefined, before: ProcSample | undefined): ProcFigures => {
      const after = pid === undefined ? undefined : sampleProc(pid);
      return {
        name,
        pid,
        rssMiB: after && after.rssBytes / MiB,
        cpuPct: before && after ? cpuPercent(before, after) : undefined,
      };
    };
    const rate = (a: number | undefined, b: number | undefined) =>
      a === undefined || b === undefined ? undefined : (b - a) / windowS;
    const byLeader = tracker.leadersByNode();
    result.rest = {
      windowS,
      etcdRequestsPerS: rate(etcdBefore.handled, etcdAfter.handled),
      etcdMessagesPerS: rate(etcdBefore.messages, etcdAfter.messages),
      benchCpuPct: (benchCpu.user + benchCpu.system) / 1000 / 10 / windowS,
      machineCpuPct:
        machineBefore && machineAfter
          ? (100 * (machineAfter.busy - machineBefore.busy)) / (machineAfter.total - machineBefore.total)
          : undefined,
      loadAverage: os.loadavg(),
      etcdDbBytes: etcdAfter.dbBytes,
      etcdKeys: etcdAfter.keys,
      loggedInAtEnd: tracker.loggedIn,
      leadersPerAgent: Object.fromEntries(nodes.map((node) => [node, byLeader.get(node)?.length ?? 0])),
      agents: nodes.map((node) => ({
        ...figures(node, agentPids.get(node), procsBefore.get(node) || undefined),
        hostedIdentities: agents.get(node)!.hosted,
      })),
      controller: controller && figures(controller.name, controllerPid, ctlBefore || undefined),
      rssTargetMiB: TARGET.rssBaseMiB + (TARGET.rssPerIdentityKiB * Math.ceil((2 * N) / A)) / 1024,
    };

    // `understudy list`, after the window so its cost is not counted as rest.
    if (controller) {
      result.list = [];
      for (let i = 0; i < LIST_TRIES; i++) {
        // All of it, a page at a time, as `understudy list` fetches it.
        const started = performance.now();
        try {
          let after: string | undefined;
          let count = 0;
          let bytes = 0;
          let pages = 0;
          let status = 200;
          do {
            const res = await fetchText(
              `${controller.url}/v1/identities?limit=${LIST_PAGE}${after ? `&after=${after}` : ''}`,
              { headers: { authorization: `Bearer ${TEST_TOKENS.viewer}` } },
            );
            status = res.status;
            pages++;
            bytes += res.text.length;
            if (res.status !== 200) break;
            const page = JSON.parse(res.text) as { identities: unknown[]; next?: string };
            count += page.identities.length;
            after = page.next;
          } while (after !== undefined);
          const ms = Math.round(performance.now() - started);
          result.list.push({ ms, status, identities: count, bytes, pages });
        } catch (err) {
          result.list.push({ error: (err as Error).message });
        }
      }
    }

    // --- 3 and 5 (before the kill): every agent's counters and loop delay
    const alive = nodes.filter((node) => agents.get(node)!.process.child.exitCode === null);
    result.agentMetricsBeforeKill = await scrapeAll(alive);
    for (const s of result.agentMetricsBeforeKill) if (s.error) problem(`agent ${s.node}: ${s.error}`);

    // --- 4. failover of a killed agent
    const byNode = [...tracker.leadersByNode()].filter(([node]) => alive.includes(node));
    byNode.sort((a, b) => b[1].length - a[1].length);
    const top = byNode[0];
    if (!top) {
      problem('no agent leads any identity: no failover to measure');
    } else {
      victim = top[0];
      const led = new Set(top[1]);
      const boundS = ttlS * 3 + FAILOVER_MARGIN_S;
      const moved = new Map<string, number>();
      let killedAt = 0;
      const stop = tracker.onChange((identity, node, at) => {
        if (node !== undefined && node !== victim && led.has(identity) && !moved.has(identity)) {
          moved.set(identity, at - killedAt);
        }
      });
      console.log(
        `scale: phase 4: SIGKILL ${victim}, which leads ${led.size} identities (at most ${boundS} s)`,
      );
      killedAt = performance.now();
      agents.get(victim)!.process.kill('SIGKILL');
      const reached = await waitUntil(
        () => moved.size === led.size,
        boundS * 1000,
        () => `${moved.size}/${led.size} logged in elsewhere`,
      );
      stop();
      const times = [...moved.values()];
      result.failover = {
        victim,
        led: led.size,
        boundS,
        reached,
        moved: moved.size,
        ms: reached ? Math.round(spread(times)!.max) : undefined,
        firstMs: times.length ? Math.round(spread(times)!.min) : undefined,
        medianMs: reached ? Math.round(median(times)!) : undefined,
      };
      console.log(
        reached
          ? `scale: failover done after ${seconds(result.failover.ms)}`
          : `scale: failover: not reached within ${boundS} s (${moved.size}/${led.size} logged in elsewhere)`,
      );
    }

    // --- 3 and 5 (at the end): survivors again
    const survivors = alive.filter((node) => node !== victim);
    result.agentMetricsAtEnd = await scrapeAll(survivors);
    const victimBefore = result.agentMetricsBeforeKill.find((s) => s.node === victim);
    const delays = [...result.agentMetricsAtEnd, ...(victimBefore ? [victimBefore] : [])]
      .map((s) => s.loopDelayMaxMs)
      .filter((v): v is number => v !== undefined);
    result.loopDelayMaxMs = delays.length ? Math.max(...delays) : undefined;
    const linesByAgent = Object.fromEntries(
      nodes.map((node) => [node, mustStopLines(agents.get(node)!.process)]),
    );
    result.stops = {
      sessionStopsSurvivors: sumOf(result.agentMetricsAtEnd, (s) => s.sessionStopsNotClosed),
      lifelineKillsSurvivors: sumOf(result.agentMetricsAtEnd, (s) => s.lifelineKills),
      sessionStopsAllBeforeKill: sumOf(result.agentMetricsBeforeKill, (s) => s.sessionStopsNotClosed),
      lifelineKillsAllBeforeKill: sumOf(result.agentMetricsBeforeKill, (s) => s.lifelineKills),
      mustStopLinesSurvivors: survivors.reduce((n, node) => n + linesByAgent[node]!, 0),
      mustStopLinesByAgent: linesByAgent,
      mustStopReasons: mustStopReasons(nodes.map((node) => agents.get(node)!.process)),
    };
    for (const [why, n] of Object.entries(result.stops.mustStopReasons))
      console.log(`scale:   session stops (${n}×): ${why}`);

    // Errors the processes logged: not failures by themselves, but worth a look.
    for (const p of live.processes) {
      const seen = new Map<string, number>();
      for (const r of p.records) {
        if (r.level !== 'error' && r.level !== 'fatal') continue;
        seen.set(r.msg, (seen.get(r.msg) ?? 0) + 1);
      }
      for (const [msg, n] of [...seen].slice(0, 5))
        console.log(`scale:   logged by ${p.name} (${n}×): ${msg}`);
    }
  } finally {
    live.stopping = true;
    result.machine.loadAverageAtEnd = os.loadavg();
    await tracker.close().catch(() => undefined);
    await Promise.all([...live.processes].map((p) => p.stop(STOP_PROCESS_MS).catch(() => undefined)));
    await keepLogs(result, [...live.processes]).catch((err: Error) =>
      console.log(`scale: the processes' logs were not kept: ${err.message}`),
    );
    live.processes.clear();
    for (const pid of strayChildren()) process.kill(pid, 'SIGKILL');
    client?.close();
    await harness.close();
    live.harness = undefined;
  }
  result.problems.push(...tracker.troubles.map((t) => `etcd watch: ${t}`));
  return result;
}

/**
 * Every process's log lines (warn and above for agents) beside the result, for reading a
 * collapse in order: the figures say that sessions stopped, the lines say which came first.
 */
async function keepLogs(r: RunResult, processes: LoggedProcess[]): Promise<void> {
  const dir = resultPath('scale', new Date(r.date), `${r.settings.identities}x${r.settings.agents}`).replace(
    /\.json$/,
    '.logs',
  );
  await mkdir(dir, { recursive: true });
  for (const p of processes) {
    const lines = [...p.otherLines, ...p.records.map((rec) => JSON.stringify(rec))];
    await writeFile(join(dir, `${p.name}.jsonl`), lines.join('\n') + '\n');
  }
}

/** The machine's CPU ticks so far (/proc/stat's first line): busy is all but idle and iowait. */
function machineTicks(): { busy: number; total: number } | undefined {
  try {
    const fields = readFileSync('/proc/stat', 'utf8')
      .split('\n', 1)[0]!
      .trim()
      .split(/\s+/)
      .slice(1, 9)
      .map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { busy: total - fields[3]! - fields[4]!, total };
  } catch {
    return undefined; // not Linux: the figure is n/a
  }
}

// --- report -------------------------------------------------------------------------------------

function verdict(ok: boolean | undefined): string {
  return ok === undefined ? '' : ok ? 'ok' : 'MISSED';
}

function report(r: RunResult, settings: Settings): void {
  const rows: Array<[string, string, string, string]> = [];
  const s = r.start;
  rows.push([
    'time to all logged in',
    s.reached
      ? `${seconds(s.ms)} (first ${seconds(s.firstMs)}, median ${seconds(s.medianMs)})`
      : `not reached within ${s.boundS} s (${s.loggedIn}/${r.settings.identities} logged in)`,
    '',
    '',
  ]);
  const listening = Object.values(s.agentsListeningMs).filter((v): v is number => v !== null);
  rows.push([
    'agents listening on /metrics',
    `last at ${seconds(listening.length ? Math.max(...listening) : undefined)}`,
    '',
    '',
  ]);
  if (r.hold) {
    rows.push([
      `held ${r.hold.minutes} min: session stops`,
      `${r.hold.sessionStops ?? 'n/a'} (lifeline kills ${r.hold.lifelineKills ?? 'n/a'}, must-stop lines ${r.hold.mustStopLines}, lowest logged in ${r.hold.minLoggedIn})`,
      '0',
      verdict(r.hold.sessionStops === undefined ? undefined : r.hold.sessionStops === 0),
    ]);
  }
  if (r.rest) {
    const rest = r.rest;
    rows.push([
      'etcd requests/s at rest',
      `${fixed(rest.etcdRequestsPerS)} unary calls (${fixed(rest.etcdMessagesPerS)} msgs received)`,
      '',
      '',
    ]);
    rows.push([
      'etcd db size',
      `${rest.etcdDbBytes === undefined ? 'n/a' : `${(rest.etcdDbBytes / MiB).toFixed(1)} MiB`} (${rest.etcdKeys ?? 'n/a'} keys)`,
      '',
      '',
    ]);
    const rss = spread(rest.agents.flatMap((a) => (a.rssMiB === undefined ? [] : [a.rssMiB])));
    const cpu = spread(rest.agents.flatMap((a) => (a.cpuPct === undefined ? [] : [a.cpuPct])));
    rows.push([
      'agent RSS min/median/max',
      spreadText(rss, 0, 'MiB'),
      `<= ${rest.rssTargetMiB.toFixed(1)} MiB`,
      verdict(rss && rss.max <= rest.rssTargetMiB),
    ]);
    rows.push([
      'agent CPU at rest min/median/max',
      spreadText(cpu, 2, '%'),
      `<= ${TARGET.restCpuPct} %`,
      verdict(cpu && cpu.max <= TARGET.restCpuPct),
    ]);
    const ctl = rest.controller;
    rows.push([
      'controller RSS, CPU at rest',
      ctl ? `${fixed(ctl.rssMiB, 0)} MiB, ${fixed(ctl.cpuPct, 2)} %` : 'n/a',
      '',
      '',
    ]);
    rows.push([
      'machine CPU at rest (every process, all cores)',
      rest.machineCpuPct === undefined ? 'n/a' : `${rest.machineCpuPct.toFixed(1)} %`,
      '',
      '',
    ]);
    rows.push([
      'this bench CPU, load average at rest',
      `${rest.benchCpuPct.toFixed(2)} %, ${rest.loadAverage.map((v) => v.toFixed(2)).join(' ')}`,
      '',
      '',
    ]);
    const leaders = Object.values(rest.leadersPerAgent);
    rows.push([
      'leaders per agent min/max',
      leaders.length
        ? `${Math.min(...leaders)} / ${Math.max(...leaders)} (${rest.loggedInAtEnd} logged in at end of rest)`
        : 'n/a',
      '',
      '',
    ]);
  }
  if (r.list) {
    const ok = r.list.filter((l) => l.status === 200 && l.ms !== undefined);
    const text = r.list
      .map((l) => (l.error ? `error (${l.error})` : l.status !== 200 ? `HTTP ${l.status}` : `${l.ms}`))
      .join(' / ');
    rows.push([
      'list (all pages of GET /v1/identities) ms',
      `${text}${ok[0] ? ` (${ok[0].identities} identities, ${ok[0].pages ?? 1} pages)` : ''}`,
      `< ${TARGET.listMs} ms`,
      verdict(ok.length === r.list.length ? ok.every((l) => l.ms! < TARGET.listMs) : false),
    ]);
  }
  rows.push([
    'worst event-loop delay (max over agents)',
    r.loopDelayMaxMs === undefined ? 'n/a' : `${r.loopDelayMaxMs.toFixed(0)} ms`,
    '',
    '',
  ]);
  if (r.failover) {
    const f = r.failover;
    const targetS = settings.ttlS + TARGET.failoverExtraS;
    rows.push([
      `failover of ${f.victim} (${f.led} identities)`,
      f.reached
        ? `${seconds(f.ms)} (first ${seconds(f.firstMs)}, median ${seconds(f.medianMs)})`
        : `not reached within ${f.boundS} s (${f.moved}/${f.led} moved, first ${seconds(f.firstMs)})`,
      `<= ${targetS} s`,
      verdict(f.reached && f.ms! <= targetS * 1000),
    ]);
  }
  if (r.stops) {
    const st = r.stops;
    rows.push([
      'session stops (survivors, whole run)',
      `${st.sessionStopsSurvivors ?? 'n/a'} (all agents before the kill: ${st.sessionStopsAllBeforeKill ?? 'n/a'})`,
      '0',
      verdict(st.sessionStopsSurvivors === undefined ? undefined : st.sessionStopsSurvivors === 0),
    ]);
    rows.push([
      'lifeline kills (survivors, whole run)',
      `${st.lifelineKillsSurvivors ?? 'n/a'} (all agents before the kill: ${st.lifelineKillsAllBeforeKill ?? 'n/a'})`,
      '0',
      verdict(st.lifelineKillsSurvivors === undefined ? undefined : st.lifelineKillsSurvivors === 0),
    ]);
    rows.push([
      "'etcd session must stop' lines (survivors)",
      String(st.mustStopLinesSurvivors),
      '0',
      verdict(st.mustStopLinesSurvivors === 0),
    ]);
  }
  const widths = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c]!.length)));
  console.log('');
  console.log(
    `scale: ${r.settings.identities} identities × ${r.settings.agents} agents, T = ${settings.ttlS} s, ` +
      `${String(r.settings.service)}; ${String(r.machine.cpus)} cpus; ${String(r.settings.runs)}`,
  );
  console.log(
    `${'figure'.padEnd(widths[0]!)}  ${'value'.padEnd(widths[1]!)}  ${'target'.padEnd(widths[2]!)}`,
  );
  for (const row of rows) {
    console.log(
      `${row[0].padEnd(widths[0]!)}  ${row[1].padEnd(widths[1]!)}  ${row[2].padEnd(widths[2]!)}  ${row[3]}`.trimEnd(),
    );
  }
  if (r.problems.length > 0) {
    console.log(`problems (${r.problems.length}):`);
    for (const p of r.problems.slice(0, 20)) console.log(`  ${p}`);
  }
}

async function writeResult(r: RunResult): Promise<string> {
  const file = resultPath('scale', new Date(r.date), `${r.settings.identities}x${r.settings.agents}`);
  await writeJson(file, r);
  return file;
}

// --- main ---------------------------------------------------------------------------------------

function hardLimitMs(settings: Settings): number {
  return settings.runs.reduce(
    (sum, run) =>
      sum +
      OVERHEAD_MS +
      run.identities * SPEC_WRITE_MS_PER_IDENTITY +
      settings.startTimeoutS * 1000 +
      settings.holdMin * 60_000 +
      SETTLE_MS +
      settings.restS * 1000 +
      LIST_TRIES * HTTP_TIMEOUT_MS +
      (settings.ttlS * 3 + FAILOVER_MARGIN_S) * 1000 +
      STOP_PROCESS_MS,
    0,
  );
}

/**
 * Kill everything this bench started, remove its containers, exit with `code`. Once only: a
 * Ctrl-C can arrive twice (the terminal's, and a wrapper's relay of it), and a second signal
 * must not cut the removal short; the removal is bounded by CLEANUP_GRACE_MS instead.
 */
let abandoning = false;
function abandon(why: string, code: number): void {
  if (abandoning) return;
  abandoning = true;
  live.stopping = true;
  console.error(`scale: ${why}; killing processes, removing containers, exiting`);
  for (const p of live.processes) {
    p.kill('SIGKILL');
    rmSync(p.dir, { recursive: true, force: true });
  }
  for (const pid of strayChildren()) process.kill(pid, 'SIGKILL');
  // Not unref'd: a removal that stalls with nothing else pending still ends in `code`.
  setTimeout(() => process.exit(code), CLEANUP_GRACE_MS);
  void (live.harness?.close() ?? Promise.resolve())
    .catch((err: Error) => console.error(`scale: removing containers: ${err.message}`))
    .finally(() => process.exit(code));
}

let settings: Settings;
try {
  settings = parseFlags(process.argv.slice(2));
} catch (err) {
  if (!(err instanceof FlagError)) throw err;
  console.error(`bench scale: ${err.message}`);
  console.error(
    'usage: npm run bench -- scale [--agents A] [--identities N] [--ttl S] [--stop-ms M] [--rest-s S] ' +
      '[--start-timeout-s S] [--hold-min M] [--profile quick|full]',
  );
  process.exit(1);
}

const limitMs = hardLimitMs(settings);
const hardStop = setTimeout(
  () => abandon(`exceeded the hard limit of ${(limitMs / 60_000).toFixed(0)} min`, 2),
  limitMs,
);
hardStop.unref();
process.on('SIGINT', () => abandon('interrupted (SIGINT)', 130));
process.on('SIGTERM', () => abandon('terminated (SIGTERM)', 143));
console.log(
  `scale: ${settings.runs.map((r) => `${r.identities}×${r.agents}`).join(', then ')}; ` +
    `hard limit ${(limitMs / 60_000).toFixed(0)} min`,
);

// Exit explicitly: an etcd3 client can keep reconnect timers alive after close().
try {
  for (const shape of settings.runs) {
    const result = await runOnce(shape, settings);
    report(result, settings);
    console.log(`scale: results written to ${await writeResult(result)}`);
  }
  clearTimeout(hardStop);
  process.exit(0);
} catch (err) {
  // A run cut short by a signal or the hard limit fails here too: then abandon() exits, once
  // the containers are removed.
  if (!abandoning) {
    console.error(`scale: ${(err as Error).stack ?? String(err)}`);
    process.exit(1);
  }
}

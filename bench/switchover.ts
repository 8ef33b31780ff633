// End-to-end benchmark of a controller-driven switchover against real etcd and NATS
// containers, two agents as real processes (a: priority 10, b: priority 0) hosting the demo
// rate bot, and one controller. A sampler PINGs the identity every few milliseconds, each PING
// with its own reply subject, so every responder of every PING is known. Then N switchovers
// alternate a→b→a… through the controller's HTTP API, each awaited until `done`.
//
// Per switchover it reports:
//   duration  the workflow's own steps, requested → done (controller clock);
//   gap       the sampler's blind spot: send time of the last PING answered by the old node
//             → send time of the first PING answered by the new node (resolution ≈ the
//             sampling period);
//   double    PINGs answered by two nodes (S1; must be 0).
//   cpu wait  the share of the round (requested → done) in which some runnable task waited for
//             a core (/proc/pressure/cpu): what says whether the round had the cores.
// Then a summary (median/p99/max of gap and duration, PING counts), also written as JSON to
// bench/results/ with the machine, versions and settings. With --etcd-members 3 the agents
// and the controller use a 3-member etcd (each commit a raft round), as in the failover
// bench's topology; everything else stays as light as here, so the two runs say how much of a
// handover's time is etcd's. Prints figures and never fails on a timing; exits 1 if any PING
// had two responders or a switchover did not reach `done`, 2 if the overall budget ran out.
//
//   npx tsx bench/switchover.ts [--rounds 10] [--etcd-members 1|3]
//   (npm run bench -- switchover --rounds 10)
import { parseArgs } from 'node:util';
import { connect, type NatsConnection } from 'nats';
import type { IdentityView, Workflow } from '../pkg/api/schema.js';
import { collectResponders } from '../pkg/identity/client.js';
import { connectEtcd } from '../pkg/lease/index.js';
import { putSpec } from '../pkg/spec/store.js';
import { AgentProcess } from '../test/support/agents.js';
import { ControllerProcess } from '../test/support/controllers.js';
import { Harness } from '../test/support/harness.js';
import type { LoggedProcess } from '../test/support/logged-process.js';
import { rateBotSpec } from '../test/support/specs.js';
import { PingSampler } from '../test/support/sampler.js';
import { delay, waitFor } from '../test/support/wait.js';
import { summarize } from './measure.js';
import { machine, resultPath, versions, writeJson } from './results.js';
import { cpuWaitedUs } from './sampling.js';

const IDENTITY = 'bench-switch';
const TTL_S = 4;
const SAMPLE_EVERY_MS = 5;
/** Time for an agent or controller process to start (tsx) on a loaded 2-core machine. */
const PROCESS_START_MS = 30_000;
/** Given to each switchover in its request; the wait for `done` is bounded by it plus a margin. */
const SWITCHOVER_DEADLINE_MS = 30_000;
const DONE_MARGIN_MS = 10_000;
/** Before each round: old leader answering alone, target a healthy standby in the controller's view. */
const READY_TIMEOUT_MS = 30_000;
/** After `done`, late answers to PINGs still in flight are let in before the round is measured. */
const LATE_ANSWER_MS = 300;
/** The whole run stops by itself after this long, whatever the round count. */
const RUN_BUDGET_MS = 10 * 60_000;
/** Last resort: kill everything and exit 2 (start, rounds and cleanup included). */
const HARD_LIMIT_MS = RUN_BUDGET_MS + 2 * 60_000;

/** etcd sizes this bench starts: one member (the lightest), or three as in the failover bench. */
const ETCD_SIZES = [1, 3];

const { values } = parseArgs({ options: { rounds: { type: 'string' }, 'etcd-members': { type: 'string' } } });
const rounds = Number(values.rounds ?? 10);
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`bench: --rounds ${values.rounds}: expected an integer >= 1`);
  process.exit(1);
}
const etcdMembers = Number(values['etcd-members'] ?? 1);
if (!ETCD_SIZES.includes(etcdMembers)) {
  console.error(`bench: --etcd-members ${values['etcd-members']}: expected ${ETCD_SIZES.join(' or ')}`);
  process.exit(1);
}

// --- figures ---------------------------------------------------------------------------------

function quantile(sorted: number[], q: number): number {
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index]!;
}

function stats(samples: number[]): string {
  if (samples.length === 0) return 'no samples';
  const sorted = [...samples].sort((a, b) => a - b);
  const f = (v: number) => v.toFixed(0);
  return (
    `n=${sorted.length} min=${f(sorted[0]!)} p50=${f(quantile(sorted, 0.5))} ` +
    `p99=${f(quantile(sorted, 0.99))} max=${f(sorted.at(-1)!)} ms`
  );
}

/** ms between the first occurrence of two workflow states in its steps. */
function between(wf: Workflow, from: string, to: string): number | undefined {
  const a = wf.steps.find((s) => s.state === from)?.at;
  const b = wf.steps.find((s) => s.state === to)?.at;
  return a && b ? Date.parse(b) - Date.parse(a) : undefined;
}

const PHASES: Array<[string, string, string]> = [
  ['requested', 'draining', 'hold'],
  ['draining', 'logged-out', 'drain'],
  ['logged-out', 'transferred', 'xfer'],
  ['transferred', 'logged-in', 'login'],
  ['logged-in', 'done', 'fin'],
];

interface RoundResult {
  round: number;
  from: string;
  to: string;
  state: string;
  durationMs?: number;
  gapMs?: number;
  pings: number;
  unanswered: number;
  interleaved: number;
  phases: string;
  /** Share of the round (requested → done) in which some task waited for a core, 0..1. */
  cpuWait?: number;
  problem?: string;
}

// --- the run ---------------------------------------------------------------------------------

const processes: LoggedProcess[] = [];
let harness: Harness | undefined;
const hardStop = setTimeout(() => {
  console.error(`bench: exceeded ${HARD_LIMIT_MS} ms; killing processes, removing containers, exiting`);
  for (const p of processes) p.kill('SIGKILL');
  void (harness?.close() ?? Promise.resolve()).finally(() => process.exit(2));
}, HARD_LIMIT_MS);
hardStop.unref();

async function main(): Promise<number> {
  const startedAt = Date.now();
  harness = await Harness.create();
  const results: RoundResult[] = [];
  let sampler: PingSampler | undefined;
  let nc: NatsConnection | undefined;
  let client: ReturnType<typeof connectEtcd> | undefined;
  try {
    const [endpoints, nats] = await Promise.all([
      etcdMembers === 1
        ? harness.startEtcd().then((m) => [m.hostEndpoint])
        : harness.startEtcdCluster(etcdMembers).then((c) => c.hostEndpoints),
      harness.startNats(),
    ]);
    client = connectEtcd({ endpoints });
    nc = await connect({ servers: nats.hostUrl, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
    await putSpec(client, rateBotSpec(IDENTITY));

    const agents = new Map<string, AgentProcess>();
    for (const [node, priority] of [
      ['a', 10],
      ['b', 0],
    ] as const) {
      const agent = await AgentProcess.start({
        node,
        etcd: endpoints,
        nats: [nats.hostUrl],
        identities: { [IDENTITY]: null },
        ttlSeconds: TTL_S,
        priority,
      });
      processes.push(agent);
      agents.set(node, agent);
      await agent.waitForStarted();
    }
    const controller = await ControllerProcess.start({
      name: 'bench-ctl',
      etcd: endpoints,
      nats: [nats.hostUrl],
    });
    processes.push(controller);
    await controller.waitForActive({ timeoutMs: PROCESS_START_MS });
    const api = controller.api('operator');

    sampler = new PingSampler(nc, IDENTITY, { everyMs: SAMPLE_EVERY_MS }).start();
    const conn = nc;
    const soleResponder = async () => {
      const r = await collectResponders(conn, IDENTITY, 200);
      return r.length === 1 && !r[0]!.error ? r[0]! : undefined;
    };
    const first = await waitFor(soleResponder, {
      what: `one responder for ${IDENTITY}`,
      timeoutMs: PROCESS_START_MS,
      intervalMs: 50,
    });
    let leader = first.node;
    console.log(
      `bench: switchover of ${IDENTITY}, ${rounds} rounds, agents a (priority 10) and b (priority 0), ` +
        `T = ${TTL_S} s, PING every ${SAMPLE_EVERY_MS} ms, ${etcdMembers}-member etcd; first leader ${leader}`,
    );
    console.log(
      'round  move   state   duration       gap   pings  unanswered  cpu wait  phases (ms: hold drain xfer login fin)',
    );

    for (let round = 1; round <= rounds; round++) {
      if (Date.now() - startedAt > RUN_BUDGET_MS) {
        console.log(
          `bench: run budget of ${RUN_BUDGET_MS / 60_000} min spent; stopping after ${round - 1} rounds`,
        );
        break;
      }
      const from = leader;
      const to = from === 'a' ? 'b' : 'a';
      const result: RoundResult = {
        round,
        from,
        to,
        state: '?',
        pings: 0,
        unanswered: 0,
        interleaved: 0,
        phases: '',
      };
      results.push(result);
      try {
        // Ready: the old leader answers alone, and the controller sees it leading and the
        // target as a healthy standby, with no workflow running.
        await waitFor(
          async () => {
            const sole = await soleResponder();
            if (sole?.node !== from) return undefined;
            const view = await api.get<IdentityView>(`/v1/identities/${IDENTITY}`);
            if (view.status !== 200) throw new Error(`GET identity: HTTP ${view.status}`);
            const v = view.body;
            const target = v.standbys.find((s) => s.node === to);
            const running = v.workflow && !['done', 'aborted'].includes(v.workflow.state);
            return (
              v.leader === from &&
              v.loggedIn &&
              !running &&
              target?.healthy === true &&
              !target.fenced &&
              target.state === 'standby'
            );
          },
          {
            what: `${from} leading alone and ${to} a healthy standby`,
            timeoutMs: READY_TIMEOUT_MS,
            intervalMs: 100,
          },
        );
        const start = sampler.sent;
        const waitedBefore = cpuWaitedUs();
        const postedAt = performance.now();
        const posted = await api.post<Workflow>(`/v1/identities/${IDENTITY}/switchover`, {
          to,
          deadlineMs: SWITCHOVER_DEADLINE_MS,
          reason: `bench round ${round}`,
        });
        if (posted.status !== 202) {
          throw new Error(`POST switchover: HTTP ${posted.status} ${JSON.stringify(posted.body)}`);
        }
        const id = posted.body.id;
        const wf = await waitFor(
          async () => {
            const r = await api.get<Workflow>(`/v1/identities/${IDENTITY}/workflow`);
            if (r.status !== 200 || r.body.id !== id) return undefined;
            result.state = r.body.state;
            return r.body.state === 'done' || r.body.state === 'aborted' ? r.body : undefined;
          },
          {
            what: `switchover ${id} to finish`,
            timeoutMs: SWITCHOVER_DEADLINE_MS + DONE_MARGIN_MS,
            intervalMs: 50,
          },
        );
        result.state = wf.state;
        const waitedAfter = cpuWaitedUs();
        if (waitedBefore !== undefined && waitedAfter !== undefined) {
          const wallUs = (performance.now() - postedAt) * 1000;
          result.cpuWait = Math.min(1, (waitedAfter - waitedBefore) / wallUs);
        }
        await delay(LATE_ANSWER_MS);
        const g = sampler.gap(from, to, start, sampler.sent);
        result.pings = g.pings;
        result.unanswered = g.unanswered;
        result.interleaved = g.interleaved;
        if (wf.state === 'done') result.durationMs = between(wf, 'requested', 'done');
        result.gapMs = g.gapMs;
        result.phases = PHASES.map(([a, b]) => String(between(wf, a, b) ?? '-')).join(' ');
        if (wf.state !== 'done') result.problem = `ended ${wf.state}: ${wf.outcome ?? '?'}`;
        else if (g.gapMs === undefined) result.problem = `sampler never saw ${to} answer after ${from}`;
        if (g.interleaved > 0) {
          result.problem = `${g.interleaved} PING(s) answered by ${from} after ${to} had answered`;
        }
        if (wf.state === 'done') leader = to;
      } catch (err) {
        result.problem = (err as Error).message;
        // Carry on from whoever leads now, if anyone does.
        leader = (await soleResponder().catch(() => undefined))?.node ?? leader;
      }
      const ms = (v: number | undefined) => (v === undefined ? '-' : `${v.toFixed(0)} ms`);
      const pct = (v: number | undefined) => (v === undefined ? '-' : `${(100 * v).toFixed(0)} %`);
      console.log(
        `${String(round).padStart(5)}  ${`${from}→${to}`.padEnd(5)}  ${result.state.padEnd(7)} ` +
          `${ms(result.durationMs).padStart(9)} ${ms(result.gapMs).padStart(9)} ${String(result.pings).padStart(7)} ` +
          `${String(result.unanswered).padStart(11)}  ${pct(result.cpuWait).padStart(8)}  ${result.phases}` +
          (result.problem ? `\n       PROBLEM: ${result.problem}` : ''),
      );
    }
    // Errors the processes logged: not failures by themselves, but worth a look.
    for (const p of processes) {
      const seen = new Set<string>();
      for (const r of p.records) {
        if (r.level !== 'error' && r.level !== 'fatal') continue;
        seen.add(`${r.msg}${typeof r.err === 'string' ? ` (${r.err})` : ''}`);
      }
      for (const msg of [...seen].slice(0, 5)) console.log(`  logged by ${p.name}: ${msg}`);
    }
  } finally {
    sampler?.stop();
    await Promise.all(processes.map((p) => p.stop().catch(() => undefined)));
    await nc?.close().catch(() => undefined);
    client?.close();
    await harness.close();
  }

  const done = results.filter((r) => r.state === 'done');
  const gaps = done.flatMap((r) => (r.gapMs === undefined ? [] : [r.gapMs]));
  const durations = done.flatMap((r) => (r.durationMs === undefined ? [] : [r.durationMs]));
  console.log('');
  console.log(`switchovers: ${done.length}/${results.length} done`);
  console.log(`duration (requested → done): ${stats(durations)}`);
  console.log(`gap (no responder seen by the sampler): ${stats(gaps)}`);
  const waits = done.flatMap((r) => (r.cpuWait === undefined ? [] : [r.cpuWait * 100]));
  if (waits.length > 0) console.log(`cpu wait (% of each round): ${stats(waits).replace(/ ms$/, ' %')}`);
  console.log(
    `sampler: ${sampler?.sent ?? 0} PINGs sent, ${sampler?.answered ?? 0} answers, ` +
      `${sampler?.doubles.length ?? 0} PING(s) with two responders; ` +
      `${((Date.now() - startedAt) / 1000).toFixed(0)} s in all`,
  );
  const file = resultPath('switchover', new Date(startedAt), `etcd${etcdMembers}`);
  await writeJson(file, {
    bench: 'switchover',
    date: new Date(startedAt).toISOString(),
    machine: machine(),
    versions: versions(),
    settings: { rounds, ttlS: TTL_S, pingEveryMs: SAMPLE_EVERY_MS, etcdMembers, natsServers: 1, agents: 2 },
    summaries: {
      gapMs: summarize(gaps),
      durationMs: summarize(durations),
      cpuWaitPercent: summarize(waits),
    },
    sampler: {
      sent: sampler?.sent ?? 0,
      answered: sampler?.answered ?? 0,
      doubles: sampler?.doubles.length ?? 0,
    },
    rounds: results,
  });
  console.log(`results: ${file}`);
  let status = 0;
  if (sampler && sampler.doubles.length > 0) {
    for (const d of sampler.doubles.slice(0, 20))
      console.log(`  SPLIT BRAIN: PING #${d.ping} answered by ${d.nodes.join(' and ')}`);
    status = 1;
  }
  const failed = results.filter((r) => r.problem);
  if (failed.length > 0) {
    console.log(`bench: ${failed.length} round(s) with a problem: ${failed.map((r) => r.round).join(', ')}`);
    status = 1;
  }
  return status;
}

// Exit explicitly: an etcd3 client can keep reconnect timers alive after close().
try {
  const status = await main();
  clearTimeout(hardStop);
  process.exit(status);
} catch (err) {
  console.error(`bench: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
}

// Chaos run "active controller crash mid-switchover" (failure matrix; invariant L2): three
// agents host the demo identity against real etcd and NATS while a sampler PINGs it every few
// milliseconds. Each round starts controller X with the failpoint
// UNDERSTUDY_FAILPOINT=workflow-stall:<state> (state picked by the seed among draining,
// logged-out, transferred) and, once X is active, a normal controller Y. A switchover is
// requested through X; when the workflow (read through Y) shows <state>, X is SIGKILLed. Y must
// take over and bring the workflow to `done` or `aborted` within its deadline. Checked:
//   L2  the workflow ends (done or aborted) by its deadline, resumed by Y;
//   S1  no PING is answered by two nodes, no two agents' logged-in intervals overlap, and
//       after the workflow ends exactly one node answers within a bound (the chosen target
//       with the new token when it is `done`);
//   S2  tokens seen by the sampler never go down.
// Prints one line per round and a summary; exits 1 on any violation.
//
//   npx tsx chaos/controller-crash.ts [--rounds 6] [--seed 1]   (npm run chaos -- controller ...)
import { parseArgs } from 'node:util';
import { connect } from 'nats';
import type { ControllerInfo, Workflow, WorkflowState } from '../pkg/api/schema.js';
import { collectResponders } from '../pkg/identity/client.js';
import { connectEtcd } from '../pkg/lease/index.js';
import { putSpec } from '../pkg/spec/store.js';
import { AgentProcess } from '../test/support/agents.js';
import { ControllerProcess } from '../test/support/controllers.js';
import { Harness } from '../test/support/harness.js';
import type { LoggedProcess } from '../test/support/logged-process.js';
import { loginIntervals, overlaps } from '../test/support/login-intervals.js';
import { PingSampler } from '../test/support/sampler.js';
import { rateBotSpec } from '../test/support/specs.js';
import { waitFor } from '../test/support/wait.js';

const TTL_S = 4;
/** Time for an agent or controller process to start (tsx) on a loaded 2-core machine. */
const PROCESS_START_MS = 30_000;
/** The switchover's own deadline (L2: it completes or rolls back by then). */
const DEADLINE_MS = 30_000;
/**
 * How late after its deadline a workflow may still turn terminal: the driver notices the
 * deadline at its next poll (100 ms) and an abort may wait for the old leader's undrain
 * answer (2 s) before it is persisted.
 */
const L2_SLACK_MS = 2_500;
/** X's view needs agents' heartbeats before it accepts the target: retry the request this long. */
const REQUEST_TIMEOUT_MS = 20_000;
/** The workflow must reach the stall state within this after the request. */
const STALL_TIMEOUT_MS = 20_000;
/** Y becomes active after X's election lease (3 s in test/support/controllers.ts) expires. */
const TAKEOVER_TIMEOUT_MS = 20_000;
/** After the workflow ends, exactly one node answers within this (an abort may fail over). */
const ONE_RESPONDER_BOUND_MS = TTL_S * 1000 + 6_000;
/** The whole run stops starting rounds after this long, whatever the round count. */
const RUN_BUDGET_MS = 15 * 60_000;
/** Last resort: kill everything and exit 2. */
const HARD_LIMIT_MS = RUN_BUDGET_MS + 3 * 60_000;
const SAMPLE_EVERY_MS = 5;
const IDENTITY = 'chaos-ctl';
const NODES = ['a', 'b', 'c'] as const;
const PRIORITY: Record<string, number> = { a: 10, b: 5, c: 0 };
const STALL_STATES = ['draining', 'logged-out', 'transferred'] as const satisfies readonly WorkflowState[];
type StallState = (typeof STALL_STATES)[number];

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seed: { type: 'string' } } });
const rounds = Number(values.rounds ?? 6);
let seed = Number(values.seed ?? Date.now() % 100_000);
if (!Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(seed) || seed < 0) {
  console.error(`chaos: --rounds must be an integer >= 1 and --seed an integer >= 0`);
  process.exit(1);
}
const firstSeed = seed;
const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

const violations: string[] = [];
const startedAt = Date.now();
const processes: LoggedProcess[] = [];
const harness = await Harness.create();

const hardStop = setTimeout(() => {
  console.error(`chaos: exceeded ${HARD_LIMIT_MS} ms; killing processes, removing containers, exiting`);
  for (const p of processes) p.kill('SIGKILL');
  void harness.close().finally(() => process.exit(2));
}, HARD_LIMIT_MS);
hardStop.unref();

/** Distinct error-level messages a process logged from record `from` on. */
function errorsIn(p: LoggedProcess, from: number): string[] {
  const seen = new Set<string>();
  for (const r of p.records.slice(from)) {
    if (r.level === 'error' || r.level === 'fatal') {
      seen.add(`${p.name} ${r.level}: ${r.msg}${typeof r.err === 'string' ? ` (${r.err})` : ''}`);
    }
  }
  return [...seen];
}

const isTerminal = (s: WorkflowState) => s === 'done' || s === 'aborted';

interface RoundRow {
  round: number;
  stall: StallState;
  move: string;
  takeoverMs?: number;
  state?: WorkflowState;
  totalMs?: number;
  /** Deadline minus the time it ended (negative: late). */
  marginMs?: number;
  responder?: string;
  outcome?: string;
}

const rows: RoundRow[] = [];
try {
  const [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
  const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
  const nc = await connect({ servers: nats.hostUrl, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  await putSpec(client, rateBotSpec(IDENTITY));

  const agents = new Map<string, AgentProcess>();
  for (const node of NODES) {
    const agent = await AgentProcess.start({
      node,
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      identities: { [IDENTITY]: null },
      ttlSeconds: TTL_S,
      priority: PRIORITY[node]!,
    });
    processes.push(agent);
    agents.set(node, agent);
    await agent.waitForStarted();
  }

  const sampler = new PingSampler(nc, IDENTITY, { everyMs: SAMPLE_EVERY_MS, keep: 10_000 }).start();

  /** The sole responder, or undefined; two responders is an S1 violation on the spot. */
  const soleResponder = async (round: number) => {
    const responders = await collectResponders(nc, IDENTITY, 200);
    if (responders.length > 1) {
      violations.push(
        `S1: round ${round}: ${responders.map((r) => `${r.node} (token ${r.token})`).join(' and ')} answered one PING`,
      );
    }
    return responders.length === 1 && !responders[0]!.error ? responders[0]! : undefined;
  };

  await waitFor(() => soleResponder(0), {
    what: `one responder for ${IDENTITY}`,
    timeoutMs: PROCESS_START_MS,
    intervalMs: 50,
  });
  console.log(
    `chaos controller-crash: seed ${firstSeed}, ${rounds} rounds, T = ${TTL_S} s, deadline ${DEADLINE_MS} ms`,
  );
  console.log('round  killed in    move   takeover  ended    total     margin   responder  outcome');

  for (let round = 1; round <= rounds; round++) {
    if (Date.now() - startedAt > RUN_BUDGET_MS) {
      console.log(
        `chaos: run budget of ${RUN_BUDGET_MS / 60_000} min spent; stopping after ${round - 1} rounds`,
      );
      break;
    }
    const stall = STALL_STATES[Math.floor(random() * STALL_STATES.length)]!;
    const pick = random();
    const row: RoundRow = { round, stall, move: '?' };
    rows.push(row);
    const marks = new Map([...agents.values()].map((a) => [a, a.records.length]));
    let x: ControllerProcess | undefined;
    let y: ControllerProcess | undefined;
    try {
      const before = await waitFor(() => soleResponder(round), {
        what: `one responder for ${IDENTITY} before round ${round}`,
        timeoutMs: PROCESS_START_MS,
        intervalMs: 50,
      });
      const others = NODES.filter((n) => n !== before.node);
      const target = others[Math.floor(pick * others.length)]!;
      row.move = `${before.node}→${target}`;

      // A workflow passes through logged-out only when the controller moves the key (the old
      // leader otherwise hands it over as it logs out): that round turns hand-over off.
      const extra = stall === 'logged-out' ? { switchover: { handOver: false } } : {};
      x = await ControllerProcess.start({
        name: `ctl-x${round}`,
        etcd: [etcd.hostEndpoint],
        nats: [nats.hostUrl],
        env: { UNDERSTUDY_FAILPOINT: `workflow-stall:${stall}` },
        extra,
      });
      processes.push(x);
      await x.waitForActive({ timeoutMs: PROCESS_START_MS });
      y = await ControllerProcess.start({
        name: `ctl-y${round}`,
        etcd: [etcd.hostEndpoint],
        nats: [nats.hostUrl],
        extra,
      });
      processes.push(y);
      const yApi = y.api('operator');
      const info = await yApi.get<ControllerInfo>('/v1/controller');
      if (info.body.active) throw new Error(`${y.name} is active while ${x.name} should be`);

      // X's view must know the target as a healthy standby: retry while it answers 409.
      const xApi = x.api('operator');
      const requested = await waitFor(
        async () => {
          const r = await xApi.post<Workflow>(`/v1/identities/${IDENTITY}/switchover`, {
            to: target,
            deadlineMs: DEADLINE_MS,
            reason: `chaos round ${round}: crash in ${stall}`,
          });
          if (r.status === 202) return r.body;
          throw new Error(`HTTP ${r.status}: ${JSON.stringify(r.body)}`);
        },
        {
          what: `${x.name} to accept the switchover to ${target}`,
          timeoutMs: REQUEST_TIMEOUT_MS,
          intervalMs: 250,
        },
      );
      const deadline = Date.parse(requested.deadline);

      // Wait, through Y (it reads etcd), until the workflow sits in the stall state.
      await waitFor(
        async () => {
          const r = await yApi.get<Workflow>(`/v1/identities/${IDENTITY}/workflow`);
          if (r.status !== 200 || r.body.id !== requested.id) return undefined;
          if (r.body.state === stall) return r.body;
          if (isTerminal(r.body.state)) {
            throw new Error(
              `workflow ended ${r.body.state} before reaching ${stall}: ${r.body.outcome ?? '?'}`,
            );
          }
          return undefined;
        },
        { what: `workflow ${requested.id} to reach ${stall}`, timeoutMs: STALL_TIMEOUT_MS, intervalMs: 20 },
      );
      // X says it is stalled (it persisted the state and will not advance it).
      await x
        .waitForRecord((r) => r.msg === 'failpoint: workflow stalled on purpose', 'failpoint stall', {
          timeoutMs: 5_000,
        })
        .catch(() => undefined);

      x.kill('SIGKILL');
      const killedAt = performance.now();
      await x.exited;
      await y
        .waitForActive({ timeoutMs: TAKEOVER_TIMEOUT_MS })
        .then(() => (row.takeoverMs = performance.now() - killedAt))
        .catch(() =>
          violations.push(`L2: round ${round}: ${y!.name} did not become active after ${x!.name} died`),
        );

      const ended = await waitFor(
        async () => {
          const r = await yApi.get<Workflow>(`/v1/identities/${IDENTITY}/workflow`);
          return r.status === 200 && r.body.id === requested.id && isTerminal(r.body.state)
            ? r.body
            : undefined;
        },
        {
          what: `workflow ${requested.id} to end`,
          timeoutMs: Math.max(0, deadline - Date.now()) + L2_SLACK_MS + 10_000,
          intervalMs: 50,
        },
      ).catch((err: Error) => {
        violations.push(`L2: round ${round}: ${err.message}`);
        return undefined;
      });
      if (ended) {
        const endedAt = Date.parse(ended.steps.at(-1)?.at ?? ended.updatedAt);
        row.state = ended.state;
        row.totalMs =
          endedAt - Date.parse(ended.steps.find((s) => s.state === 'requested')?.at ?? ended.createdAt);
        row.marginMs = deadline - endedAt;
        row.outcome = ended.outcome;
        if (endedAt > deadline + L2_SLACK_MS) {
          violations.push(
            `L2: round ${round}: workflow ended ${ended.state} ${endedAt - deadline} ms after its deadline`,
          );
        }
        if (ended.controller !== y.name) {
          violations.push(`L2: round ${round}: workflow last advanced by ${ended.controller}, not ${y.name}`);
        }
        // Exactly one node answers, soon: the target with the new token if it is done.
        const after = await waitFor(() => soleResponder(round), {
          what: `one responder after round ${round}`,
          timeoutMs: ONE_RESPONDER_BOUND_MS,
          intervalMs: 20,
        }).catch((err: Error) => {
          violations.push(`S1/L1: round ${round}: ${err.message}`);
          return undefined;
        });
        row.responder = after ? `${after.node}@${after.token}` : 'none';
        if (
          after &&
          ended.state === 'done' &&
          (after.node !== ended.chosen || String(after.token) !== ended.newToken)
        ) {
          violations.push(
            `round ${round}: done with ${ended.chosen} (token ${ended.newToken}) but ${after.node} (token ${after.token}) answers`,
          );
        }
      }
    } catch (err) {
      violations.push(`round ${round}: ${(err as Error).message}`);
    } finally {
      x?.kill('SIGKILL');
      await x?.stop().catch(() => undefined);
      await y?.stop().catch(() => undefined);
    }
    const ms = (v: number | undefined) => (v === undefined ? '-' : `${v.toFixed(0)} ms`);
    console.log(
      `${String(round).padStart(5)}  ${stall.padEnd(11)}  ${row.move.padEnd(5)}  ${ms(row.takeoverMs).padStart(8)}  ` +
        `${(row.state ?? '?').padEnd(7)}  ${ms(row.totalMs).padStart(8)}  ${ms(row.marginMs).padStart(9)}  ` +
        `${(row.responder ?? '-').padEnd(9)}  ${row.outcome ?? ''}`,
    );
    // Errors the processes logged during the round: not violations by themselves, but worth a look.
    const logged = [
      ...[...marks].map(([agent, from]) => errorsIn(agent, from)),
      ...(x ? [errorsIn(x, 0)] : []),
      ...(y ? [errorsIn(y, 0)] : []),
    ].flat();
    for (const line of logged.slice(0, 8)) console.log(`       logged: ${line}`);
  }

  await sampler.close();

  const intervals = loginIntervals(agents.values(), IDENTITY);
  violations.push(...sampler.violations(), ...overlaps(intervals));

  const ended = rows.filter((r) => r.state);
  const byState = STALL_STATES.map((s) => {
    const rs = ended.filter((r) => r.stall === s);
    return `${s}: ${rs.filter((r) => r.state === 'done').length} done, ${rs.filter((r) => r.state === 'aborted').length} aborted`;
  }).join('; ');
  const takeovers = rows.flatMap((r) => (r.takeoverMs === undefined ? [] : [r.takeoverMs]));
  console.log(
    `\n${rows.length} rounds (${byState}); controller takeover after SIGKILL: ` +
      (takeovers.length > 0
        ? `min ${Math.min(...takeovers).toFixed(0)} ms, max ${Math.max(...takeovers).toFixed(0)} ms`
        : 'none measured'),
  );
  console.log(
    `sampler: ${sampler.sent} PINGs, ${sampler.answered} answers, highest token ${sampler.highest}; ` +
      `${intervals.length} logged-in intervals checked; ${((Date.now() - startedAt) / 1000).toFixed(0)} s`,
  );
  for (const agent of agents.values()) await agent.stop().catch(() => undefined);
  await nc.close();
  client.close();
} catch (err) {
  violations.push(`run: ${(err as Error).stack ?? String(err)}`);
} finally {
  for (const p of processes) await p.stop().catch(() => undefined);
  await harness.close();
  clearTimeout(hardStop);
}

if (violations.length > 0) {
  console.log(`\nchaos: ${violations.length} violation(s):\n${violations.map((v) => `  - ${v}`).join('\n')}`);
  process.exit(1);
}
console.log('chaos: no violation of S1, S2 or L2');
process.exit(0);

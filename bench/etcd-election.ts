// Does an identity stay put while its 3-member etcd cluster loses its raft leader or has a
// member frozen? (DESIGN.md failure matrix: "etcd raft leader lost or a member paused
// (3-node) → no identity moves at the recommended T"; issue 10, point 2.)
//
// Set-up: a 3-member etcd cluster and NATS in containers, two agents as real processes
// (cmd/agent through tsx, a: priority 10, b: priority 0), each configured with all three etcd
// endpoints, hosting one identity whose service is a cold process (`sleep`), lease TTL T from
// --ttl (D = T/2 by the agents' default). Real processes rather than in-process Sessions: the
// agent's own timers, event loop, session keeper and logout path are what a user runs.
//
// Each round, once the cluster is healthy (every member answers a linearizable read and all
// agree on one raft leader), the identity is led and both agents have a live etcd session:
//   raft-leader-kill  the raft leader (found with the maintenance Status API) is SIGKILLed and
//                     started again --down-ms later (default 8000);
//   member-pause      one member is frozen (docker pause) for --down-ms (default 3000), then
//                     thawed: odd rounds the raft leader, even rounds a follower (the follower
//                     carrying most of the agents' keepalive streams, so the pause can hurt);
//                     --pause-target leader|follower pins it.
// Then it waits 2 T + 2 s and until the cluster and the identity are settled again, and counts:
//   moved    the identity changed hands: a leader transition was logged, or the leader key's
//            node or token (mod revision) differs from before the fault;
//   stops    agent etcd sessions that stopped (agent log 'etcd session must stop'), with the
//            reason and the time since the last renewal the agent reported;
//   gap      per agent, the longest time without an acknowledged keepalive, from its /metrics
//            counter understudy_session_renewals_total polled every 100 ms (so ± ~100 ms;
//            a healthy agent shows about one renewal interval, T/10);
//   ka       the agents' open LeaseKeepAlive streams on the victim before the fault (from
//            etcd's grpc_server_started/handled_total), so a round can be told apart by
//            whether the fault hit the member carrying a keepalive stream;
//   elect    for a raft-leader fault, ms from the fault until the other members agree on a
//            new raft leader (polled every 100 ms).
// Prints a table, a summary and one JSON line (starting with {"bench":"etcd-election").
// Never fails on a timing: exits 1 if a round could not be run (the cluster or identity did
// not settle), 2 if the overall budget ran out. Every container is removed at the end.
//
//   npx tsx bench/etcd-election.ts [--ttl 5] [--fault raft-leader-kill|member-pause]
//                                  [--rounds 6] [--down-ms N] [--pause-target alternate|leader|follower]
//   npm run bench -- etcd-election --ttl 5 --fault member-pause --rounds 6
import { parseArgs } from 'node:util';
import type { Etcd3 } from 'etcd3';
import { connectEtcd, Keys, leaseTiming, within } from '../pkg/lease/index.js';
import { putSpec } from '../pkg/spec/store.js';
import { AgentProcess } from '../test/support/agents.js';
import { Harness, type EtcdMember } from '../test/support/harness.js';
import type { LogRecord } from '../test/support/logged-process.js';
import { delay, waitFor } from '../test/support/wait.js';
import { type Scrape, scrapeProm, total } from './prom.js';

const IDENTITY = 'bench-election';
const FAULTS = ['raft-leader-kill', 'member-pause'] as const;
type Fault = (typeof FAULTS)[number];
const PAUSE_TARGETS = ['alternate', 'leader', 'follower'] as const;
type PauseTarget = (typeof PAUSE_TARGETS)[number];

/** Time for an agent process to start (tsx) on a loaded 2-core machine. */
const PROCESS_START_MS = 30_000;
/** Bound on one etcd call made by the bench itself (status, read, metrics). */
const CALL_MS = 1_500;
/** Before each round: cluster healthy, identity led, both sessions alive. */
const READY_TIMEOUT_MS = 90_000;
/** Once ready, the keepalive streams settle for this long before the fault. */
const SETTLE_MS = 2_000;
const METRICS_POLL_MS = 100;
const ELECTION_POLL_MS = 100;
/** Bound on waiting for the survivors to elect (only measured, never required). */
const ELECTION_WATCH_MS = 20_000;

const { values } = parseArgs({
  options: {
    ttl: { type: 'string' },
    fault: { type: 'string' },
    rounds: { type: 'string' },
    'down-ms': { type: 'string' },
    'pause-target': { type: 'string' },
  },
});

function fail(message: string): never {
  console.error(`bench etcd-election: ${message}`);
  console.error(
    'usage: npx tsx bench/etcd-election.ts [--ttl 5] [--fault raft-leader-kill|member-pause] [--rounds 6] ' +
      '[--down-ms N] [--pause-target alternate|leader|follower]',
  );
  process.exit(1);
}

function intArg(name: string, raw: string | undefined, fallback: number, min: number, max: number): number {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    fail(`--${name} ${raw}: expected an integer from ${min} to ${max}`);
  }
  return value;
}

const ttlS = intArg('ttl', values.ttl, 5, 2, 60);
const TTL_MS = ttlS * 1000;
/** The agents run with the default timing: D and the renewal interval follow from T. */
const TIMING = leaseTiming({ ttlSeconds: ttlS });
const rounds = intArg('rounds', values.rounds, 6, 1, 100);
const fault = (values.fault ?? 'raft-leader-kill') as Fault;
if (!FAULTS.includes(fault)) fail(`--fault ${values.fault}: expected one of ${FAULTS.join(', ')}`);
const pauseTarget = (values['pause-target'] ?? 'alternate') as PauseTarget;
if (!PAUSE_TARGETS.includes(pauseTarget)) {
  fail(`--pause-target ${values['pause-target']}: expected one of ${PAUSE_TARGETS.join(', ')}`);
}
const downMs = intArg(
  'down-ms',
  values['down-ms'],
  fault === 'raft-leader-kill' ? 8_000 : 3_000,
  100,
  120_000,
);
/** After the fault ends: long enough for a lease to expire and a standby to log in. */
const OBSERVE_MS = 2 * TTL_MS + 2_000;
/** One round at most: fault, restart (startup bound 60 s), observation, settling. */
const ROUND_BOUND_MS = downMs + 60_000 + OBSERVE_MS + READY_TIMEOUT_MS;
/** The whole run stops by itself after this long, whatever the round count. */
const RUN_BUDGET_MS = Math.min(40 * 60_000, 3 * 60_000 + rounds * (downMs + OBSERVE_MS + 45_000));
/** Last resort: kill everything and exit 2 (start, rounds and cleanup included). */
const HARD_LIMIT_MS = RUN_BUDGET_MS + ROUND_BOUND_MS + 2 * 60_000;

// --- etcd members --------------------------------------------------------------------------

interface MemberView {
  member: EtcdMember;
  /** A client on this member alone: status and reads answered by it, not by the pool. */
  client: Etcd3;
}

interface MemberStatus {
  id: string;
  leader: string;
}

async function memberStatus(m: MemberView): Promise<MemberStatus> {
  const s = await m.client.maintenance.status(within(CALL_MS));
  return { id: s.header.member_id, leader: s.leader };
}

/** Every member answers a linearizable read and all agree on one raft leader; that leader. */
async function healthyLeader(members: MemberView[]): Promise<MemberView | undefined> {
  const statuses = await Promise.all(
    members.map(async (m) => {
      await m.client.kv.range({ key: Buffer.from('understudy/bench/probe') }, within(CALL_MS));
      return memberStatus(m);
    }),
  );
  const leader = statuses[0]!.leader;
  if (leader === '0' || statuses.some((s) => s.leader !== leader)) return undefined;
  return members[statuses.findIndex((s) => s.id === leader)];
}

/** The raft leader as the given members see it, if they agree on one. */
async function agreedLeader(members: MemberView[]): Promise<string | undefined> {
  const statuses = await Promise.all(members.map((m) => memberStatus(m)));
  const leader = statuses[0]!.leader;
  return leader !== '0' && statuses.every((s) => s.leader === leader) ? leader : undefined;
}

const scrape = (endpoint: string): Promise<Scrape> => scrapeProm(`${endpoint}/metrics`, CALL_MS);

/** Open LeaseKeepAlive streams on a member (only the agents keep leases alive here). */
async function keepaliveStreams(member: EtcdMember): Promise<number | undefined> {
  try {
    const m = await scrape(member.hostEndpoint);
    const keepalives = (name: string) => total(m, name, (l) => l.grpc_method === 'LeaseKeepAlive') ?? 0;
    return keepalives('grpc_server_started_total') - keepalives('grpc_server_handled_total');
  } catch {
    return undefined;
  }
}

// --- the identity's leader -----------------------------------------------------------------

interface LeaderKey {
  node: string;
  token: string;
}

/** The leader key as some member answers it (linearizable), undefined when absent. */
async function readLeaderKey(members: MemberView[]): Promise<LeaderKey | undefined> {
  const key = new Keys().leader(IDENTITY);
  let lastError: unknown;
  for (const m of members) {
    try {
      const res = await m.client.kv.range({ key: Buffer.from(key) }, within(CALL_MS));
      const kv = res.kvs[0];
      if (!kv) return undefined;
      const record = JSON.parse(kv.value.toString()) as { node?: unknown };
      return { node: String(record.node), token: kv.mod_revision };
    } catch (err) {
      lastError = err;
    }
  }
  throw lastError instanceof Error ? lastError : new Error('no etcd member answered');
}

// --- agents ----------------------------------------------------------------------------------

/** Times (performance.now()) at which an agent's renewal counter was seen to go up. */
class RenewalTracker {
  readonly increments: number[] = [];
  private last: number | undefined;
  private running = true;
  private loop: Promise<void> | undefined;

  constructor(private readonly url: string) {}

  start(): this {
    this.loop = (async () => {
      while (this.running) {
        const polledAt = performance.now();
        try {
          const value = total(await scrape(this.url), 'understudy_session_renewals_total');
          if (value !== undefined) {
            if (this.last !== undefined && value > this.last) {
              this.increments.push(polledAt);
              if (this.increments.length > 50_000) this.increments.splice(0, 10_000);
            }
            this.last = value;
          }
        } catch {
          // The agent is busy or gone; the gap simply grows.
        }
        await delay(Math.max(0, METRICS_POLL_MS - (performance.now() - polledAt)));
      }
    })();
    return this;
  }

  /** Longest stretch of [from, to] without an increment (the stretch may begin before `from`). */
  maxGap(from: number, to: number): number {
    let previous: number | undefined;
    let gap = 0;
    for (const t of this.increments) {
      if (t < from) {
        previous = t;
        continue;
      }
      if (t > to) break;
      gap = Math.max(gap, t - (previous ?? from));
      previous = t;
    }
    return Math.max(gap, to - (previous ?? from));
  }

  async stop(): Promise<void> {
    this.running = false;
    await this.loop;
  }
}

interface Agent {
  node: string;
  process: AgentProcess;
  metricsUrl: string;
  renewals: RenewalTracker;
}

/** The identity's last logged state on this agent. */
function lastState(agent: Agent): string | undefined {
  const records = agent.process.records;
  for (let i = records.length - 1; i >= 0; i--) {
    const r = records[i]!;
    if (r.identity === IDENTITY && typeof r.to === 'string') return r.to;
  }
  return undefined;
}

async function sessionAlive(agent: Agent): Promise<boolean> {
  const res = await fetch(`${agent.metricsUrl}/healthz`, { signal: AbortSignal.timeout(CALL_MS) });
  return res.status === 200;
}

// --- rounds ----------------------------------------------------------------------------------

interface SessionStop {
  node: string;
  reason: string;
  sinceRenewalMs: number | undefined;
}

interface RoundResult {
  round: number;
  victim: string;
  role: 'leader' | 'follower';
  /** Agents' keepalive streams open on the victim just before the fault. */
  keepaliveStreamsOnVictim: number | undefined;
  keepaliveStreams: Record<string, number | undefined>;
  /** ms from the fault until the other members agreed on a new raft leader. */
  electedAfterMs: number | undefined;
  before: LeaderKey | undefined;
  after: LeaderKey | undefined;
  moved: boolean;
  leaderTransitions: number;
  sessionsStopped: SessionStop[];
  /** Longest time without an acknowledged keepalive per agent, fault start → settled. */
  maxGapMs: Record<string, number>;
  /** Warnings and errors the agents logged during the round (message → count). */
  warnings: Record<string, number>;
  problem?: string;
}

const agents: Agent[] = [];
let harness: Harness | undefined;
let paused: EtcdMember | undefined;
const hardStop = setTimeout(() => {
  console.error(`bench etcd-election: exceeded ${HARD_LIMIT_MS} ms; killing processes, removing containers`);
  for (const a of agents) a.process.kill('SIGKILL');
  void (paused?.unpause().catch(() => undefined) ?? Promise.resolve())
    .then(() => harness?.close())
    .catch(() => undefined)
    .finally(() => process.exit(2));
}, HARD_LIMIT_MS);
hardStop.unref();

function describeStatuses(streams: Record<string, number | undefined>): string {
  return Object.entries(streams)
    .map(([alias, n]) => `${alias}:${n ?? '?'}`)
    .join(' ');
}

async function main(): Promise<number> {
  const startedAt = Date.now();
  harness = await Harness.create();
  const h = harness;
  const results: RoundResult[] = [];
  const members: MemberView[] = [];
  let client: Etcd3 | undefined;
  try {
    const [cluster, nats] = await Promise.all([h.startEtcdCluster(3), h.startNats()]);
    for (const member of cluster.members) {
      members.push({ member, client: connectEtcd({ endpoints: [member.hostEndpoint] }) });
    }
    client = connectEtcd({ endpoints: cluster.hostEndpoints });
    await putSpec(client, {
      name: IDENTITY,
      service: { driver: 'process', command: ['sleep', '86400'], mode: 'cold', stopTimeoutMs: 1_000 },
      access: { open: true },
    });

    for (const [node, priority] of [
      ['a', 10],
      ['b', 0],
    ] as const) {
      const proc = await AgentProcess.start({
        node,
        etcd: cluster.hostEndpoints,
        nats: [nats.hostUrl],
        identities: { [IDENTITY]: null },
        ttlSeconds: ttlS,
        priority,
        extra: { health: { listen: '127.0.0.1:0' } },
      });
      const listening = await proc.waitForRecord(
        (r) => r.msg === 'health and metrics listening',
        'health and metrics listening',
        { timeoutMs: PROCESS_START_MS },
      );
      const metricsUrl = `http://127.0.0.1:${String(listening.port)}`;
      const agent: Agent = {
        node,
        process: proc,
        metricsUrl,
        renewals: new RenewalTracker(metricsUrl).start(),
      };
      agents.push(agent);
      await proc.waitForRecord((r) => r.msg === 'agent started', 'agent started', {
        timeoutMs: PROCESS_START_MS,
      });
    }

    const ready = async (): Promise<{ raftLeader: MemberView; key: LeaderKey }> =>
      waitFor(
        async () => {
          const raftLeader = await healthyLeader(members);
          if (!raftLeader) throw new Error('the members do not agree on a raft leader');
          const key = await readLeaderKey(members);
          if (!key) throw new Error(`${IDENTITY} has no leader`);
          const holder = agents.find((a) => a.node === key.node);
          if (!holder || lastState(holder) !== 'leader') throw new Error(`${key.node} not yet logged in`);
          for (const a of agents) {
            if (!(await sessionAlive(a))) throw new Error(`agent ${a.node} has no live etcd session`);
          }
          return { raftLeader, key };
        },
        {
          what: `a healthy cluster, ${IDENTITY} led and both agents with a live session`,
          timeoutMs: READY_TIMEOUT_MS,
          intervalMs: 200,
        },
      );

    const first = await ready();
    console.log(
      `bench etcd-election: fault ${fault}${fault === 'member-pause' ? ` (target ${pauseTarget})` : ''}, ` +
        `down ${downMs} ms, ${rounds} rounds; 3 etcd members, agents a (priority 10) and b (priority 0) ` +
        `with all three endpoints, T = ${ttlS} s (default D = ${TIMING.selfFenceMs} ms, a renewal every ${TIMING.keepaliveIntervalMs} ms); ` +
        `identity ${IDENTITY} (cold sleep) first led by ${first.key.node}`,
    );
    console.log(
      'round  victim          ka  elect  moved                   stops  gap a / b (ms)   sessions stopped',
    );

    for (let round = 1; round <= rounds; round++) {
      if (Date.now() - startedAt > RUN_BUDGET_MS) {
        console.log(
          `bench etcd-election: run budget of ${Math.round(RUN_BUDGET_MS / 60_000)} min spent; ` +
            `stopping after ${round - 1} rounds`,
        );
        break;
      }
      const result: RoundResult = {
        round,
        victim: '-',
        role: 'leader',
        keepaliveStreamsOnVictim: undefined,
        keepaliveStreams: {},
        electedAfterMs: undefined,
        before: undefined,
        after: undefined,
        moved: false,
        leaderTransitions: 0,
        sessionsStopped: [],
        maxGapMs: {},
        warnings: {},
      };
      results.push(result);
      try {
        const { raftLeader, key } = await ready();
        await delay(SETTLE_MS);
        result.before = key;
        const marks = new Map(agents.map((a) => [a.node, a.process.records.length]));

        for (const m of members) {
          result.keepaliveStreams[m.member.alias] = await keepaliveStreams(m.member);
        }
        let victim = raftLeader;
        if (fault === 'member-pause') {
          const wantLeader = pauseTarget === 'leader' || (pauseTarget === 'alternate' && round % 2 === 1);
          if (!wantLeader) {
            const followers = members.filter((m) => m !== raftLeader);
            followers.sort(
              (x, y) =>
                (result.keepaliveStreams[y.member.alias] ?? 0) -
                (result.keepaliveStreams[x.member.alias] ?? 0),
            );
            victim = followers[0]!;
            result.role = 'follower';
          }
        }
        result.victim = victim.member.alias;
        result.keepaliveStreamsOnVictim = result.keepaliveStreams[victim.member.alias];
        const victimId = (await memberStatus(victim)).id;
        const survivors = members.filter((m) => m !== victim);

        // The fault, and (for a raft-leader fault) a watch for the survivors' new leader.
        const faultAt = performance.now();
        let watching = result.role === 'leader';
        const electionWatch = (async () => {
          while (watching && performance.now() - faultAt < ELECTION_WATCH_MS) {
            const leader = await agreedLeader(survivors).catch(() => undefined);
            if (leader !== undefined && leader !== victimId) {
              result.electedAfterMs = Math.round(performance.now() - faultAt);
              return;
            }
            await delay(ELECTION_POLL_MS);
          }
        })();
        try {
          if (fault === 'raft-leader-kill') {
            await victim.member.kill('SIGKILL');
            await delay(Math.max(0, downMs - (performance.now() - faultAt)));
            await victim.member.start();
          } else {
            paused = victim.member;
            await victim.member.pause();
            await delay(Math.max(0, downMs - (performance.now() - faultAt)));
            await victim.member.unpause();
            paused = undefined;
          }
        } finally {
          watching = false;
          await electionWatch;
        }
        await delay(OBSERVE_MS);
        const settled = await ready();
        const settledAt = performance.now();

        result.after = settled.key;
        for (const a of agents) {
          const records: LogRecord[] = a.process.records.slice(marks.get(a.node) ?? 0);
          for (const r of records) {
            if (r.identity === IDENTITY && (r.to === 'leader' || r.from === 'leader'))
              result.leaderTransitions++;
            if (r.msg.startsWith('etcd session must stop')) {
              result.sessionsStopped.push({
                node: a.node,
                reason: typeof r.reason === 'string' ? r.reason : '?',
                sinceRenewalMs: typeof r.sinceRenewalMs === 'number' ? r.sinceRenewalMs : undefined,
              });
            }
            if (r.level === 'warn' || r.level === 'error' || r.level === 'fatal') {
              const msg = `${a.node}: ${r.msg}`;
              result.warnings[msg] = (result.warnings[msg] ?? 0) + 1;
            }
          }
          result.maxGapMs[a.node] = Math.round(a.renewals.maxGap(faultAt - TTL_MS, settledAt));
        }
        result.moved =
          result.leaderTransitions > 0 ||
          result.before.node !== result.after.node ||
          result.before.token !== result.after.token;
      } catch (err) {
        result.problem = (err as Error).message;
        if (paused) {
          await paused.unpause().catch(() => undefined);
          paused = undefined;
        }
      }
      const move = result.moved
        ? `yes ${result.before?.node}:${result.before?.token}→${result.after?.node}:${result.after?.token}`
        : 'no';
      const stops = result.sessionsStopped
        .map((s) => `${s.node} ${s.reason} after ${s.sinceRenewalMs ?? '?'} ms`)
        .join('; ');
      console.log(
        `${String(round).padStart(5)}  ${`${result.victim} (${result.role})`.padEnd(15)} ` +
          `${String(result.keepaliveStreamsOnVictim ?? '?').padStart(2)}  ` +
          `${String(result.electedAfterMs ?? '-').padStart(5)}  ${move.padEnd(22)}  ` +
          `${String(result.sessionsStopped.length).padStart(5)}  ` +
          `${`${result.maxGapMs.a ?? '?'} / ${result.maxGapMs.b ?? '?'}`.padEnd(15)}  ${stops || '-'}` +
          `\n       keepalive streams before: ${describeStatuses(result.keepaliveStreams)}` +
          (Object.keys(result.warnings).length > 0
            ? `\n       logged: ${Object.entries(result.warnings)
                .map(([msg, n]) => `${msg} ×${n}`)
                .join(' | ')}`
            : '') +
          (result.problem ? `\n       PROBLEM: ${result.problem}` : ''),
      );
    }
  } finally {
    if (paused) await paused.unpause().catch(() => undefined);
    await Promise.all(agents.map((a) => a.renewals.stop()));
    await Promise.all(agents.map((a) => a.process.stop().catch(() => undefined)));
    client?.close();
    for (const m of members) m.client.close();
    await h.close();
  }

  const run = results.filter((r) => !r.problem);
  const moved = run.filter((r) => r.moved).length;
  /** Moves that ended on the other node (the rest were a new term on the same node). */
  const otherNode = run.filter((r) => r.moved && r.before?.node !== r.after?.node).length;
  const stops = run.reduce((n, r) => n + r.sessionsStopped.length, 0);
  const gaps = run.flatMap((r) => Object.values(r.maxGapMs));
  const hitStream = run.filter((r) => (r.keepaliveStreamsOnVictim ?? 0) > 0);
  const elections = run.flatMap((r) => (r.electedAfterMs === undefined ? [] : [r.electedAfterMs]));
  console.log('');
  console.log(
    `T = ${ttlS} s, ${fault}: identity moved ${moved} of ${run.length} times (${otherNode} to the other node); agent sessions stopped: ${stops}; ` +
      `longest keepalive gap ${gaps.length > 0 ? Math.max(...gaps) : '-'} ms (default D = ${TIMING.selfFenceMs} ms); ` +
      `victim carried a keepalive stream in ${hitStream.length} of ${run.length} rounds ` +
      `(moved in ${hitStream.filter((r) => r.moved).length} of those); ` +
      `new raft leader after ${elections.length > 0 ? `${Math.min(...elections)}–${Math.max(...elections)} ms` : '-'}; ` +
      `${((Date.now() - startedAt) / 1000).toFixed(0)} s in all`,
  );
  // Absent figures (no election for a follower pause, an unread stream count) are null.
  console.log(
    JSON.stringify(
      {
        bench: 'etcd-election',
        fault,
        ttlS,
        defaultSelfFenceMs: TIMING.selfFenceMs,
        downMs,
        pauseTarget: fault === 'member-pause' ? pauseTarget : undefined,
        rounds: results.length,
        roundsRun: run.length,
        moved,
        movedToOtherNode: otherNode,
        sessionsStopped: stops,
        maxGapMs: gaps.length > 0 ? Math.max(...gaps) : null,
        results,
      },
      (_key, value: unknown) => (value === undefined ? null : value),
    ),
  );
  const failed = results.filter((r) => r.problem);
  if (failed.length > 0) {
    console.log(
      `bench etcd-election: ${failed.length} round(s) could not be run: ${failed.map((r) => r.round).join(', ')}`,
    );
    return 1;
  }
  return 0;
}

// Exit explicitly: an etcd3 client can keep reconnect timers alive after close().
try {
  const status = await main();
  clearTimeout(hardStop);
  process.exit(status);
} catch (err) {
  console.error(`bench etcd-election: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
}

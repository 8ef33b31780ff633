// Chaos run for the agent: three agents host the demo identity against real etcd and NATS,
// and a bounded series of faults from the failure matrix hits the current leader while a
// sampler PINGs the identity every few milliseconds. Checked throughout:
//   S1  no PING is answered by two nodes, and no two agents' logged-in intervals overlap;
//   S2  tokens seen by the sampler never go down;
//   L1  after each fault one node answers again within the fault's bound.
// Prints one line per fault and a summary; exits 1 on any violation.
//
//   npx tsx chaos/agent-failover.ts [--rounds 12] [--seed 1]
import { parseArgs } from 'node:util';
import { connect } from 'nats';
import { putSpec } from '../pkg/spec/store.js';
import { connectEtcd } from '../pkg/lease/index.js';
import { collectResponders } from '../pkg/identity/client.js';
import { AgentProcess } from '../test/support/agents.js';
import { Harness } from '../test/support/harness.js';
import { DeathWatch, loginIntervals, loginPids, overlaps } from '../test/support/login-intervals.js';
import { PingSampler } from '../test/support/sampler.js';
import { rateBotSpec } from '../test/support/specs.js';
import { delay, waitFor } from '../test/support/wait.js';

const TTL_S = 4;
const TTL_MS = TTL_S * 1000;
/** Time for an agent process to start (tsx, warm bot) on a loaded 2-core machine. */
const AGENT_START_MS = 30_000;
/** Allowance on top of T for a crash failover: stagger, login, subscription. */
const FAILOVER_MARGIN_MS = 3_000;
/** The whole run stops by itself after this long, whatever the round count. */
const RUN_BUDGET_MS = 20 * 60_000;
const SAMPLE_EVERY_MS = 5;
/** An etcd freeze no leader may notice: D − T/3 = T/2 − T/3 = T/6 with the default D, less Docker's own latency. */
const ETCD_BLIP_MS = TTL_MS / 10;
const IDENTITY = 'chaos';

const { values } = parseArgs({ options: { rounds: { type: 'string' }, seed: { type: 'string' } } });
const rounds = Number(values.rounds ?? 12);
let seed = Number(values.seed ?? Date.now() % 100_000);
const random = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;

type Fault = 'sigterm' | 'sigkill' | 'freeze-past-ttl' | 'etcd-blip' | 'nats-restart';
const FAULTS: Fault[] = ['sigterm', 'sigkill', 'freeze-past-ttl', 'etcd-blip', 'nats-restart'];
/** How long after each fault one node must answer again (L1 and the matrix's "no failover"). */
const RECOVERY_BOUND_MS: Record<Fault, number> = {
  sigterm: 2_000,
  sigkill: TTL_MS + FAILOVER_MARGIN_MS,
  'freeze-past-ttl': TTL_MS + FAILOVER_MARGIN_MS,
  'etcd-blip': 5_000,
  'nats-restart': 10_000,
};

const violations: string[] = [];
const startedAt = Date.now();

const harness = await Harness.create();
try {
  const [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
  const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
  const nc = await connect({ servers: nats.hostUrl, maxReconnectAttempts: -1, reconnectTimeWait: 200 });
  await putSpec(client, rateBotSpec(IDENTITY));

  const agents = new Map<string, AgentProcess>();
  const retired: AgentProcess[] = [];
  // A SIGKILLed agent's log never closes its login: it ends when its processes are seen dead.
  const deaths = new DeathWatch();
  const startAgent = async (node: string) => {
    const agent = await AgentProcess.start({
      node,
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      identities: { [IDENTITY]: null },
      ttlSeconds: TTL_S,
      priority: node === 'a' ? 10 : node === 'b' ? 5 : 0,
    });
    agents.set(node, agent);
    await agent.waitForStarted();
    return agent;
  };
  for (const node of ['a', 'b', 'c']) await startAgent(node);

  const sampler = new PingSampler(nc, IDENTITY, { everyMs: SAMPLE_EVERY_MS, keep: 10_000 }).start();

  const leaderNow = async () => {
    const responders = await collectResponders(nc, IDENTITY, 200);
    return responders.length === 1 ? responders[0]! : undefined;
  };
  const untilOneAnswers = (timeoutMs: number) =>
    waitFor(leaderNow, { what: `one responder for ${IDENTITY}`, timeoutMs, intervalMs: 20 });

  await untilOneAnswers(AGENT_START_MS);
  console.log(`chaos: seed ${seed}, ${rounds} rounds, T = ${TTL_S} s`);
  console.log('round  fault              leader→next    recovered after   bound');

  for (let round = 1; round <= rounds && Date.now() - startedAt < RUN_BUDGET_MS; round++) {
    const fault = FAULTS[Math.floor(random() * FAULTS.length)]!;
    const before = await untilOneAnswers(AGENT_START_MS);
    const leader = agents.get(before.node)!;
    const mark = leader.records.length;
    const t0 = performance.now();
    switch (fault) {
      case 'sigterm':
        leader.kill('SIGTERM');
        break;
      case 'sigkill':
        leader.kill('SIGKILL');
        // Watched from the kill on, so each death time is close to the real one.
        deaths.watch(loginPids(leader, IDENTITY));
        break;
      case 'freeze-past-ttl':
        leader.kill('SIGSTOP');
        break;
      case 'etcd-blip':
        // Shorter than D − T/3 (the slack a leader has after its last renewal): renewals resume
        // before the self-fence deadline, so nobody may move.
        await etcd.pause();
        await delay(ETCD_BLIP_MS);
        await etcd.unpause();
        break;
      case 'nats-restart':
        await nats.restart();
        break;
    }
    let after;
    try {
      after = await waitFor(
        async () => {
          const now = await leaderNow();
          // Faults that must move the identity are recovered when someone else answers.
          const mustMove = fault === 'sigterm' || fault === 'sigkill' || fault === 'freeze-past-ttl';
          return now && (!mustMove || now.node !== before.node) ? now : undefined;
        },
        { what: `recovery from ${fault}`, timeoutMs: RECOVERY_BOUND_MS[fault] + 10_000, intervalMs: 10 },
      );
    } catch (err) {
      violations.push(`L1: ${fault} in round ${round}: ${(err as Error).message}`);
    }
    const recoveredMs = performance.now() - t0;
    if (after && recoveredMs > RECOVERY_BOUND_MS[fault]) {
      violations.push(
        `L1: ${fault} in round ${round}: recovered after ${recoveredMs.toFixed(0)} ms > ${RECOVERY_BOUND_MS[fault]} ms`,
      );
    }
    if (after && (fault === 'etcd-blip' || fault === 'nats-restart') && after.node !== before.node) {
      violations.push(`matrix: ${fault} in round ${round} moved the identity ${before.node} → ${after.node}`);
    }
    console.log(
      `${String(round).padStart(5)}  ${fault.padEnd(18)} ${`${before.node}→${after?.node ?? '?'}`.padEnd(14)} ` +
        `${`${recoveredMs.toFixed(0)} ms`.padStart(15)}   ${RECOVERY_BOUND_MS[fault]} ms`,
    );
    // Restore: a frozen agent resumes (it must log out before acting), a dead one restarts.
    if (fault === 'freeze-past-ttl') {
      leader.kill('SIGCONT');
      await leader.waitForState(IDENTITY, 'standby', { from: mark, timeoutMs: AGENT_START_MS }).catch(() => {
        violations.push(`matrix: frozen ${leader.node} did not return to standby after resuming`);
      });
    }
    if (fault === 'sigterm' || fault === 'sigkill') {
      await leader.exited;
      // Pids its last log lines named after the kill (a late one only makes its login look longer).
      if (fault === 'sigkill') deaths.watch(loginPids(leader, IDENTITY));
      retired.push(leader);
      await startAgent(leader.node);
    }
  }

  await sampler.close();

  const intervals = loginIntervals([...retired, ...agents.values()], IDENTITY, { diedAt: deaths.diedAt });
  deaths.close();
  violations.push(...sampler.violations(), ...overlaps(intervals));

  console.log(
    `\nsampler: ${sampler.sent} PINGs, ${sampler.answered} answers, highest token ${sampler.highest}; ` +
      `${intervals.length} logged-in intervals checked; ${((Date.now() - startedAt) / 1000).toFixed(0)} s`,
  );
  for (const agent of agents.values()) await agent.stop();
  for (const agent of retired) await agent.stop().catch(() => undefined);
  await nc.close();
  client.close();
} finally {
  await harness.close();
}

if (violations.length > 0) {
  console.log(`\nchaos: ${violations.length} violation(s):\n${violations.map((v) => `  - ${v}`).join('\n')}`);
  process.exit(1);
}
console.log('chaos: no violation of S1, S2 or L1');

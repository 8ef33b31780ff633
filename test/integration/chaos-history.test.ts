// The chaos checker on a real run (issue 14): etcd and NATS in containers, two agents, a
// witness service under the identity. The run's history is written from outside the agents —
// the leader keys as an etcd watcher saw them, the witnesses' own records, the fault as the
// test made it — saved as JSONL, and judged by chaos/checker.ts, in process and as the command.
import { expect } from 'chai';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3, Watcher } from 'etcd3';
import { connect, type NatsConnection } from 'nats';
import { check, formatReport } from '../../chaos/checker.js';
import { HISTORY_VERSION, monotonicMs, parseHistory } from '../../chaos/history.js';
import { HistoryLog, samplePings, watchLeaders, witnessEvents } from '../../chaos/observe.js';
import { connectEtcd } from '../../pkg/lease/index.js';
import { KEEPALIVES_PER_TTL } from '../../pkg/lease/timing.js';
import { putSpec } from '../../pkg/spec/store.js';
import { AgentProcess } from '../support/agents.js';
import { Harness, type EtcdMember, type NatsServer } from '../support/harness.js';
import { repoRoot } from '../support/paths.js';
import { waitFor } from '../support/wait.js';

const IDENTITY = 'hist';
const TTL_SECONDS = 4;
/** L1's margin on this loaded 2-core machine: the successor's wait, its login and tsx's start. */
const FAILOVER_MARGIN_MS = 2_000;
const BEAT_MS = 50;

describe('chaos history: a real failover, written from outside and judged by the checker', function () {
  this.timeout(240_000);
  let harness: Harness;
  let etcd: EtcdMember;
  let nats: NatsServer;
  let client: Etcd3;
  let nc: NatsConnection;
  let dir: string;
  const agents: AgentProcess[] = [];
  let watcher: Watcher | undefined;
  /** The first test's run, which the second one breaks. */
  let lastRun: { log: HistoryLog; witnessFile: string } | undefined;

  before(async function () {
    harness = await Harness.create();
    [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    nc = await connect({ servers: nats.hostUrl });
    dir = await mkdtemp(join(tmpdir(), 'understudy-history-'));
  });

  after(async function () {
    await watcher?.cancel();
    await Promise.all(agents.map((a) => a.stop()));
    client?.close();
    await nc?.close();
    await harness?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const startAgent = async (node: string, priority: number) => {
    const agent = await AgentProcess.start({
      node,
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      ttlSeconds: TTL_SECONDS,
      identities: { [IDENTITY]: { priority } },
    });
    agents.push(agent);
    return agent;
  };

  it('a SIGKILL of the leader: no violation, and the failover timed within T + margin', async function () {
    const witnessFile = join(dir, 'witness.jsonl');
    const runFile = join(dir, 'run.jsonl');
    await putSpec(client, {
      name: IDENTITY,
      service: {
        driver: 'process',
        command: [process.execPath, '--import', 'tsx', 'chaos/witness.ts'],
        cwd: repoRoot,
        mode: 'cold',
        env: { WITNESS_FILE: witnessFile, WITNESS_BEAT_MS: String(BEAT_MS) },
        restart: { maxAttempts: 0 },
        startTimeoutMs: 30_000,
      },
      access: { open: true },
    });
    const log = new HistoryLog(runFile);
    log.add({
      kind: 'config',
      t: monotonicMs(),
      v: HISTORY_VERSION,
      ttlMs: TTL_SECONDS * 1000,
      failoverMarginMs: FAILOVER_MARGIN_MS,
      switchoverSlackMs: 2_000,
      observeSlackMs: 500,
    });
    watcher = await watchLeaders(client, [IDENTITY], log);

    const a = await startAgent('a', 10);
    await a.waitForState(IDENTITY, 'leader', { timeoutMs: 60_000 });
    const b = await startAgent('b', 0);
    await b.waitForState(IDENTITY, 'standby', { timeoutMs: 60_000 });
    const witnessed = async () =>
      witnessEvents(await readFile(witnessFile, 'utf8').catch(() => ''), IDENTITY);
    await waitFor(async () => (await witnessed()).some((e) => e.kind === 'witness' && e.node === 'a'), {
      timeoutMs: 30_000,
      what: "a's witness logging in",
    });

    // A PING a window (300 ms: a loaded machine signs its PONGs late) every 50 ms, from before
    // the fault until the new leader answers.
    const pings = samplePings(nc, IDENTITY, log, { everyMs: 50, windowMs: 300 });
    const answeredBy = (node: string) =>
      log.events.some((e) => e.kind === 'ping' && e.responders.some((r) => r.node === node));
    await waitFor(() => answeredBy('a'), { timeoutMs: 30_000, what: 'a answering PING' });
    log.add({ kind: 'nemesis', t: monotonicMs(), id: 'k1', action: 'kill', targets: ['a'], phase: 'start' });
    a.kill('SIGKILL');
    await waitFor(
      async () =>
        (await witnessed()).some((e) => e.kind === 'witness' && e.node === 'b' && e.what === 'login'),
      { timeoutMs: 60_000, what: "b's witness logging in" },
    );
    log.add({ kind: 'nemesis', t: monotonicMs(), id: 'k1', action: 'kill', targets: ['a'], phase: 'end' });
    // a's service died with it (the lifeline): its death line closes its span.
    await waitFor(
      async () =>
        (await witnessed()).some((e) => e.kind === 'witness' && e.node === 'a' && e.what === 'exit'),
      { timeoutMs: 30_000, what: "the death line of a's witness" },
    );
    await waitFor(() => answeredBy('b'), { timeoutMs: 30_000, what: 'b answering PING' });
    await pings.stop();
    await watcher.cancel();
    watcher = undefined;
    for (const e of await witnessed()) log.add(e);
    await log.flushed();

    const report = check(log.sorted());
    expect(report.violations, formatReport(report)).to.deep.equal([]);
    // The network's view is in the history too: a answered before the kill, b after, never both.
    expect(log.events.some((e) => e.kind === 'ping' && e.responders.length > 1)).to.equal(false);
    expect(report.failovers).to.have.length(1);
    const [failover] = report.failovers;
    console.log(`      SIGKILL failover at T = ${TTL_SECONDS} s: ${Math.round(failover!.ms)} ms`);
    // Not before T has passed since a's last renewal the successor could have seen (renewals
    // come every T/KEEPALIVES_PER_TTL; S3: only proof lets it in sooner), and within L1.
    const ttlMs = TTL_SECONDS * 1000;
    expect(failover!.ms).to.be.within(ttlMs - ttlMs / KEEPALIVES_PER_TTL - 100, ttlMs + FAILOVER_MARGIN_MS);

    // The same history, saved, through the command: it reads back whole and passes.
    const saved = parseHistory(await readFile(runFile, 'utf8'));
    expect(saved).to.have.length(log.events.length);
    const cli = spawnSync(process.execPath, ['--import', 'tsx', 'chaos/checker.ts', runFile], {
      cwd: repoRoot,
      encoding: 'utf8',
    });
    expect(cli.status, cli.stdout + cli.stderr).to.equal(0);
    expect(cli.stdout).to.match(/kill +1, \d+, \d+, \d+, \d+/);
    lastRun = { log, witnessFile };
  });

  it('a service started by hand under the old term while the new leader runs: caught, with its records', async function () {
    const { log, witnessFile } = lastRun!;
    const oldToken = log.events.find((e) => e.kind === 'witness' && e.node === 'a' && e.what === 'login');
    expect(oldToken, "a's login in the history").to.not.equal(undefined);
    const token = (oldToken as { token: string }).token;
    // Someone on a starts the service themselves, with the token it last had: a real process,
    // writing real records, outside any agent.
    const rogue = spawn(process.execPath, ['--import', 'tsx', 'chaos/witness.ts'], {
      cwd: repoRoot,
      env: {
        ...process.env,
        WITNESS_FILE: witnessFile,
        WITNESS_BEAT_MS: String(BEAT_MS),
        UNDERSTUDY_NODE: 'a',
        UNDERSTUDY_TOKEN: token,
      },
      stdio: 'ignore',
    });
    const events = async () => witnessEvents(await readFile(witnessFile, 'utf8'), IDENTITY);
    const logins = (list: Awaited<ReturnType<typeof events>>) =>
      list.filter((e) => e.kind === 'witness' && e.node === 'a' && e.what === 'login');
    await waitFor(async () => logins(await events()).length === 2, {
      timeoutMs: 30_000,
      what: 'the rogue login',
    });
    rogue.kill('SIGKILL');
    await waitFor(
      async () =>
        (await events()).filter((e) => e.kind === 'witness' && e.node === 'a' && e.what === 'exit').length ===
        2,
      { timeoutMs: 30_000, what: "the rogue's death line" },
    );
    const seen = new Set(log.events.map((e) => JSON.stringify(e)));
    for (const e of await events()) if (!seen.has(JSON.stringify(e))) log.add(e);

    const report = check(log.sorted());
    const s1 = report.violations.filter((v) => v.invariant === 'S1');
    expect(s1, formatReport(report)).to.have.length(1);
    expect(s1[0]!.message).to.match(
      new RegExp(
        `^hist: a \\(token ${token}\\) logged in at .* while b \\(token \\d+\\) was logged in since`,
      ),
    );
    expect(report.violations.map((v) => v.invariant)).to.include.members(['S2', 'S3']);
  });
});

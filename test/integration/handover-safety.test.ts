// Handover safety (issue 10, point 7): the faults that can end a term while its service still
// runs, each judged from outside the agent. The judge is the service's own record: every
// service is a witness (chaos/witness.ts) that logs its login, a beat every
// 50 ms and its logout on the host's monotonic clock; test/support/witness.ts compares every
// pair of logged-in intervals and the tokens of successive logins.
//
// Each scenario runs UNDERSTUDY_SAFETY_ROUNDS times (default 2, so npm test stays short; the
// chaos loop, `npm run chaos -- safety`, runs 20) with fresh agents and a fresh identity per
// round, and asserts over all rounds: no two services logged in at once, no token going down,
// and a successor that did log in (an empty history must not pass). With
// UNDERSTUDY_SAFETY_REPORT=<file> the per-round results are written there as JSON.
//
// Set-up common to every round: agents a (priority 10, leads) and b (standby) as real
// processes on this host, T = 2 s (so D = 1.4 s, must-be-out 1.8 s, logout budget 0.4 s), one
// etcd, one NATS; the services are cold process services.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Etcd3 } from 'etcd3';
import { connect, type NatsConnection } from 'nats';
import { connectEtcd, readLeader, revokeHolder, type LeaderView } from '../../pkg/lease/index.js';
import type { IdentitySpecInput } from '../../pkg/spec/schema.js';
import { putSpec } from '../../pkg/spec/store.js';
import { AgentProcess, type AgentOptions } from '../support/agents.js';
import { Harness, type EtcdMember, type NatsServer } from '../support/harness.js';
import { repoRoot } from '../support/paths.js';
import { pidDead } from '../support/processes.js';
import { TestAuthority } from '../support/control.js';
import { delay, waitFor } from '../support/wait.js';
import {
  describeProblems,
  judgeWitness,
  parseWitnessLines,
  type WitnessLine,
  type WitnessVerdict,
} from '../support/witness.js';

const ROUNDS = Number(process.env.UNDERSTUDY_SAFETY_ROUNDS ?? 2);
if (!Number.isInteger(ROUNDS) || ROUNDS < 1) {
  throw new Error(
    `UNDERSTUDY_SAFETY_ROUNDS=${process.env.UNDERSTUDY_SAFETY_ROUNDS} must be a positive integer`,
  );
}
const REPORT_FILE = process.env.UNDERSTUDY_SAFETY_REPORT;

const TTL_SECONDS = 2;
/** A slow-stopping service: it takes this long to log out after SIGTERM (a bot closing its session). */
const STOP_DELAY_MS = 600;
/** The witness's beat; a killed witness counts as logged in for one beat past its last line. */
const BEAT_MS = 50;
/** Freeze of the leader agent: past D (0.7 T = 1.4 s), short of T (2 s). A fault parameter, not a wait. */
const FREEZE_MS = 1_650;
/** A successor must log in within this after the fault, whatever it has to wait out. */
const SUCCESSOR_TIMEOUT_MS = 30_000;
/** The old services must be gone within this after the fault (killed at the latest by the lifeline). */
const OLD_SERVICE_GONE_TIMEOUT_MS = 20_000;
/** Per round: two agent starts through tsx on a loaded machine, the fault, the waits, the stops. */
const ROUND_TIMEOUT_MS = 120_000;

/** ms on CLOCK_MONOTONIC, the witnesses' clock (process.hrtime is CLOCK_MONOTONIC on Linux). */
const monoNow = (): number => Number(process.hrtime.bigint()) / 1e6;

export interface RoundResult {
  scenario: string;
  round: number;
  identities: string[];
  overlaps: number;
  decreases: number;
  /** Per identity: ms from the fault to the successor's service start (undefined: none logged in). */
  successorDelaysMs: Array<number | undefined>;
  problems: string[];
  /** Per identity, each service's logged-in interval in ms after the fault (for the report). */
  intervals: Array<Array<{ node: string; token: string; from: number; to: number; end: string }>>;
}

const results: RoundResult[] = [];

/** One identity's witness file. */
class Witness {
  constructor(
    readonly identity: string,
    readonly file: string,
  ) {}

  async lines(): Promise<WitnessLine[]> {
    const text = await readFile(this.file, 'utf8').catch(() => '');
    return parseWitnessLines(text);
  }

  async verdict(): Promise<WitnessVerdict> {
    return judgeWitness(await readFile(this.file, 'utf8').catch(() => ''), { beatMs: BEAT_MS });
  }

  /** The first login by `node` (the leader's service is up and has written its record). */
  async loginBy(node: string): Promise<WitnessLine> {
    return waitFor(async () => (await this.lines()).find((l) => l.event === 'login' && l.node === node), {
      what: `${this.identity}: the service of ${node} to log in`,
      timeoutMs: 60_000,
      intervalMs: 20,
    });
  }

  /** The first login under a token greater than `token`: the successor (on any node). */
  async successorOf(token: string, timeoutMs: number): Promise<WitnessLine | undefined> {
    return waitFor(
      async () =>
        (await this.lines()).find((l) => l.event === 'login' && BigInt(l.token) > BigInt(token)) ?? false,
      { what: `${this.identity}: a successor of term ${token} to log in`, timeoutMs, intervalMs: 20 },
    ).catch(() => undefined);
  }
}

describe('handover safety: no two services logged in at once, judged by the services', function () {
  let harness: Harness;
  let etcd: EtcdMember;
  let nats: NatsServer;
  let nc: NatsConnection;
  let client: Etcd3;
  /** Stands in for the active controller: the drain below is signed by it. */
  let authority: TestAuthority;
  let dir: string;
  let agents: AgentProcess[] = [];
  /** Cleanups of the current round that must run even when it fails (thaw, SIGCONT). */
  const undo: Array<() => Promise<void>> = [];
  /** Whether the etcd image has etcdctl (official image) or not (local FROM-scratch build). */
  let etcdctlInside: boolean | undefined;

  before(async function () {
    this.timeout(180_000);
    harness = await Harness.create();
    [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
    nc = await connect({ servers: nats.hostUrl });
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    authority = await TestAuthority.start(client, nc);
    dir = await mkdtemp(join(tmpdir(), 'understudy-witness-'));
  });

  after(async function () {
    this.timeout(120_000);
    await endRound();
    await authority?.stop();
    await nc?.close();
    client?.close();
    await harness?.close();
    if (dir) await rm(dir, { recursive: true, force: true });
    if (REPORT_FILE) await writeFile(REPORT_FILE, JSON.stringify(results, null, 2));
  });

  /** Undo the round's faults, stop its agents (a stopped leader logs out and hands over or resigns). */
  async function endRound(): Promise<void> {
    for (const step of undo.splice(0).reverse()) await step().catch(() => undefined);
    await Promise.all(agents.map((a) => a.stop()));
    agents = [];
  }

  async function startAgent(opts: Omit<AgentOptions, 'etcd' | 'nats'>): Promise<AgentProcess> {
    const agent = await AgentProcess.start({
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      ttlSeconds: TTL_SECONDS,
      ...opts,
    });
    agents.push(agent);
    return agent;
  }

  function witnessSpec(name: string, file: string, env: Record<string, string> = {}): IdentitySpecInput {
    return {
      name,
      service: {
        driver: 'process',
        command: [process.execPath, '--import', 'tsx', 'chaos/witness.ts'],
        cwd: repoRoot,
        mode: 'cold',
        env: { WITNESS_FILE: file, WITNESS_BEAT_MS: String(BEAT_MS), ...env },
        restart: { maxAttempts: 0 },
        // tsx compiles on the way: seconds on a cold cache and a loaded machine.
        startTimeoutMs: 30_000,
      },
      access: { open: true },
    };
  }

  interface Leading {
    a: AgentProcess;
    b: AgentProcess;
    witnesses: Witness[];
    /** The old term of each identity, as the leader's service recorded it. */
    logins: WitnessLine[];
    views: LeaderView[];
  }

  /**
   * a leads every identity in `specs` (its services logged in), b stands by for all of them.
   * `envs` gives each identity's witness its knobs (one entry per identity).
   */
  async function leadAll(
    scenario: string,
    round: number,
    envs: Array<Record<string, string>>,
  ): Promise<Leading> {
    const witnesses = envs.map(
      (_, i) => new Witness(`${scenario}-${round}-${i}`, join(dir, `${scenario}-${round}-${i}.jsonl`)),
    );
    await Promise.all(witnesses.map((w, i) => putSpec(client, witnessSpec(w.identity, w.file, envs[i]))));
    const names = witnesses.map((w) => w.identity);
    const a = await startAgent({
      node: 'a',
      identities: Object.fromEntries(names.map((n) => [n, { priority: 10 }])),
    });
    for (const n of names) await a.waitForState(n, 'leader', { timeoutMs: 60_000 });
    const logins = await Promise.all(witnesses.map((w) => w.loginBy('a')));
    const b = await startAgent({ node: 'b', identities: Object.fromEntries(names.map((n) => [n, null])) });
    for (const n of names) await b.waitForState(n, 'standby', { timeoutMs: 60_000 });
    const views = await Promise.all(
      names.map(async (n) => {
        const view = await readLeader(client, n);
        if (!view || view.record.node !== 'a')
          throw new Error(`${n}: expected a to lead, read ${view?.record.node}`);
        return view;
      }),
    );
    return { a, b, witnesses, logins, views };
  }

  /**
   * After the fault: wait for each identity's successor and for the old services to be gone,
   * then judge every witness file.
   */
  async function judge(
    scenario: string,
    round: number,
    leading: Leading,
    faultAt: number,
  ): Promise<RoundResult> {
    const successors = await Promise.all(
      leading.witnesses.map((w, i) => w.successorOf(leading.logins[i]!.token, SUCCESSOR_TIMEOUT_MS)),
    );
    const problems: string[] = [];
    await Promise.all(
      leading.logins.map((login) =>
        waitFor(() => pidDead(login.pid), {
          what: `the old service (pid ${login.pid}) to be gone`,
          timeoutMs: OLD_SERVICE_GONE_TIMEOUT_MS,
        }).catch((err: Error) => problems.push(err.message)),
      ),
    );
    let overlaps = 0;
    let decreases = 0;
    const intervals: RoundResult['intervals'] = [];
    for (const [i, w] of leading.witnesses.entries()) {
      const verdict = await w.verdict();
      intervals.push(
        verdict.intervals.map((x) => ({
          node: x.node,
          token: x.token,
          from: Math.round(x.from - faultAt),
          to: Math.round(x.to - faultAt),
          end: x.end,
        })),
      );
      overlaps += verdict.overlaps.length;
      decreases += verdict.decreases.length;
      problems.push(...describeProblems(verdict).map((p) => `${w.identity}: ${p}`));
      if (!successors[i]) {
        problems.push(
          `${w.identity}: no successor logged in within ${SUCCESSOR_TIMEOUT_MS} ms of the fault (liveness)`,
        );
      }
    }
    const result: RoundResult = {
      scenario,
      round,
      identities: leading.witnesses.map((w) => w.identity),
      overlaps,
      decreases,
      successorDelaysMs: successors.map((s) => (s ? s.mono - faultAt : undefined)),
      problems,
      intervals,
    };
    results.push(result);
    const delays = result.successorDelaysMs.map((d) => (d === undefined ? 'none' : `${d.toFixed(0)} ms`));
    console.log(
      `      ${scenario} round ${round}: overlaps ${overlaps}, token decreases ${decreases}, successor after ${delays.join(' / ')}`,
    );
    if (problems.length > 0) {
      for (const p of problems) console.log(`        ${p}`);
      for (const agent of [leading.a, leading.b]) {
        const ids = new Set(result.identities);
        const lines = agent.records
          .filter(
            (r) =>
              (r.identity !== undefined &&
                ids.has(r.identity) &&
                (r.to !== undefined || r.level !== 'info')) ||
              /etcd session|lifeline/.test(r.msg),
          )
          .slice(-30)
          .map(
            (r) =>
              `        ${agent.node} ${String(r.time)} ${r.identity ?? ''} ${r.to ? `→ ${r.to}` : ''} ${r.msg} ${r.reason ?? ''}`,
          );
        console.log(lines.join('\n'));
      }
    }
    return result;
  }

  /** Run `round` ROUNDS times; assert over all of them (so a loop reports counts, not the first failure). */
  async function rounds(scenario: string, round: (r: number) => Promise<RoundResult>): Promise<void> {
    const mine: RoundResult[] = [];
    for (let r = 1; r <= ROUNDS; r++) {
      try {
        mine.push(await round(r));
      } finally {
        await endRound();
      }
    }
    const overlaps = mine.reduce((n, x) => n + x.overlaps, 0);
    const decreases = mine.reduce((n, x) => n + x.decreases, 0);
    const problems = mine.flatMap((x) => x.problems.map((p) => `round ${x.round}: ${p}`));
    expect(
      problems,
      `${scenario}: ${overlaps} overlap(s), ${decreases} token decrease(s) in ${ROUNDS} round(s)`,
    ).to.deep.equal([]);
  }

  it('a leader agent frozen past D but short of T, with a service that takes 600 ms to stop: the successor logs in only after the old service is out', async function () {
    this.timeout(ROUNDS * ROUND_TIMEOUT_MS);
    await rounds('freeze', async (r) => {
      const leading = await leadAll('freeze', r, [{ WITNESS_STOP_DELAY_MS: String(STOP_DELAY_MS) }]);
      const faultAt = monoNow();
      leading.a.kill('SIGSTOP');
      undo.push(async () => leading.a.kill('SIGCONT'));
      await delay(FREEZE_MS);
      leading.a.kill('SIGCONT');
      return judge('freeze', r, leading, faultAt);
    });
  });

  it('revokeHolder on one identity of a lease that holds two: both identities wait out the holder, no overlap', async function () {
    this.timeout(ROUNDS * ROUND_TIMEOUT_MS);
    await rounds('revoke-holder', async (r) => {
      const slow = { WITNESS_STOP_DELAY_MS: String(STOP_DELAY_MS) };
      const leading = await leadAll('revoke-holder', r, [slow, slow]);
      expect(leading.views[0]!.record.leaseId, 'one lease holds both keys').to.equal(
        leading.views[1]!.record.leaseId,
      );
      const faultAt = monoNow();
      // As the controller's forced fencing does it, for the first identity only.
      await revokeHolder(client, {
        identity: leading.witnesses[0]!.identity,
        expectToken: leading.views[0]!.token,
        actor: 'handover-safety test',
      });
      return judge('revoke-holder', r, leading, faultAt);
    });
  });

  it('a raw revoke of a lease that holds two identities (no end-of-term record at all): no overlap', async function () {
    this.timeout(ROUNDS * ROUND_TIMEOUT_MS);
    await rounds('revoke-raw', async (r) => {
      const slow = { WITNESS_STOP_DELAY_MS: String(STOP_DELAY_MS) };
      const leading = await leadAll('revoke-raw', r, [slow, slow]);
      const faultAt = monoNow();
      await client.leaseClient.leaseRevoke({ ID: leading.views[0]!.record.leaseId });
      return judge('revoke-raw', r, leading, faultAt);
    });
  });

  it('a resign without confirmed logout on an agent leading two identities: the session it gives up ends both, and both successors wait', async function () {
    this.timeout(ROUNDS * ROUND_TIMEOUT_MS);
    // A logout is unconfirmed only when the service's process group outlives SIGKILL (a process
    // stuck in the kernel). Ignoring SIGTERM is not enough: the driver sends SIGKILL within the
    // budget and sees the exit. A process frozen by the cgroup v1 freezer stays in D state with
    // SIGKILL pending until thawed: that is the stuck process.
    const freezerRoot = '/sys/fs/cgroup/freezer';
    if (!existsSync(join(freezerRoot, 'cgroup.procs'))) {
      // In CI (this project's machines have the freezer) a missing freezer is a failure, not a
      // silent skip of the one scenario whose logout cannot be confirmed.
      const why = `no cgroup v1 freezer at ${freezerRoot} (needs root on a cgroup v1 host)`;
      if (process.env.CI) throw new Error(`cannot run the unconfirmed-logout scenario: ${why}`);
      console.log(`      skipped: ${why}`);
      this.skip();
    }
    await rounds('resign-unconfirmed', async (r) => {
      const stuck = { WITNESS_IGNORE_SIGTERM: '1', WITNESS_HELPER: '1' };
      const slow = { WITNESS_STOP_DELAY_MS: String(STOP_DELAY_MS) };
      const leading = await leadAll('resign-unconfirmed', r, [stuck, slow]);
      const helperPid = leading.logins[0]!.helperPid;
      if (helperPid === undefined) throw new Error('the stuck witness reported no helper pid');
      const cgroup = join(freezerRoot, `understudy-${harness.run}-r${r}`);
      await mkdir(cgroup);
      undo.push(async () => {
        await writeFile(join(cgroup, 'freezer.state'), 'THAWED');
        await waitFor(() => pidDead(helperPid), {
          what: `stuck helper ${helperPid} to die once thawed`,
          timeoutMs: 5_000,
        }).catch(() => undefined);
        await rmdir(cgroup);
      });
      await writeFile(join(cgroup, 'cgroup.procs'), String(helperPid)).catch(async (err: Error) => {
        const lines = (await leading.witnesses[0]!.lines()).filter((l) => l.event !== 'alive');
        throw new Error(
          `could not freeze helper ${helperPid} (dead: ${await pidDead(helperPid)}): ${err.message}; ` +
            `witness logins/logouts: ${JSON.stringify(lines)}`,
          { cause: err },
        );
      });
      await writeFile(join(cgroup, 'freezer.state'), 'FROZEN');
      const faultAt = monoNow();
      // An operator's (or a switchover's) drain of the first identity: its logout cannot be
      // confirmed, so the agent gives up its whole session, which also ends the second.
      void authority
        .send(
          'a',
          {
            op: 'drain',
            identity: leading.witnesses[0]!.identity,
            actor: 'handover-safety test',
            holdMs: 60_000,
          },
          { timeoutMs: 10_000 },
        )
        .catch(() => undefined);
      const result = await judge('resign-unconfirmed', r, leading, faultAt);
      // The fault, seen from outside: the stuck process outlived the SIGKILL of its group.
      if (await pidDead(helperPid)) {
        result.problems.push(
          `the fault did not happen: the stuck helper ${helperPid} is gone before the thaw`,
        );
      }
      return result;
    });
  });

  it('an out-of-band `etcdctl lease revoke` of the leader’s lease while its slow-stopping service runs: no overlap', async function () {
    this.timeout(ROUNDS * ROUND_TIMEOUT_MS);
    await rounds('etcdctl-revoke', async (r) => {
      const leading = await leadAll('etcdctl-revoke', r, [{ WITNESS_STOP_DELAY_MS: String(STOP_DELAY_MS) }]);
      const hexId = BigInt(leading.views[0]!.record.leaseId).toString(16);
      const faultAt = monoNow();
      await etcdctlRevoke(hexId);
      return judge('etcdctl-revoke', r, leading, faultAt);
    });
  });

  // L1 stays about T: the login gate must not turn an unplanned failover into 2T. The witness
  // dies with its agent (the lifeline), and the standby logs in once it has seen the leader's
  // session go a whole T after its last renewal — about when etcd expires the lease anyway.
  it('SIGKILL of the leader agent: its service dies with it, and the standby logs in about T later, not 2T', async function () {
    this.timeout(ROUNDS * ROUND_TIMEOUT_MS);
    await rounds('sigkill', async (r) => {
      const leading = await leadAll('sigkill', r, [{}]);
      const faultAt = monoNow();
      leading.a.kill('SIGKILL');
      const result = await judge('sigkill', r, leading, faultAt);
      const delay = result.successorDelaysMs[0];
      // Not a speed target (bench/ measures that): the bound only tells T + margin from 2T.
      if (delay !== undefined && delay >= 2 * TTL_SECONDS * 1000) {
        result.problems.push(`sigkill: successor after ${Math.round(delay)} ms: 2T or more (L1: about T)`);
      }
      return result;
    });
  });

  /**
   * `etcdctl lease revoke <hex id>` as an operator types it: inside the etcd container when its
   * image has etcdctl, otherwise the host's etcdctl against the mapped endpoint.
   */
  async function etcdctlRevoke(hexId: string): Promise<void> {
    if (etcdctlInside !== false) {
      const inside = await etcd
        .exec(['etcdctl', '--endpoints=http://127.0.0.1:2379', 'lease', 'revoke', hexId])
        .catch((err: Error) => ({ exitCode: -1, output: err.message }));
      etcdctlInside = inside.exitCode === 0;
      if (etcdctlInside) return;
    }
    const { stdout } = await promisify(execFile)(
      'etcdctl',
      [`--endpoints=${etcd.hostEndpoint}`, 'lease', 'revoke', hexId],
      { env: { ...process.env, ETCDCTL_API: '3' }, timeout: 10_000 },
    );
    if (!/revoked/.test(stdout)) throw new Error(`etcdctl lease revoke ${hexId}: ${stdout}`);
  }
});

// The process driver with real processes (no etcd or NATS): login and logout, the credential
// file, stop escalation, restarts, warm mode over fd 3 with the demo rate bot, and the lifeline
// that takes a service down with its agent even when the agent is SIGKILLed.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { mkdtemp, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { createInterface } from 'node:readline';
import { pino } from 'pino';
import { ManualClock, type Clock } from '../../pkg/clock/index.js';
import {
  encodeMessage,
  messageReader,
  ServiceMessage,
  type AgentMessage,
} from '../../pkg/identity/channel.js';
import { credentialPath, removeCredentialFile, writeCredentialFile } from '../../pkg/identity/credential.js';
import type { LoginContext, ServiceReply } from '../../pkg/identity/driver.js';
import { Lifeline } from '../../pkg/identity/lifeline.js';
import { ProcessDriver } from '../../pkg/identity/process.js';
import { SpawnTurns } from '../../pkg/identity/spawn-turns.js';
import { LIVENESS_FRESH_MS } from '../../pkg/identity/service-process.js';
import { ProcessService } from '../../pkg/spec/schema.js';
import { repoRoot } from '../support/paths.js';
import { pidDead } from '../support/processes.js';
import { delay, waitFor, withTimeout } from '../support/wait.js';

/** Starting `node --import tsx` compiles TypeScript on the way: seconds on a cold cache. */
const NODE_START_MS = 20_000;
/** Budget for one logout or close in these tests (stopTimeoutMs values here are well below). */
const STOP_BUDGET_MS = 3_000;
/** The liveness question's budget in these tests (on a manual clock: no real wait). */
const LIVENESS_PROBE_MS = 250;
/** A request to a local process over fd 3 answers in milliseconds; this bounds a hung one. */
const REQUEST_MS = 2_000;
/** The reaper's grace (1 s) plus scheduling slack: how long a dead agent's processes may take. */
const REAP_MS = 5_000;
/** A shell writing a file or a bot re-reading its feed (polled each second) is done well within this. */
const LOCAL_STEP_MS = 5_000;
/** A lifeline deadline short enough to wait out, long enough for a local sh service to log in. */
const DEADLINE_MS = 1_500;
/** Restart backoff in the dead-term tests: long enough to end the term inside it from the test. */
const TERM_RESTART_BACKOFF_MS = 500;
/** Past a cancelled restart's backoff, a spawn that was going to happen has happened by then. */
const ABSENCE_MARGIN_MS = 500;
/** The driver's words when a restart timer fires under a term that has ended. */
const RESTART_ABANDONED =
  'restart abandoned: the term ended before the service was logged in again; it stays logged out';

const IDENTITY = 'ratebot';
const NODE = 'n1';

// ---- logging: captured, so a test can prove the secret never reaches a log -----------------

const logLines: string[] = [];
const logger = pino(
  { level: 'debug' },
  {
    write(line: string) {
      logLines.push(line);
    },
  },
);

/** A check that the driver logged `msg` (for waitFor, or called at once). */
const logged = (msg: string) => () => logLines.some((line) => line.includes(`"msg":"${msg}"`));

// ---- processes ------------------------------------------------------------------------------

const isDead = pidDead;

const waitDead = (pid: number, what: string, timeoutMs = REAP_MS) =>
  waitFor(() => isDead(pid), { what: `${what} (pid ${pid}) to die`, timeoutMs });

async function procEnviron(pid: number): Promise<Record<string, string>> {
  const raw = await readFile(`/proc/${pid}/environ`, 'utf8');
  return Object.fromEntries(
    raw
      .split('\0')
      .filter(Boolean)
      .map((entry) => [entry.slice(0, entry.indexOf('=')), entry.slice(entry.indexOf('=') + 1)]),
  );
}

/** Every pid a test learned about; whatever is still alive afterwards is killed, by pid. */
const started = new Set<number>();
const track = (pid: number | undefined) => {
  if (pid !== undefined) started.add(pid);
  return pid;
};

// ---- drivers --------------------------------------------------------------------------------

let lifeline: Lifeline;
let dir: string;
let drivers: ProcessDriver[] = [];

function driver(
  spec: Omit<Partial<ProcessService>, 'driver' | 'restart'> & {
    command: string[];
    restart?: Partial<ProcessService['restart']>;
  },
  clock?: Clock,
  spawnTurns?: SpawnTurns,
): ProcessDriver {
  const parsed = ProcessService.parse({ driver: 'process', ...spec });
  const d = new ProcessDriver(parsed, {
    identity: IDENTITY,
    node: NODE,
    logger,
    runDir: dir,
    lifeline,
    ...(clock ? { clock } : {}),
    ...(spawnTurns ? { spawnTurns } : {}),
  });
  drivers.push(d);
  return d;
}

const ctx = (token: bigint, extra: Partial<LoginContext> = {}): LoginContext => ({
  identity: IDENTITY,
  node: NODE,
  token,
  ...extra,
});

const ratebotCommand = (feed: string) => [
  process.execPath,
  '--import',
  'tsx',
  'pkg/demo/ratebot.ts',
  '--feed',
  feed,
];

function ratebot(feed: string, mode: 'warm' | 'cold') {
  return driver({
    command: ratebotCommand(feed),
    cwd: repoRoot,
    mode,
    channel: 'fd3',
    startTimeoutMs: NODE_START_MS,
    stopTimeoutMs: 1_000,
  });
}

async function writeFeed(path: string, feed: unknown): Promise<void> {
  // Replace atomically, as a feed publisher should: the bot never reads half a file.
  await writeFile(`${path}.tmp`, JSON.stringify(feed));
  await rename(`${path}.tmp`, path);
}

const FEED = {
  base: 'EUR',
  asOf: '2026-11-21T09:00:00Z',
  rates: { USD: 1.0842, GBP: 0.8571, JPY: 162.35, CHF: 0.9388, SEK: 11.4725 },
};

const ask = (d: ProcessDriver, command: string, id = `${command}-${Math.random()}`): Promise<ServiceReply> =>
  d.handle({ id, command }, REQUEST_MS);

describe('process driver (real processes)', function () {
  before(async function () {
    lifeline = await Lifeline.start(logger);
    track(lifeline.reaperPid);
  });

  after(async function () {
    await lifeline.close();
  });

  beforeEach(async function () {
    dir = await mkdtemp(join(tmpdir(), 'understudy-process-'));
    logLines.length = 0;
  });

  afterEach(async function () {
    for (const d of drivers) {
      track(d.pid);
      await d.close(STOP_BUDGET_MS);
    }
    drivers = [];
    for (const pid of started) {
      if (!(await isDead(pid)) && pid !== lifeline.reaperPid) process.kill(pid, 'SIGKILL');
    }
    started.clear();
    if (this.currentTest?.state === 'failed') {
      console.log(`--- driver log (last 40 lines) ---\n${logLines.slice(-40).join('')}`);
    }
    await rm(dir, { recursive: true, force: true });
  });

  describe('cold service without a channel', function () {
    it('starts at login with identity, node, token and the credential path in its environment; the secret stays out of argv, environment and logs', async function () {
      const secret = `s3cret-${Math.random().toString(36).slice(2)}`;
      const runDir = join(dir, 'run');
      const file = await writeCredentialFile(runDir, IDENTITY, secret);
      expect(file).to.equal(credentialPath(runDir, IDENTITY));
      expect((await stat(file)).mode & 0o777).to.equal(0o600);
      expect((await stat(runDir)).mode & 0o777).to.equal(0o700);
      expect(await readFile(file, 'utf8')).to.equal(secret);

      process.env.UNDERSTUDY_TEST_AGENT_ONLY = 'agent-private';
      const d = driver({ command: ['sleep', '1000'], env: { FEED_URL: 'https://example.test/feed' } });
      try {
        await d.login(ctx(18_446_744_073_709_551_615n, { credentialFile: file }));
      } finally {
        delete process.env.UNDERSTUDY_TEST_AGENT_ONLY;
      }
      const pid = track(d.pid)!;

      const env = await procEnviron(pid);
      expect(env).to.include({
        UNDERSTUDY_IDENTITY: IDENTITY,
        UNDERSTUDY_NODE: NODE,
        UNDERSTUDY_TOKEN: '18446744073709551615',
        UNDERSTUDY_CREDENTIAL_FILE: file,
        FEED_URL: 'https://example.test/feed',
      });
      expect(env, 'the agent environment is not inherited').not.to.have.property(
        'UNDERSTUDY_TEST_AGENT_ONLY',
      );
      const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8');
      expect(cmdline.split('\0').filter(Boolean)).to.deep.equal(['sleep', '1000']);
      expect(cmdline).not.to.include(secret);
      expect(Object.values(env).join('\n')).not.to.include(secret);

      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      expect(await isDead(pid)).to.equal(true);
      expect(d.pid).to.equal(undefined);

      await removeCredentialFile(file);
      await removeCredentialFile(file); // already gone is fine
      await stat(file).then(
        () => expect.fail('the credential file is still there'),
        (err: NodeJS.ErrnoException) => expect(err.code).to.equal('ENOENT'),
      );
      expect(logLines.join('')).not.to.include(secret);
    });

    it('refuses a credential file that others may read', async function () {
      const file = join(dir, 'loose');
      await writeFile(file, 'secret', { mode: 0o644 });
      const d = driver({ command: ['sleep', '1000'] });
      const err = await d.login(ctx(1n, { credentialFile: file })).then(
        () => expect.fail('login should have been refused'),
        (e: Error) => e,
      );
      expect(err.message).to.match(/readable by its owner only \(mode is 644\)/);
      expect(d.pid).to.equal(undefined);
    });

    it('rejects a login whose service exits at once, saying how it exited', async function () {
      const d = driver({ command: ['sh', '-c', 'exit 7'] });
      const err = await d.login(ctx(1n)).then(
        () => expect.fail('login should have failed'),
        (e: Error) => e,
      );
      expect(err.message).to.match(/exited with code 7 right after starting/);
    });

    /** A logged-in service that ignores SIGTERM (and has said so by touching a file). */
    async function stubborn(stopTimeoutMs: number) {
      const ready = join(dir, 'ready');
      const d = driver({
        command: ['sh', '-c', 'trap "" TERM; touch "$READY"; exec sleep 1000'],
        env: { READY: ready },
        stopTimeoutMs,
      });
      await d.login(ctx(1n));
      const pid = track(d.pid)!;
      await waitFor(() => stat(ready).then(() => true), {
        what: 'the service to ignore SIGTERM',
        timeoutMs: LOCAL_STEP_MS,
      });
      return { d, pid };
    }

    it('escalates SIGTERM to SIGKILL after stopTimeoutMs for a service that ignores SIGTERM', async function () {
      const { d, pid } = await stubborn(300);

      const t0 = Date.now();
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      const took = Date.now() - t0;
      expect(took).to.be.at.least(290).and.below(STOP_BUDGET_MS);
      expect(await isDead(pid)).to.equal(true);
      expect(logLines.join('')).to.include('ignored SIGTERM; sending SIGKILL');
    });

    it('sends SIGKILL early when the logout budget is shorter than stopTimeoutMs', async function () {
      const { d, pid } = await stubborn(10_000);

      const t0 = Date.now();
      expect(await d.logout(800)).to.equal(true);
      expect(Date.now() - t0).to.be.below(800);
      expect(await isDead(pid)).to.equal(true);
    });

    /**
     * Hold back the service's exit event until `releaseAt` (performance.now()): an agent's loop
     * late on a loaded machine, where the deadline's timer ran first (the exit event came 118 ms
     * after it in a benchmark's switchover, and the agent gave up its whole session).
     */
    function holdExit(d: ProcessDriver, releaseAt: number): void {
      const child = (d as unknown as { proc: { proc: ChildProcess } }).proc.proc;
      const emit = child.emit.bind(child);
      child.emit = ((event: string, ...args: unknown[]) => {
        if (event !== 'exit') return emit(event, ...args);
        setTimeout(() => emit(event, ...args), Math.max(0, releaseAt - performance.now()));
        return true;
      }) as typeof child.emit;
    }

    it('waits a little past the deadline for the exit event of a service the kernel shows dead after SIGKILL', async function () {
      const { d, pid } = await stubborn(300);
      const budgetMs = 800; // SIGKILL at 300 ms, the deadline at 800 ms
      holdExit(d, performance.now() + budgetMs + 150);

      expect(await d.logout(budgetMs)).to.equal(true);
      expect(logLines.join('')).not.to.include('still running after SIGKILL');
      expect(logLines.join('')).to.include("this agent's event loop is running late");
      expect(logged('service logged out (process stopped)')()).to.equal(true);
      expect(await isDead(pid)).to.equal(true);
    });

    it('but not for ever: without its exit event the service is taken for stuck, as before', async function () {
      const { d, pid } = await stubborn(300);
      holdExit(d, performance.now() + 2_000); // past the deadline (800 ms) and the grace after it

      expect(await d.logout(800)).to.equal(false);
      expect(logged('the service is still running after SIGKILL (stuck in the kernel?)')()).to.equal(true);
      await waitDead(pid, 'the killed service');
      // Its held exit event, released: nothing of this test is left to run in the next one.
      await waitFor(logged('service stopped'), { what: 'the held exit event', timeoutMs: LOCAL_STEP_MS });
    });

    it('stops what the service started along with it (its whole process group)', async function () {
      const pidFile = join(dir, 'grandchild');
      const d = driver({
        command: ['sh', '-c', 'sleep 1000 & echo $! > "$OUT"; wait'],
        env: { OUT: pidFile },
      });
      await d.login(ctx(1n));
      track(d.pid);
      const grandchild = await waitFor(
        async () => {
          const text = await readFile(pidFile, 'utf8');
          return text.endsWith('\n') ? Number(text) : undefined;
        },
        { what: 'the grandchild pid', timeoutMs: LOCAL_STEP_MS },
      );
      track(grandchild);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      expect(await isDead(grandchild)).to.equal(true);
    });

    it('restarts a crashed service with doubling backoff under the same token, then reports failed after maxAttempts', async function () {
      const starts = join(dir, 'starts');
      const d = driver({
        command: ['sh', '-c', 'echo "$UNDERSTUDY_TOKEN" >> "$STARTS"; sleep 0.4; exit 3'],
        env: { STARTS: starts },
        restart: { maxAttempts: 2, backoffMs: 100, maxBackoffMs: 150, resetAfterMs: 1_000 },
      });
      const restarting: Array<{ attempt: number; delayMs: number; reason: string }> = [];
      d.on('restarting', (e: { attempt: number; delayMs: number; reason: string }) => restarting.push(e));
      const failed = once(d, 'failed') as Promise<[{ reason: string }]>;

      await d.login(ctx(77n));
      const [{ reason }] = await withTimeout(failed, 2 * LOCAL_STEP_MS, "the driver's failed event");

      expect(restarting.map(({ attempt, delayMs }) => ({ attempt, delayMs }))).to.deep.equal([
        { attempt: 1, delayMs: 100 },
        { attempt: 2, delayMs: 150 },
      ]);
      for (const e of restarting) expect(e.reason).to.equal('exited with code 3');
      expect(reason).to.match(/exited with code 3; gave up after 3 crashes .*maxAttempts 2/);
      expect((await readFile(starts, 'utf8')).split('\n').filter(Boolean)).to.deep.equal(['77', '77', '77']);
      expect(d.pid, 'stays stopped').to.equal(undefined);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
    });

    it('counts crashes afresh after a run longer than resetAfterMs', async function () {
      const d = driver({
        command: ['sh', '-c', 'sleep 1.2; exit 3'],
        restart: { maxAttempts: 1, backoffMs: 50, maxBackoffMs: 50, resetAfterMs: 1_000 },
      });
      const restarting: Array<{ attempt: number }> = [];
      d.on('restarting', (e: { attempt: number }) => restarting.push(e));
      let failed = false;
      d.on('failed', () => (failed = true));

      await d.login(ctx(5n));
      await waitFor(() => restarting.length >= 2, { what: 'two restarts', timeoutMs: 2 * LOCAL_STEP_MS });
      expect(restarting.map((e) => e.attempt)).to.deep.equal([1, 1]);
      expect(failed).to.equal(false);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
    });

    it('answers that it takes no commands, and has no status fields', async function () {
      const d = driver({ command: ['sleep', '1000'] });
      await d.login(ctx(1n));
      track(d.pid);
      expect(await ask(d, 'RATE USD')).to.deep.equal({
        body: 'this service takes no commands over NATS',
        error: 'unknown-command',
      });
      expect(await d.status(REQUEST_MS)).to.deep.equal({});
    });
  });

  describe('no restart under a dead term', function () {
    /** A cold service that records each start (with its token) and then runs until killed. */
    const recordingService = (starts: string) =>
      driver({
        command: ['sh', '-c', 'echo "$UNDERSTUDY_TOKEN" >> "$STARTS"; exec sleep 1000'],
        env: { STARTS: starts },
        restart: {
          maxAttempts: 3,
          backoffMs: TERM_RESTART_BACKOFF_MS,
          maxBackoffMs: TERM_RESTART_BACKOFF_MS,
        },
      });
    const startsIn = async (file: string) =>
      (await readFile(file, 'utf8').catch(() => '')).split('\n').filter(Boolean);

    it('a crash restart still pending when the logout begins is cancelled: no new process', async function () {
      const starts = join(dir, 'starts');
      const d = recordingService(starts);
      const term = new AbortController();
      const restarting = once(d, 'restarting');
      await d.login(ctx(21n, { mayAct: () => true, signal: term.signal }));
      const first = track(d.pid)!;

      process.kill(first, 'SIGKILL');
      await withTimeout(restarting, LOCAL_STEP_MS, 'the restart to be scheduled');
      term.abort(); // the agent's logout of the term begins inside the backoff
      // Proving that nothing starts takes time: wait past the backoff of the cancelled restart.
      await delay(TERM_RESTART_BACKOFF_MS + ABSENCE_MARGIN_MS);

      expect(await startsIn(starts)).to.deep.equal(['21']);
      expect(d.pid, 'nothing runs under the ended term').to.equal(undefined);
      // Cancelled at the abort itself, not merely refused when the timer fired.
      expect(logged('the term is logging out: pending restart cancelled')()).to.equal(true);
      expect(logged(RESTART_ABANDONED)()).to.equal(false);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
    });

    it('a crash restart whose backoff ends after the term ended starts nothing', async function () {
      const starts = join(dir, 'starts');
      const d = recordingService(starts);
      let termAlive = true;
      const restarting = once(d, 'restarting');
      await d.login(ctx(22n, { mayAct: () => termAlive }));
      const first = track(d.pid)!;

      process.kill(first, 'SIGKILL');
      await withTimeout(restarting, LOCAL_STEP_MS, 'the restart to be scheduled');
      // The term ends with no signal to the driver (a frozen agent's session past its
      // self-fence deadline): only the check right before the spawn can stop the restart.
      termAlive = false;
      await waitFor(logged(RESTART_ABANDONED), {
        what: 'the restart timer to fire and stand down',
        timeoutMs: TERM_RESTART_BACKOFF_MS + LOCAL_STEP_MS,
      });

      expect(await startsIn(starts)).to.deep.equal(['22']);
      expect(d.pid, 'nothing runs under the ended term').to.equal(undefined);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
    });

    it('a crash after the term ended schedules no restart at all', async function () {
      const starts = join(dir, 'starts');
      const d = recordingService(starts);
      let termAlive = true;
      const restarting: unknown[] = [];
      d.on('restarting', (e) => restarting.push(e));
      let failed = false;
      d.on('failed', () => (failed = true));
      await d.login(ctx(23n, { mayAct: () => termAlive }));
      const first = track(d.pid)!;

      termAlive = false;
      process.kill(first, 'SIGKILL');
      await waitFor(
        logged('service crashed after its term ended; not restarting it (the term is being logged out)'),
        { what: 'the crash to be seen', timeoutMs: LOCAL_STEP_MS },
      );

      expect(restarting, 'no restart scheduled').to.deep.equal([]);
      expect(failed, 'the term ended: not a give-up of the service').to.equal(false);
      expect(logLines.join('')).not.to.include('restarting it under the same term');
      expect(await startsIn(starts)).to.deep.equal(['23']);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
    });

    it('a login under a term that may no longer act starts nothing', async function () {
      const starts = join(dir, 'starts');
      const d = recordingService(starts);
      const err = await d.login(ctx(24n, { mayAct: () => false })).then(
        () => undefined,
        (e: Error) => e,
      );
      expect(err?.message).to.match(/not logged in: the term ended .* before the service could be started/);
      expect(d.pid).to.equal(undefined);
      expect(await startsIn(starts)).to.deep.equal([]);
    });
  });

  describe('cold service with the fd 3 channel (rate bot)', function () {
    it('is logged in over fd 3 with the token also in its environment, and stops at logout', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'cold');
      await d.login(ctx(42n));
      const pid = track(d.pid)!;
      expect(await procEnviron(pid)).to.include({ UNDERSTUDY_TOKEN: '42' });
      expect(await ask(d, 'RATE USD')).to.deep.equal({
        body: '1 EUR = 1.0842 USD (feed 2026-11-21T09:00:00Z)',
      });
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      expect(await isDead(pid)).to.equal(true);
    });
  });

  describe('cold service that closes its channel', function () {
    it('rejects the login, saying the service closed fd 3', async function () {
      const d = driver({ command: ['sh', '-c', 'exec 3>&-; exec sleep 1000'], channel: 'fd3' });
      const err = await d.login(ctx(1n)).then(
        () => expect.fail('login should have failed'),
        (e: Error) => e,
      );
      expect(err.message).to.match(/closed its control channel \(fd 3\) before it could confirm login/);
      expect(d.pid).to.equal(undefined);
    });
  });

  describe('rate bot spoken to directly on fd 3 (the service side of the channel)', function () {
    it('says ready, refuses requests until logged in, and exits when the agent end of fd 3 closes', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const bot = spawn(process.execPath, ['--import', 'tsx', 'pkg/demo/ratebot.ts', '--feed', feed], {
        cwd: repoRoot,
        stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
      });
      track(bot.pid);
      const exited = once(bot, 'exit') as Promise<[number | null, string | null]>;
      const channel = bot.stdio[3] as Socket;
      const received: ServiceMessage[] = [];
      const reader = messageReader(
        ServiceMessage,
        (m) => received.push(m),
        (problem) => expect.fail(`the bot sent an invalid line: ${problem}`),
      );
      channel.on('data', (chunk: Buffer) => reader.push(chunk));
      const send = (m: AgentMessage) => channel.write(encodeMessage(m));
      const awaitMessage = (what: string, match: (m: ServiceMessage) => boolean, timeoutMs = LOCAL_STEP_MS) =>
        waitFor(() => received.find(match), { what, timeoutMs });
      const reply = async (id: string, command: string) => {
        send({ type: 'request', id, command });
        return awaitMessage(`reply ${id}`, (m) => m.type === 'reply' && m.id === id);
      };

      await awaitMessage('ready', (m) => m.type === 'ready', NODE_START_MS);
      expect(await reply('r1', 'RATE USD')).to.deep.equal({
        type: 'reply',
        id: 'r1',
        body: 'not logged in (standing by)',
        error: 'unavailable',
      });
      send({ type: 'login', identity: IDENTITY, node: NODE, token: '5' });
      await awaitMessage('logged-in', (m) => m.type === 'logged-in' && m.token === '5');
      expect(await reply('r2', 'RATE CHF')).to.include({
        body: '1 EUR = 0.9388 CHF (feed 2026-11-21T09:00:00Z)',
      });
      send({ type: 'logout' });
      await awaitMessage('logged-out', (m) => m.type === 'logged-out');
      expect(await reply('r3', 'RATE CHF')).to.include({ error: 'unavailable' });
      send({ type: 'status', id: 's1' });
      expect(await awaitMessage('status', (m) => m.type === 'status')).to.deep.include({
        fields: {
          lastFeed: '2026-11-21T09:00:00Z',
          currencies: ['CHF', 'GBP', 'JPY', 'SEK', 'USD'],
          requestsServed: 1,
          loggedIn: false,
          feedProblem: null,
        },
      });

      channel.end();
      const [code] = await withTimeout(exited, LOCAL_STEP_MS, 'the bot to exit after fd 3 closed');
      expect(code).to.equal(0);
    });

    it('started by hand (no fd 3), exits saying it needs the agent', async function () {
      const bot = spawn(
        process.execPath,
        ['--import', 'tsx', 'pkg/demo/ratebot.ts', '--feed', 'demo/rates.json'],
        {
          cwd: repoRoot,
          stdio: ['ignore', 'ignore', 'pipe'],
        },
      );
      track(bot.pid);
      let stderr = '';
      bot.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
      const [code] = (await withTimeout(once(bot, 'exit'), NODE_START_MS, 'the bot to exit')) as [number];
      expect(code).to.not.equal(0);
      expect(stderr).to.include(
        "fd 3 is not the understudy control channel: run this program as a process service with 'channel: fd3'",
      );
    });
  });

  describe('warm service (rate bot over fd 3)', function () {
    it('runs before login, answers RATE only while logged in, and stays up across logout', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');

      await d.prepare();
      const pid = track(d.pid)!;
      await d.prepare();
      expect(d.pid, 'prepare is idempotent').to.equal(pid);
      expect(await procEnviron(pid)).not.to.have.property('UNDERSTUDY_TOKEN');
      expect(await ask(d, 'RATE USD')).to.include({ error: 'unavailable' });

      await d.login(ctx(7n));
      expect(d.pid, 'the warm process is the one logged in').to.equal(pid);
      expect(await ask(d, 'RATE USD')).to.deep.equal({
        body: '1 EUR = 1.0842 USD (feed 2026-11-21T09:00:00Z)',
      });
      expect(await ask(d, 'rate jpy')).to.deep.equal({
        body: '1 EUR = 162.35 JPY (feed 2026-11-21T09:00:00Z)',
      });
      expect(await ask(d, 'RATE XYZ')).to.deep.equal({
        body: 'unknown currency XYZ; known: CHF, GBP, JPY, SEK, USD',
        error: 'bad-request',
      });
      expect(await ask(d, 'RATE')).to.deep.equal({
        body: 'usage: RATE <CUR>, e.g. RATE USD',
        error: 'bad-request',
      });
      expect(await ask(d, 'CONVERT 10 USD')).to.include({ error: 'unknown-command' });
      expect(await d.status(REQUEST_MS)).to.deep.include({
        lastFeed: '2026-11-21T09:00:00Z',
        currencies: ['CHF', 'GBP', 'JPY', 'SEK', 'USD'],
        requestsServed: 2,
        loggedIn: true,
      });

      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      expect(d.pid, 'still the same warm process').to.equal(pid);
      expect(await isDead(pid)).to.equal(false);
      expect(await ask(d, 'RATE USD')).to.include({ error: 'unavailable' });
      expect(await d.status(REQUEST_MS)).to.include({ loggedIn: false });

      await d.login(ctx(8n));
      expect(await ask(d, 'RATE GBP')).to.deep.equal({
        body: '1 EUR = 0.8571 GBP (feed 2026-11-21T09:00:00Z)',
      });
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
    });

    it('re-reads the rate feed when it changes, and keeps the last good rates when it is bad', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');
      await d.login(ctx(9n));
      track(d.pid);

      await writeFeed(feed, { ...FEED, asOf: '2026-11-21T10:00:00Z', rates: { ...FEED.rates, USD: 1.09 } });
      await waitFor(
        async () => (await ask(d, 'RATE USD')).body === '1 EUR = 1.09 USD (feed 2026-11-21T10:00:00Z)',
        {
          what: 'the bot to pick up the new feed',
          timeoutMs: LOCAL_STEP_MS,
        },
      );

      await writeFeed(feed, { base: 'EUR', asOf: 'yesterday', rates: { USD: -1 } });
      const status = await waitFor(
        async () => {
          const fields = await d.status(REQUEST_MS);
          return typeof fields.feedProblem === 'string' ? fields : undefined;
        },
        { what: 'the bot to reject the bad feed', timeoutMs: LOCAL_STEP_MS },
      );
      expect(status.feedProblem).to.match(/asOf/);
      expect(status.lastFeed).to.equal('2026-11-21T10:00:00Z');
      expect(await ask(d, 'RATE USD')).to.deep.equal({
        body: '1 EUR = 1.09 USD (feed 2026-11-21T10:00:00Z)',
      });
    });

    it('kills a warm service that does not confirm logout within the budget, then starts a fresh standby', async function () {
      const d = driver({
        command: [process.execPath, '--import', 'tsx', 'test/fixtures/stubborn-service.ts'],
        cwd: repoRoot,
        mode: 'warm',
        channel: 'fd3',
        startTimeoutMs: NODE_START_MS,
        stopTimeoutMs: 300,
      });
      await d.login(ctx(3n));
      const first = track(d.pid)!;

      const t0 = Date.now();
      expect(await d.logout(1_500)).to.equal(true);
      expect(Date.now() - t0).to.be.below(1_500);
      expect(await isDead(first)).to.equal(true);

      const second = await waitFor(() => (d.pid !== undefined && d.pid !== first ? d.pid : undefined), {
        what: 'a fresh warm process',
        timeoutMs: NODE_START_MS,
      });
      track(second);
      await withTimeout(d.login(ctx(4n)), NODE_START_MS, 'login on the fresh standby');
      expect(d.pid).to.equal(second);
    });

    it('vouches for a service it heard from within LIVENESS_FRESH_MS, and asks one that has been quiet since', async function () {
      const clock = new ManualClock();
      const d = driver(
        {
          command: [process.execPath, '--import', 'tsx', 'test/fixtures/mute-status-service.ts'],
          cwd: repoRoot,
          mode: 'warm',
          channel: 'fd3',
          startTimeoutMs: NODE_START_MS,
          stopTimeoutMs: 300,
        },
        clock,
      );
      await d.login(ctx(5n));
      track(d.pid);
      // Its login confirmation just now is the proof: it is not asked (it would never answer).
      expect(await d.alive(LIVENESS_PROBE_MS)).to.equal(true);
      await clock.advance(LIVENESS_FRESH_MS + 1);
      // Quiet since: asked, and a question it never answers means it does not serve.
      const asked = d.alive(LIVENESS_PROBE_MS);
      await clock.advance(LIVENESS_PROBE_MS);
      expect(await asked).to.equal(false);
    });

    it('starts a warm standby again when it crashes', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');
      await d.prepare();
      const first = track(d.pid)!;
      process.kill(first, 'SIGKILL');
      const second = await waitFor(() => (d.pid !== undefined && d.pid !== first ? d.pid : undefined), {
        what: 'the standby to be started again',
        timeoutMs: NODE_START_MS,
      });
      track(second);
      await withTimeout(d.login(ctx(11n)), NODE_START_MS, 'login after the standby restart');
      expect(await ask(d, 'RATE SEK')).to.deep.equal({
        body: '1 EUR = 11.4725 SEK (feed 2026-11-21T09:00:00Z)',
      });
    });

    it('restarts a logged-in warm service that crashes and logs it in again under the same token', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');
      await d.login(ctx(12n));
      const first = track(d.pid)!;
      const restarting = once(d, 'restarting') as Promise<[{ attempt: number; reason: string }]>;
      process.kill(first, 'SIGKILL');
      const [event] = await withTimeout(restarting, LOCAL_STEP_MS, 'the restarting event');
      expect(event).to.include({ attempt: 1, reason: 'killed by SIGKILL' });

      await waitFor(async () => !(await ask(d, 'RATE USD')).error, {
        what: 'the restarted service to answer',
        timeoutMs: NODE_START_MS,
      });
      track(d.pid);
      expect(d.pid).not.to.equal(first);
      expect(logLines.join('')).to.match(/"token":"12","msg":"service restarted and logged in again"/);
    });

    it('a warm restart whose term ends while the new process starts is not logged in; it stays as the standby', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');
      let termAlive = true;
      await d.login(ctx(13n, { mayAct: () => termAlive }));
      const first = track(d.pid)!;
      const restarting = once(d, 'restarting');
      process.kill(first, 'SIGKILL');
      await withTimeout(restarting, LOCAL_STEP_MS, 'the restarting event');
      // The replacement is spawned under the term; the term ends before it is told to log in.
      const replacement = await waitFor(() => d.pid, {
        what: 'the replacement process to be spawned',
        timeoutMs: LOCAL_STEP_MS,
        intervalMs: 5,
      });
      track(replacement);
      termAlive = false;
      await waitFor(logged(RESTART_ABANDONED), {
        what: 'the restart to stand down before the login',
        timeoutMs: NODE_START_MS,
      });

      expect(d.pid, 'the ready process stays up').to.equal(replacement);
      expect(await d.status(REQUEST_MS)).to.include({ loggedIn: false });
      expect(await ask(d, 'RATE USD')).to.include({ error: 'unavailable' });
      expect(logLines.join('')).not.to.include('service restarted and logged in again');
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      expect(d.pid, 'still the standby after the logout').to.equal(replacement);
    });

    it('refuses warm mode without the fd 3 channel, saying what to change', function () {
      expect(() => driver({ command: ['sleep', '1'], mode: 'warm', channel: 'none' })).to.throw(
        /warm process service needs channel 'fd3'.*service\.channel/,
      );
    });
  });

  describe('lifeline: the service dies with its agent', function () {
    async function startAgent(...flags: string[]) {
      const agent = spawn(
        process.execPath,
        ['--import', 'tsx', 'test/fixtures/lifeline-agent.ts', dir, ...flags],
        { cwd: repoRoot, stdio: ['ignore', 'pipe', 'pipe'] },
      );
      track(agent.pid);
      const stderr: string[] = [];
      agent.stderr.on('data', (chunk: Buffer) => stderr.push(chunk.toString()));
      const lines = createInterface({ input: agent.stdout });
      const first = once(lines, 'line') as Promise<[string]>;
      const [line] = await withTimeout(first, NODE_START_MS, 'the fixture agent to print its pids').catch(
        (err: Error) => {
          throw new Error(`${err.message}\nfixture stderr:\n${stderr.join('')}`);
        },
      );
      const pids = JSON.parse(line) as {
        agent: number;
        child: number;
        grandchild: number;
        reaper: number;
        restartedFrom?: number;
        pdeathsig: boolean;
      };
      for (const pid of [pids.child, pids.grandchild, pids.reaper, pids.restartedFrom]) track(pid);
      return { agent, pids };
    }

    async function killAgent(agent: ChildProcess) {
      const exited = once(agent, 'exit');
      agent.kill('SIGKILL');
      await withTimeout(exited, LOCAL_STEP_MS, 'the fixture agent to die');
    }

    it('SIGKILL of the agent kills the service at once (pdeathsig) and its grandchild (reaper)', async function () {
      const { agent, pids } = await startAgent();
      if (!pids.pdeathsig) this.skip(); // no setpriv on this host: the next tests cover the reaper alone
      // Hold the reaper, so what kills the child can only be the kernel's parent-death signal.
      process.kill(pids.reaper, 'SIGSTOP');
      try {
        await killAgent(agent);
        await waitDead(pids.child, 'the service, by pdeathsig');
        expect(await isDead(pids.grandchild), 'pdeathsig does not reach grandchildren').to.equal(false);
      } finally {
        process.kill(pids.reaper, 'SIGCONT');
      }
      await waitDead(pids.grandchild, 'the grandchild, by the reaper');
      await waitDead(pids.reaper, 'the reaper, done');
    });

    it('without setpriv, the reaper alone kills the service and its grandchild', async function () {
      const { agent, pids } = await startAgent('--no-pdeathsig');
      expect(pids.pdeathsig).to.equal(false);
      await killAgent(agent);
      await waitDead(pids.child, 'the service');
      await waitDead(pids.grandchild, 'the grandchild');
      await waitDead(pids.reaper, 'the reaper, done');
    });

    it('a reaper that died is replaced and still knows the running services', async function () {
      const { agent, pids } = await startAgent('--no-pdeathsig', '--restart-reaper');
      expect(pids.reaper).to.not.equal(pids.restartedFrom);
      expect(await isDead(pids.restartedFrom!)).to.equal(true);
      await killAgent(agent);
      await waitDead(pids.child, 'the service');
      await waitDead(pids.grandchild, 'the grandchild');
    });
  });
  describe('a logout that overtakes a login', function () {
    it('cold: a logout during the login wins; the login is abandoned and nothing runs', async function () {
      const file = await writeCredentialFile(join(dir, 'run'), IDENTITY, 'secret');
      const d = driver({ command: ['sleep', '1000'] });
      // The login first checks the credential file (an await): the logout lands in between.
      const login = d.login(ctx(5n, { credentialFile: file }));
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      const outcome = await login.then(
        () => 'logged in',
        (err: Error) => err.message,
      );
      expect(outcome).to.match(/login abandoned/);
      expect(d.pid, 'no service process after the login settled').to.equal(undefined);
    });

    it('warm: a logout while the warm process is still starting keeps it logged out', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');
      // Not prepared: the login has to start the process first, which takes a while.
      const login = d.login(ctx(6n));
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      const outcome = await login.then(
        () => 'logged in',
        (err: Error) => err.message,
      );
      expect(outcome).to.not.equal('logged in');
      track(d.pid);
      const reply = await ask(d, 'RATE USD');
      expect(reply.error).to.equal('unavailable');
      // The process it started stays up as the standby, not logged in.
      expect(d.pid, 'the warm process stays as the standby').to.be.a('number');
      expect(await d.status(REQUEST_MS)).to.include({ loggedIn: false });
    });
  });

  describe('a spawn waiting for its turn (spawn-turns.ts)', function () {
    /** Turns whose passes the test hands out: a spawn waits until it is let through. */
    function heldTurns(): { turns: SpawnTurns; waiting: () => number; letThrough: () => void } {
      const passes: Array<() => void> = [];
      return {
        turns: new SpawnTurns((run) => passes.push(run)),
        waiting: () => passes.length,
        letThrough: () => passes.shift()?.(),
      };
    }
    const spawnWaiting = (held: { waiting: () => number }) =>
      waitFor(() => held.waiting() > 0 || undefined, {
        what: 'a spawn waiting for its turn',
        timeoutMs: 5_000,
      });

    it('cold: a logout while the login waits for its turn wins; nothing is started', async function () {
      const held = heldTurns();
      const starts = join(dir, 'starts');
      const d = driver(
        { command: ['sh', '-c', 'echo started >> "$STARTS"; exec sleep 1000'], env: { STARTS: starts } },
        undefined,
        held.turns,
      );
      const login = d.login(ctx(31n)).then(
        () => 'logged in',
        (err: Error) => err.message,
      );
      await spawnWaiting(held);
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      held.letThrough();
      expect(await login).to.match(/abandoned/);
      expect(d.pid).to.equal(undefined);
      expect(await readFile(starts, 'utf8').catch(() => '')).to.equal('');
    });

    it('cold: a term that ends while its login waits for the turn starts nothing', async function () {
      const held = heldTurns();
      const d = driver({ command: ['sleep', '1000'] }, undefined, held.turns);
      let mayAct = true;
      const login = d.login(ctx(32n, { mayAct: () => mayAct })).then(
        () => 'logged in',
        (err: Error) => err.message,
      );
      await spawnWaiting(held);
      mayAct = false;
      held.letThrough();
      expect(await login).to.match(/the term ended .* before the service could be started/);
      expect(d.pid).to.equal(undefined);
    });

    it('warm: a driver closed while its standby waits for the turn starts nothing', async function () {
      const held = heldTurns();
      const d = driver(
        { command: ['sleep', '1000'], mode: 'warm', channel: 'fd3', startTimeoutMs: 2_000 },
        undefined,
        held.turns,
      );
      const prepared = d.prepare().then(
        () => 'prepared',
        (err: Error) => err.message,
      );
      await spawnWaiting(held);
      await d.close(STOP_BUDGET_MS);
      held.letThrough();
      expect(await prepared).to.match(/cannot start the warm service: the driver is closed/);
      expect(d.pid).to.equal(undefined);
    });

    it("a cold login's spawn waits while the agent logs a warm service in, and starts once it is in", async function () {
      // The hold's bound never ends here: only the warm login can let the spawn through.
      const turns = new SpawnTurns(undefined, { now: () => performance.now(), after: () => () => undefined });
      let warmIn!: () => void;
      void turns.warmLogin(new Promise<void>((resolve) => (warmIn = resolve)));
      const d = driver({ command: ['sleep', '1000'] }, undefined, turns);
      const login = d.login(ctx(41n));
      await waitFor(() => turns.queued > 0 || d.pid !== undefined || undefined, {
        what: 'the cold spawn asking its turn (or spawning)',
        timeoutMs: 5_000,
      });
      // Passes of the loop go by: without the hold the spawn would have had one of them.
      for (let pass = 0; pass < 5; pass++) await new Promise((resolve) => setImmediate(resolve));
      expect(turns.queued, 'the cold spawn still waits').to.equal(1);
      expect(d.pid).to.equal(undefined);
      warmIn();
      await withTimeout(login, LOCAL_STEP_MS, 'the cold login');
      expect(track(d.pid)).to.be.a('number');
    });
  });

  describe('lifeline deadline through the driver', function () {
    it('a service started after the deadline was armed carries it from its first instant', async function () {
      const d = driver({ command: ['sleep', '1000'], restart: { maxAttempts: 0 } });
      d.armDeadline(500);
      await d.login(ctx(7n));
      const pid = track(d.pid)!;
      await waitDead(pid, 'the service past its deadline');
    });

    it('a warm process started by the login itself carries the deadline armed before the login', async function () {
      // A warm service in sh: ready, then confirms the login it is sent (token 9), then runs.
      const d = driver({
        command: [
          'sh',
          '-c',
          'echo \'{"type":"ready"}\' >&3; read -r line <&3; echo \'{"type":"logged-in","token":"9"}\' >&3; exec sleep 1000',
        ],
        mode: 'warm',
        channel: 'fd3',
        restart: { maxAttempts: 0 },
      });
      // Armed while no process runs (the standby had died): the login starts one and logs it in.
      d.armDeadline(DEADLINE_MS);
      await d.login(ctx(9n));
      const pid = track(d.pid)!;
      await waitDead(pid, 'the warm service past the term deadline', DEADLINE_MS + REAP_MS);
    });

    it('disarming at logout leaves a warm process that stays up as the standby alone', async function () {
      const feed = join(dir, 'rates.json');
      await writeFeed(feed, FEED);
      const d = ratebot(feed, 'warm');
      await d.prepare();
      d.armDeadline(5_000);
      await d.login(ctx(8n));
      const pid = track(d.pid)!;
      expect(await d.logout(STOP_BUDGET_MS)).to.equal(true);
      d.armDeadline(undefined);
      d.armDeadline(undefined);
      await lifeline.ping();
      expect(d.pid).to.equal(pid);
      // Re-armed short and disarmed before it fires: still the same process afterwards.
      d.armDeadline(300);
      d.armDeadline(undefined);
      await lifeline.ping();
      // Proving that nothing happens takes time: wait past the cancelled deadline.
      await delay(600);
      expect(await isDead(pid)).to.equal(false);
    });
  });
});

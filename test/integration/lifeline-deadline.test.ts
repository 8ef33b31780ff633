// Lifeline layer 4, the dead-man's switch, with real processes: an armed service is killed at
// its deadline unless the agent re-arms it in time, and a disarmed one is left alone.
import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { pino } from 'pino';
import { UPTIME_RESOLUTION_MS } from '../../pkg/clock/uptime.js';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { getPriority, tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import {
  KILL_COST_PER_SERVICE_MS,
  Lifeline,
  REAPER_KILLED,
  REAPER_NICE,
  REAPER_TIMER_STEP_MS,
} from '../../pkg/identity/lifeline.js';
import { watchDeaths, wallNow } from '../support/death-watch.js';
import { descendantsOf } from '../support/processes.js';
import { delay, waitFor, withTimeout } from '../support/wait.js';

describe('lifeline deadline (real processes)', function () {
  this.timeout(30_000);
  let lifeline: Lifeline;
  const children: ChildProcess[] = [];

  before(async () => {
    lifeline = await Lifeline.start(pino({ level: 'silent' }));
  });
  after(async () => {
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    await lifeline.close();
  });

  async function service(): Promise<{ child: ChildProcess; exited: Promise<NodeJS.Signals | null> }> {
    const [cmd, ...args] = lifeline.wrap(['sleep', '1000']);
    const child = spawn(cmd!, args, { detached: true, stdio: 'ignore' });
    children.push(child);
    const exited = new Promise<NodeJS.Signals | null>((resolve) => child.once('exit', (_c, s) => resolve(s)));
    await new Promise((resolve) => child.once('spawn', resolve));
    lifeline.register(child.pid!);
    return { child, exited };
  }

  it('kills an armed service with SIGKILL when its deadline passes', async () => {
    const { exited } = await service();
    const armedAt = performance.now();
    lifeline.arm((children.at(-1) as ChildProcess).pid!, 300);
    expect(await withTimeout(exited, 5_000, 'the armed service to be killed')).to.equal('SIGKILL');
    // Never late, and early by at most the two readings of /proc/uptime's hundredths.
    expect(performance.now() - armedAt).to.be.at.least(300 - 2 * UPTIME_RESOLUTION_MS);
  });

  it('re-arming pushes the deadline back; disarming cancels it; the reaper stays up throughout', async () => {
    const reaper = lifeline.reaperPid;
    const { child } = await service();
    // Re-armed every 100 ms with 300 ms: never expires while renewed.
    for (let i = 0; i < 8; i++) {
      lifeline.arm(child.pid!, 300);
      await delay(100);
    }
    expect(child.exitCode === null && child.signalCode === null, 'still running while re-armed').to.equal(
      true,
    );
    lifeline.disarm(child.pid!);
    await lifeline.ping();
    // Past the last deadline: a disarmed service is left alone.
    await delay(500);
    expect(child.exitCode === null && child.signalCode === null, 'still running after disarm').to.equal(true);
    expect(lifeline.reaperPid).to.equal(reaper);
  });

  it('one shared deadline covers many services: pushed back once per renewal, it kills all it still covers when the pushes stop', async () => {
    const services = await Promise.all([service(), service(), service()]);
    const [a, b, out] = services.map((s) => s.child);
    for (const child of [a!, b!, out!]) lifeline.cover(child.pid!, 300, 's42');
    // Renewals: one push of the deadline each, whatever the number of services it covers.
    for (let i = 0; i < 6; i++) {
      lifeline.extend('s42', 300);
      await delay(100);
    }
    const running = (c: ChildProcess) => c.exitCode === null && c.signalCode === null;
    expect(
      services.every((s) => running(s.child)),
      'all running while the deadline is pushed back',
    ).to.equal(true);
    // One logged out (confirmed): it leaves the deadline, the others stay under it.
    lifeline.uncover(out!.pid!);
    const stoppedAt = performance.now();
    expect(await withTimeout(services[0]!.exited, 5_000, 'a to be killed')).to.equal('SIGKILL');
    expect(await withTimeout(services[1]!.exited, 5_000, 'b to be killed')).to.equal('SIGKILL');
    expect(performance.now() - stoppedAt, 'not before the deadline').to.be.at.least(150);
    await lifeline.ping();
    expect(running(out!), 'the service that left the deadline is left alone').to.equal(true);
  });

  it('a deadline covering 1,000 services fires early enough for their number: all are dead by it, long before T', async function () {
    this.timeout(240_000);
    // The deadline is the must-be-out instant, T × (1 − drift); a successor may log in from T
    // on. The kernel takes a while to tear a thousand processes down (0.3–0.5 ms each here), so
    // the reaper starts that much ahead: all dead near the deadline, well before T, which lies
    // the drift margin further (500 ms at the default T = 5 s).
    const N = 1_000;
    const DRIFT_MARGIN_MS = 500;
    const earlyMs = N * KILL_COST_PER_SERVICE_MS;
    const services: Array<Awaited<ReturnType<typeof service>>> = [];
    for (let i = 0; i < N; i++) services.push(await service());
    for (const s of services) lifeline.cover(s.child.pid!, 120_000, 'thousand');
    await lifeline.ping(30_000);
    // Deaths are timed by a watcher of /proc on a thread of its own: the 'exit' events come late
    // by the time this process takes to reap a thousand children at once.
    const watch = await watchDeaths(
      services.map((s) => s.child.pid!),
      60_000,
    );
    const deadlineMs = 2_000;
    const deadlineAt = wallNow() + deadlineMs;
    lifeline.extend('thousand', deadlineMs);
    const { at, alive } = await watch.deaths;
    expect(alive, 'services still alive a minute after their deadline').to.deep.equal([]);
    const signals = await withTimeout(
      Promise.all(services.map((s) => s.exited)),
      60_000,
      'every covered service to be reaped',
    );
    expect(new Set(signals)).to.deep.equal(new Set(['SIGKILL']));
    const deaths = [...at.values()];
    const firstMs = Math.min(...deaths) - deadlineAt;
    const lastMs = Math.max(...deaths) - deadlineAt;
    console.log(
      `      ${N} services, timer ${earlyMs} ms ahead: the first dead at ${Math.round(firstMs)} ms, the last at ${Math.round(lastMs)} ms from their deadline`,
    );
    expect(firstMs, 'not before the timer').to.be.at.least(-earlyMs - 20);
    // Half the drift margin is still left for what it is for: clocks running at different rates.
    expect(lastMs, 'all dead well before T').to.be.below(DRIFT_MARGIN_MS / 2);
  });

  it('a service that joins a deadline already pushed back gets the later instant, not its own older one', async () => {
    const first = await service();
    lifeline.cover(first.child.pid!, 400, 's43');
    lifeline.extend('s43', 1_500);
    // A restart under the same term: the driver still holds the instant of its login (400 ms).
    const late = await service();
    lifeline.cover(late.child.pid!, 400, 's43');
    await delay(700);
    expect(late.child.exitCode === null && late.child.signalCode === null).to.equal(true);
    expect(first.child.exitCode === null && first.child.signalCode === null).to.equal(true);
    lifeline.uncover(first.child.pid!);
    lifeline.uncover(late.child.pid!);
  });

  it('a host frozen right after a push-back: the service dies at the thaw, not a whole deadline later', async () => {
    // The whole host stopped at once (reaper, its timers, the service), the agent's push-back
    // still in the pipe: the reaper reads it only after the thaw. A delay read then would run
    // from the thaw; the instant it carries has passed by then.
    const { child, exited } = await service();
    const deadlineMs = 3_000;
    lifeline.cover(child.pid!, deadlineMs, 's77');
    await lifeline.ping();
    lifeline.extend('s77', deadlineMs);
    const reaper = lifeline.reaperPid!;
    process.kill(-reaper, 'SIGSTOP');
    process.kill(-child.pid!, 'SIGSTOP');
    await delay(deadlineMs + 500);
    const thawedAt = performance.now();
    process.kill(-reaper, 'SIGCONT');
    process.kill(-child.pid!, 'SIGCONT');
    expect(await withTimeout(exited, 10_000, 'the frozen service to be killed')).to.equal('SIGKILL');
    // Within a timer step of the thaw and well short of the whole deadline it would otherwise get.
    expect(performance.now() - thawedAt).to.be.below(REAPER_TIMER_STEP_MS + 900);
  });

  it('the reaper runs ahead of the agent and its services (nice -10, its autogroup too), a restarted one as well, or the agent says once why not', async () => {
    // Every process of a thawed host wakes at once; the kill at a passed deadline must not
    // queue behind the service it is for. Where the agent may not lower a nice level (no
    // RLIMIT_NICE, no CAP_SYS_NICE) the reaper keeps the agent's level and the agent says so.
    const lines: string[] = [];
    const own = await Lifeline.start(pino({ level: 'warn' }, { write: (line: string) => lines.push(line) }));
    const refusals = () =>
      lines.filter((l) => /reaper(?:'s)? (?:runs at the agent's own priority|autogroup|priority)/.test(l));
    const expectAhead = (pid: number) => {
      if (getPriority(pid) !== REAPER_NICE) {
        expect(getPriority(pid), "not raised: the agent's own level").to.equal(getPriority(process.pid));
        expect(refusals(), 'not raised: said once').to.have.length(1);
        return;
      }
      expect(refusals(), 'raised: nothing to say').to.have.length(0);
      // Where the kernel schedules by session (autogroup): the reaper's own session's level.
      if (existsSync(`/proc/${pid}/autogroup`))
        expect(readFileSync(`/proc/${pid}/autogroup`, 'utf8')).to.match(
          new RegExp(` nice ${REAPER_NICE}\\n?$`),
        );
    };
    try {
      const first = own.reaperPid!;
      expectAhead(first);
      process.kill(first, 'SIGKILL');
      const next = await waitFor(
        () => {
          const pid = own.reaperPid;
          return pid !== undefined && pid !== first ? pid : undefined;
        },
        { timeoutMs: 10_000, what: 'a new reaper' },
      );
      await own.ping(); // answered only once the new reaper is set up
      expectAhead(next);
    } finally {
      await own.close();
    }
  });
});

describe("lifeline deadline: the reaper's shell", function () {
  this.timeout(30_000);

  /** The reaper's descendants over ten timer steps, while one deadline 5 s out waits. */
  async function watchTimer(
    shell: string | undefined,
  ): Promise<{ shell: string; seen: Map<number, string> }> {
    const lifeline = await Lifeline.start(pino({ level: 'silent' }), shell ? { shell } : {});
    const [cmd, ...args] = lifeline.wrap(['sleep', '1000']);
    const child = spawn(cmd!, args, { detached: true, stdio: 'ignore' });
    try {
      await new Promise((resolve) => child.once('spawn', resolve));
      lifeline.register(child.pid!);
      lifeline.cover(child.pid!, 5_000, 's90');
      await lifeline.ping();
      const seen = new Map<number, string>();
      const until = performance.now() + 10 * REAPER_TIMER_STEP_MS;
      while (performance.now() < until) {
        for (const [pid, name] of await descendantsOf(lifeline.reaperPid!)) seen.set(pid, name);
        await delay(REAPER_TIMER_STEP_MS / 10);
      }
      expect(child.exitCode === null && child.signalCode === null, 'the covered service runs on').to.equal(
        true,
      );
      lifeline.uncover(child.pid!);
      return { shell: lifeline.shell, seen };
    } finally {
      child.kill('SIGKILL');
      await lifeline.close();
    }
  }

  it('under bash, a waiting deadline timer forks nothing: one timer process, no sleep', async function () {
    const { shell, seen } = await watchTimer(undefined);
    expect(shell).to.match(/bash$/);
    expect([...seen.values()], 'processes under the reaper over ten timer steps').to.deep.equal(['bash']);
  });

  it('under a plain sh (no bash), the same timer forks a sleep per step and still kills at the deadline', async function () {
    const { shell, seen } = await watchTimer('/bin/sh');
    expect(shell).to.equal('/bin/sh');
    // The probe above sees forks when there are some: at least half of the ten steps' sleeps.
    expect([...seen.values()].filter((name) => name === 'sleep').length).to.be.at.least(5);

    const lifeline = await Lifeline.start(pino({ level: 'silent' }), { shell: '/bin/sh' });
    const [cmd, ...args] = lifeline.wrap(['sleep', '1000']);
    const child = spawn(cmd!, args, { detached: true, stdio: 'ignore' });
    try {
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.once('exit', (_c, s) => resolve(s)),
      );
      await new Promise((resolve) => child.once('spawn', resolve));
      lifeline.register(child.pid!);
      const armedAt = performance.now();
      lifeline.arm(child.pid!, 300);
      expect(await withTimeout(exited, 5_000, 'the armed service to be killed')).to.equal('SIGKILL');
      const killedAfter = performance.now() - armedAt;
      expect(killedAfter).to.be.at.least(300 - 2 * UPTIME_RESOLUTION_MS);
      // Within a step of the deadline, with the same allowance for a loaded host as the thaw
      // above: a timer whose naps did not end would be seconds late.
      expect(killedAfter).to.be.below(300 + REAPER_TIMER_STEP_MS + 900);
    } finally {
      child.kill('SIGKILL');
      await lifeline.close();
    }
  });

  /** A lifeline whose log lines and kill reports are kept; one service under it, armed at `ms`. */
  async function armedAndReported(ms: number, shell?: string) {
    const said: Array<{ msg: string; servicePid?: number }> = [];
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const line of chunk.toString().split('\n').filter(Boolean)) said.push(JSON.parse(line));
        done();
      },
    });
    let kills = 0;
    const lifeline = await Lifeline.start(pino({ level: 'info' }, sink), {
      ...(shell ? { shell } : {}),
      expired: () => (kills += 1),
    });
    const [cmd, ...args] = lifeline.wrap(['sleep', '1000']);
    const child = spawn(cmd!, args, { detached: true, stdio: 'ignore' });
    try {
      const exited = new Promise<NodeJS.Signals | null>((resolve) =>
        child.once('exit', (_c, s) => resolve(s)),
      );
      await withTimeout(
        new Promise((resolve) => child.once('spawn', resolve)),
        5_000,
        'the service to start',
      );
      lifeline.register(child.pid!);
      lifeline.arm(child.pid!, ms);
      expect(await withTimeout(exited, 5_000, 'the service to be killed')).to.equal('SIGKILL');
      const report = await waitFor(() => said.find((r) => r.servicePid === child.pid), {
        what: "the agent's report of the kill",
        timeoutMs: 5_000,
      });
      return { msg: report.msg, kills };
    } finally {
      child.kill('SIGKILL');
      await lifeline.close();
    }
  }

  it('a deadline that passes is reported as expired: the agent did not renew it in time', async () => {
    expect(await armedAndReported(300)).to.deep.equal({ msg: REAPER_KILLED.expired, kills: 1 });
  });

  // The reaper's bash in a mount namespace of its own where /proc/uptime reads empty: its
  // timers cannot tell the time. (The agent's own reading, outside, is unaffected.)
  it('a timer that cannot read the clock kills its service at once, and says so instead of blaming a stalled agent (bash and sh)', async () => {
    try {
      execFileSync('unshare', ['--mount', 'true'], { stdio: 'ignore' });
    } catch (err) {
      throw new Error(
        `this test hides /proc/uptime from the reaper with unshare --mount and a bind mount, which needs root (as CI runs): ${(err as Error).message}`,
      );
    }
    const dir = mkdtempSync(join(tmpdir(), 'understudy-blind-reaper-'));
    try {
      for (const real of ['/bin/bash', '/bin/sh']) {
        const shell = join(dir, `${real.split('/').pop()}-without-uptime`);
        writeFileSync(
          shell,
          `#!/bin/sh\nexec unshare --mount --propagation private /bin/sh -c 'mount --bind /dev/null /proc/uptime && exec ${real} "$@"' sh "$@"\n`,
        );
        chmodSync(shell, 0o755);
        // A minute away: only a timer that fails kills it within the test.
        expect(await armedAndReported(60_000, shell), real).to.deep.equal({
          msg: REAPER_KILLED.failed,
          kills: 1,
        });
      }
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// Bringing a service process up, the first half of the process driver (process.ts): spawning
// it under the lifeline, starting a warm standby, logging it in under a term (cold: the token
// in its environment; warm: the login message to a ready standby), and making sure a start
// that failed leaves nothing running. The term is asked whether it may still act right before
// each spawn and each login sent, with no await in between.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import type { ProcessService } from '../spec/schema.js';
import { loginMessage } from './channel.js';
import { termMayAct, type LoginContext } from './driver.js';
import type { ExecPolicy } from './exec-policy.js';
import type { Lifeline } from './lifeline.js';
import type { ProcessPhase, Purpose } from './process-phase.js';
import {
  describeExit,
  KILL_CONFIRM_MS,
  serviceEnvironment,
  ServiceProcess,
  settleWithin,
  type Confirmation,
  type ExitInfo,
} from './service-process.js';
import type { RunAs } from './run-as.js';
import type { SpawnFor, SpawnTurns } from './spawn-turns.js';

/** A channel-less service that dies this soon after spawning did not start (bad argv, missing
 * binary behind the lifeline wrapper, which itself always spawns fine). */
export const COLD_SETTLE_MS = 200;

export interface ProcessDriverOptions {
  identity: string;
  node: string;
  logger: Logger;
  /** The agent's per-identity directory (the credential file lives there; the agent writes it). */
  runDir: string;
  /** The agent's lifeline (one per agent process, shared by its drivers). Without it a killed
   * agent leaves its services running: only tests should omit it. */
  lifeline?: Lifeline;
  /** Time for every deadline, backoff and timeout (default: the system clock). */
  clock?: Clock;
  /**
   * What this node lets a spec run, and as whom (the agent config's allow-list and service
   * user): asked right before each spawn, whose executable it then is. Absent (library use,
   * tests): spec.command runs as it is, as this process's user.
   */
  policy?: ExecPolicy;
  /**
   * The agent's spawn turns (one per agent, shared by its drivers): each spawn waits for a pass
   * of the event loop of its own, a cold login's after the warm logins under way. Absent
   * (library use, tests): spawns run at once.
   */
  spawnTurns?: SpawnTurns;
}

/** How the next process is spawned: the allowed argv and the user, when a policy applies. */
export interface LaunchPlan {
  argv?: string[];
  runAs?: RunAs | undefined;
}

export type StartResult =
  | { ok: true; proc: ServiceProcess }
  /** termEnded: refused because the term may no longer act (not a failure of the service). */
  | { ok: false; reason: string; termEnded?: true };

export const TERM_ENDED: StartResult = {
  ok: false,
  reason: 'the term ended (or its logout began) before the service could be started under it',
  termEnded: true,
};

/**
 * The process and how it comes up; the driver (process.ts) adds the term's life on top: login,
 * logout, requests, and what a crash means.
 */
export abstract class ProcessStarter extends EventEmitter {
  readonly mode: 'warm' | 'cold';
  protected readonly log: Logger;
  protected readonly clock: Clock;
  protected proc: ServiceProcess | undefined;
  protected closed = false;
  /** Bumped by login, logout and close: background restarts of an older generation stand down. */
  protected generation = 0;
  protected preparing: Promise<void> | undefined;
  /** Monotonic instant by which a service under the current term must be dead (layer 4). */
  private deadlineAt: number | undefined;
  /** The shared deadline the service joins (the session's), if any. */
  private deadlineName: string | undefined;

  constructor(
    protected readonly spec: ProcessService,
    protected readonly opts: ProcessDriverOptions,
  ) {
    super();
    if (spec.mode === 'warm' && spec.channel !== 'fd3') {
      throw new Error(
        `identity '${opts.identity}': a warm process service needs channel 'fd3' (it is told to log in and out over it); set service.channel to 'fd3' or service.mode to 'cold'`,
      );
    }
    this.mode = spec.mode;
    this.clock = opts.clock ?? systemClock;
    this.log = opts.logger.child({ identity: opts.identity, node: opts.node, component: 'process-driver' });
    if (!opts.lifeline) {
      this.log.warn('no lifeline: the service would outlive this process if it were killed');
    }
  }

  /** Start whatever runs while standing by (the driver's prepare). */
  abstract prepare(): Promise<void>;
  /** A process exited (the driver decides what that means). */
  protected abstract onExit(proc: ServiceProcess, info: ExitInfo, phase: ProcessPhase): void;
  /** A warm standby failed to start or died: start it again with backoff. */
  protected abstract onStandbyCrash(reason: string, ranMs: number): void;

  get pid(): number | undefined {
    return this.proc?.alive ? this.proc.pid : undefined;
  }

  /**
   * Lifeline layer 4: SIGKILL the service `ms` from now unless re-armed; undefined disarms.
   * The deadline is kept, so a process that comes under the term later (a cold login, a warm
   * process told to log in, a restart after a crash) is armed from that moment on, not from the
   * next renewal.
   */
  armDeadline(ms: number | undefined, deadline?: string): void {
    this.deadlineAt = ms === undefined ? undefined : this.clock.monotonicMs() + ms;
    this.deadlineName = ms === undefined ? undefined : deadline;
    const proc = this.proc;
    if (!proc?.alive || proc.pid === undefined) return;
    if (ms === undefined) this.opts.lifeline?.disarm(proc.pid);
    else this.applyDeadline(proc);
  }

  protected applyDeadline(proc: ServiceProcess): void {
    if (this.deadlineAt === undefined || proc.pid === undefined) return;
    // Arming with a passed deadline kills at once: that is what the deadline means. A shared
    // deadline the lifeline already knows keeps its own (later) instant.
    const ms = Math.max(0, this.deadlineAt - this.clock.monotonicMs());
    this.opts.lifeline?.cover(proc.pid, ms, this.deadlineName);
  }

  // ---- starting ------------------------------------------------------------------------

  /**
   * What the next spawn runs, as the policy allows it; throws the refusal (nothing starts).
   * Asked before every spawn, not once: the file system may have changed since the campaign.
   */
  protected async launchPlan(): Promise<LaunchPlan> {
    const policy = this.opts.policy;
    if (!policy) return {};
    const launch = await policy.launch(this.spec, serviceEnvironment(this.spec, this.opts, undefined));
    if (!launch.ok) {
      this.log.error(
        { field: launch.field, reason: launch.reason },
        'service not started: refused by this node',
      );
      throw new Error(`identity '${this.opts.identity}': not started: ${launch.reason}`);
    }
    return { argv: launch.argv, runAs: launch.runAs };
  }

  /** Start a warm process and wait for `ready`. */
  protected async startStandby(): Promise<void> {
    const plan = await this.launchPlan();
    await this.spawnTurn('standby');
    this.assertOpen('start the warm service'); // closed while the policy was asked or the turn awaited
    // A login that came meanwhile started its own process: that one stays, alone.
    if (this.proc?.alive) return;
    const proc = this.spawnProcess('standby', undefined, plan);
    const ready = await proc.awaitMessage('ready', this.spec.startTimeoutMs);
    if (ready.kind === 'ok') {
      proc.move('ready');
      this.log.info({ servicePid: proc.pid }, 'warm service ready');
      return;
    }
    const reason = await this.failStart(proc, ready, 'report ready');
    // A timed-out start was stopped by us, so the exit handler does not count it: do it here.
    if (ready.kind !== 'exited') this.onStandbyCrash(reason, this.clock.monotonicMs() - proc.startedAt);
    throw new Error(`identity '${this.opts.identity}': the warm service did not start: ${reason}`);
  }

  /**
   * Bring the service up logged in under `ctx`: spawn it cold, or reuse (or start) the warm
   * process and send it `login`. On failure the process is stopped before returning. The term
   * is asked whether it may still act synchronously right before each spawn and each login
   * sent (no await in between): a term that ended while we waited starts nothing.
   */
  protected async startUnderTerm(
    ctx: LoginContext,
    purpose: Purpose,
    generation: number,
  ): Promise<StartResult> {
    if (this.mode === 'warm') {
      if (this.proc?.phase !== 'standby') {
        try {
          if (purpose === 'term') {
            // This process is spawned under the term (it carries the term's deadline).
            const plan = this.proc?.alive ? {} : await this.launchPlan();
            if (!this.proc?.alive) await this.spawnTurn('term');
            if (generation !== this.generation) {
              return { ok: false, reason: 'abandoned: a logout came while the service was starting' };
            }
            if (!termMayAct(ctx)) return TERM_ENDED;
            this.assertOpen('start the service');
            if (!this.proc?.alive) await this.startStandbyUnderTerm(plan);
          } else await this.prepare();
        } catch (err) {
          return { ok: false, reason: (err as Error).message };
        }
      }
      const proc = this.proc;
      if (!proc?.alive || proc.phase !== 'standby') {
        return {
          ok: false,
          reason: proc?.alive
            ? `the warm process is ${proc.phase}, not a ready standby`
            : 'the warm process stopped right after it was ready',
        };
      }
      if (generation !== this.generation) {
        // A logout came while the process was starting: it found nothing logged in, so nothing
        // may be. The ready process stays as the standby.
        proc.purpose = 'standby';
        return { ok: false, reason: 'abandoned: a logout came while the service was starting' };
      }
      if (!termMayAct(ctx)) {
        // Ready but not logged in: it stays up as the standby, as after an overtaking logout.
        proc.purpose = 'standby';
        return TERM_ENDED;
      }
      proc.purpose = purpose;
      const step = proc.move('login-sent');
      if (!step.ok) return { ok: false, reason: step.reason };
      // Under the term from now on, whichever process this is (a standby started by this very
      // login was spawned before the deadline could apply to it).
      this.applyDeadline(proc);
      const answer = await proc.exchange(loginMessage(ctx), 'logged-in', this.spec.startTimeoutMs);
      return this.confirmLogin(proc, ctx, answer);
    }
    // Cold: the term is in the environment; with a channel, the login message confirms it too.
    let plan: LaunchPlan;
    try {
      plan = await this.launchPlan();
    } catch (err) {
      return { ok: false, reason: (err as Error).message };
    }
    // A cold login lets the agent's warm logins go first; a restart under the term does not wait.
    await this.spawnTurn('term', purpose === 'login');
    // A logout or close that came while the policy was asked (or the spawn's turn awaited)
    // found nothing to stop: start nothing.
    if (generation !== this.generation || this.closed) {
      return { ok: false, reason: 'abandoned: a logout or close came while the service was starting' };
    }
    if (!termMayAct(ctx)) return TERM_ENDED;
    const proc = this.spawnProcess(purpose, ctx, plan);
    if (this.spec.channel === 'fd3') {
      const answer = await proc.exchange(loginMessage(ctx), 'logged-in', this.spec.startTimeoutMs);
      return this.confirmLogin(proc, ctx, answer);
    }
    // No channel: running is all a cold service can say. Give a broken command a moment to fail.
    if (!(await proc.spawned)) return { ok: false, reason: describeExit(proc.exit!) };
    const early = await settleWithin(proc.exited, COLD_SETTLE_MS, this.clock);
    if (early) return { ok: false, reason: `it ${describeExit(early)} right after starting` };
    return { ok: true, proc };
  }

  /** Warm restart under a term: a failure to become ready is a crash of the term, not of a standby. */
  private async startStandbyUnderTerm(plan: LaunchPlan): Promise<void> {
    const proc = this.spawnProcess('term', undefined, plan);
    const ready = await proc.awaitMessage('ready', this.spec.startTimeoutMs);
    if (ready.kind === 'ok') {
      proc.move('ready');
      return;
    }
    throw new Error(await this.failStart(proc, ready, 'report ready'));
  }

  private async confirmLogin(
    proc: ServiceProcess,
    ctx: LoginContext,
    answer: Confirmation,
  ): Promise<StartResult> {
    if (answer.kind === 'ok') {
      const token = answer.message.type === 'logged-in' ? answer.message.token : undefined;
      if (token === String(ctx.token)) return { ok: true, proc };
      proc.crashReason = `it confirmed login with token ${token}, expected ${ctx.token}`;
      await this.stopFailed(proc);
      return { ok: false, reason: proc.crashReason };
    }
    return { ok: false, reason: await this.failStart(proc, answer, 'confirm login') };
  }

  /** A start step failed: make sure the process is gone (a half-logged-in service must not
   * linger), and say why in words an operator can act on. */
  private async failStart(
    proc: ServiceProcess,
    outcome: Exclude<Confirmation, { kind: 'ok' }>,
    step: string,
  ): Promise<string> {
    const reason =
      outcome.kind === 'exited'
        ? `it ${describeExit(outcome.info)} before it could ${step}`
        : outcome.kind === 'closed'
          ? `it closed its control channel (fd 3) before it could ${step}`
          : `it did not ${step} within ${this.spec.startTimeoutMs} ms (service.startTimeoutMs)`;
    if (proc.alive) {
      proc.crashReason = reason;
      await this.stopFailed(proc);
    }
    return reason;
  }

  /** Stop a process that failed to start; a warm one that a login failed on is replaced. */
  private stopFailed(proc: ServiceProcess): Promise<boolean> {
    const replace = this.mode === 'warm' && proc.purpose === 'login';
    return proc.stop(this.spec.stopTimeoutMs + KILL_CONFIRM_MS, this.spec.stopTimeoutMs, replace);
  }

  /** Wait for this spawn's pass of the loop (spawn-turns.ts); without turns, no pass to wait for. */
  private async spawnTurn(spawnFor: SpawnFor, afterWarmLogins = false): Promise<void> {
    const turns = this.opts.spawnTurns;
    if (turns) await turns.turn(spawnFor, { afterWarmLogins });
  }

  protected spawnProcess(purpose: Purpose, ctx: LoginContext | undefined, plan: LaunchPlan): ServiceProcess {
    const cold = this.mode === 'cold';
    const proc = new ServiceProcess({
      spec: this.spec,
      ...(plan.argv ? { argv: plan.argv } : {}),
      runAs: plan.runAs,
      env: serviceEnvironment(this.spec, this.opts, cold ? ctx : undefined, plan.runAs),
      // A cold service is logging in from its first instant: the token is in its environment.
      phase: cold ? 'logging-in' : 'starting',
      purpose,
      log: this.log,
      clock: this.clock,
      lifeline: this.opts.lifeline,
      onExit: (p, info, phase) => this.onExit(p, info, phase),
    });
    this.proc = proc;
    // Only a process started for a term carries its deadline; a warm standby is not logged in.
    if (purpose !== 'standby') this.applyDeadline(proc);
    return proc;
  }

  protected assertOpen(action: string): void {
    if (this.closed)
      throw new Error(`identity '${this.opts.identity}': cannot ${action}: the driver is closed`);
  }
}

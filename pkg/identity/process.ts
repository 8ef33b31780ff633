// The process driver: runs an identity's service as a supervised child process. Cold services
// start at login (the token in their environment) and stop at logout; warm ones run while
// standing by and are told to log in and out over the control channel on fd 3 (channel.ts).
// A service that crashes while logged in is restarted under the same term with backoff, until
// its restart policy gives up (restart-policy.ts) — but only while the term may still act:
// nothing is started or logged in under a term that has ended (LoginContext.mayAct, checked
// right before each start). One process at a time (service-process.ts), moved through the
// phases of process-phase.ts; what its exit means is decided there too. Every child runs in its
// own process group, so stopping the service stops whatever it started, and under the agent's
// lifeline (lifeline.ts). Every deadline here runs on the injected clock's monotonic time.
import type { ProcessService } from '../spec/schema.js';
import { checkCredentialFile, handCredentialTo } from './credential.js';
import {
  termMayAct,
  type IdentityDriver,
  type LoginContext,
  type ServiceReply,
  type ServiceRequest,
} from './driver.js';
import { decideExit, LOGIN_PHASES, type ProcessPhase } from './process-phase.js';
import { ProcessStarter, type ProcessDriverOptions } from './process-start.js';
import { ReasonLog } from './reason-log.js';
import { decideStandbyCrash, decideTermCrash } from './restart-policy.js';
import { describeExit, type ExitInfo, type ServiceProcess } from './service-process.js';

// The restart schedule's pure rules, and the options, where callers have always found them.
export { COLD_SETTLE_MS, type ProcessDriverOptions } from './process-start.js';
export { backoffDelayMs, countCrash, restartDecision, type RestartDecision } from './restart-policy.js';

/** Share of a warm logout budget for the polite logout; the rest is for killing the process. */
const POLITE_LOGOUT_SHARE = 0.5;

const NO_CHANNEL_REPLY: ServiceReply = {
  body: 'this service takes no commands over NATS',
  error: 'unknown-command',
};

export class ProcessDriver extends ProcessStarter implements IdentityDriver {
  /** The term we are logged in under (also while a crashed service is being restarted). */
  private ctx: LoginContext | undefined;
  /** Consecutive crashes under the current term. */
  private crashes = 0;
  /** Consecutive crashes of the warm process while standing by (backoff only, never gives up). */
  private standbyCrashes = 0;
  /** The restart policy gave up: stay stopped until logout, login or prepare. */
  private failed = false;
  private cancelRestart: (() => void) | undefined;
  /** Stops listening to the current term's signal (set while logged in with one). */
  private unwatchTerm: (() => void) | undefined;
  /** Background warm starts that fail, logged once per change of reason. */
  private readonly warmRetry: ReasonLog;

  constructor(spec: ProcessService, opts: ProcessDriverOptions) {
    super(spec, opts);
    this.warmRetry = new ReasonLog(this.log, 'starting the warm service in the background');
  }

  override async prepare(): Promise<void> {
    if (this.mode === 'cold') return;
    this.assertOpen('prepare');
    if (this.ctx) return; // logged in: the process runs under the term, not as a standby
    this.failed = false;
    // A process that runs and is not a standby still starting needs nothing (a stopping one is
    // replaced by its stop, when asked for).
    if (this.proc?.alive && !this.preparing) return;
    this.clearRestart();
    this.preparing ??= this.startStandby().finally(() => (this.preparing = undefined));
    return this.preparing;
  }

  async login(ctx: LoginContext): Promise<void> {
    this.assertOpen('log in');
    if (this.ctx) {
      if (this.ctx.token === ctx.token && !this.failed) return;
      throw new Error(
        `identity '${this.opts.identity}': already logged in under token ${this.ctx.token}; log out before logging in again`,
      );
    }
    // The generation is taken before the first await: a logout that comes while this login
    // is on its way must make it stand down, or it would log in after the logout was done.
    const generation = ++this.generation;
    if (ctx.credentialFile) await this.handOverCredential(ctx.credentialFile);
    if (generation !== this.generation) {
      throw new Error(`identity '${this.opts.identity}': login abandoned: a logout or close came first`);
    }
    this.clearRestart();
    this.failed = false;
    this.crashes = 0;
    const result = await this.startUnderTerm(ctx, 'login', generation);
    if (generation !== this.generation) {
      // logout() or close() ran meanwhile and stopped (or is stopping) what we started.
      throw new Error(`identity '${this.opts.identity}': login abandoned: a logout or close came first`);
    }
    if (!result.ok) {
      if (result.termEnded) {
        throw new Error(`identity '${this.opts.identity}': not logged in: ${result.reason}`);
      }
      throw new Error(
        `identity '${this.opts.identity}': the service did not log in: ${result.reason}. Check its output in this log; if it is just slow, raise service.startTimeoutMs (${this.spec.startTimeoutMs} ms)`,
      );
    }
    if (!this.confirmLoggedIn(result.proc)) {
      throw new Error(
        `identity '${this.opts.identity}': login abandoned: the service is no longer logging in`,
      );
    }
    this.ctx = ctx;
    this.watchTerm(ctx);
    this.log.info({ servicePid: result.proc.pid, token: String(ctx.token) }, 'service logged in');
  }

  /** The credential file goes to the service user (when services run as one), then is checked. */
  private async handOverCredential(file: string): Promise<void> {
    const runAs = await this.opts.policy?.runAs();
    if (runAs && !runAs.ok)
      throw new Error(`identity '${this.opts.identity}': not logged in: ${runAs.reason}`);
    const user = runAs?.switchTo;
    if (user) await handCredentialTo(file, user, this.opts.runDir);
    await checkCredentialFile(this.opts.identity, file, user?.uid);
  }

  /**
   * The login was confirmed and nothing overtook it: requests may go to the process. Only a
   * logout or close moves a process out of logging-in, and both change the generation the
   * caller has just checked, so a refusal here is a bug; nothing is served then.
   */
  private confirmLoggedIn(proc: ServiceProcess): boolean {
    const step = proc.move('login-confirmed');
    if (!step.ok) {
      this.log.error({ servicePid: proc.pid, reason: step.reason }, 'login confirmation refused (a bug)');
      return false;
    }
    proc.purpose = 'term';
    return true;
  }

  /** The term's logout has begun: a restart waiting for its backoff must not fire. */
  private watchTerm(ctx: LoginContext): void {
    const signal = ctx.signal;
    if (!signal) return;
    const onAbort = () => {
      if (this.ctx !== ctx || this.cancelRestart === undefined) return;
      this.clearRestart();
      this.log.info({ token: String(ctx.token) }, 'the term is logging out: pending restart cancelled');
    };
    signal.addEventListener('abort', onAbort, { once: true });
    this.unwatchTerm = () => signal.removeEventListener('abort', onAbort);
  }

  async logout(budgetMs: number): Promise<boolean> {
    const deadline = this.clock.monotonicMs() + budgetMs;
    this.generation++;
    this.clearRestart();
    this.unwatchTerm?.();
    this.unwatchTerm = undefined;
    const wasIn = this.ctx !== undefined;
    this.ctx = undefined;
    this.crashes = 0;
    this.failed = false;
    const proc = this.proc;
    if (!proc?.alive || !mayBeLoggedIn(proc.phase)) {
      // Nothing is logged in. A warm service that died under the term comes back as a standby.
      if (!proc?.alive && wasIn && !this.closed) this.scheduleStandby(0);
      return true;
    }
    const warm = this.mode === 'warm';
    if (warm && proc.phase !== 'stopping' && proc.move('logout-sent').ok) {
      const politeMs = Math.floor(budgetMs * POLITE_LOGOUT_SHARE);
      const answer = await proc.exchange({ type: 'logout' }, 'logged-out', politeMs);
      if (answer.kind === 'ok') {
        // A close that began meanwhile is stopping it: either way it is not logged in.
        proc.move('logout-confirmed');
        proc.purpose = 'standby';
        this.log.info({ servicePid: proc.pid }, 'service logged out; the warm process stays up');
        return true;
      }
      if (answer.kind !== 'exited') {
        this.log.warn(
          { servicePid: proc.pid, outcome: answer.kind, politeMs },
          'the service did not confirm logout; stopping the process',
        );
      }
    }
    const stopped = await proc.stop(deadline - this.clock.monotonicMs(), this.spec.stopTimeoutMs, warm);
    if (stopped) this.log.info({ servicePid: proc.pid }, 'service logged out (process stopped)');
    return stopped;
  }

  async handle(req: ServiceRequest, timeoutMs: number): Promise<ServiceReply> {
    if (this.spec.channel === 'none') return NO_CHANNEL_REPLY;
    const proc = this.proc;
    if (!proc?.alive || proc.phase !== 'serving' || !proc.channel) {
      const body = this.failed
        ? 'the service failed and was given up on this node'
        : this.ctx
          ? 'the service is restarting; retry'
          : 'the service is not logged in on this node';
      return { body, error: 'unavailable' };
    }
    return proc.channel.request(req, timeoutMs);
  }

  /**
   * Can the logged-in service serve right now? Not when it is stopped (SIGSTOP), traced or a
   * zombie, nor when it speaks the channel and does not answer a status round trip in time.
   * The agent answers PING only when this holds, so a frozen service stops answering for the
   * identity even though its agent keeps the lease, and the controller can see it.
   */
  async alive(timeoutMs: number): Promise<boolean> {
    return (await this.proc?.servesNow(timeoutMs)) ?? false;
  }

  /** Ask the running service to hold its state still (see ChannelClient.quiesce). */
  async quiesce(timeoutMs: number): Promise<(() => void) | undefined> {
    const channel = this.proc?.alive ? this.proc.channel : undefined;
    return channel ? channel.quiesce(timeoutMs) : undefined;
  }

  async status(timeoutMs: number): Promise<Record<string, unknown>> {
    const channel = this.proc?.alive ? this.proc.channel : undefined;
    if (!channel) return {};
    return channel.status(timeoutMs);
  }

  async close(budgetMs: number): Promise<void> {
    this.closed = true;
    this.generation++;
    this.clearRestart();
    this.unwatchTerm?.();
    this.unwatchTerm = undefined;
    this.ctx = undefined;
    const proc = this.proc;
    if (!proc?.alive) return;
    if (!(await proc.stop(budgetMs, this.spec.stopTimeoutMs))) {
      this.log.error({ servicePid: proc.pid, budgetMs }, 'the service did not stop within the close budget');
    }
  }

  // ---- exits and restarts ------------------------------------------------------------------

  protected onExit(proc: ServiceProcess, info: ExitInfo, phase: ProcessPhase): void {
    if (this.proc === proc) this.proc = undefined;
    const crash = proc.crashReason ?? describeExit(info);
    const ranMs = this.clock.monotonicMs() - proc.startedAt;
    const outcome = decideExit({
      phase,
      purpose: proc.purpose,
      warm: this.mode === 'warm',
      closed: this.closed,
      termHeld: this.ctx !== undefined,
      standbyAfterStop: proc.startsStandbyAfterStop,
    });
    const fields = {
      servicePid: proc.pid,
      code: info.code,
      signal: info.signal,
      ranMs,
      purpose: proc.purpose,
    };
    if (outcome.kind === 'stopped') {
      this.log.info({ ...fields, why: outcome.reason }, 'service stopped');
      if (outcome.startStandby) this.scheduleStandby(0);
      return;
    }
    this.log.warn(
      { ...fields, reason: crash, outcome: outcome.kind, why: outcome.reason },
      'service exited unexpectedly',
    );
    if (outcome.kind === 'term-crash' && this.ctx) this.onTermCrash(this.ctx, crash, ranMs);
    else if (outcome.kind === 'standby-crash') this.onStandbyCrash(crash, ranMs);
  }

  private onTermCrash(ctx: LoginContext, crash: string, ranMs: number): void {
    const decision = decideTermCrash(
      { previous: this.crashes, ranMs, termMayAct: termMayAct(ctx), crash },
      this.spec.restart,
    );
    this.crashes = decision.crashes;
    if (decision.action === 'term-ended') {
      this.log.warn(
        { reason: crash, token: String(ctx.token) },
        'service crashed after its term ended; not restarting it (the term is being logged out)',
      );
      return;
    }
    if (decision.action === 'give-up') {
      this.failed = true;
      this.log.error({ reason: decision.reason }, 'service failed while logged in');
      this.emit('failed', { reason: decision.reason });
      return;
    }
    const { attempt, delayMs } = decision;
    this.log.warn(
      { attempt, delayMs, reason: crash },
      'service crashed while logged in; restarting it under the same term',
    );
    this.emit('restarting', { attempt, delayMs, reason: crash });
    const generation = this.generation;
    this.cancelRestart = this.clock.after(delayMs, () => {
      this.cancelRestart = undefined;
      void this.restartUnderTerm(generation);
    });
  }

  private async restartUnderTerm(generation: number): Promise<void> {
    const ctx = this.ctx;
    if (generation !== this.generation || this.closed || !ctx) return;
    const started = this.clock.monotonicMs();
    const result = await this.startUnderTerm(ctx, 'term', generation);
    if (generation !== this.generation) return; // logged out meanwhile; logout stopped the process
    if (!result.ok && result.termEnded) {
      this.log.warn(
        { token: String(ctx.token) },
        'restart abandoned: the term ended before the service was logged in again; it stays logged out',
      );
      return;
    }
    if (result.ok) {
      if (!this.confirmLoggedIn(result.proc)) return;
      this.log.info(
        { servicePid: result.proc.pid, token: String(ctx.token) },
        'service restarted and logged in again',
      );
      return;
    }
    // An exit during the restart was already counted by onExit (its purpose is 'term');
    // a start we stopped for timing out was not.
    if (this.proc === undefined && this.cancelRestart === undefined && !this.failed) {
      this.onTermCrash(ctx, result.reason, this.clock.monotonicMs() - started);
    }
  }

  protected onStandbyCrash(reason: string, ranMs: number): void {
    if (this.closed || this.ctx || this.mode !== 'warm') return;
    const decision = decideStandbyCrash(this.standbyCrashes, ranMs, this.spec.restart);
    this.standbyCrashes = decision.crashes;
    this.log.warn(
      { attempt: decision.crashes, delayMs: decision.delayMs, reason },
      'the warm service stopped while standing by; starting it again',
    );
    this.scheduleStandby(decision.delayMs);
  }

  private scheduleStandby(delayMs: number): void {
    if (this.mode !== 'warm' || this.closed || this.cancelRestart) return;
    const generation = this.generation;
    this.cancelRestart = this.clock.after(delayMs, () => {
      this.cancelRestart = undefined;
      if (generation !== this.generation || this.closed || this.ctx) return;
      this.prepare().then(
        () => this.warmRetry.ok(),
        // The failure was also counted as a standby crash, which schedules the next attempt.
        (err: Error) => this.warmRetry.fail(err.message),
      );
    });
  }

  private clearRestart(): void {
    this.cancelRestart?.();
    this.cancelRestart = undefined;
  }
}

/** Might a process in `phase` be running under the shared name (so a logout must reach it)? A
 * process being stopped is, as far as anyone can tell, until it is gone. */
function mayBeLoggedIn(phase: ProcessPhase): boolean {
  return LOGIN_PHASES.has(phase) || phase === 'stopping';
}

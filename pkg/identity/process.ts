// The process driver: runs an identity's service as a supervised child process. Cold services
// start at login (the token in their environment) and stop at logout; warm ones run while
// standing by and are told to log in and out over the control channel on fd 3 (channel.ts).
// A service that crashes while logged in is restarted under the same term with backoff, until
// its restart policy gives up — but only while the term may still act: nothing is started or
// logged in under a term that has ended (LoginContext.mayAct, checked right before each start).
// Every child runs in its own process group, so stopping the service stops whatever it started,
// and under the agent's lifeline (lifeline.ts).
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { readFile, stat } from 'node:fs/promises';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { ProcessService } from '../spec/schema.js';
import { encodeMessage, LineFramer, messageReader, ServiceMessage, type AgentMessage } from './channel.js';
import {
  termMayAct,
  type IdentityDriver,
  type LoginContext,
  type ServiceReply,
  type ServiceRequest,
} from './driver.js';
import { groupRunning, signalGroup, type Lifeline } from './lifeline.js';

/** A channel-less service that dies this soon after spawning did not start (bad argv, missing
 * binary behind the lifeline wrapper, which itself always spawns fine). */
export const COLD_SETTLE_MS = 200;
/** Kept free at the end of a stop budget for SIGKILL to take effect and the exit to be seen. */
const KILL_CONFIRM_MS = 250;
/** Share of a warm logout budget for the polite logout; the rest is for killing the process. */
const POLITE_LOGOUT_SHARE = 0.5;
/** Checks for a process group's last members while confirming a stop; short against budgets. */
const GROUP_POLL_MS = 20;
/** After a service exits, how long its leftovers (already sent SIGKILL) may take to vanish before
 * the lifeline forgets the group anyway; only D-state processes take this long. */
const GROUP_SWEEP_MAX_MS = 5_000;
/** A service that closes fd 3 but keeps running this long cannot be controlled: it is killed. The
 * pause lets an exiting process (which closes fd 3 a moment before its exit is seen) just exit. */
const CHANNEL_CLOSE_GRACE_MS = 200;
/** Longest line of service output logged as one record; longer lines are dropped and counted. */
const OUTPUT_MAX_LINE_BYTES = 64 * 1024;

/**
 * The agent's own environment is not inherited: it may hold the agent's secrets (etcd or NATS
 * credentials). Only these pass through; everything else a service needs goes in `service.env`.
 */
const INHERITED_ENV = ['PATH', 'HOME', 'USER', 'LOGNAME', 'LANG', 'LC_ALL', 'LC_CTYPE', 'TZ', 'TMPDIR'];
/** Login-only variables: a warm process starts before any login and must not carry stale ones. */
const LOGIN_ENV = ['UNDERSTUDY_TOKEN', 'UNDERSTUDY_CREDENTIAL_FILE'];

const NO_CHANNEL_REPLY: ServiceReply = {
  body: 'this service takes no commands over NATS',
  error: 'unknown-command',
};

type RestartPolicy = ProcessService['restart'];

// ---- restart schedule (pure) ----------------------------------------------------------

/** Delay before restart attempt `attempt` (1-based): backoffMs, doubling, capped at maxBackoffMs. */
export function backoffDelayMs(
  attempt: number,
  policy: Pick<RestartPolicy, 'backoffMs' | 'maxBackoffMs'>,
): number {
  const doublings = Math.min(Math.max(attempt - 1, 0), 30); // 2^30 × 10 ms is past any cap
  return Math.min(policy.maxBackoffMs, policy.backoffMs * 2 ** doublings);
}

/** Consecutive crashes after one more: a run of at least resetAfterMs was healthy, so it starts over. */
export function countCrash(previous: number, ranMs: number, resetAfterMs: number): number {
  return (ranMs >= resetAfterMs ? 0 : previous) + 1;
}

export type RestartDecision =
  | { action: 'restart'; attempt: number; delayMs: number }
  | { action: 'give-up'; crashes: number }
  | { action: 'term-ended' };

/**
 * maxAttempts restarts are tried; the crash after the last one gives the identity up. A crash
 * once the term may no longer act is not restarted at all: a restart would log in under a term
 * whose key may already be someone else's (S3). Nor is it a give-up: the term's end, not the
 * service, is what the runner is already handling.
 */
export function restartDecision(
  crashes: number,
  policy: RestartPolicy,
  termMayActNow = true,
): RestartDecision {
  if (!termMayActNow) return { action: 'term-ended' };
  if (crashes > policy.maxAttempts) return { action: 'give-up', crashes };
  return { action: 'restart', attempt: crashes, delayMs: backoffDelayMs(crashes, policy) };
}

// ---- one child process ----------------------------------------------------------------

interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all. */
  error?: Error;
}

function describeExit(info: ExitInfo): string {
  if (info.error) return `could not start (${info.error.message})`;
  if (info.signal) return `killed by ${info.signal}`;
  return `exited with code ${info.code}`;
}

/** What a process is for; decides what its unexpected exit means. */
type Role =
  /** Warm, standing by (or starting to): a crash restarts it warm, with backoff. */
  | 'standby'
  /** Being logged in by login(): a failure rejects login, nothing restarts it. */
  | 'login'
  /** Under a term (logged in, or being restarted under it): a crash counts towards give-up. */
  | 'serving';

class Run {
  readonly startedAt = Date.now();
  role: Role;
  /** We are stopping it: its exit is not a crash. */
  stopping = false;
  /** After a deliberate stop of a warm process, start a fresh standby. */
  prepareAfterStop = false;
  /** Warm: it sent `ready`. */
  ready = false;
  /** A login was sent (or given in the environment): logging out means something. */
  loginSent = false;
  /** Login confirmed: requests may go to it. */
  loggedIn = false;
  /** Why it was killed, when we killed it for misbehaving (reported instead of the signal). */
  crashReason: string | undefined;
  exitInfo: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  readonly spawned: Promise<boolean>;
  channel: ChannelClient | undefined;
  private markExited!: (info: ExitInfo) => void;

  constructor(
    readonly proc: ChildProcess,
    role: Role,
  ) {
    this.role = role;
    this.exited = new Promise((resolve) => (this.markExited = resolve));
    this.spawned = new Promise((resolve) => {
      proc.once('spawn', () => resolve(true));
      void this.exited.then(() => resolve(false));
    });
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  setExited(info: ExitInfo): void {
    if (this.exitInfo) return;
    this.exitInfo = info;
    this.markExited(info);
  }
}

// ---- the agent's end of the control channel ---------------------------------------------

type ControlReply = 'ready' | 'logged-in' | 'logged-out';

class ChannelClient {
  closed = false;
  private readonly waiters = new Set<{
    type: ControlReply;
    resolve: (m: ServiceMessage | undefined) => void;
  }>();
  private readonly replies = new Map<string, Set<(reply: ServiceReply) => void>>();
  private readonly statuses = new Map<string, (fields: Record<string, unknown>) => void>();
  private statusSeq = 0;

  constructor(
    private readonly socket: Socket,
    private readonly log: Logger,
    onClose: () => void,
  ) {
    const reader = messageReader(
      ServiceMessage,
      (message) => this.dispatch(message),
      (problem, line) =>
        log.warn({ problem, line: line?.slice(0, 200) }, 'ignoring an invalid line from the service on fd 3'),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('end', () => reader.end());
    socket.on('error', (err) => log.debug({ err: err.message }, 'control channel error'));
    socket.on('close', () => {
      this.closed = true;
      for (const waiter of this.waiters) waiter.resolve(undefined);
      this.waiters.clear();
      for (const [, waiting] of this.replies) {
        for (const resolve of waiting)
          resolve({ body: 'the service stopped before answering', error: 'unavailable' });
      }
      this.replies.clear();
      for (const [, resolve] of this.statuses) resolve({});
      this.statuses.clear();
      onClose();
    });
  }

  send(message: AgentMessage): boolean {
    if (this.closed || !this.socket.writable) return false;
    this.socket.write(encodeMessage(message));
    return true;
  }

  /** The next message of `type`, or undefined if the channel closes first. */
  next(type: ControlReply): { message: Promise<ServiceMessage | undefined>; cancel: () => void } {
    if (this.closed) return { message: Promise.resolve(undefined), cancel: () => undefined };
    let entry!: { type: ControlReply; resolve: (m: ServiceMessage | undefined) => void };
    const message = new Promise<ServiceMessage | undefined>((resolve) => {
      entry = { type, resolve };
      this.waiters.add(entry);
    });
    return { message, cancel: () => this.waiters.delete(entry) };
  }

  /**
   * Send a request and await its reply. A request whose id is already waiting for an answer (a
   * redelivered durable request) is not sent twice: both callers get the one answer.
   */
  request(req: ServiceRequest, timeoutMs: number): Promise<ServiceReply> {
    if (this.closed) return Promise.resolve({ body: 'the service is not running', error: 'unavailable' });
    return new Promise((resolve) => {
      let waiting = this.replies.get(req.id);
      const first = waiting === undefined;
      if (!waiting) this.replies.set(req.id, (waiting = new Set()));
      const set = waiting;
      const answer = (reply: ServiceReply) => {
        clearTimeout(timer);
        resolve(reply);
      };
      const timer = setTimeout(() => {
        set.delete(answer);
        if (set.size === 0 && this.replies.get(req.id) === set) this.replies.delete(req.id);
        resolve({ body: `the service did not answer within ${timeoutMs} ms`, error: 'unavailable' });
      }, timeoutMs);
      set.add(answer);
      if (first) {
        const sent = this.send({
          type: 'request',
          id: req.id,
          command: req.command,
          ...(req.caller !== undefined ? { caller: req.caller } : {}),
        });
        if (!sent) answer({ body: 'the service is not running', error: 'unavailable' });
      }
    });
  }

  async status(timeoutMs: number): Promise<Record<string, unknown>> {
    return (await this.askStatus(timeoutMs)) ?? {};
  }

  /** Does the service answer on its channel within `timeoutMs`? (a hung service does not) */
  async answers(timeoutMs: number): Promise<boolean> {
    return (await this.askStatus(timeoutMs)) !== undefined;
  }

  /** A status round trip; undefined when the service does not answer in time. */
  private askStatus(timeoutMs: number): Promise<Record<string, unknown> | undefined> {
    const id = `status-${++this.statusSeq}`;
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.statuses.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.statuses.set(id, (fields) => {
        clearTimeout(timer);
        this.statuses.delete(id);
        resolve(fields);
      });
      if (!this.send({ type: 'status', id })) {
        clearTimeout(timer);
        this.statuses.delete(id);
        resolve(undefined);
      }
    });
  }

  private dispatch(message: ServiceMessage): void {
    switch (message.type) {
      case 'reply': {
        const waiting = this.replies.get(message.id);
        if (!waiting) {
          this.log.debug({ id: message.id }, 'reply to a request nobody waits for (timed out?)');
          return;
        }
        this.replies.delete(message.id);
        const reply: ServiceReply = {
          body: message.body,
          ...(message.error ? { error: message.error } : {}),
        };
        for (const resolve of waiting) resolve(reply);
        return;
      }
      case 'status':
        this.statuses.get(message.id)?.(message.fields);
        return;
      default: {
        const waiter = [...this.waiters].find((w) => w.type === message.type);
        if (!waiter) {
          this.log.debug({ type: message.type }, 'unsolicited control message from the service');
          return;
        }
        this.waiters.delete(waiter);
        waiter.resolve(message);
      }
    }
  }
}

// ---- the driver -----------------------------------------------------------------------

export interface ProcessDriverOptions {
  identity: string;
  node: string;
  logger: Logger;
  /** The agent's per-identity directory (the credential file lives there; the agent writes it). */
  runDir: string;
  /** The agent's lifeline (one per agent process, shared by its drivers). Without it a killed
   * agent leaves its services running: only tests should omit it. */
  lifeline?: Lifeline;
}

type Confirmation =
  | { kind: 'ok'; message: ServiceMessage }
  | { kind: 'exited'; info: ExitInfo }
  | { kind: 'closed' }
  | { kind: 'timeout' };

type StartResult =
  | { ok: true; run: Run }
  /** termEnded: refused because the term may no longer act (not a failure of the service). */
  | { ok: false; reason: string; termEnded?: true };

const TERM_ENDED: StartResult = {
  ok: false,
  reason: 'the term ended (or its logout began) before the service could be started under it',
  termEnded: true,
};

export class ProcessDriver extends EventEmitter implements IdentityDriver {
  readonly mode: 'warm' | 'cold';
  private readonly log: Logger;
  private run: Run | undefined;
  /** The term we are logged in under (also while a crashed service is being restarted). */
  private ctx: LoginContext | undefined;
  /** Consecutive crashes under the current term. */
  private crashes = 0;
  /** Consecutive crashes of the warm process while standing by (backoff only, never gives up). */
  private standbyCrashes = 0;
  /** The restart policy gave up: stay stopped until logout, login or prepare. */
  private failed = false;
  private closed = false;
  /** Bumped by login, logout and close: background restarts of an older generation stand down. */
  private generation = 0;
  private restartTimer: NodeJS.Timeout | undefined;
  private preparing: Promise<void> | undefined;
  /** performance.now() by which a service under the current term must be dead (layer 4). */
  private deadlineAt: number | undefined;
  /** Stops listening to the current term's signal (set while logged in with one). */
  private unwatchTerm: (() => void) | undefined;

  constructor(
    private readonly spec: ProcessService,
    private readonly opts: ProcessDriverOptions,
  ) {
    super();
    if (spec.mode === 'warm' && spec.channel !== 'fd3') {
      throw new Error(
        `identity '${opts.identity}': a warm process service needs channel 'fd3' (it is told to log in and out over it); set service.channel to 'fd3' or service.mode to 'cold'`,
      );
    }
    this.mode = spec.mode;
    this.log = opts.logger.child({ identity: opts.identity, node: opts.node, component: 'process-driver' });
    if (!opts.lifeline) {
      this.log.warn('no lifeline: the service would outlive this process if it were killed');
    }
  }

  get pid(): number | undefined {
    return this.run?.alive ? this.run.pid : undefined;
  }

  /**
   * Lifeline layer 4: SIGKILL the service `ms` from now unless re-armed; undefined disarms.
   * The deadline is kept, so a process started under the term later (a cold login, a restart
   * after a crash) is armed from its first moment, not from the next renewal.
   */
  armDeadline(ms: number | undefined): void {
    this.deadlineAt = ms === undefined ? undefined : performance.now() + ms;
    const run = this.run;
    if (!run?.alive || run.pid === undefined) return;
    if (ms === undefined) this.opts.lifeline?.disarm(run.pid);
    else this.applyDeadline(run.pid);
  }

  private applyDeadline(pid: number): void {
    if (this.deadlineAt === undefined) return;
    // Arming with a passed deadline kills at once: that is what the deadline means.
    this.opts.lifeline?.arm(pid, Math.max(0, this.deadlineAt - performance.now()));
  }

  async prepare(): Promise<void> {
    if (this.mode === 'cold') return;
    this.assertOpen('prepare');
    if (this.ctx) return; // logged in: the process runs under the term, not as a standby
    this.failed = false;
    if (this.run?.alive && (this.run.ready || this.run.role !== 'standby')) return;
    this.clearRestartTimer();
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
    if (ctx.credentialFile) await this.checkCredentialFile(ctx.credentialFile);
    if (generation !== this.generation) {
      throw new Error(`identity '${this.opts.identity}': login abandoned: a logout or close came first`);
    }
    this.clearRestartTimer();
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
    result.run.role = 'serving';
    result.run.loggedIn = true;
    this.ctx = ctx;
    this.watchTerm(ctx);
    this.log.info({ servicePid: result.run.pid, token: String(ctx.token) }, 'service logged in');
  }

  /** The term's logout has begun: a restart waiting for its backoff must not fire. */
  private watchTerm(ctx: LoginContext): void {
    const signal = ctx.signal;
    if (!signal) return;
    const onAbort = () => {
      if (this.ctx !== ctx || this.restartTimer === undefined) return;
      this.clearRestartTimer();
      this.log.info({ token: String(ctx.token) }, 'the term is logging out: pending restart cancelled');
    };
    signal.addEventListener('abort', onAbort, { once: true });
    this.unwatchTerm = () => signal.removeEventListener('abort', onAbort);
  }

  async logout(budgetMs: number): Promise<boolean> {
    const deadline = Date.now() + budgetMs;
    this.generation++;
    this.clearRestartTimer();
    this.unwatchTerm?.();
    this.unwatchTerm = undefined;
    const wasIn = this.ctx !== undefined;
    this.ctx = undefined;
    this.crashes = 0;
    this.failed = false;
    const run = this.run;
    if (!run?.alive || !run.loginSent) {
      // Nothing is logged in. A warm service that died under the term comes back as a standby.
      if (!run?.alive && wasIn && !this.closed) this.scheduleStandby(0);
      return true;
    }
    if (this.mode === 'warm') {
      const politeMs = Math.floor(budgetMs * POLITE_LOGOUT_SHARE);
      const answer = await this.exchange(run, { type: 'logout' }, 'logged-out', politeMs);
      if (answer.kind === 'ok') {
        run.role = 'standby';
        run.loginSent = false;
        run.loggedIn = false;
        this.log.info({ servicePid: run.pid }, 'service logged out; the warm process stays up');
        return true;
      }
      if (answer.kind !== 'exited') {
        this.log.warn(
          { servicePid: run.pid, outcome: answer.kind, politeMs },
          'the service did not confirm logout; stopping the process',
        );
      }
      run.prepareAfterStop = true;
    }
    const stopped = await this.stop(run, deadline - Date.now());
    if (stopped) this.log.info({ servicePid: run.pid }, 'service logged out (process stopped)');
    return stopped;
  }

  async handle(req: ServiceRequest, timeoutMs: number): Promise<ServiceReply> {
    if (this.spec.channel === 'none') return NO_CHANNEL_REPLY;
    const run = this.run;
    if (!run?.alive || !run.loggedIn || !run.channel) {
      const body = this.failed
        ? 'the service failed and was given up on this node'
        : this.ctx
          ? 'the service is restarting; retry'
          : 'the service is not logged in on this node';
      return { body, error: 'unavailable' };
    }
    return run.channel.request(req, timeoutMs);
  }

  /**
   * Can the logged-in service serve right now? Not when it is stopped (SIGSTOP), traced or a
   * zombie, nor when it speaks the channel and does not answer a status round trip in time.
   * The agent answers PING only when this holds, so a frozen service stops answering for the
   * identity even though its agent keeps the lease, and the controller can see it.
   */
  async alive(timeoutMs: number): Promise<boolean> {
    const run = this.run;
    if (!run?.alive || run.pid === undefined) return false;
    const state = await processState(run.pid);
    if (state !== undefined && NOT_SERVING_STATES.has(state)) return false;
    return run.channel ? run.channel.answers(timeoutMs) : true;
  }

  async status(timeoutMs: number): Promise<Record<string, unknown>> {
    const channel = this.run?.alive ? this.run.channel : undefined;
    if (!channel) return {};
    return channel.status(timeoutMs);
  }

  async close(budgetMs: number): Promise<void> {
    this.closed = true;
    this.generation++;
    this.clearRestartTimer();
    this.unwatchTerm?.();
    this.unwatchTerm = undefined;
    this.ctx = undefined;
    const run = this.run;
    if (!run?.alive) return;
    if (!(await this.stop(run, budgetMs))) {
      this.log.error({ servicePid: run.pid, budgetMs }, 'the service did not stop within the close budget');
    }
  }

  // ---- starting ------------------------------------------------------------------------

  /** Start a warm process and wait for `ready`. */
  private async startStandby(): Promise<void> {
    const run = this.spawnRun('standby');
    const ready = await this.awaitMessage(run, 'ready', this.spec.startTimeoutMs);
    if (ready.kind === 'ok') {
      run.ready = true;
      this.log.info({ servicePid: run.pid }, 'warm service ready');
      return;
    }
    const reason = await this.failStart(run, ready, 'report ready');
    // A timed-out start was stopped by us, so the exit handler does not count it: do it here.
    if (ready.kind !== 'exited') this.onStandbyCrash(reason, Date.now() - run.startedAt);
    throw new Error(`identity '${this.opts.identity}': the warm service did not start: ${reason}`);
  }

  /**
   * Bring the service up logged in under `ctx`: spawn it cold, or reuse (or start) the warm
   * process and send it `login`. On failure the process is stopped before returning. The term
   * is asked whether it may still act synchronously right before each spawn and each login
   * sent (no await in between): a term that ended while we waited starts nothing.
   */
  private async startUnderTerm(ctx: LoginContext, role: Role, generation: number): Promise<StartResult> {
    let run: Run;
    if (this.mode === 'warm') {
      if (!this.run?.alive || !this.run.ready) {
        try {
          if (role === 'serving') {
            // This process is spawned under the term (it carries the term's deadline).
            if (!termMayAct(ctx)) return TERM_ENDED;
            await this.startStandbyUnderTerm();
          } else await this.prepare();
        } catch (err) {
          return { ok: false, reason: (err as Error).message };
        }
      }
      if (!this.run?.alive || !this.run.ready) {
        return { ok: false, reason: 'the warm process stopped right after it was ready' };
      }
      if (generation !== this.generation) {
        // A logout came while the process was starting: it found nothing logged in, so nothing
        // may be. The ready process stays as the standby.
        this.run.role = 'standby';
        return { ok: false, reason: 'abandoned: a logout came while the service was starting' };
      }
      if (!termMayAct(ctx)) {
        // Ready but not logged in: it stays up as the standby, as after an overtaking logout.
        this.run.role = 'standby';
        return TERM_ENDED;
      }
      run = this.run;
      run.role = role;
      run.loginSent = true;
      const answer = await this.exchange(run, loginMessage(ctx), 'logged-in', this.spec.startTimeoutMs);
      return this.confirmLogin(run, ctx, answer);
    }
    // Cold: the term is in the environment; with a channel, the login message confirms it too.
    if (!termMayAct(ctx)) return TERM_ENDED;
    run = this.spawnRun(role, ctx);
    run.loginSent = true;
    if (this.spec.channel === 'fd3') {
      const answer = await this.exchange(run, loginMessage(ctx), 'logged-in', this.spec.startTimeoutMs);
      return this.confirmLogin(run, ctx, answer);
    }
    // No channel: running is all a cold service can say. Give a broken command a moment to fail.
    if (!(await run.spawned)) return { ok: false, reason: describeExit(run.exitInfo!) };
    const early = await settle(run.exited, COLD_SETTLE_MS);
    if (early) return { ok: false, reason: `it ${describeExit(early)} right after starting` };
    return { ok: true, run };
  }

  /** Warm restart under a term: a failure to become ready is a crash of the term, not of a standby. */
  private async startStandbyUnderTerm(): Promise<void> {
    const run = this.spawnRun('serving');
    const ready = await this.awaitMessage(run, 'ready', this.spec.startTimeoutMs);
    if (ready.kind === 'ok') {
      run.ready = true;
      return;
    }
    throw new Error(await this.failStart(run, ready, 'report ready'));
  }

  private async confirmLogin(run: Run, ctx: LoginContext, answer: Confirmation): Promise<StartResult> {
    if (answer.kind === 'ok') {
      const token = answer.message.type === 'logged-in' ? answer.message.token : undefined;
      if (token === String(ctx.token)) return { ok: true, run };
      run.crashReason = `it confirmed login with token ${token}, expected ${ctx.token}`;
      if (this.mode === 'warm' && run.role === 'login') run.prepareAfterStop = true;
      await this.stop(run, this.spec.stopTimeoutMs + KILL_CONFIRM_MS);
      return { ok: false, reason: run.crashReason };
    }
    return { ok: false, reason: await this.failStart(run, answer, 'confirm login') };
  }

  /** A start step failed: make sure the process is gone (a half-logged-in service must not
   * linger), and say why in words an operator can act on. */
  private async failStart(
    run: Run,
    outcome: Exclude<Confirmation, { kind: 'ok' }>,
    step: string,
  ): Promise<string> {
    const reason =
      outcome.kind === 'exited'
        ? `it ${describeExit(outcome.info)} before it could ${step}`
        : outcome.kind === 'closed'
          ? `it closed its control channel (fd 3) before it could ${step}`
          : `it did not ${step} within ${this.spec.startTimeoutMs} ms (service.startTimeoutMs)`;
    if (run.alive) {
      if (this.mode === 'warm' && run.role === 'login') run.prepareAfterStop = true;
      run.crashReason = reason;
      await this.stop(run, this.spec.stopTimeoutMs + KILL_CONFIRM_MS);
    }
    return reason;
  }

  private spawnRun(role: Role, ctx?: LoginContext): Run {
    const argv = this.opts.lifeline ? this.opts.lifeline.wrap(this.spec.command) : [...this.spec.command];
    const fd3 = this.spec.channel === 'fd3';
    const proc = spawn(argv[0]!, argv.slice(1), {
      cwd: this.spec.cwd,
      env: this.environment(this.mode === 'cold' ? ctx : undefined),
      // Own process group (and session): stopping the service reaches everything it started,
      // and the lifeline's reaper can find it all by one id.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', fd3 ? 'pipe' : 'ignore'],
    });
    const run = new Run(proc, role);
    this.run = run;
    const pid = proc.pid;
    if (pid !== undefined) {
      this.opts.lifeline?.register(pid);
      // Only a process started for a term carries its deadline; a warm standby is not logged in.
      if (role !== 'standby') this.applyDeadline(pid);
    }
    const log = this.log.child({ servicePid: pid });
    proc.on('error', (err) => {
      // A spawn failure (no pid) arrives here, maybe instead of 'exit'; other errors are not fatal.
      if (proc.pid === undefined) this.onExit(run, { code: null, signal: null, error: err });
      else log.warn({ err: err.message }, 'service process error');
    });
    proc.once('exit', (code, signal) => this.onExit(run, { code, signal }));
    this.logOutput(proc.stdout, 'stdout', log);
    this.logOutput(proc.stderr, 'stderr', log);
    if (fd3) {
      run.channel = new ChannelClient(proc.stdio[3] as Socket, log, () => this.onChannelClosed(run));
    }
    log.info({ command: this.spec.command, mode: this.mode, role }, 'service started');
    return run;
  }

  private environment(ctx: LoginContext | undefined): NodeJS.ProcessEnv {
    const env: Record<string, string> = {};
    for (const name of INHERITED_ENV) {
      const value = process.env[name];
      if (value !== undefined) env[name] = value;
    }
    Object.assign(env, this.spec.env);
    for (const name of LOGIN_ENV) delete env[name];
    env.UNDERSTUDY_IDENTITY = this.opts.identity;
    env.UNDERSTUDY_NODE = this.opts.node;
    if (ctx) {
      env.UNDERSTUDY_TOKEN = String(ctx.token);
      if (ctx.credentialFile) env.UNDERSTUDY_CREDENTIAL_FILE = ctx.credentialFile;
    }
    return env;
  }

  private async checkCredentialFile(path: string): Promise<void> {
    let info;
    try {
      info = await stat(path);
    } catch (err) {
      throw new Error(
        `identity '${this.opts.identity}': credential file ${path} is not readable (${(err as NodeJS.ErrnoException).code}); the agent must write it before login`,
      );
    }
    if (!info.isFile() || (info.mode & 0o077) !== 0) {
      throw new Error(
        `identity '${this.opts.identity}': credential file ${path} must be a regular file readable by its owner only (mode is ${(info.mode & 0o777).toString(8)}); write it with writeCredentialFile`,
      );
    }
  }

  // ---- talking to the process ------------------------------------------------------------

  private async exchange(
    run: Run,
    message: AgentMessage,
    expect: ControlReply,
    timeoutMs: number,
  ): Promise<Confirmation> {
    if (!run.channel) return { kind: 'closed' };
    const waiter = run.channel.next(expect);
    if (!run.channel.send(message)) {
      waiter.cancel();
      return run.alive ? { kind: 'closed' } : { kind: 'exited', info: run.exitInfo! };
    }
    return this.race(run, waiter, timeoutMs);
  }

  private awaitMessage(run: Run, expect: ControlReply, timeoutMs: number): Promise<Confirmation> {
    if (!run.channel) return Promise.resolve({ kind: 'closed' });
    return this.race(run, run.channel.next(expect), timeoutMs);
  }

  private async race(
    run: Run,
    waiter: { message: Promise<ServiceMessage | undefined>; cancel: () => void },
    timeoutMs: number,
  ): Promise<Confirmation> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race<Confirmation>([
        waiter.message.then((message) => (message ? { kind: 'ok', message } : { kind: 'closed' })),
        run.exited.then((info) => ({ kind: 'exited', info })),
        new Promise(
          (resolve) => (timer = setTimeout(() => resolve({ kind: 'timeout' }), Math.max(0, timeoutMs))),
        ),
      ]);
    } finally {
      clearTimeout(timer);
      waiter.cancel();
    }
  }

  // ---- stopping ------------------------------------------------------------------------

  /**
   * SIGTERM to the process group, SIGKILL after min(stopTimeoutMs, budget − KILL_CONFIRM_MS).
   * True once the process has exited and no member of its group still runs; false if that was
   * not seen within the budget (the caller must assume it may still be logged in).
   */
  private async stop(run: Run, budgetMs: number): Promise<boolean> {
    const deadline = Date.now() + Math.max(0, budgetMs);
    run.stopping = true;
    const pgid = run.pid;
    if (pgid === undefined) return true; // never spawned
    if (run.alive) {
      signalGroup(pgid, 'SIGTERM');
      const termMs = Math.max(0, Math.min(this.spec.stopTimeoutMs, budgetMs - KILL_CONFIRM_MS));
      if (!(await settle(run.exited, termMs))) {
        this.log.warn({ servicePid: pgid, afterMs: termMs }, 'the service ignored SIGTERM; sending SIGKILL');
        signalGroup(pgid, 'SIGKILL');
        if (!(await settle(run.exited, deadline - Date.now()))) {
          this.log.error(
            { servicePid: pgid, budgetMs },
            'the service is still running after SIGKILL (stuck in the kernel?)',
          );
          return false;
        }
      }
    }
    while (await groupRunning(pgid)) {
      if (Date.now() >= deadline) {
        this.log.error(
          { servicePid: pgid, budgetMs },
          'processes the service started are still running after SIGKILL',
        );
        return false;
      }
      await pause(GROUP_POLL_MS);
    }
    return true;
  }

  private onExit(run: Run, info: ExitInfo): void {
    if (!run.alive) return;
    run.setExited(info);
    const pid = run.pid;
    if (pid !== undefined) void this.sweepGroup(pid);
    if (this.run === run) this.run = undefined;
    const reason = run.crashReason ?? describeExit(info);
    const ranMs = Date.now() - run.startedAt;
    const fields = { servicePid: pid, code: info.code, signal: info.signal, ranMs, role: run.role };
    if (run.stopping || this.closed) {
      this.log.info(fields, 'service stopped');
      if (run.prepareAfterStop && !this.closed && !this.ctx) this.scheduleStandby(0);
      return;
    }
    this.log.warn({ ...fields, reason }, 'service exited unexpectedly');
    if (run.role === 'serving' && this.ctx) this.onTermCrash(this.ctx, reason, ranMs);
    else if (this.mode === 'warm') this.onStandbyCrash(reason, ranMs);
    // A cold service failing during login is reported by login() itself.
  }

  /** The leader is gone; what it started must not outlive it (it could still be logged in). */
  private async sweepGroup(pgid: number): Promise<void> {
    const deadline = Date.now() + GROUP_SWEEP_MAX_MS;
    try {
      if (signalGroup(pgid, 'SIGKILL'))
        this.log.debug({ servicePid: pgid }, 'killed processes the service left behind');
      while ((await groupRunning(pgid)) && Date.now() < deadline) await pause(GROUP_POLL_MS);
    } catch (err) {
      this.log.error(
        { servicePid: pgid, err: (err as Error).message },
        'could not sweep the service process group',
      );
    }
    this.opts.lifeline?.unregister(pgid);
  }

  private onChannelClosed(run: Run): void {
    if (!run.alive || run.stopping) return;
    const timer = setTimeout(() => {
      if (!run.alive || run.stopping || run.pid === undefined) return;
      run.crashReason = 'it closed its control channel (fd 3) but kept running';
      this.log.warn({ servicePid: run.pid }, 'the service closed fd 3 and cannot be controlled; killing it');
      signalGroup(run.pid, 'SIGKILL');
    }, CHANNEL_CLOSE_GRACE_MS);
    void run.exited.then(() => clearTimeout(timer));
  }

  // ---- restarting -------------------------------------------------------------------------

  private onTermCrash(ctx: LoginContext, reason: string, ranMs: number): void {
    this.crashes = countCrash(this.crashes, ranMs, this.spec.restart.resetAfterMs);
    const decision = restartDecision(this.crashes, this.spec.restart, termMayAct(ctx));
    if (decision.action === 'term-ended') {
      this.log.warn(
        { reason, token: String(ctx.token) },
        'service crashed after its term ended; not restarting it (the term is being logged out)',
      );
      return;
    }
    if (decision.action === 'give-up') {
      this.failed = true;
      const why = `${reason}; gave up after ${decision.crashes} crashes in a row (service.restart.maxAttempts ${this.spec.restart.maxAttempts})`;
      this.log.error({ reason: why }, 'service failed while logged in');
      this.emit('failed', { reason: why });
      return;
    }
    const { attempt, delayMs } = decision;
    this.log.warn(
      { attempt, delayMs, reason },
      'service crashed while logged in; restarting it under the same term',
    );
    this.emit('restarting', { attempt, delayMs, reason });
    const generation = this.generation;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      void this.restartUnderTerm(generation);
    }, delayMs);
  }

  private async restartUnderTerm(generation: number): Promise<void> {
    const ctx = this.ctx;
    if (generation !== this.generation || this.closed || !ctx) return;
    const started = Date.now();
    const result = await this.startUnderTerm(ctx, 'serving', generation);
    if (generation !== this.generation) return; // logged out meanwhile; logout stopped the process
    if (!result.ok && result.termEnded) {
      this.log.warn(
        { token: String(ctx.token) },
        'restart abandoned: the term ended before the service was logged in again; it stays logged out',
      );
      return;
    }
    if (result.ok) {
      result.run.loggedIn = true;
      this.log.info(
        { servicePid: result.run.pid, token: String(ctx.token) },
        'service restarted and logged in again',
      );
      return;
    }
    // An exit during the restart was already counted by onExit (its role is 'serving');
    // a start we stopped for timing out was not.
    if (this.run === undefined && this.restartTimer === undefined && !this.failed) {
      this.onTermCrash(ctx, result.reason, Date.now() - started);
    }
  }

  private onStandbyCrash(reason: string, ranMs: number): void {
    if (this.closed || this.ctx || this.mode !== 'warm') return;
    this.standbyCrashes = countCrash(this.standbyCrashes, ranMs, this.spec.restart.resetAfterMs);
    const delayMs = backoffDelayMs(this.standbyCrashes, this.spec.restart);
    this.log.warn(
      { attempt: this.standbyCrashes, delayMs, reason },
      'the warm service stopped while standing by; starting it again',
    );
    this.scheduleStandby(delayMs);
  }

  private scheduleStandby(delayMs: number): void {
    if (this.mode !== 'warm' || this.closed || this.restartTimer) return;
    const generation = this.generation;
    this.restartTimer = setTimeout(() => {
      this.restartTimer = undefined;
      if (generation !== this.generation || this.closed || this.ctx) return;
      this.prepare().catch((err: Error) => this.log.debug({ err: err.message }, 'warm restart failed'));
    }, delayMs);
  }

  private clearRestartTimer(): void {
    clearTimeout(this.restartTimer);
    this.restartTimer = undefined;
  }

  private logOutput(stream: Readable | null, name: 'stdout' | 'stderr', log: Logger): void {
    if (!stream) return;
    const framer = new LineFramer(
      (line) => log.info({ stream: name, line }, 'service output'),
      (problem) => log.warn({ stream: name, problem }, 'service output not logged'),
      OUTPUT_MAX_LINE_BYTES,
    );
    stream.on('data', (chunk: Buffer) => framer.push(chunk));
    stream.on('end', () => framer.end());
  }

  private assertOpen(action: string): void {
    if (this.closed)
      throw new Error(`identity '${this.opts.identity}': cannot ${action}: the driver is closed`);
  }
}

function loginMessage(ctx: LoginContext): AgentMessage {
  return {
    type: 'login',
    identity: ctx.identity,
    node: ctx.node,
    token: String(ctx.token),
    ...(ctx.credentialFile ? { credentialFile: ctx.credentialFile } : {}),
  };
}

/** The value of `promise` if it settles within `ms`, else undefined (it keeps running). */
async function settle<T>(promise: Promise<T>, ms: number): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), Math.max(0, ms)))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** /proc states of a process that cannot serve: stopped, traced, zombie, dead. */
const NOT_SERVING_STATES: ReadonlySet<string> = new Set(['T', 't', 'Z', 'X']);

/** The one-letter state of `pid` from /proc (undefined where /proc is not available). */
async function processState(pid: number): Promise<string | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  if (stat === undefined) return undefined;
  // The command name (field 2) may hold spaces and parentheses: the state follows the last ')'.
  return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) || undefined;
}

const pause = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

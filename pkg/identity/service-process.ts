// One service process: spawned in its own process group under the lifeline, its output logged,
// its fd 3 channel attached, its phase (process-phase.ts) moved in one place, and stopped with
// SIGTERM, then SIGKILL, until nothing in its group runs. The driver (process.ts) decides what
// to run and when; this file knows how.
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { ProcessService } from '../spec/schema.js';
import {
  ChannelClient,
  LineFramer,
  type AgentMessage,
  type ControlReply,
  type ServiceMessage,
} from './channel.js';
import type { LoginContext } from './driver.js';
import type { RunAs } from './run-as.js';
import { groupRunning, signalGroup, type Lifeline } from './lifeline.js';
import {
  nextPhase,
  type PhaseStep,
  type ProcessEvent,
  type ProcessPhase,
  type Purpose,
} from './process-phase.js';
import { ProcStat } from './proc-stat.js';

/** Kept free at the end of a stop budget for SIGKILL to take effect and the exit to be seen. */
export const KILL_CONFIRM_MS = 250;
/**
 * How long past a stop's deadline the exit event of a process the kernel shows dead is awaited:
 * it waits behind the timers of a late loop and comes within a turn of it (118 ms late in the
 * benchmark that found this).
 */
const EXIT_EVENT_GRACE_MS = 500;
/** Checks for a process group's last members while confirming a stop; short against budgets. */
const GROUP_POLL_MS = 20;
/** After a service exits, how long its leftovers (already sent SIGKILL) are waited for before
 * it is reported; only D-state processes take this long. The lifeline keeps the group meanwhile. */
const GROUP_SWEEP_MAX_MS = 5_000;
/** How often a group that outlived its sweep is looked at again, until it is gone. */
const GROUP_LINGER_POLL_MS = 1_000;
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

/** /proc states of a process that cannot serve: stopped, traced, zombie, dead. */
const NOT_SERVING_STATES: ReadonlySet<string> = new Set(['T', 't', 'Z', 'X']);
/**
 * A service heard on fd 3 this recently serves without being asked again. PING asked it once
 * per PING: a caller PINGing 100 times a second cost the service 100 status answers, and the
 * first PINGs after a login waited on a round trip when the login's own confirmation had just
 * proved it. Short against any probe interval worth configuring: a service that hangs stops
 * being vouched for this long after it last spoke.
 */
export const LIVENESS_FRESH_MS = 200;

export interface ExitInfo {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** Set when the process could not be spawned at all. */
  error?: Error;
}

export function describeExit(info: ExitInfo): string {
  if (info.error) return `could not start (${info.error.message})`;
  if (info.signal) return `killed by ${info.signal}`;
  return `exited with code ${info.code}`;
}

/** The service's environment: a few inherited variables, its spec's, and who it runs as. */
export function serviceEnvironment(
  spec: Pick<ProcessService, 'env'>,
  who: { identity: string; node: string },
  ctx: LoginContext | undefined,
  runAs?: RunAs,
): NodeJS.ProcessEnv {
  const env: Record<string, string> = {};
  for (const name of INHERITED_ENV) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  if (runAs) {
    // The agent's HOME and USER are not the service's: a service user gets its own.
    env.USER = env.LOGNAME = runAs.user;
    if (runAs.home) env.HOME = runAs.home;
    else delete env.HOME;
  }
  Object.assign(env, spec.env);
  for (const name of LOGIN_ENV) delete env[name];
  env.UNDERSTUDY_IDENTITY = who.identity;
  env.UNDERSTUDY_NODE = who.node;
  if (ctx) {
    env.UNDERSTUDY_TOKEN = String(ctx.token);
    if (ctx.credentialFile) env.UNDERSTUDY_CREDENTIAL_FILE = ctx.credentialFile;
  }
  return env;
}

/** How a message the driver waited for turned out. */
export type Confirmation =
  | { kind: 'ok'; message: ServiceMessage }
  | { kind: 'exited'; info: ExitInfo }
  | { kind: 'closed' }
  | { kind: 'timeout' };

export interface SpawnOptions {
  spec: ProcessService;
  /** The argv to run instead of spec.command (its argv[0] already found and allowed). */
  argv?: readonly string[];
  /** Run as this user and group (the agent must be root); absent: as the agent. */
  runAs?: RunAs | undefined;
  env: NodeJS.ProcessEnv;
  phase: 'starting' | 'logging-in';
  purpose: Purpose;
  log: Logger;
  clock: Clock;
  lifeline: Lifeline | undefined;
  /** Called once when the process has exited, with the phase it was in. */
  onExit: (proc: ServiceProcess, info: ExitInfo, phase: ProcessPhase) => void;
}

export class ServiceProcess {
  readonly startedAt: number;
  readonly exited: Promise<ExitInfo>;
  readonly spawned: Promise<boolean>;
  readonly channel: ChannelClient | undefined;
  readonly log: Logger;
  purpose: Purpose;
  /** Why it was killed, when killed for misbehaving (reported instead of the signal). */
  crashReason: string | undefined;
  private phaseValue: ProcessPhase;
  /** Once stopped, start a fresh standby (the stopping phase's plan; kept once asked for). */
  private standbyAfterStop = false;
  private exitInfo: ExitInfo | undefined;
  private markExited!: (info: ExitInfo) => void;
  private readonly proc: ChildProcess;
  /** Its /proc state, read through a descriptor held until it exits. */
  private readonly stat: ProcStat | undefined;
  /** The status question in flight for servesNow, shared by everyone who asks meanwhile. */
  private asking: Promise<boolean> | undefined;

  constructor(private readonly opts: SpawnOptions) {
    const { spec, clock } = opts;
    this.startedAt = clock.monotonicMs();
    this.phaseValue = opts.phase;
    this.purpose = opts.purpose;
    const command = opts.argv ?? spec.command;
    const argv = opts.lifeline ? opts.lifeline.wrap(command) : [...command];
    const fd3 = spec.channel === 'fd3';
    this.proc = spawn(argv[0]!, argv.slice(1), {
      cwd: spec.cwd,
      env: opts.env,
      // The kernel switches user before exec: setpriv and the start guard already run as it.
      ...(opts.runAs ? { uid: opts.runAs.uid, gid: opts.runAs.gid } : {}),
      // Own process group (and session): stopping the service reaches everything it started,
      // and the lifeline's reaper can find it all by one id.
      detached: true,
      stdio: ['ignore', 'pipe', 'pipe', fd3 ? 'pipe' : 'ignore'],
    });
    const proc = this.proc;
    this.exited = new Promise((resolve) => (this.markExited = resolve));
    this.spawned = new Promise((resolve) => {
      proc.once('spawn', () => resolve(true));
      void this.exited.then(() => resolve(false));
    });
    if (proc.pid !== undefined) opts.lifeline?.register(proc.pid);
    this.stat = proc.pid !== undefined ? new ProcStat(proc.pid) : undefined;
    this.log = opts.log.child({ servicePid: proc.pid });
    proc.on('error', (err) => {
      // A spawn failure (no pid) arrives here, maybe instead of 'exit'; other errors are not fatal.
      if (proc.pid === undefined) this.onExit({ code: null, signal: null, error: err });
      else this.log.warn({ err: err.message }, 'service process error');
    });
    proc.once('exit', (code, signal) => this.onExit({ code, signal }));
    this.logOutput(proc.stdout, 'stdout');
    this.logOutput(proc.stderr, 'stderr');
    if (fd3) {
      this.channel = new ChannelClient(
        proc.stdio[3] as Socket,
        this.log,
        () => this.onChannelClosed(),
        clock,
      );
    }
    this.log.info(
      { command, mode: spec.mode, purpose: opts.purpose, uid: opts.runAs?.uid ?? process.getuid?.() },
      'service started',
    );
  }

  get pid(): number | undefined {
    return this.proc.pid;
  }

  get phase(): ProcessPhase {
    return this.phaseValue;
  }

  get alive(): boolean {
    return this.exitInfo === undefined;
  }

  /** How it exited (undefined while it runs). */
  get exit(): ExitInfo | undefined {
    return this.exitInfo;
  }

  /**
   * The one place the phase changes. A move outside the table changes nothing and says why;
   * callers that act on the new phase (sending a login) act only when it was allowed.
   */
  move(event: ProcessEvent): PhaseStep {
    const from = this.phaseValue;
    const step = nextPhase(from, event);
    if (!step.ok) {
      this.log.debug({ phase: from, event, reason: step.reason }, 'service process move refused');
      return step;
    }
    this.phaseValue = step.next;
    this.log.debug({ from, to: step.next, event, reason: step.reason }, 'service process phase');
    return step;
  }

  /** Send `message` on fd 3 and wait for the service's `expect` reply (or its exit, or time). */
  exchange(message: AgentMessage, expect: ControlReply, timeoutMs: number): Promise<Confirmation> {
    if (!this.channel) return Promise.resolve({ kind: 'closed' });
    const waiter = this.channel.next(expect);
    if (!this.channel.send(message)) {
      waiter.cancel();
      return Promise.resolve(this.alive ? { kind: 'closed' } : { kind: 'exited', info: this.exitInfo! });
    }
    return this.race(waiter, timeoutMs);
  }

  /** Wait for the service's `expect` message on fd 3 (or its exit, or time). */
  awaitMessage(expect: ControlReply, timeoutMs: number): Promise<Confirmation> {
    if (!this.channel) return Promise.resolve({ kind: 'closed' });
    return this.race(this.channel.next(expect), timeoutMs);
  }

  private async race(
    waiter: { message: Promise<ServiceMessage | undefined>; cancel: () => void },
    timeoutMs: number,
  ): Promise<Confirmation> {
    let cancelTimer: (() => void) | undefined;
    try {
      return await Promise.race<Confirmation>([
        waiter.message.then((message) => (message ? { kind: 'ok', message } : { kind: 'closed' })),
        this.exited.then((info) => ({ kind: 'exited', info })),
        new Promise(
          (resolve) =>
            (cancelTimer = this.opts.clock.after(Math.max(0, timeoutMs), () => resolve({ kind: 'timeout' }))),
        ),
      ]);
    } finally {
      cancelTimer?.();
      waiter.cancel();
    }
  }

  /**
   * Can it serve right now: not stopped (SIGSTOP), traced or a zombie, and heard on fd 3 within
   * LIVENESS_FRESH_MS, or else answering a status question (one asked at a time, whoever waits).
   */
  async servesNow(timeoutMs: number): Promise<boolean> {
    const pid = this.pid;
    if (!this.alive || pid === undefined) return false;
    const state = this.stat?.state();
    if (state !== undefined && NOT_SERVING_STATES.has(state)) return false;
    const channel = this.channel;
    if (!channel) return true;
    if (channel.heardWithin(LIVENESS_FRESH_MS)) return true;
    this.asking ??= channel.answers(timeoutMs).finally(() => (this.asking = undefined));
    return this.asking;
  }

  /**
   * SIGTERM to the process group, SIGKILL after min(stopTimeoutMs, budget − KILL_CONFIRM_MS).
   * True once the process has exited and no member of its group still runs; false if that was
   * not seen within the budget (the caller must assume it may still be logged in). One
   * exception to the budget: a process the kernel already shows dead at the deadline after
   * SIGKILL gets up to EXIT_EVENT_GRACE_MS more for its exit event (exitedAfterKill).
   * `thenStandby`: once it is gone, a fresh warm standby replaces it (if nothing forbids it then).
   */
  async stop(budgetMs: number, stopTimeoutMs: number, thenStandby = false): Promise<boolean> {
    const { clock } = this.opts;
    const deadline = clock.monotonicMs() + Math.max(0, budgetMs);
    if (thenStandby) this.standbyAfterStop = true;
    if (this.alive && this.phaseValue !== 'stopping') this.move('stop');
    const pgid = this.pid;
    if (pgid === undefined) return true; // never spawned
    if (this.alive) {
      signalGroup(pgid, 'SIGTERM');
      const termMs = Math.max(0, Math.min(stopTimeoutMs, budgetMs - KILL_CONFIRM_MS));
      if (!(await settleWithin(this.exited, termMs, clock))) {
        this.log.warn({ afterMs: termMs }, 'the service ignored SIGTERM; sending SIGKILL');
        signalGroup(pgid, 'SIGKILL');
        if (!(await this.exitedAfterKill(deadline))) {
          this.log.error({ budgetMs }, 'the service is still running after SIGKILL (stuck in the kernel?)');
          return false;
        }
      }
    }
    while (await groupRunning(pgid)) {
      if (clock.monotonicMs() >= deadline) {
        this.log.error({ budgetMs }, 'processes the service started are still running after SIGKILL');
        return false;
      }
      await clock.sleep(GROUP_POLL_MS);
    }
    return true;
  }

  /**
   * After SIGKILL: the exit event by the stop's deadline or, when the kernel already shows the
   * process dead, within EXIT_EVENT_GRACE_MS more. An agent loop late on a loaded machine ran
   * the deadline's timer before the exit event queued behind it, took a service dead for
   * hundreds of ms for stuck, and gave up its whole session (every identity on it). The exit
   * event stays the proof: waitpid reaps a leader only once every thread of it has exited (a
   * zombie leader may still have one stuck in the kernel), and callers find it exited.
   */
  private async exitedAfterKill(deadline: number): Promise<boolean> {
    const { clock } = this.opts;
    if (await settleWithin(this.exited, deadline - clock.monotonicMs(), clock)) return true;
    if (!this.deadInKernel()) return false;
    const lateFrom = clock.monotonicMs();
    if ((await settleWithin(this.exited, EXIT_EVENT_GRACE_MS, clock)) === undefined) return false;
    this.log.warn(
      { lateMs: Math.round(clock.monotonicMs() - lateFrom) },
      "the service's exit was seen only after the stop's deadline, though the kernel showed it dead: this agent's event loop is running late (a loaded host?)",
    );
    return true;
  }

  /** Its leader a zombie, or reaped (the exit event not run yet): worth waiting for that event. */
  private deadInKernel(): boolean {
    const state = this.stat?.state();
    return state === 'Z' || state === 'X' || this.stat?.gone() === true;
  }

  /** Was a fresh standby asked for once this stop completes? */
  get startsStandbyAfterStop(): boolean {
    return this.standbyAfterStop;
  }

  private onExit(info: ExitInfo): void {
    if (this.exitInfo) return;
    const phase = this.phaseValue;
    this.move('exit');
    this.exitInfo = info;
    this.stat?.close();
    this.markExited(info);
    const pid = this.pid;
    if (pid !== undefined) void this.sweepGroup(pid);
    this.opts.onExit(this, info, phase);
  }

  /** The leader is gone; what it started must not outlive it (it could still be logged in). */
  private async sweepGroup(pgid: number): Promise<void> {
    const { clock } = this.opts;
    const deadline = clock.monotonicMs() + GROUP_SWEEP_MAX_MS;
    let gone = false;
    try {
      if (signalGroup(pgid, 'SIGKILL')) this.log.debug('killed processes the service left behind');
      while (!(gone = !(await groupRunning(pgid))) && clock.monotonicMs() < deadline) {
        await clock.sleep(GROUP_POLL_MS);
      }
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'could not sweep the service process group');
    }
    // Still running after SIGKILL (a process stuck in the kernel): the lifeline keeps the group,
    // so the reaper still kills it if this agent dies, and its deadline stays armed.
    if (gone) this.opts.lifeline?.unregister(pgid);
    else {
      this.log.error(
        { pgid },
        `processes of the service's group survived SIGKILL for ${GROUP_SWEEP_MAX_MS} ms; ` +
          `the lifeline keeps watching them. Check them with: ps -g ${pgid}`,
      );
      // Unregistered only once the group is gone, so the reaper never kills a reused pgid.
      void (async () => {
        while (await groupRunning(pgid).catch(() => true)) {
          await clock.sleep(GROUP_LINGER_POLL_MS, undefined, { background: true });
        }
        this.opts.lifeline?.unregister(pgid);
      })();
    }
  }

  private onChannelClosed(): void {
    if (!this.alive || this.phaseValue === 'stopping') return;
    const cancel = this.opts.clock.after(CHANNEL_CLOSE_GRACE_MS, () => {
      if (!this.alive || this.phaseValue === 'stopping' || this.pid === undefined) return;
      this.crashReason = 'it closed its control channel (fd 3) but kept running';
      this.log.warn('the service closed fd 3 and cannot be controlled; killing it');
      signalGroup(this.pid, 'SIGKILL');
    });
    void this.exited.then(cancel);
  }

  private logOutput(stream: Readable | null, name: 'stdout' | 'stderr'): void {
    if (!stream) return;
    const framer = new LineFramer(
      (line) => this.log.info({ stream: name, line }, 'service output'),
      (problem) => this.log.warn({ stream: name, problem }, 'service output not logged'),
      OUTPUT_MAX_LINE_BYTES,
    );
    stream.on('data', (chunk: Buffer) => framer.push(chunk));
    stream.on('end', () => framer.end());
  }
}

/** The value of `promise` if it settles within `ms` on `clock`, else undefined (it keeps running). */
export async function settleWithin<T>(promise: Promise<T>, ms: number, clock: Clock): Promise<T | undefined> {
  let cancel: (() => void) | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<undefined>((resolve) => (cancel = clock.after(Math.max(0, ms), () => resolve(undefined)))),
    ]);
  } finally {
    cancel?.();
  }
}

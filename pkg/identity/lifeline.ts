// The lifeline: a service process must die when its agent dies, however the agent dies —
// including SIGKILL, where no exit handler runs. Otherwise a standby logs in while the dead
// agent's service is still logged in: two logins under one identity (invariant S1).
//
// Three layers, because each covers a gap the others leave:
//
// 1. pdeathsig (`setpriv --pdeathsig SIGKILL`): the kernel sends SIGKILL to the service the
//    moment the agent dies. Immediate and needs no helper process, but it reaches only the
//    direct child: grandchildren the service started live on.
// 2. A start guard (`sh -c '[ "$PPID" = <agent pid> ] || exit; exec "$@"'`): pdeathsig is set
//    after fork, so an agent dying in between leaves a child that never gets the signal. The
//    guard runs after the setting took effect and refuses to start a service whose parent is
//    already gone. It then execs the service: same pid, no extra process.
// 3. The reaper: one small `sh` per agent, in its own session, reading "add/del <pgid>" lines
//    on a pipe from the agent. Every service runs in its own process group. When the pipe hits
//    EOF — the kernel closes it whatever killed the agent — the reaper sends SIGTERM, then
//    SIGKILL to every group still registered: grandchildren die too. Without setpriv (not
//    util-linux >= 2.33, not Linux) the reaper alone still does the job, a little later.
//
// 4. A deadline (dead-man's switch) for logged-in services: every service logged in under one
//    etcd session is *covered* by that session's deadline, and the agent pushes the deadline
//    back on every lease renewal to what is left until the session's must-be-out instant. An
//    agent that is alive keeps pushing it back, and logs out well before it on its own; an
//    agent that is frozen (SIGSTOP, a stalled VM, a GC pause past T) cannot, and the reaper,
//    which is not frozen, kills the services before a standby may log in. One deadline per
//    session, not per service: a renewal costs one line and one timer in the reaper whatever
//    the number of services (re-arming each of 300 services twice a second swamped the reaper
//    and its deadlines fired late and wrong).
//
// Limits, stated so nobody relies on more: pdeathsig follows the *thread* that forked, so spawn
// services from the main thread only (never a worker_thread); a service that moves its children
// to another process group or session escapes layer 3; a SIGKILL of the whole agent session
// from outside (e.g. a cgroup kill) takes the reaper too, but then also the services.
import { spawn, execFile, type ChildProcess } from 'node:child_process';
import { constants as fsConstants, writeFileSync } from 'node:fs';
import { access, readdir, readFile } from 'node:fs/promises';
import type { Socket } from 'node:net';
import { getPriority, setPriority } from 'node:os';
import { delimiter, join } from 'node:path';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import { UPTIME_RESOLUTION_MS, uptimeMs } from '../clock/uptime.js';
import { LineFramer } from './channel.js';
import { ReasonLog } from './reason-log.js';

/** After the agent died, how long grandchildren get to exit on SIGTERM before SIGKILL. Far below
 * any lease TTL: they must be gone before a standby can log in. */
export const REAPER_GRACE_MS = 1_000;
/** The reaper answers a ping in microseconds; this only catches a broken `sh` or a stopped system. */
const REAPER_PING_TIMEOUT_MS = 5_000;
/** Pause before starting a reaper again after a failed start, so a missing `sh` does not spin. */
const REAPER_RESTART_DELAY_MS = 1_000;
/** Probing setpriv runs one tiny process; anything slower means it is unusable here. */
const SETPRIV_PROBE_TIMEOUT_MS = 5_000;
/** How long close() waits for the reaper to exit after its pipe closed, before killing it. */
const REAPER_CLOSE_TIMEOUT_MS = 2_000;
/** Exit code of the start guard when the agent died before the service started (nobody sees it:
 * the agent is gone; it only tells a curious operator reading the process accounting). */
const ORPHANED_AT_START_EXIT = 111;

/**
 * What the kernel takes to tear down one SIGKILLed service on a small host: 0.27–0.52 ms per
 * process measured on 2 cores, whoever sends the signals and however many send them (1,000
 * services: 270–520 ms). A deadline's timer fires this much per member ahead of the deadline,
 * so that the last of them is dead by it rather than a storm later, past T.
 */
export const KILL_COST_PER_SERVICE_MS = 0.5;

/**
 * Longest single sleep of a reaper's deadline timer, which reads the clock between them. A
 * sleep that starts late (the host frozen between the timer reading the clock and its sleep
 * starting) ends this much past the deadline at most; a longer one could end a whole TTL past
 * it. Under bash a step forks nothing (REAPER_SHELLS); under a plain sh each step forks one
 * `sleep`: 10 a second per armed deadline (one per etcd session), which ten agents' reapers on
 * one 2-core VM whose forks are slow paid with a third of its CPU.
 */
export const REAPER_TIMER_STEP_MS = 100;

/**
 * The reaper's nice level. A host that thaws (a VM paused, a cgroup frozen, a machine starved
 * for seconds) makes every process on it runnable at once, the thawed service among them: the
 * reaper must get a core first and kill that service at its passed deadline, not queue behind
 * the agent, the service and everything else that woke. Fencing daemons do the same (sbd runs
 * at realtime priority). The reaper sleeps nearly all the time, so it takes nothing from the
 * others. Not measured to help in the chaos bench: there each host is a container, the level
 * ranks the reaper only against that host's own processes, and what delayed the kill was the
 * thawed container getting cores at all (thawed services died 51–70 ms in median, up to 442,
 * after their host's first sign of life, with and without it: bench/README.md). Lowering a
 * nice level needs a raised RLIMIT_NICE (systemd: LimitNICE=-10, as in the shipped unit) or
 * CAP_SYS_NICE; without either the reaper runs at the agent's level, and the agent says so once.
 */
export const REAPER_NICE = -10;

/**
 * The reaper's shell, best first. bash naps without forking (`read -t` on a pipe the shell
 * holds both ends of, so nothing ever arrives); any POSIX sh does the same job forking a
 * `sleep` per nap. Absolute paths: the agent's PATH is not the reaper's concern.
 */
export const REAPER_SHELLS = ['/bin/bash', '/usr/bin/bash', '/bin/sh'] as const;

/** Seconds between the reaper's checks that its groups are gone (sh `sleep` takes fractions). */
const REAPER_TICK = 0.05;

// POSIX sh (dash, busybox, bash). INT/HUP/TERM are ignored: the reaper is a safety net and a
// stray signal must not take it down while services depend on it; the agent restarts it if it
// dies anyway (SIGKILL), and it ends by itself on EOF.
const REAPER_SCRIPT = `
trap '' INT HUP TERM PIPE
# nap SECONDS: bash reads fd 9 with a timeout, a pipe this shell holds both ends of (opened
# once, inherited by every timer), so nothing arrives and nothing is forked; a read that ends
# any other way than by its timeout (status > 128) falls back to sleep. Parsed by any sh, run
# only by bash (the eval hides bash's syntax from sh's parser).
nap() { sleep "$1"; }
if [ -n "\${BASH_VERSION:-}" ] && eval 'exec 9<> <(:)' 2>/dev/null; then
  nap() { read -r -t "$1" -u 9 _; [ $? -gt 128 ] || sleep "$1"; }
fi
groups=' '
names=' '
# A deadline's members are c_<name>, its timer's pid t_<name>. Timers are subshells that
# inherit the ignored signals: only SIGKILL stops them. An expired timer kills every member
# first (a builtin each), then reports: a date per member between the kills put the last of
# 1,000 services seconds past the must-be-out instant. The kills themselves take the kernel a
# while (KILL_COST_PER_SERVICE_MS): the agent sets the timer that much ahead of the deadline.
untime() { eval "t=\\\${t_$1:-}"; [ -n "$t" ] && kill -KILL "$t" 2>/dev/null; eval "t_$1="; }
# $2 is an instant on /proc/uptime's clock (ms), not a delay: a line read late (the host frozen
# between the agent's write and this read) or a sleep started late must not push it back. The
# timer sleeps in steps of at most ${REAPER_TIMER_STEP_MS} ms and reads the clock after each.
rearm() {
  untime "$1"
  eval "members=\\\${c_$1:-}"
  [ -z "$members" ] && return
  # The kill is the subshell's EXIT trap: a timer that fails (a fork refused, an unreadable
  # clock: sh exits on either) kills early rather than never, and says it failed, so the
  # agent does not blame a stall of its own. A failed timer reports without the kill time:
  # that takes a fork, and a refused one would end the trap before the report. untime's
  # SIGKILL runs no trap.
  ( why=failed
    trap 'for p in $members; do kill -KILL -"$p" 2>/dev/null; done
      at=; [ "$why" = failed ] || at=$(date +%s%3N 2>/dev/null)
      for p in $members; do echo "$why $p $at"; done' EXIT
    while :; do
      up=
      read up _ </proc/uptime || exit
      case $up in *.??) ;; *) exit ;; esac
      left=$(($2 - \${up%.*} * 1000 - 1\${up#*.} * 10 + 1000))
      [ "$left" -le 0 ] && { why=expired; break; }
      [ "$left" -gt ${REAPER_TIMER_STEP_MS} ] && left=${REAPER_TIMER_STEP_MS}
      case $left in ?) s=0.00$left ;; ??) s=0.0$left ;; *) s=0.$left ;; esac
      nap "$s"
    done ) &
  eval "t_$1=$!"
}
leave() {
  eval "members=\\\${c_$1:-}"
  kept=
  for p in $members; do [ "$p" = "$2" ] || kept="$kept $p"; done
  eval "c_$1=\\$kept"
}
while IFS=' ' read -r verb a b c; do
  case $a in ''|*[!a-z0-9]*) a= ;; esac
  case $b in ''|*[!0-9]*) b= ;; esac
  case $c in ''|*[!0-9]*) c= ;; esac
  case $verb in
    add) case $a in *[!0-9]*) ;; ?*) groups="$groups$a " ;; esac ;;
    del) case $a in *[!0-9]*) ;; ?*) kept=' '; for g in $groups; do [ "$g" = "$a" ] || kept="$kept$g "; done; groups=$kept ;; esac ;;
    cover) [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] && { case $names in *" $a "*) ;; *) names="$names$a " ;; esac; leave "$a" "$b"; eval "c_$a=\\"\\\${c_$a:-} $b\\""; rearm "$a" "$c"; } ;;
    uncover) [ -n "$a" ] && [ -n "$b" ] && [ -n "$c" ] && { leave "$a" "$b"; rearm "$a" "$c"; } ;;
    deadline) [ -n "$a" ] && [ -n "$b" ] && rearm "$a" "$b" ;;
    ping) echo "pong $a" ;;
  esac
done
for n in $names; do untime "$n"; done
for g in $groups; do kill -TERM -"$g" 2>/dev/null; done
ticks=0
while [ "$ticks" -lt ${Math.ceil(REAPER_GRACE_MS / 1000 / REAPER_TICK)} ]; do
  alive=
  for g in $groups; do kill -0 -"$g" 2>/dev/null && alive=1; done
  [ -z "$alive" ] && exit 0
  nap ${REAPER_TICK}
  ticks=$((ticks + 1))
done
for g in $groups; do kill -KILL -"$g" 2>/dev/null; done
exit 0
`;

/** What the agent logs when the reaper killed a service, by what its timer reported. */
export const REAPER_KILLED = {
  expired:
    'service deadline expired before the agent renewed it (agent frozen or stalled?): the reaper killed the service',
  failed:
    "the reaper's deadline timer could not keep time (it could not read /proc/uptime, or could not fork) and killed the service early rather than never: check the host's process limit and that /proc is mounted and readable",
} as const;

/** Deadline names become shell variable names in the reaper. */
const DEADLINE_NAME = /^[a-z0-9]{1,40}$/;

const START_GUARD = `[ "$PPID" = "$0" ] || exit ${ORPHANED_AT_START_EXIT}; exec "$@"`;

export interface LifelineOptions {
  /** Use setpriv's pdeathsig when available (default). Tests turn it off to prove the reaper alone suffices. */
  pdeathsig?: boolean;
  /** Deadlines are kept on this clock's monotonic time (default: the system clock). */
  clock?: Clock;
  /** Told each time the reaper killed a service: its deadline passed, or its timer failed. */
  expired?: () => void;
  /** The reaper's shell (default: the first of REAPER_SHELLS found). Tests pin /bin/sh to
   * prove the forking fallback still keeps time. */
  shell?: string;
}

export class Lifeline {
  private reaper: ChildProcess | undefined;
  private readonly groups = new Set<number>();
  /** Deadlines by name (monotonic instants), kept so a replaced reaper gets them too. */
  private readonly deadlines = new Map<string, number>();
  /** Which deadline covers each process group. */
  private readonly covered = new Map<number, string>();
  /** How many process groups each deadline covers. */
  private readonly members = new Map<string, number>();
  private closing = false;
  private pingSeq = 0;
  private readonly pongs = new Map<number, () => void>();
  private restartTimer: NodeJS.Timeout | undefined;
  /** The reaper's priority could not be raised (said once, not at every restart). */
  private priorityRefused = false;
  /** Failed reaper restarts, logged once per change of reason (they repeat every second). */
  private readonly restartFailures: ReasonLog;

  private constructor(
    private readonly log: Logger,
    /** Absolute path of setpriv when pdeathsig is in use. */
    private readonly setpriv: string | undefined,
    private readonly clock: Clock,
    private readonly onExpired: (() => void) | undefined,
    /** /proc/uptime minus performance.now(), read at start (rounded down: instants early). */
    private readonly uptimeOffsetMs: number,
    /** The reaper's shell (the first of REAPER_SHELLS found here). */
    readonly shell: string,
  ) {
    this.restartFailures = new ReasonLog(
      log,
      'restarting the lifeline reaper (services would outlive a killed agent until it runs again)',
      'error',
    );
  }

  /** Start the reaper (and probe setpriv). Rejects, saying what is missing, if no reaper can run. */
  static async start(logger: Logger, opts: LifelineOptions = {}): Promise<Lifeline> {
    const log = logger.child({ component: 'lifeline' });
    let setpriv: string | undefined;
    if (opts.pdeathsig !== false) {
      setpriv = await findSetpriv();
      if (!setpriv) {
        log.warn(
          'setpriv --pdeathsig is not available (install util-linux >= 2.33): services are stopped by the reaper alone when this agent dies, up to a second later',
        );
      }
    }
    let uptimeOffsetMs: number;
    try {
      // /proc/uptime (CLOCK_BOOTTIME) runs with the monotonic clock but through a suspend,
      // when it moves ahead: an offset taken now then makes deadlines early, never late. One
      // reading, not one per renewal: a file that cannot be opened then (EMFILE) must not
      // keep a deadline from the reaper.
      uptimeOffsetMs = uptimeMs() - performance.now();
    } catch (err) {
      throw new Error(
        `the lifeline's kill deadlines run on /proc/uptime, which cannot be read here (${(err as Error).message}): the agent runs services on Linux only`,
        { cause: err },
      );
    }
    const shell = opts.shell ?? (await findReaperShell());
    const lifeline = new Lifeline(
      log,
      setpriv,
      opts.clock ?? systemClock,
      opts.expired,
      uptimeOffsetMs,
      shell,
    );
    try {
      await lifeline.startReaper();
    } catch (err) {
      throw new Error(
        `cannot start the lifeline reaper (${shell}): ${(err as Error).message}. Services would outlive a killed agent, so the agent refuses to run them`,
        { cause: err },
      );
    }
    log.info(
      { reaperPid: lifeline.reaperPid, reaperShell: shell, pdeathsig: setpriv !== undefined },
      'lifeline ready',
    );
    return lifeline;
  }

  /** Whether the kernel's parent-death signal (layer 1) is in use. */
  get pdeathsig(): boolean {
    return this.setpriv !== undefined;
  }

  get reaperPid(): number | undefined {
    return this.reaper?.exitCode === null && this.reaper.signalCode === null ? this.reaper.pid : undefined;
  }

  /**
   * The argv that runs `argv` under layers 1 and 2. Spawn it with `detached: true` (its own
   * process group, which `register` then hands to layer 3), from the main thread.
   */
  wrap(argv: readonly string[]): string[] {
    const guarded = ['/bin/sh', '-c', START_GUARD, String(process.pid), ...argv];
    return this.setpriv ? [this.setpriv, '--pdeathsig', 'SIGKILL', '--', ...guarded] : guarded;
  }

  /** Have the reaper stop this process group if the agent dies. Call right after spawning. */
  register(pgid: number): void {
    this.groups.add(pgid);
    this.send(`add ${pgid}`);
  }

  /** The group is gone (or stopped on purpose): forget it, so a reused number is never hit. */
  unregister(pgid: number): void {
    this.uncover(pgid);
    if (this.groups.delete(pgid)) this.send(`del ${pgid}`);
  }

  /**
   * Dead-man's switch: put the process group under `deadline`, which SIGKILLs every group it
   * covers unless pushed back first (extend), starting ahead of it by what the kernel takes to
   * kill them all. A deadline not yet known is set `ms` from now; a known one is kept (it was
   * pushed back by the latest renewal, `ms` may be older). Without a name the group gets a
   * deadline of its own, set `ms` from now.
   */
  cover(pgid: number, ms: number, deadline = `p${pgid}`): void {
    if (!this.groups.has(pgid) || !DEADLINE_NAME.test(deadline)) return;
    this.uncover(pgid);
    const own = deadline === `p${pgid}`;
    if (own || !this.deadlines.has(deadline)) this.deadlines.set(deadline, this.clock.monotonicMs() + ms);
    this.covered.set(pgid, deadline);
    this.members.set(deadline, (this.members.get(deadline) ?? 0) + 1);
    this.send(`cover ${deadline} ${pgid} ${this.fireAt(deadline)}`);
  }

  /** Take the group out from under its deadline: it is confirmed logged out. */
  uncover(pgid: number): void {
    const deadline = this.covered.get(pgid);
    if (deadline === undefined) return;
    this.covered.delete(pgid);
    const left = (this.members.get(deadline) ?? 1) - 1;
    if (left > 0) this.members.set(deadline, left);
    else this.members.delete(deadline);
    if (this.groups.has(pgid)) this.send(`uncover ${deadline} ${pgid} ${this.fireAt(deadline)}`);
    if (left <= 0) this.deadlines.delete(deadline);
  }

  /** Push `deadline` back to `ms` from now (one line to the reaper, whatever it covers). */
  extend(deadline: string, ms: number): void {
    if (!this.deadlines.has(deadline)) return;
    this.deadlines.set(deadline, this.clock.monotonicMs() + ms);
    this.send(`deadline ${deadline} ${this.fireAt(deadline)}`);
  }

  /** One process group on a deadline of its own: SIGKILL it `ms` from now unless armed again. */
  arm(pgid: number, ms: number): void {
    this.cover(pgid, ms);
  }

  disarm(pgid: number): void {
    this.uncover(pgid);
  }

  /**
   * When the reaper's timer for `deadline` must fire, as an instant on the reaper's clock
   * (/proc/uptime, ms): early enough that killing all its members ends by it, and a passed
   * deadline at once. An instant, not a delay: the line may be read late.
   */
  private fireAt(deadline: string): number {
    // The reaper's clock first: a stall before `left` is read makes the instant early, not late.
    const now = performance.now() + this.uptimeOffsetMs;
    const killing = Math.ceil((this.members.get(deadline) ?? 0) * KILL_COST_PER_SERVICE_MS);
    const left = (this.deadlines.get(deadline) ?? 0) - this.clock.monotonicMs();
    return Math.floor(now) + Math.max(0, Math.floor(left - killing - UPTIME_RESOLUTION_MS));
  }

  /** Round trip through the reaper: resolves once it has read everything sent before. */
  async ping(timeoutMs = REAPER_PING_TIMEOUT_MS): Promise<void> {
    const reaper = this.reaper;
    if (!reaper?.stdout) throw new Error('the lifeline reaper is not running');
    const seq = ++this.pingSeq;
    const stdout = reaper.stdout as Socket;
    stdout.ref(); // a pending ping must keep the event loop alive until the answer
    let timer: NodeJS.Timeout | undefined;
    let onExit: (() => void) | undefined;
    try {
      await new Promise<void>((resolve, reject) => {
        this.pongs.set(seq, resolve);
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
        onExit = () => reject(new Error('it exited'));
        reaper.once('exit', onExit);
        this.send(`ping ${seq}`);
      });
    } finally {
      clearTimeout(timer);
      if (onExit) reaper.off('exit', onExit);
      this.pongs.delete(seq);
      if (this.pongs.size === 0) stdout.unref();
    }
  }

  /**
   * Stop the reaper. It still stops any group left registered (a service the caller forgot):
   * closing the pipe is the same signal as the agent dying.
   */
  async close(): Promise<void> {
    this.closing = true;
    clearTimeout(this.restartTimer);
    const reaper = this.reaper;
    if (!reaper || reaper.exitCode !== null || reaper.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => reaper.once('exit', () => resolve()));
    reaper.stdin?.end();
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<boolean>(
      (resolve) => (timer = setTimeout(() => resolve(true), REAPER_CLOSE_TIMEOUT_MS)),
    );
    const timedOut = await Promise.race([exited.then(() => false), late]);
    clearTimeout(timer);
    if (timedOut) {
      this.log.warn(
        { reaperPid: reaper.pid },
        'lifeline reaper did not exit after its pipe closed; killing it',
      );
      reaper.kill('SIGKILL');
      await exited;
    }
  }

  private async startReaper(): Promise<void> {
    const reaper = spawn(this.shell, ['-c', REAPER_SCRIPT], {
      // Its own session: a signal to the agent's process group (Ctrl-C, a supervisor) must not
      // take the reaper down with the agent, since acting after the agent's death is its job.
      detached: true,
      stdio: ['pipe', 'pipe', 'ignore'],
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    });
    let established = false;
    reaper.on('error', (err) => this.log.debug({ err: err.message }, 'lifeline reaper error'));
    reaper.once('exit', (code, signal) => {
      if (established) this.onReaperExit(reaper, code, signal);
    });
    reaper.stdin?.on('error', (err) => this.log.debug({ err: err.message }, 'lifeline pipe error'));
    const framer = new LineFramer(
      (line) => {
        const killed = /^(expired|failed) (\d+) ?(\d*)$/.exec(line);
        if (killed) {
          // The kill time comes from the reaper's clock: this agent may only now be resumed.
          const fields = {
            servicePid: Number(killed[2]),
            killedAt: killed[3] ? new Date(Number(killed[3])).toISOString() : undefined,
          };
          this.onExpired?.();
          this.log.error(fields, killed[1] === 'expired' ? REAPER_KILLED.expired : REAPER_KILLED.failed);
          return;
        }
        const seq = Number(/^pong (\d+)$/.exec(line)?.[1]);
        this.pongs.get(seq)?.();
      },
      () => undefined, // the reaper prints nothing else
      256,
    );
    reaper.stdout?.on('data', (chunk: Buffer) => framer.push(chunk));
    const spawned = new Promise<void>((resolve, reject) => {
      reaper.once('spawn', resolve);
      reaper.once('error', reject);
    });
    // Before any line reaches it: the timers it forks inherit its level.
    if (reaper.pid !== undefined) this.prioritize(reaper.pid);
    // The reaper must never keep the agent alive on its own.
    reaper.unref();
    (reaper.stdin as Socket | null)?.unref();
    (reaper.stdout as Socket | null)?.unref();
    this.reaper = reaper;
    try {
      await spawned;
      for (const pgid of this.groups) this.send(`add ${pgid}`);
      // A replaced reaper knows no deadline: give it what is left of each (a passed one fires now).
      for (const [pgid, deadline] of this.covered)
        this.send(`cover ${deadline} ${pgid} ${this.fireAt(deadline)}`);
      await this.ping();
    } catch (err) {
      if (this.reaper === reaper) this.reaper = undefined;
      reaper.kill('SIGKILL'); // a half-started one (spawned, never answered)
      throw err;
    }
    established = true;
  }

  /**
   * Best effort (see REAPER_NICE): a reaper at the agent's own level still does its job. The
   * kernel takes one autogroup change per 100 ms machine-wide from a process without
   * CAP_SYS_ADMIN (EAGAIN), which several agents on one kernel can meet: tried again then.
   */
  private prioritize(pid: number, attempt = 1): void {
    const outcome = raiseReaper(pid);
    if (outcome.kind === 'done') return;
    if (outcome.kind === 'busy' && attempt < AUTOGROUP_ATTEMPTS) {
      setTimeout(() => {
        if (this.reaper?.pid === pid && !this.closing) this.prioritize(pid, attempt + 1);
      }, AUTOGROUP_RETRY_MS).unref();
      return;
    }
    if (this.priorityRefused) return;
    this.priorityRefused = true;
    if (outcome.kind === 'refused') {
      this.log.warn(
        { err: outcome.message, nice: REAPER_NICE },
        "the lifeline reaper runs at the agent's own priority: after a host freeze it may kill a thawed service later. Let the agent lower a nice level to -10: LimitNICE=-10 in its systemd unit (the shipped one has it), --ulimit nice=30 or --cap-add SYS_NICE for a container, or CAP_SYS_NICE",
      );
    } else {
      this.log.warn(
        { err: outcome.message, nice: REAPER_NICE },
        `the lifeline reaper's ${outcome.kind === 'busy' ? 'autogroup stays at its level (the kernel kept refusing the change as too frequent)' : 'priority could not be raised'}: after a host freeze it may kill a thawed service later`,
      );
    }
  }

  private onReaperExit(reaper: ChildProcess, code: number | null, signal: NodeJS.Signals | null): void {
    if (reaper !== this.reaper || this.closing) return;
    this.reaper = undefined;
    this.log.warn(
      { reaperPid: reaper.pid, code, signal, groups: this.groups.size },
      'lifeline reaper exited; starting a new one and registering the running services again',
    );
    this.restartReaper();
  }

  private restartReaper(): void {
    this.startReaper().then(
      () => this.restartFailures.ok(),
      (err: Error) => {
        if (this.closing) return;
        this.restartFailures.fail(err.message, { retryInMs: REAPER_RESTART_DELAY_MS });
        // A pause, not a deadline: unref'd, so a failing reaper never keeps the agent alive.
        this.restartTimer = setTimeout(() => this.restartReaper(), REAPER_RESTART_DELAY_MS).unref();
      },
    );
  }

  private send(line: string): void {
    // Pipe writes go straight to the kernel when the pipe is not full (a few bytes never fill
    // it): once written, a line reaches the reaper even if the agent dies the next instant.
    const stdin = this.reaper?.stdin;
    if (stdin && !stdin.destroyed && stdin.writable) stdin.write(`${line}\n`);
  }
}

/** Attempts at the autogroup change while the kernel says EAGAIN, AUTOGROUP_RETRY_MS apart. */
const AUTOGROUP_ATTEMPTS = 5;
/** Past the kernel's 100 ms between two autogroup changes by unprivileged processes. */
const AUTOGROUP_RETRY_MS = 110;

type RaiseOutcome =
  | { kind: 'done' }
  /** Not allowed to (RLIMIT_NICE, CAP_SYS_NICE): the operator's to grant. */
  | { kind: 'refused'; message: string }
  /** The autogroup change came too soon after another one on this kernel: try again. */
  | { kind: 'busy'; message: string }
  | { kind: 'failed'; message: string };

/**
 * Set the reaper's nice level, and its autogroup's: where the kernel groups tasks by session
 * for scheduling (autogroup, for tasks in no CPU cgroup of their own, as under a systemd that
 * does not split CPU), a nice level ranks a task only within its session, and the reaper and
 * every service have sessions of their own. Done also when moot: the reaper already gone (a
 * restart follows), a kernel without autogroup.
 */
function raiseReaper(pid: number): RaiseOutcome {
  const outcome = (err: unknown): RaiseOutcome => {
    const e = err as NodeJS.ErrnoException & { info?: { code?: string } };
    const code = e.info?.code ?? e.code;
    if (code === 'ESRCH' || code === 'ENOENT') return { kind: 'done' };
    if (code === 'EACCES' || code === 'EPERM') return { kind: 'refused', message: e.message };
    if (code === 'EAGAIN') return { kind: 'busy', message: e.message };
    return { kind: 'failed', message: e.message };
  };
  try {
    if (getPriority(pid) !== REAPER_NICE) setPriority(pid, REAPER_NICE);
  } catch (err) {
    return outcome(err);
  }
  try {
    writeFileSync(`/proc/${pid}/autogroup`, String(REAPER_NICE));
  } catch (err) {
    return outcome(err);
  }
  return { kind: 'done' };
}

/** setpriv with --pdeathsig (util-linux >= 2.33), verified by running it once. */
async function findSetpriv(): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(delimiter)) {
    if (!dir) continue;
    const candidate = join(dir, 'setpriv');
    try {
      await access(candidate, fsConstants.X_OK);
    } catch {
      continue;
    }
    const works = await new Promise<boolean>((resolve) => {
      execFile(
        candidate,
        ['--pdeathsig', 'SIGKILL', '--', '/bin/sh', '-c', 'exit 0'],
        { timeout: SETPRIV_PROBE_TIMEOUT_MS },
        (err) => resolve(!err),
      );
    });
    if (works) return candidate;
  }
  return undefined;
}

/** The first of REAPER_SHELLS this host can run (/bin/sh, which POSIX promises, failing all). */
async function findReaperShell(): Promise<string> {
  for (const candidate of REAPER_SHELLS) {
    try {
      await access(candidate, fsConstants.X_OK);
      return candidate;
    } catch {
      // next
    }
  }
  return '/bin/sh';
}

/** Signal a whole process group; false if it no longer exists. */
export function signalGroup(pgid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(-pgid, signal);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
}

/**
 * Whether any member of the process group still runs. Zombies do not count: they are dead but
 * keep their group id until their new parent reaps them, which an init that is not one may
 * never do. Reads /proc (Linux); elsewhere a group that exists counts as running.
 */
export async function groupRunning(pgid: number): Promise<boolean> {
  if (!signalGroup(pgid, 0)) return false;
  let entries: string[];
  try {
    entries = await readdir('/proc');
  } catch {
    return true;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${entry}/stat`, 'utf8');
    } catch {
      continue; // exited while we looked
    }
    // "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses, so split after the last ')'.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (Number(fields[2]) === pgid && fields[0] !== 'Z' && fields[0] !== 'X') return true;
  }
  return false;
}

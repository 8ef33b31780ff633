// S1 from the agents' own records: the intervals in which each agent was logged in under an
// identity (logging-in → the end of logging-out), and every overlap between two of them. All
// agents run on this host, so their log times and Date.now() share one clock.
//
// An interval the log does not close (the agent was SIGKILLed, or its logout was never
// confirmed) is not over when the log stops: the service may run on. It ends when the lifeline
// reports killing the service, or when every process that could hold the login was seen dead
// (`diedAt`, e.g. from a DeathWatch started at the kill); until then it is open (Infinity), and
// every later login of the identity overlaps it. An error in the safe direction: a check that
// cannot prove a login over reports it, it never assumes it.
import type { LogRecord } from './logged-process.js';
import { pidDead } from './processes.js';

/** What loginIntervals reads of an agent (AgentProcess has it). */
export interface AgentLog {
  readonly node: string;
  /** The agent's own pid: an in-process service (nats-service driver) dies with it. */
  readonly pid: number;
  readonly records: readonly LogRecord[];
}

export interface LoginInterval {
  node: string;
  /** Agent process it came from: a restarted agent of the same node is another one. */
  agentPid: number;
  from: number;
  /** Ms since the epoch; Infinity while nothing shows the login over. */
  to: number;
  /** How `to` was learnt. */
  end: 'logged-out' | 'deadline-kill' | 'service-exited' | 'seen-dead' | 'open';
  /** The agent and every service process logged under the login: its end waits on them all. */
  pids: number[];
}

export interface IntervalOptions {
  /**
   * When `pid` was first seen dead (ms since the epoch, an upper bound of its death), or
   * undefined if it was not. Without it, a login the log does not close stays open.
   */
  diedAt?: (pid: number) => number | undefined;
}

/** The runner's words when a logout could not be confirmed (pkg/agent/term.ts). */
const UNCONFIRMED_LOGOUT = /^service not confirmed logged out/;
/** The process driver's words when it saw a service process exit (pkg/identity/process.ts). */
const SERVICE_EXITED = /^service (stopped|exited unexpectedly)$/;

interface Parsed {
  from: number;
  /** The agent and the service processes not seen exiting: the login ends with the last one. */
  pids: Set<number>;
  /** Every service pid of the login, for matching the lifeline's kill record. */
  services: Set<number>;
  /** Closed by the log at this time (logging-out ended with the service confirmed out). */
  loggedOutAt?: number;
  /** The lifeline killed the service at this time. */
  killedAt?: number;
  /** Left unconfirmed, then the agent saw its last service process exit at this time. */
  exitedAt?: number;
}

/** One agent's logins under `identity`, as its log tells them (ends not yet resolved). */
function parseAgent(agent: AgentLog, identity: string): Parsed[] {
  const done: Parsed[] = [];
  let open: Parsed | undefined;
  /** Closed by the state machine with the service not confirmed out: they end with their pids. */
  const lingering: Parsed[] = [];
  let unconfirmed = false;
  /** Service processes of the identity not seen exiting (a warm one starts before the login). */
  const running = new Set<number>();
  for (const r of agent.records) {
    // The lifeline's deadline killed a service (this agent was frozen): that login ended then.
    // Its record names no identity: it is matched by the service's pid (its process group).
    // A timer that failed reports no kill time (lifeline.ts): its login is left to end with
    // the service's exit line, later, which can only lengthen it.
    if (typeof r.killedAt === 'string' && typeof r.servicePid === 'number') {
      const killedAt = Date.parse(r.killedAt);
      for (const p of [open, ...lingering]) {
        if (p?.services.has(r.servicePid) && p.killedAt === undefined) p.killedAt = killedAt;
      }
      if (open?.killedAt !== undefined) {
        done.push(open);
        open = undefined;
      }
      continue;
    }
    if (r.identity !== identity) continue;
    if (typeof r.servicePid === 'number') {
      // Seen exiting by the agent: it holds no login any more. Anything else: it may.
      if (SERVICE_EXITED.test(r.msg)) {
        running.delete(r.servicePid);
        open?.pids.delete(r.servicePid);
        for (const p of lingering.splice(0)) {
          p.pids.delete(r.servicePid);
          const left = [...p.pids].filter((pid) => pid !== agent.pid);
          // Its service processes are all seen gone: the login is over now at the latest.
          if (p.services.size > 0 && left.length === 0)
            done.push({ ...p, exitedAt: Date.parse(String(r.time)) });
          else lingering.push(p);
        }
      } else {
        running.add(r.servicePid);
        open?.pids.add(r.servicePid);
        open?.services.add(r.servicePid);
      }
    }
    if (UNCONFIRMED_LOGOUT.test(r.msg)) unconfirmed = true;
    if (!r.to) continue;
    const at = Date.parse(String(r.time));
    if (r.to === 'logging-in') {
      if (open) lingering.push(open); // never closed in the log: ends only with its processes
      open = { from: at, pids: new Set([agent.pid, ...running]), services: new Set(running) };
      unconfirmed = false;
    } else if (open && r.from === 'logging-out') {
      if (unconfirmed) lingering.push(open);
      else done.push({ ...open, loggedOutAt: at });
      open = undefined;
      unconfirmed = false;
    }
  }
  return [...done, ...lingering, ...(open ? [open] : [])];
}

export function loginIntervals(
  agents: Iterable<AgentLog>,
  identity: string,
  opts: IntervalOptions = {},
): LoginInterval[] {
  const intervals: LoginInterval[] = [];
  for (const agent of agents) {
    for (const p of parseAgent(agent, identity)) {
      const base = { node: agent.node, agentPid: agent.pid, from: p.from, pids: [...p.pids] };
      if (p.loggedOutAt !== undefined) {
        intervals.push({ ...base, to: p.loggedOutAt, end: 'logged-out' });
        continue;
      }
      if (p.killedAt !== undefined) {
        intervals.push({ ...base, to: p.killedAt, end: 'deadline-kill' });
        continue;
      }
      if (p.exitedAt !== undefined) {
        intervals.push({ ...base, to: p.exitedAt, end: 'service-exited' });
        continue;
      }
      // Over once the last of its processes died; one not seen dead keeps it open.
      const deaths = base.pids.map((pid) => opts.diedAt?.(pid));
      const seen = deaths.every((t) => t !== undefined);
      intervals.push({
        ...base,
        to: seen ? Math.max(...deaths) : Number.POSITIVE_INFINITY,
        end: seen ? 'seen-dead' : 'open',
      });
    }
  }
  return intervals.sort((x, y) => x.from - y.from);
}

/**
 * The processes to watch when `agent` is about to be killed: its pid and every service pid its
 * log names for `identity`. Logins the log closes do not need them; the others end with them.
 */
export function loginPids(agent: AgentLog, identity: string): number[] {
  const pids = new Set([agent.pid]);
  for (const r of agent.records) {
    if (r.identity === identity && typeof r.servicePid === 'number') pids.add(r.servicePid);
  }
  return [...pids];
}

/** Two closed-open intervals [from, to) share an instant. */
export function intersect(
  a: Pick<LoginInterval, 'from' | 'to'>,
  b: Pick<LoginInterval, 'from' | 'to'>,
): boolean {
  return a.from < b.to && b.from < a.to;
}

const at = (ms: number) => (Number.isFinite(ms) ? new Date(ms).toISOString() : 'not seen over');

/** One line per pair of intervals logged in at once, whichever their order or distance. */
export function overlaps(intervals: readonly LoginInterval[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const a = intervals[i]!;
      const b = intervals[j]!;
      if (!intersect(a, b)) continue;
      out.push(
        `S1: ${a.node} (agent pid ${a.agentPid}) logged in ${at(a.from)} until ${at(a.to)} (${a.end}), ` +
          `${b.node} (agent pid ${b.agentPid}) ${at(b.from)} until ${at(b.to)} (${b.end})`,
      );
    }
  }
  return out;
}

/** How often a DeathWatch looks: its error on a death time, small against any TTL. */
const DEATH_POLL_MS = 10;

/**
 * Remembers when each watched pid was first seen dead: an upper bound of its death, which is
 * what a login's end may safely be taken as. Start watching at the kill, not after: a pid first
 * checked late is given a late death, and the login looks longer than it was.
 */
export class DeathWatch {
  private readonly dead = new Map<number, number>();
  private readonly watching = new Set<number>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  watch(pids: Iterable<number>): this {
    for (const pid of pids) if (!this.dead.has(pid)) this.watching.add(pid);
    // Never what keeps a test run alive: it only observes.
    this.timer ??= setInterval(() => void this.poll(), DEATH_POLL_MS).unref();
    void this.poll();
    return this;
  }

  /** For loginIntervals: when `pid` was first seen dead, undefined if not (yet, or not watched). */
  readonly diedAt = (pid: number): number | undefined => this.dead.get(pid);

  /** Pids watched and not yet seen dead. */
  get alive(): number[] {
    return [...this.watching];
  }

  close(): void {
    clearInterval(this.timer);
    this.timer = undefined;
  }

  private async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      for (const pid of [...this.watching]) {
        if (await pidDead(pid)) {
          // Taken after the check answered: never earlier than the death itself.
          this.dead.set(pid, Date.now());
          this.watching.delete(pid);
        }
      }
    } finally {
      this.polling = false;
    }
    if (this.watching.size === 0) this.close();
  }
}

// S1 and S2 judged from the services' own records (chaos/witness.ts), not from
// the agents' logs: each witness process appends login / alive / logout lines stamped with the
// host's monotonic clock. Pure functions: the tests and the chaos loop read the file and ask.
//
// A process's logged-in interval is [login, last line it wrote], the login being dated from the
// process's start (see the fixture). One that wrote no logout was killed (SIGKILL, or it is
// still running): its interval ends at its 'dead' line, written from outside by the fixture's
// death recorder at or after its death; without one it may have lived up to one beat past its
// last line, so its interval is extended by the beat period, to stay on the safe side.

export type WitnessEvent = 'login' | 'alive' | 'logout' | 'dead';

export interface WitnessLine {
  event: WitnessEvent;
  node: string;
  /** Fencing token as the agent gave it (decimal string). */
  token: string;
  pid: number;
  /** ms on CLOCK_MONOTONIC (shared by every process on the host). */
  mono: number;
  /**
   * On the login line: when it was written. Its `mono` is the process's start (the service
   * holds its token from its first instant), so this is the line's own time.
   */
  writtenMono?: number;
  /** On the login line: a process the witness started in its own group (see the fixture). */
  helperPid?: number;
  /** On a 'dead' line: the login (process start) of the process that died, with its pid. */
  from?: number;
}

export interface WitnessInterval {
  node: string;
  token: string;
  pid: number;
  /** Monotonic ms of the login (the process's start). */
  from: number;
  /** Monotonic ms of the last line, plus one beat when no logout was written. */
  to: number;
  /** How the interval ended in the record: logged out, seen dead from outside, or neither. */
  end: 'logout' | 'dead' | 'no-logout';
}

export interface Overlap {
  a: WitnessInterval;
  b: WitnessInterval;
  /** How long both were logged in at once, ms. */
  ms: number;
}

export interface TokenDecrease {
  earlier: WitnessInterval;
  later: WitnessInterval;
}

const EVENTS: readonly string[] = ['login', 'alive', 'logout', 'dead'];

/**
 * Parse a witness file. A torn last line (a witness killed mid-write) is skipped; any other
 * line that is not a witness record is an error, so a broken fixture cannot pass silently.
 */
export function parseWitnessLines(text: string): WitnessLine[] {
  const raw = text.split('\n');
  const out: WitnessLine[] = [];
  raw.forEach((line, index) => {
    if (line.trim() === '') return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch (err) {
      if (index === raw.length - 1) return; // torn tail: the file does not end with '\n'
      throw new Error(`witness line ${index + 1} is not JSON: ${line}`, { cause: err });
    }
    const v = value as Partial<WitnessLine>;
    if (
      typeof v.event !== 'string' ||
      !EVENTS.includes(v.event) ||
      typeof v.node !== 'string' ||
      typeof v.token !== 'string' ||
      typeof v.pid !== 'number' ||
      typeof v.mono !== 'number'
    ) {
      throw new Error(`witness line ${index + 1} is not a witness record: ${line}`);
    }
    out.push(v as WitnessLine);
  });
  return out;
}

/**
 * One interval per witness process (a process is its pid and login; a reused pid with a new
 * login is a new process), in login order. Lines of a process before its login line cannot
 * happen and are an error.
 */
export function witnessIntervals(lines: WitnessLine[], opts: { beatMs: number }): WitnessInterval[] {
  const open = new Map<number, WitnessInterval>();
  const all: WitnessInterval[] = [];
  // Lines from different processes interleave in the file; each process's own lines are in order.
  for (const line of lines) {
    if (line.event === 'login') {
      const interval: WitnessInterval = {
        node: line.node,
        token: line.token,
        pid: line.pid,
        from: line.mono,
        to: Math.max(line.mono, line.writtenMono ?? line.mono),
        end: 'no-logout',
      };
      open.set(line.pid, interval);
      all.push(interval);
      continue;
    }
    if (line.event === 'dead') {
      // From the death recorder: the process whose login is `from` died at or before `mono`.
      const dead = all.find((i) => i.pid === line.pid && i.from === line.from);
      if (!dead) throw new Error(`a death line names pid ${line.pid}, which never logged in`);
      if (dead.end !== 'logout') {
        dead.to = Math.max(dead.to, line.mono);
        dead.end = 'dead';
      }
      continue;
    }
    const interval = open.get(line.pid);
    if (!interval) throw new Error(`witness pid ${line.pid} wrote '${line.event}' before any login`);
    if (interval.end !== 'no-logout') {
      throw new Error(`witness pid ${line.pid} wrote '${line.event}' after its ${interval.end}`);
    }
    interval.to = Math.max(interval.to, line.mono);
    if (line.event === 'logout') interval.end = 'logout';
  }
  for (const interval of all) if (interval.end === 'no-logout') interval.to += opts.beatMs;
  return all.sort((x, y) => x.from - y.from);
}

/** Every pair of intervals of different processes that share an instant (not only neighbours). */
export function witnessOverlaps(intervals: WitnessInterval[]): Overlap[] {
  const out: Overlap[] = [];
  for (let i = 0; i < intervals.length; i++) {
    for (let j = i + 1; j < intervals.length; j++) {
      const a = intervals[i]!;
      const b = intervals[j]!;
      if (a.pid === b.pid && a.from === b.from) continue;
      const ms = Math.min(a.to, b.to) - Math.max(a.from, b.from);
      if (ms > 0) out.push({ a, b, ms });
    }
  }
  return out;
}

/** Each login's token against every earlier login's: a later login under a smaller token is S2 broken. */
export function tokenDecreases(intervals: WitnessInterval[]): TokenDecrease[] {
  const sorted = [...intervals].sort((x, y) => x.from - y.from);
  const out: TokenDecrease[] = [];
  let highest: WitnessInterval | undefined;
  for (const interval of sorted) {
    if (highest && BigInt(interval.token) < BigInt(highest.token)) {
      out.push({ earlier: highest, later: interval });
    }
    if (!highest || BigInt(interval.token) > BigInt(highest.token)) highest = interval;
  }
  return out;
}

export interface WitnessVerdict {
  intervals: WitnessInterval[];
  overlaps: Overlap[];
  decreases: TokenDecrease[];
}

export function judgeWitness(text: string, opts: { beatMs: number }): WitnessVerdict {
  const intervals = witnessIntervals(parseWitnessLines(text), opts);
  return { intervals, overlaps: witnessOverlaps(intervals), decreases: tokenDecreases(intervals) };
}

/** One readable line per problem, for assertion messages and chaos reports. */
export function describeProblems(verdict: WitnessVerdict): string[] {
  const at = (ms: number) => `${ms.toFixed(1)} ms`;
  const who = (i: WitnessInterval) => `${i.node} (pid ${i.pid}, token ${i.token})`;
  return [
    ...verdict.overlaps.map(
      (o) =>
        `S1: ${who(o.a)} logged in [${at(o.a.from)}, ${at(o.a.to)}${o.a.end === 'logout' ? '' : ', killed'}] ` +
        `and ${who(o.b)} [${at(o.b.from)}, ${at(o.b.to)}] overlap by ${at(o.ms)}`,
    ),
    ...verdict.decreases.map(
      (d) =>
        `S2: ${who(d.later)} logged in at ${at(d.later.from)} after ${who(d.earlier)} had a greater token`,
    ),
  ];
}

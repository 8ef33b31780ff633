// What a benchmark trial measured, read from a chaos history (chaos/history.ts): every instant
// comes from outside the agents — the etcd watch of leader keys and login records, the
// witness's own login line, and the network's PINGs — on the one monotonic clock. Pure, so
// the figures can be recomputed from a saved history and the rules are table-tested.
import type { EventOf, HistoryEvent } from '../chaos/history.js';

/** One fault (or command) of a benchmark, and what it was aimed at. */
export interface Trial {
  id: string;
  /** failover: the leader's host is hurt; false: nothing is wrong with the leader; switchover,
   *  leave: planned; probe: the service is frozen under a live agent. */
  kind: 'failover' | 'false' | 'switchover' | 'leave' | 'probe';
  /** The fault, as the bench names it (kill, freeze, cut-etcd, etcd-leader, ...). */
  fault: string;
  /** How the identity's service runs: a warm standby told to log in, or cold, started at login. */
  service?: 'warm' | 'cold';
  ttlS: number;
  identity: string;
  /** The leader before the trial. */
  node: string;
  token: string;
  /** Monotonic ms: the fault's start (or the command's sending), and the trial's end. */
  at: number;
  until: number;
  /**
   * Nothing wrong with the leader: etcd's longest stretch without a commit in the trial, and
   * the stretch a holder rides out (D − T/10); a longer one leaves it no choice but to fence.
   */
  etcdStall?: { gapMs: number; toleratedMs: number };
}

/** The handover's steps, in ms after the trial's start; undefined where not seen. */
export interface Handover {
  /** The old term's service logged out (its own logout or exit line): planned handovers. */
  outMs?: number;
  /** The old term's login record said it was logged out: a successor may rely on it. */
  releasedMs?: number;
  /** The old term's key was gone or replaced (lease expiry, revoke, or resignation). */
  vacatedMs?: number;
  /** A new term's key was written: the successor won its campaign. */
  electedMs?: number;
  /** The successor's login record: it may now log in. */
  recordedMs?: number;
  /** The successor's service logged in (its own record). */
  loginMs?: number;
  /** The first PING answered by the successor (sent at this time). */
  answerMs?: number;
  /** The successor's node and token. */
  node?: string;
  token?: string;
}

export interface TrialResult {
  trial: Trial;
  handover: Handover;
  /**
   * The window with no responder: from the last PING the old term answered to the first the
   * new one answered (send times, so ± the PING period); undefined if the identity did not move.
   */
  gapMs?: number;
  /** Identities whose term changed during the trial. */
  moved: string[];
  /** PINGs of the identity answered by two nodes during the trial (S1 as the network sees it). */
  doubles: number;
}

/** The events of a time-ordered history within [from, to], found by bisection (long runs). */
function slice(events: readonly HistoryEvent[], from: number, to: number): readonly HistoryEvent[] {
  // The first index whose event is past `t` (strictly after, or at or after).
  const bound = (t: number, inclusive: boolean) => {
    let lo = 0;
    let hi = events.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      if (events[mid]!.t < t || (inclusive && events[mid]!.t === t)) lo = mid + 1;
      else hi = mid;
    }
    return lo;
  };
  return events.slice(bound(from, false), bound(to, true));
}

function only<K extends HistoryEvent['kind']>(events: readonly HistoryEvent[], kind: K): EventOf<K>[] {
  return events.filter((e): e is EventOf<K> => e.kind === kind);
}

/**
 * Measure one trial against the history, which must be in time order. `leaderKeys`: the
 * history's leader events, when the caller measures many trials (found here otherwise).
 */
export function measure(
  history: readonly HistoryEvent[],
  trial: Trial,
  leaderKeys: readonly EventOf<'leader'>[] = only(history, 'leader'),
): TrialResult {
  const { at, until, identity } = trial;
  const rel = (t: number | undefined) => (t === undefined ? undefined : t - at);
  const events = slice(history, at, until);
  const leaders = only(events, 'leader');
  const mine = leaders.filter((e) => e.identity === identity);
  const vacated = mine.find((e) => e.token !== trial.token);
  const elected = mine.find((e) => e.node !== undefined && e.token !== trial.token);
  const out = only(events, 'witness').find(
    (w) => w.identity === identity && w.token === trial.token && (w.what === 'logout' || w.what === 'exit'),
  );
  const released = only(events, 'login-record').find(
    (r) => r.identity === identity && r.token === trial.token && !r.loggedIn,
  );
  const handover: Handover = { vacatedMs: rel(vacated?.t), electedMs: rel(elected?.t) };
  if (out) handover.outMs = rel(out.t);
  if (released) handover.releasedMs = rel(released.t);
  const pings = only(events, 'ping').filter((p) => p.identity === identity);
  if (elected) {
    handover.node = elected.node;
    handover.token = elected.token;
    const record = only(events, 'login-record').find(
      (r) => r.identity === identity && r.token === elected.token && r.loggedIn,
    );
    const login = only(events, 'witness').find(
      (w) => w.identity === identity && w.token === elected.token && w.what === 'login',
    );
    handover.recordedMs = rel(record?.t);
    handover.loginMs = rel(login?.t);
    handover.answerMs = rel(earliest(answeredAt(pings, elected.token ?? '')));
  }
  let gapMs: number | undefined;
  if (handover.answerMs !== undefined) {
    const firstNew = at + handover.answerMs;
    const lastOld = answeredAt(pings, trial.token)
      .filter((t) => t < firstNew)
      .reduce<number | undefined>((a, b) => (a === undefined || b > a ? b : a), undefined);
    gapMs = firstNew - (lastOld ?? at);
  }
  const moved = new Set<string>();
  const before = new Map<string, string | undefined>();
  for (const e of leaderKeys) if (e.t < at) before.set(e.identity, e.token);
  for (const e of leaders) if (e.token !== before.get(e.identity)) moved.add(e.identity);
  const doubles = pings.filter((p) => new Set(p.responders.map((r) => r.node)).size > 1).length;
  return { trial, handover, gapMs, moved: [...moved].sort(), doubles };
}

/**
 * When the term's answers came: a responder stamps its arrival (`at`); a history written before
 * it did has only the PING's send time, which was then within a round trip of the answer. An
 * answer that says the service cannot serve (`error`) is not the service back.
 */
function answeredAt(pings: Array<EventOf<'ping'>>, token: string): number[] {
  return pings.flatMap((p) =>
    p.responders.filter((r) => r.token === token && r.error === undefined).map((r) => r.at ?? p.t),
  );
}

const earliest = (times: number[]): number | undefined => (times.length ? Math.min(...times) : undefined);

/**
 * A failover's stages, each its own duration in ms (not a time after the fault): where one
 * trial's time went. The medians of times after the fault cannot say which step a slow trial
 * spent its time in; these can. Undefined where a bound was not seen.
 *   lapse:  the old key gone, minus T (negative: gone before T after the fault, because the
 *           holder's last renewal came before the fault)
 *   elect:  key gone → the successor's key (its watch, rank and create transaction)
 *   record: new key → its login record (the login gate, and the record's commit)
 *   login:  record → the service's own login line (the login message, or a cold start)
 *   answer: login → the first PING answer (the responder, NATS, the PING's trip back)
 */
export interface Stages {
  lapse?: number;
  elect?: number;
  record?: number;
  login?: number;
  answer?: number;
}

export const STAGES = ['lapse', 'elect', 'record', 'login', 'answer'] as const satisfies ReadonlyArray<
  keyof Stages
>;

export function stagesOf(h: Handover, ttlMs: number): Stages {
  const span = (from: number | undefined, to: number | undefined) =>
    from === undefined || to === undefined ? undefined : to - from;
  const stages: Stages = {};
  if (h.vacatedMs !== undefined) stages.lapse = h.vacatedMs - ttlMs;
  const put = (name: Exclude<keyof Stages, 'lapse'>, v: number | undefined) => {
    if (v !== undefined) stages[name] = v;
  };
  put('elect', span(h.vacatedMs, h.electedMs));
  put('record', span(h.electedMs, h.recordedMs));
  put('login', span(h.recordedMs, h.loginMs));
  put('answer', span(h.loginMs, h.answerMs));
  return stages;
}

/**
 * A reading of the kernel's CPU pressure (/proc/pressure/cpu, "some" total): the µs so far in
 * which at least one runnable task on the machine waited for a core. Every container of the
 * topology shares this kernel, so it is the whole machine's.
 */
export type PressureSample = readonly [t: number, waitedUs: number];

/**
 * The time-ordered readings around `t` (a binary search: a run keeps hours of them) and how far
 * between them `t` lies (0–1); undefined outside them. Counters read this way are interpolated
 * linearly between the two.
 */
export function readingsAround<S extends readonly [number, ...unknown[]]>(samples: readonly S[], t: number) {
  let lo = 0;
  let hi = samples.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (samples[mid]![0] < t) lo = mid + 1;
    else hi = mid;
  }
  const after = samples[lo];
  if (!after) return undefined;
  if (after[0] === t) return { before: after, after, w: 0 };
  const before = samples[lo - 1];
  if (!before) return undefined;
  return { before, after, w: (t - before[0]) / (after[0] - before[0]) };
}

/** The cumulative wait at `t`, between the samples around it; undefined outside them. */
function waitedAt(samples: readonly PressureSample[], t: number): number | undefined {
  const at = readingsAround(samples, t);
  return at && at.before[1] + (at.after[1] - at.before[1]) * at.w;
}

/**
 * The share (0–1) of [from, to] in which some runnable task waited for a core: near 1, every
 * step of a handover queued for the CPU. Undefined without samples around both ends.
 */
export function cpuWaitShare(
  samples: readonly PressureSample[],
  from: number,
  to: number,
): number | undefined {
  if (!(to > from)) return undefined;
  const a = waitedAt(samples, from);
  const b = waitedAt(samples, to);
  if (a === undefined || b === undefined) return undefined;
  return Math.min(1, Math.max(0, (b - a) / 1000 / (to - from)));
}

export interface Summary {
  n: number;
  min: number;
  median: number;
  /** With 20 samples the 18th: a tail that is not a single trial. */
  p90: number;
  p99: number;
  max: number;
}

/** Nearest rank: the smallest sample with at least q of them at or below it. */
export function quantile(sorted: readonly number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1))]!;
}

export function summarize(samples: readonly number[]): Summary | undefined {
  if (samples.length === 0) return undefined;
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    n: sorted.length,
    min: sorted[0]!,
    median: quantile(sorted, 0.5),
    p90: quantile(sorted, 0.9),
    p99: quantile(sorted, 0.99),
    max: sorted.at(-1)!,
  };
}

/**
 * Moves per 100 faults, with the one-sided 95 % upper bound (exact binomial, Clopper–Pearson):
 * 0 moves in 25 faults says "fewer than 11.3 per 100", not "never".
 */
export function moveRate(moves: number, faults: number): { per100: number; upper95: number } {
  if (faults === 0) return { per100: 0, upper95: 100 };
  const per100 = (100 * moves) / faults;
  if (moves === faults) return { per100, upper95: 100 };
  // The p at which seeing at most `moves` in `faults` has probability 5 %, by bisection.
  const atMost = (p: number) => {
    let sum = 0;
    let term = (1 - p) ** faults;
    for (let k = 0; k <= moves; k++) {
      sum += term;
      term *= ((faults - k) / (k + 1)) * (p / (1 - p));
    }
    return sum;
  };
  let lo = moves / faults;
  let hi = 1;
  for (let i = 0; i < 60; i++) {
    const mid = (lo + hi) / 2;
    if (atMost(mid) > 0.05) lo = mid;
    else hi = mid;
  }
  return { per100, upper95: 100 * hi };
}

/** The durable inbox under load: what the senders were promised against what they got. */
export interface InboxTally {
  identity: string;
  /** Requests the server stored (acknowledged to their sender): each is owed one answer. */
  stored: number;
  /** Stored requests answered with a reply, and with an error the sender saw. */
  replied: number;
  errors: number;
  /** Stored and never answered by the end of the history. */
  lost: string[];
  /**
   * Answered more than once: a second answer from any term (one reply sent again, serve id and
   * all, to a second delivery of the request is one answer: answered.ts).
   */
  duplicated: string[];
  /** Stored requests per second, first to last send. */
  ratePerS: number;
  /**
   * The most stored requests awaiting their first answer at once: how far the service fell
   * behind (a request never answered counts from its send on).
   */
  maxOwed: number;
  /** From the last stored send to the last first answer: how long the backlog took to work off (lost ones aside). */
  drainMs: number;
}

/**
 * Tally the durable requests of `identity` sent in [from, until]; their answers may come later,
 * up to `answersUntil` (the end of the run: a later run's answers are not theirs).
 */
export function tallyInbox(
  events: readonly HistoryEvent[],
  identity: string,
  from: number,
  until: number,
  answersUntil = Infinity,
): InboxTally {
  const sentAt = new Map<string, number>();
  const answers = new Map<
    string,
    { replies: number; errors: number; first: number; distinct: Set<string> }
  >();
  for (const e of events) {
    if (e.kind !== 'request' || e.identity !== identity || !e.durable) continue;
    if (e.what === 'send') {
      if (e.t >= from && e.t <= until) sentAt.set(e.id, e.t);
      continue;
    }
    // Only answers of this run: request ids of clients in earlier or later runs may be the same
    // (before ids carried the run), and their answers are not owed here.
    if (e.t < from || e.t > answersUntil) continue;
    const a = answers.get(e.id) ?? { replies: 0, errors: 0, first: e.t, distinct: new Set<string>() };
    if (e.what === 'reply') a.replies++;
    else a.errors++;
    a.distinct.add(e.serve ? `${e.token}|${e.serve}` : `answer #${a.replies + a.errors}`);
    a.first = Math.min(a.first, e.t);
    answers.set(e.id, a);
  }
  let replied = 0;
  let errors = 0;
  const lost: string[] = [];
  const duplicated: string[] = [];
  for (const id of sentAt.keys()) {
    const a = answers.get(id);
    if (!a) {
      lost.push(id);
      continue;
    }
    if (a.replies > 0) replied++;
    else errors++;
    if (a.distinct.size > 1) duplicated.push(id);
  }
  const times = [...sentAt.values()];
  const spanMs = times.length > 1 ? Math.max(...times) - Math.min(...times) : 0;
  // Owed from the send to the first answer (not at all when the answer beat the send's
  // acknowledgement); a request never answered is owed to the end, so it counts in maxOwed.
  const steps: Array<[number, number]> = [];
  let lastSend = -Infinity;
  let lastAnswer = -Infinity;
  for (const [id, t] of sentAt) {
    lastSend = Math.max(lastSend, t);
    const first = answers.get(id)?.first;
    if (first === undefined) {
      steps.push([t, 1]);
      continue;
    }
    lastAnswer = Math.max(lastAnswer, first);
    if (first > t) steps.push([t, 1], [first, -1]);
  }
  steps.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
  let owed = 0;
  let maxOwed = 0;
  for (const [, step] of steps) maxOwed = Math.max(maxOwed, (owed += step));
  return {
    identity,
    stored: sentAt.size,
    replied,
    errors,
    lost,
    duplicated,
    ratePerS: spanMs > 0 ? Math.round(((sentAt.size - 1) * 1000) / spanMs) : 0,
    maxOwed,
    drainMs: lastAnswer > lastSend ? Math.round(lastAnswer - lastSend) : 0,
  };
}

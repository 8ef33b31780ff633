// The chaos checker: every invariant of docs/invariants.md judged on a run's history
// (history.ts), with the bounds the run was configured with. Each violation comes with the
// exact events that prove it. Nothing the agents say about themselves is taken as proof of
// safety: S1 rests on the witnesses' own records and on who answered PING; a login that no
// record closes stays open to the end of the history (absence of evidence is never proof).
//
//   node --import tsx chaos/checker.ts RUN.jsonl      exit 0: no violation; 1: violations; 2: bad history
import { readFile } from 'node:fs/promises';
import { pathToFileURL } from 'node:url';
import {
  CLOCK_SKEW_MAX_MS,
  parseHistory,
  type EventOf,
  type HistoryEvent,
  type RunConfig,
} from './history.js';

export const INVARIANTS = ['clock', 'S1', 'S2', 'S3', 'S4', 'S5', 'L1', 'L2'] as const;
export type Invariant = (typeof INVARIANTS)[number];

export interface Violation {
  invariant: Invariant;
  message: string;
  /** The events that prove it, in time order. */
  events: HistoryEvent[];
  /** When it became a violation (the second login of an overlap...); default: its last event. */
  at?: number;
}

/** The moment a violation happened: what a run's windows and fault counts place it by. */
export function momentOf(v: Violation): number {
  return v.at ?? v.events.at(-1)?.t ?? 0;
}

/**
 * Faults after which the leader counts as dead for L1 (a standby must be logged in within
 * T + margin of the fault): its host killed, or its agent killed alone (the service dies by the
 * lifeline, the key expires).
 */
const HOST_DEATHS = new Set(['kill', 'agent-kill']);
/**
 * Faults that end the leader's term when they last past T, and then count as its death for L1:
 * the agent or its host frozen, or cut from etcd (it self-fences, its key expires). Shorter
 * ones, a NATS cut and an etcd member's trouble start no L1 clock.
 */
const DEATHS_PAST_T = new Set(['freeze', 'host-freeze', 'cut-etcd', 'cut-both']);
/** Agent states a fenced node must never enter (S4). */
const LEADING_STATES = new Set(['campaigning', 'waiting-out', 'logging-in', 'leader']);
const TERMINAL_WORKFLOW = new Set(['done', 'aborted']);

export interface Timing {
  action: string;
  identity: string;
  ms: number;
}

export interface Report {
  config: RunConfig | undefined;
  violations: Violation[];
  /** Faults started, per action. */
  faults: Map<string, number>;
  /** Violations per fault action that was under way (or "none"). */
  violationsByFault: Map<string, number>;
  failovers: Timing[];
  switchovers: Timing[];
  /** Overlaps a whole-host freeze explains (see THAW_GRACE_MS): not violations, but shown. */
  thaws: Thaw[];
}

type Witness = EventOf<'witness'>;

/** One term's login as its witness recorded it: from login to logout or exit, else open. */
export interface LoginSpan {
  identity: string;
  node: string;
  token: string;
  from: number;
  to: number;
  start: Witness;
  end?: Witness;
}

const byIdentity = <E extends { identity: string }>(events: E[]) => {
  const map = new Map<string, E[]>();
  for (const e of events) {
    let list = map.get(e.identity);
    if (!list) map.set(e.identity, (list = []));
    list.push(e);
  }
  return map;
};

const only = <K extends HistoryEvent['kind']>(events: HistoryEvent[], kind: K) =>
  events.filter((e): e is EventOf<K> => e.kind === kind);

/** Every witness login span; one no logout or exit closes is open (to = Infinity). */
export function loginSpans(events: HistoryEvent[]): LoginSpan[] {
  const spans: LoginSpan[] = [];
  const open = new Map<string, LoginSpan>();
  for (const e of only(events, 'witness')) {
    const key = `${e.identity}\0${e.node}\0${e.token}`;
    if (e.what === 'login') {
      if (open.has(key)) continue;
      const span: LoginSpan = {
        identity: e.identity,
        node: e.node,
        token: e.token,
        from: e.t,
        to: Infinity,
        start: e,
      };
      open.set(key, span);
      spans.push(span);
    } else if (e.what === 'logout' || e.what === 'exit') {
      const span = open.get(key);
      if (!span) continue;
      span.to = e.t;
      span.end = e;
      open.delete(key);
    }
  }
  return spans;
}

const proof = (...events: (HistoryEvent | undefined)[]) =>
  events.filter((e): e is HistoryEvent => e !== undefined).sort((a, b) => a.t - b.t);

function checkClock(events: HistoryEvent[]): Violation[] {
  return only(events, 'clock')
    .filter((e) => Math.abs(e.reading - e.t) > CLOCK_SKEW_MAX_MS)
    .map((e) => ({
      invariant: 'clock' as const,
      message: `${e.source} reads the monotonic clock ${Math.round(e.reading - e.t)} ms off the harness (over ${CLOCK_SKEW_MAX_MS} ms): its events cannot be compared with the others, so this history proves nothing`,
      events: [e],
    }));
}

/**
 * A host frozen whole (every process on it: a VM pause, a cgroup freeze) past T thaws with its
 * service, which may run a few instructions before the lifeline — frozen with it — kills it.
 * Nothing on that host can prevent those; only fencing at the resource (S2) makes them
 * harmless. Such an overlap is reported as a thaw (with how long the service lived on), not as
 * an S1 violation, provided the service slept through the successor's login and was gone
 * within this long of the thaw. One that outlived it is an S1 violation like any other.
 */
export const THAW_GRACE_MS = 250;

/** The host freeze of `node` that covers `t`, as [start, end] events. */
function frozenAt(events: HistoryEvent[], node: string, t: number) {
  const nemesis = only(events, 'nemesis').filter(
    (n) => n.action === 'host-freeze' && n.targets.includes(node),
  );
  for (const start of nemesis.filter((n) => n.phase === 'start' && n.t <= t)) {
    const end = nemesis.find((n) => n.id === start.id && n.phase === 'end');
    if (end && end.t >= t) return { start, end };
  }
  return undefined;
}

/**
 * An overlap of `a` (the earlier span) with `b`'s login that a whole-host freeze of a's node
 * explains: frozen at b's login, no record from a between the freeze and its end, a gone within
 * THAW_GRACE_MS of the thaw.
 */
function thawOverlap(
  events: HistoryEvent[],
  a: LoginSpan,
  b: LoginSpan,
  config: RunConfig | undefined,
): Thaw | undefined {
  const freeze = frozenAt(events, a.node, b.from);
  if (!freeze || !a.end || !config) return undefined;
  // Only a successor that came once a's lease could have run out: the key expired under the
  // freeze. One that logged in sooner did not wait, and the thaw excuses nothing.
  if (b.from - freeze.start.t < config.ttlMs * 0.9) return undefined;
  // The thaw: a's first record after b's login (a slept through it), else the freeze's end.
  // The unpause call returns after the thaw, so the record may come before its end mark, but
  // not before the unpause began (a history without that instant: THAW_GRACE_MS before the end).
  const first = only(events, 'witness').find(
    (w) => w.identity === a.identity && w.node === a.node && w.token === a.token && w.t > b.from,
  );
  const thawAt = Math.min(first?.t ?? freeze.end.t, freeze.end.t);
  if (thawAt < (freeze.end.liftFrom ?? freeze.end.t - THAW_GRACE_MS)) return undefined;
  const livedMs = a.to - thawAt;
  if (livedMs > THAW_GRACE_MS) return undefined;
  return { identity: a.identity, node: a.node, token: a.token, successor: b.node, livedMs };
}

export interface Thaw {
  identity: string;
  node: string;
  token: string;
  successor: string;
  /** Longest the thawed service can have lived on after the thaw (ms, from the records). */
  livedMs: number;
}

/** S1: never two nodes logged in at once — by the witnesses' spans, and by PING. */
function checkS1(
  events: HistoryEvent[],
  spans: LoginSpan[],
  config: RunConfig | undefined,
  thaws: Thaw[] = [],
): Violation[] {
  const out: Violation[] = [];
  for (const [identity, list] of byIdentity(spans)) {
    const sorted = [...list].sort((a, b) => a.from - b.from);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length && sorted[j]!.from < sorted[i]!.to; j++) {
        const a = sorted[i]!;
        const b = sorted[j]!;
        if (a.node === b.node) continue;
        const thaw = thawOverlap(events, a, b, config);
        if (thaw) {
          thaws.push(thaw);
          continue;
        }
        const until = a.end
          ? `until ${a.end.what} at ${fmt(a.to)}`
          : 'and no record shows it ever logged out';
        out.push({
          invariant: 'S1',
          message: `${identity}: ${b.node} (token ${b.token}) logged in at ${fmt(b.from)} while ${a.node} (token ${a.token}) was logged in since ${fmt(a.from)} ${until}`,
          events: proof(a.start, a.end, b.start),
          at: b.from,
        });
      }
    }
  }
  for (const ping of only(events, 'ping')) {
    const nodes = new Set(ping.responders.map((r) => r.node));
    if (nodes.size > 1) {
      out.push({
        invariant: 'S1',
        message: `${ping.identity}: ${nodes.size} nodes answered one PING at ${fmt(ping.t)}: ${ping.responders.map((r) => `${r.node} (token ${r.token})`).join(', ')}`,
        events: [ping],
      });
    }
  }
  return out;
}

/** S2: tokens only grow — of the leader key, of the terms that log in, of accepted writes. */
function checkS2(events: HistoryEvent[], config: RunConfig | undefined): Violation[] {
  const slack = config?.observeSlackMs ?? 0;
  const out: Violation[] = [];
  const grows = <E extends HistoryEvent & { identity: string }>(
    list: E[],
    token: (e: E) => string | undefined,
    what: string,
  ) => {
    for (const [identity, perIdentity] of byIdentity(list)) {
      let top: E | undefined;
      for (const e of perIdentity) {
        const t = token(e);
        if (t === undefined) continue;
        const topToken = top ? token(top)! : undefined;
        if (topToken !== undefined && BigInt(t) < BigInt(topToken)) {
          out.push({
            invariant: 'S2',
            message: `${identity}: ${what} token ${t} at ${fmt(e.t)} after token ${topToken} at ${fmt(top!.t)}`,
            events: [top!, e],
          });
        } else if (topToken === undefined || BigInt(t) > BigInt(topToken)) {
          top = e;
        }
      }
    }
  };
  grows(only(events, 'leader'), (e) => e.token, 'the leader key went back to');
  grows(
    only(events, 'witness').filter((e) => e.what === 'login'),
    (e) => e.token,
    'a service logged in under the older',
  );
  // A fenced write is stale once the leader key has a newer token (seen observeSlackMs before).
  const leaders = byIdentity(only(events, 'leader'));
  for (const write of only(events, 'write').filter((e) => e.accepted)) {
    const current = (leaders.get(write.identity) ?? [])
      .filter((l) => l.token !== undefined && l.t <= write.t - slack)
      .at(-1);
    if (current && BigInt(write.token) < BigInt(current.token!)) {
      out.push({
        invariant: 'S2',
        message: `${write.identity}: a write under the stale token ${write.token} was accepted at ${fmt(write.t)} while the leader key had token ${current.token} (since ${fmt(current.t)})`,
        events: [current, write],
      });
    }
  }
  return out;
}

/** S3: a node logs in only while it holds the leader key under that token. */
function checkS3(events: HistoryEvent[], config: RunConfig | undefined): Violation[] {
  const slack = config?.observeSlackMs ?? 0;
  const out: Violation[] = [];
  const leaders = byIdentity(only(events, 'leader'));
  for (const login of only(events, 'witness').filter((e) => e.what === 'login')) {
    const seen = leaders.get(login.identity) ?? [];
    const granted = seen.find((l) => l.token === login.token && l.t <= login.t + slack);
    if (!granted || granted.node !== login.node) {
      out.push({
        invariant: 'S3',
        message: `${login.identity}: ${login.node} logged in under token ${login.token} at ${fmt(login.t)}, but the leader key ${granted ? `under that token names ${granted.node}` : 'never had that token by then'}`,
        events: proof(granted, login),
      });
      continue;
    }
    const ended = seen.find((l) => l.t > granted.t && l.token !== login.token && l.t < login.t - slack);
    if (ended) {
      out.push({
        invariant: 'S3',
        message: `${login.identity}: ${login.node} logged in under token ${login.token} at ${fmt(login.t)}, after its term had ended (the key ${ended.node ? `was ${ended.node}'s, token ${ended.token}` : 'was gone'} at ${fmt(ended.t)})`,
        events: proof(granted, ended, login),
      });
    }
  }
  // The login record comes first: a successor that never saw this term finds it there and
  // waits it out. A service that starts with no record under its token is a term no gate
  // can see (checked when the run watched the records).
  if (config?.loginRecordsObserved) {
    const records = only(events, 'login-record');
    for (const login of only(events, 'witness').filter((e) => e.what === 'login')) {
      const record = records.find(
        (r) =>
          r.identity === login.identity && r.token === login.token && r.loggedIn && r.t <= login.t + slack,
      );
      if (!record) {
        out.push({
          invariant: 'S3',
          message: `${login.identity}: ${login.node}'s service logged in under token ${login.token} at ${fmt(login.t)} with no login record for that term written before it: a successor that did not see the term could not wait it out`,
          events: [login],
        });
      }
    }
  }
  return out;
}

/** S4: a fenced node neither campaigns nor logs in until unfenced. */
function checkS4(events: HistoryEvent[], config: RunConfig | undefined): Violation[] {
  // What an agent did just before the fence may be read from its log just after it.
  const slack = config?.observeSlackMs ?? 0;
  const out: Violation[] = [];
  const fencedBy = new Map<string, EventOf<'fence'>>();
  for (const e of events) {
    if (e.kind === 'fence') {
      if (e.fenced) fencedBy.set(e.node, e);
      else fencedBy.delete(e.node);
      continue;
    }
    const node =
      e.kind === 'witness' && e.what === 'login'
        ? e.node
        : e.kind === 'transition' && LEADING_STATES.has(e.to)
          ? e.node
          : undefined;
    const fence = node ? fencedBy.get(node) : undefined;
    if (!fence || !node || (e.kind === 'transition' && e.t < fence.t + slack)) continue;
    const did =
      e.kind === 'witness' ? `logged in (token ${e.token})` : `went ${(e as EventOf<'transition'>).to}`;
    out.push({
      invariant: 'S4',
      message: `${(e as { identity: string }).identity}: ${node} ${did} at ${fmt(e.t)} while fenced since ${fmt(fence.t)}`,
      events: [fence, e],
    });
  }
  return out;
}

/** S5: every request answered or refused; none served twice. */
function checkS5(events: HistoryEvent[], config: RunConfig | undefined): Violation[] {
  const out: Violation[] = [];
  const requests = new Map<string, { send?: EventOf<'request'>; answers: EventOf<'request'>[] }>();
  for (const e of only(events, 'request')) {
    const key = `${e.identity}\0${e.id}`;
    let r = requests.get(key);
    if (!r) requests.set(key, (r = { answers: [] }));
    if (e.what === 'send') r.send ??= e;
    else r.answers.push(e);
  }
  const end = events.at(-1)?.t ?? 0;
  const inFlight = (send: EventOf<'request'>) =>
    config?.requestTimeoutMs !== undefined &&
    end - send.t < config.requestTimeoutMs + (send.durable ? config.ttlMs + config.failoverMarginMs : 0);
  for (const { send, answers } of requests.values()) {
    if (!send) continue;
    if (answers.length === 0 && !inFlight(send)) {
      out.push({
        invariant: 'S5',
        message: `${send.identity}: request ${send.id} sent at ${fmt(send.t)} was neither answered nor refused`,
        events: [send],
      });
    }
    // Served twice by one term. Two terms answering one unsigned durable request (the old
    // leader's ack lost in the handover) is what the stale-reply gate and fenced writes are
    // for; a signed request is refused by the replay cache the second time. One term's reply
    // seen twice with the same serve id is one answer sent again to a second delivery of the
    // request (answered.ts); each serve gets a new id (a reply without one counts alone).
    const replies = answers.filter((a) => a.what === 'reply');
    const perTerm = new Map<string, Set<string>>();
    replies.forEach((r, i) => {
      const term = r.token ?? '?';
      if (!perTerm.has(term)) perTerm.set(term, new Set());
      perTerm.get(term)!.add(r.serve ?? `reply #${i}`);
    });
    if ([...perTerm.values()].some((answersOfTerm) => answersOfTerm.size > 1)) {
      out.push({
        invariant: 'S5',
        message: `${send.identity}: request ${send.id} was served ${replies.length} times (${replies.map((r) => `${r.node ?? '?'} token ${r.token ?? '?'}`).join(', ')})`,
        events: [send, ...replies],
      });
    }
  }
  return out;
}

/** L1: after the leader's host dies, another node logs in within T + margin. */
function checkL1(events: HistoryEvent[], config: RunConfig | undefined, failovers: Timing[]): Violation[] {
  if (!config) return [];
  const out: Violation[] = [];
  const boundMs = config.ttlMs + config.failoverMarginMs;
  const nemesis = only(events, 'nemesis');
  const leaders = only(events, 'leader');
  const logins = only(events, 'witness').filter((e) => e.what === 'login');
  const witnessed = new Set(logins.map((w) => w.identity));
  const pings = only(events, 'ping');
  for (const fault of nemesis.filter((n) => n.phase === 'start')) {
    const end = nemesis.find((n) => n.id === fault.id && n.phase === 'end');
    const pastT = DEATHS_PAST_T.has(fault.action) && (end ? end.t - fault.t : Infinity) > config.ttlMs;
    if (!HOST_DEATHS.has(fault.action) && !pastT) continue;
    const led = new Map<string, EventOf<'leader'>>();
    for (const l of leaders) if (l.t <= fault.t) led.set(l.identity, l);
    for (const [identity, leader] of led) {
      if (!leader.node || !fault.targets.includes(leader.node)) continue;
      // The service's own record of its login when it keeps one (the witness); for a service
      // that does not (the kit runs the user's own), the first PING another node answered alone.
      const next = witnessed.has(identity)
        ? logins.find((w) => w.identity === identity && w.t > fault.t && !fault.targets.includes(w.node))
        : pings.find(
            (p) =>
              p.identity === identity &&
              p.t > fault.t &&
              p.responders.length === 1 &&
              !fault.targets.includes(p.responders[0]!.node),
          );
      // A PING held while the service logged in was answered later than it was sent.
      const nextAt = next && 'responders' in next ? (next.responders[0]!.at ?? next.t) : next?.t;
      const ms = nextAt !== undefined ? nextAt - fault.t : undefined;
      if (ms !== undefined) failovers.push({ action: fault.action, identity, ms });
      if (ms === undefined || ms > boundMs) {
        out.push({
          invariant: 'L1',
          message: `${identity}: ${fault.action} of ${leader.node} at ${fmt(fault.t)}: ${ms === undefined ? 'no other node ever logged in' : `the next login took ${Math.round(ms)} ms`} (bound: T ${config.ttlMs} + margin ${config.failoverMarginMs} ms)`,
          events: proof(leader, fault, next),
        });
      }
    }
  }
  return out;
}

/** L2: a workflow ends (done or rolled back) by its deadline. */
function checkL2(events: HistoryEvent[], config: RunConfig | undefined, switchovers: Timing[]): Violation[] {
  const slack = config?.switchoverSlackMs ?? 0;
  const out: Violation[] = [];
  const last = events.at(-1)?.t ?? 0;
  const flows = new Map<string, EventOf<'workflow'>[]>();
  for (const w of only(events, 'workflow')) {
    let list = flows.get(w.id);
    if (!list) flows.set(w.id, (list = []));
    list.push(w);
  }
  for (const [id, steps] of flows) {
    const first = steps[0]!;
    const deadline = steps.find((s) => s.deadline !== undefined)?.deadline;
    const end = steps.find((s) => TERMINAL_WORKFLOW.has(s.state));
    if (end) switchovers.push({ action: end.state, identity: first.identity, ms: end.t - first.t });
    if (deadline === undefined) continue;
    if (end ? end.t > deadline + slack : last > deadline + slack) {
      out.push({
        invariant: 'L2',
        message: `${first.identity}: workflow ${id} ${end ? `ended (${end.state}) at ${fmt(end.t)}` : 'never ended'}, past its deadline ${fmt(deadline)} + ${slack} ms`,
        events: proof(first, end),
      });
    }
  }
  return out;
}

/** Check a whole history. */
export function check(events: HistoryEvent[]): Report {
  const config = only(events, 'config')[0];
  const spans = loginSpans(events);
  const failovers: Timing[] = [];
  const switchovers: Timing[] = [];
  const thaws: Thaw[] = [];
  const violations = [
    ...checkClock(events),
    ...checkS1(events, spans, config, thaws),
    ...checkS2(events, config),
    ...checkS3(events, config),
    ...checkS4(events, config),
    ...checkS5(events, config),
    ...checkL1(events, config, failovers),
    ...checkL2(events, config, switchovers),
  ];
  const faults = new Map<string, number>();
  const starts = only(events, 'nemesis').filter((n) => n.phase === 'start');
  for (const f of starts) faults.set(f.action, (faults.get(f.action) ?? 0) + 1);
  const violationsByFault = new Map<string, number>();
  for (const v of violations) {
    const at = momentOf(v);
    const during = starts.filter((f) => f.t <= at).at(-1);
    const key = during?.action ?? 'none';
    violationsByFault.set(key, (violationsByFault.get(key) ?? 0) + 1);
  }
  return { config, violations, faults, violationsByFault, failovers, switchovers, thaws };
}

// ---- the report as text -----------------------------------------------------------------

function fmt(t: number): string {
  return Number.isFinite(t) ? `${(t / 1000).toFixed(3)} s` : 'never';
}

const quantile = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

/** A violation and the events that prove it, one per line. */
export function formatViolation(v: Violation): string {
  return [`${v.invariant}: ${v.message}`, ...v.events.map((e) => `    ${JSON.stringify(e)}`)].join('\n');
}

export function formatReport(report: Report): string {
  const lines: string[] = [];
  const classes = new Set([...report.faults.keys(), ...report.violationsByFault.keys()]);
  lines.push('fault            count  violations');
  for (const c of [...classes].sort()) {
    lines.push(
      `${c.padEnd(16)} ${String(report.faults.get(c) ?? 0).padStart(5)}  ${String(report.violationsByFault.get(c) ?? 0).padStart(10)}`,
    );
  }
  const timings = (title: string, list: Timing[]) => {
    const by = new Map<string, number[]>();
    for (const t of list) by.set(t.action, [...(by.get(t.action) ?? []), t.ms]);
    if (by.size === 0) return;
    lines.push('', `${title}: n, min, median, p99, max (ms)`);
    for (const [action, ms] of [...by].sort()) {
      const s = [...ms].sort((a, b) => a - b);
      const row = [s.length, s[0]!, quantile(s, 0.5), quantile(s, 0.99), s.at(-1)!].map((n) =>
        String(Math.round(n)),
      );
      lines.push(`  ${action.padEnd(14)} ${row.join(', ')}`);
    }
  };
  if (report.thaws.length > 0) {
    lines.push(
      '',
      `whole-host freezes past T: the old service thawed, and was gone within (grace ${THAW_GRACE_MS} ms):`,
    );
    for (const t of report.thaws) {
      lines.push(
        `  ${t.identity} on ${t.node} (token ${t.token}), ${t.successor} leading: ${Math.round(t.livedMs)} ms`,
      );
    }
  }
  timings('failovers after a fault', report.failovers);
  timings('workflows', report.switchovers);
  lines.push('');
  if (report.violations.length === 0) {
    lines.push('no violation of S1-S5, L1, L2');
  } else {
    lines.push(`${report.violations.length} violation(s):`);
    for (const v of report.violations) lines.push('', formatViolation(v));
  }
  return lines.join('\n');
}

async function main(): Promise<void> {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node --import tsx chaos/checker.ts RUN.jsonl\n');
    process.exit(2);
  }
  let events: HistoryEvent[];
  try {
    events = parseHistory(await readFile(file, 'utf8'));
  } catch (err) {
    process.stderr.write(`${file}: ${(err as Error).message}\n`);
    process.exit(2);
  }
  const report = check(events);
  if (!report.config) {
    // Without the run's bounds L1 and L2 cannot be judged, and an empty file proves nothing.
    process.stderr.write(`${file}: no config event: not a run history, nothing to check against\n`);
    process.exit(2);
  }
  process.stdout.write(`${formatReport(report)}\n`);
  if (report.config?.seed !== undefined && report.violations.length > 0) {
    process.stdout.write(`replay: npm run chaos -- --seed ${report.config.seed}\n`);
  }
  process.exit(report.violations.length === 0 ? 0 : 1);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) await main();

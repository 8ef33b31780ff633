// The login gate (S3) at work: it reads what clearance.ts decides on — one etcd read at one
// revision plus this node's own sightings of other sessions — and waits, reading again, until
// the decision lets the new term log in.
import type { Etcd3, IOperation } from 'etcd3';
import type { Clock } from '../clock/index.js';
import { type ClearanceFacts, type ClearanceVerdict, type EarlierTerm } from './clearance.js';
import type { StepResult, TxnBatcher } from './batch.js';
import { decode, type Keys, LapseRecord, LoginRecord, TermEnd } from './keys.js';
import type { FencingToken } from './errors.js';
import type { PreviousTerm } from './leadership.js';
import { startedView, type PeerSessions } from './peers.js';
import { backoffMs, type RetryReport } from './retry.js';

/**
 * How long a successor waits for its view of other sessions to catch up with a read that
 * found a holder's session gone. Past it, the read's own time is the (later, safe) bound.
 */
const PEER_CATCHUP_MS = 1_000;

export interface GateFacts {
  client: Etcd3;
  batcher: TxnBatcher;
  identity: string;
  /** The identity's keys, and the keys the sessions live under (they may differ in prefix). */
  keys: Keys;
  sessionKeys: Keys;
  token: FencingToken;
  previous: PreviousTerm | undefined;
  peers: Promise<PeerSessions>;
  clock: Clock;
  /**
   * When this gate first found each earlier holder's session gone (monotonic), kept across its
   * reads. A session this node never saw renewed has no sighting to bound its last renewal; the
   * first read that found it gone does (every renewal came before it). Without this memory each
   * re-read would move the bound forward and a successor would wait for ever.
   */
  goneSince?: Map<string, number>;
  /** Told the revision each read was made at (the gate follows changes after it). */
  readAt?: (revision: bigint) => void;
}

/**
 * The gate's read: the end-of-term and login records, every live session, and what a node
 * that ended the previous holder's lease recorded of its lapse. Also sent inside the
 * transaction that creates the leader key, so the gate's first decision needs no round trip
 * of its own: read after the write that made the term, it is read after every earlier term
 * ended (the key was free), which is all the gate's rules ask of a read.
 */
export function gateReadOps(
  client: Etcd3,
  keys: Keys,
  sessionKeys: Keys,
  identity: string,
  previousLeaseId: string | undefined,
): IOperation[] {
  return [
    client.get(keys.termEnd(identity)),
    client.get(keys.login(identity)),
    client.getAll().prefix(sessionKeys.sessions()),
    ...(previousLeaseId ? [client.get(sessionKeys.lapse(previousLeaseId))] : []),
  ];
}

/** The lease whose lapse record the gate reads: the term this node saw end, unless transferred. */
export function lapsedLease(previous: PreviousTerm | undefined): string | undefined {
  return previous && !previous.transferred ? previous.record.leaseId : undefined;
}

/** A gate read done ahead (in the creating transaction), and when its answer came (monotonic). */
export interface GateRead {
  result: StepResult;
  receivedAt: number;
}

/** What the login gate decides on: one read at one revision, plus this node's sightings. */
export async function readClearanceFacts(g: GateFacts, ahead?: GateRead): Promise<ClearanceFacts> {
  const { client, keys, sessionKeys, identity } = g;
  const termEndKey = keys.termEnd(identity);
  const loginKey = keys.login(identity);
  // One read at one revision, merged with the other reads and writes of this moment (batch.ts).
  const lapsed = lapsedLease(g.previous);
  const result =
    ahead?.result ??
    (await g.batcher.run(gateReadOps(client, keys, sessionKeys, identity, lapsed), keys.leader(identity)));
  // When the answer came: a session found gone was last renewed before it.
  const readAt = ahead?.receivedAt ?? g.clock.monotonicMs();
  const revision = BigInt(result.revision);
  g.readAt?.(revision);
  const termEnd = decode(TermEnd, result.responses[0]?.response_range?.kvs[0]?.value, termEndKey);
  const login = decode(LoginRecord, result.responses[1]?.response_range?.kvs[0]?.value, loginKey);
  const present = new Set(
    (result.responses[2]?.response_range?.kvs ?? []).map((kv) =>
      kv.key.toString().slice(sessionKeys.sessions().length),
    ),
  );
  const lapses = new Map<string, { by: string; sessionRevision: bigint; sinceMs: number }>();
  if (lapsed) {
    const where = sessionKeys.lapse(lapsed);
    // An unreadable record proves nothing, and must not hold the gate shut either (as an
    // unreadable login record does): the gate falls back to its own sighting.
    let record: LapseRecord | undefined;
    try {
      record = decode(LapseRecord, result.responses[3]?.response_range?.kvs[0]?.value, where);
    } catch {
      record = undefined;
    }
    if (record)
      lapses.set(lapsed, {
        by: record.by,
        sessionRevision: BigInt(record.sessionRevision),
        sinceMs: record.sinceMs,
      });
  }

  const terms: EarlierTerm[] = [];
  const prev = g.previous;
  if (prev) {
    terms.push({
      token: prev.token,
      node: prev.record.node,
      leaseId: prev.record.leaseId,
      ttlMs: prev.record.ttlMs,
      transferred: prev.transferred,
    });
  }
  // A term this node never saw (it started later, or missed a short term) that logged in.
  if (
    login?.loggedIn &&
    BigInt(login.token) !== g.token &&
    !terms.some((t) => String(t.token) === login.token)
  ) {
    terms.push({ token: BigInt(login.token), node: login.node, leaseId: login.leaseId, ttlMs: login.ttlMs });
  }

  const peers = await startedView(g.peers);
  const sessions = new Map<string, { present: boolean; lastSeenAt: number; lastRevision?: bigint }>();
  for (const term of terms) {
    if (term.transferred || sessions.has(term.leaseId)) continue;
    if (present.has(term.leaseId)) {
      sessions.set(term.leaseId, { present: true, lastSeenAt: readAt });
      continue;
    }
    // Gone: every renewal came before this read, so its time bounds the last one; a
    // renewal we saw earlier bounds it tighter.
    const seen = await peers?.sightingUpTo(term.leaseId, revision, PEER_CATCHUP_MS);
    const firstGone = g.goneSince?.get(term.leaseId) ?? readAt;
    g.goneSince?.set(term.leaseId, firstGone);
    sessions.set(term.leaseId, {
      present: false,
      lastSeenAt: Math.min(firstGone, seen?.lastSeenAt ?? firstGone),
      // Only a view that kept up to the read can say which renewal was the last.
      ...(seen?.gone && seen.modRevision > 0n ? { lastRevision: seen.modRevision } : {}),
    });
  }
  return {
    terms,
    ...(termEnd ? { termEnd: { token: termEnd.token, loggedOut: termEnd.loggedOut } } : {}),
    ...(login ? { login: { token: login.token, loggedIn: login.loggedIn } } : {}),
    sessions,
    ...(lapses.size > 0 ? { lapses } : {}),
    now: g.clock.monotonicMs(),
  };
}

/**
 * What the gate decides on for a term moved to this node, when the read that adopted it
 * proved the move (clearance.ts: a transfer requires its holder's confirmed logout) and found
 * no login record: no session needs judging.
 */
export function transferredFacts(previous: PreviousTerm, now: number): ClearanceFacts {
  const { token, record } = previous;
  return {
    terms: [{ token, node: record.node, leaseId: record.leaseId, ttlMs: record.ttlMs, transferred: true }],
    sessions: new Map(),
    now,
  };
}

/** A wait for the next change of what the gate read (cancel it once done with it). */
export interface GateChange {
  changed: Promise<void>;
  cancel(): void;
}

export interface GateWait {
  identity: string;
  token: FencingToken;
  /** One read and decision; rejects when etcd does not answer. */
  verdict(): Promise<ClearanceVerdict>;
  /**
   * Settles when a record the last verdict read changes after that read (a holder confirming
   * its logout): the gate reads again at once instead of at its next recheck.
   */
  nextChange?(): GateChange;
  /** May the term still act? Checked before every read and before letting it log in. */
  mayAct(): boolean;
  /** Settles when the term ends. */
  lost: Promise<unknown>;
  /** Told why the gate holds, once per kind of wait (not at every re-read). */
  waiting(reason: string): void;
  retries: RetryReport;
  clock: Clock;
}

/**
 * Wait until the gate lets the term log in; resolves with the sentence that let it. Rejects
 * (with `abandoned`) if the term ends meanwhile. A read that fails holds the gate shut, says
 * so, and is retried: not knowing whether an earlier holder is out never lets this one in.
 */
export async function waitForClearance(w: GateWait, abandoned: () => Error): Promise<string> {
  let shown: string | undefined;
  // One handler on the term's end for the whole wait (a race per round piled one up each time).
  const ended = new AbortController();
  void Promise.resolve(w.lost).then(
    () => ended.abort(),
    () => ended.abort(),
  );
  try {
    for (;;) {
      if (!w.mayAct()) throw abandoned();
      let verdict: ClearanceVerdict;
      let readFailed = false;
      try {
        verdict = await w.verdict();
        w.retries.succeeded('login gate');
      } catch (err) {
        readFailed = true;
        const message = (err as Error).message;
        const failures = w.retries.failed(
          'login gate',
          `reading the earlier term's state for the login gate of ${w.identity}`,
          err,
        );
        verdict = {
          proceed: false,
          reason: `cannot read the earlier term's state from etcd (${message}); not logging in until it can be read`,
          // Longer after each failure in a row: an overloaded etcd is not read again in step.
          recheckInMs: backoffMs(failures),
        };
      }
      if (verdict.proceed) {
        if (!w.mayAct()) continue;
        return verdict.reason;
      }
      // Say it once per kind of wait, not at every re-read (the figures change each time).
      const gist = verdict.reason.replace(/\d+/g, '#');
      if (gist !== shown) {
        shown = gist;
        w.waiting(verdict.reason);
      }
      // Woken early only by a change after a read that got through: after a failed one the
      // change that caused the wait may already be in the feed, and following it would read
      // again at once, every time, with no backoff (a hot loop through an etcd outage).
      const change = readFailed ? undefined : w.nextChange?.();
      const wake = new AbortController();
      const onEnded = () => wake.abort();
      ended.signal.addEventListener('abort', onEnded, { once: true });
      void change?.changed.then(() => wake.abort());
      try {
        if (!ended.signal.aborted)
          await w.clock.sleep(verdict.recheckInMs, wake.signal).catch(() => undefined);
      } finally {
        ended.signal.removeEventListener('abort', onEnded);
        wake.abort();
        change?.cancel();
      }
    }
  } finally {
    // The wait is over either way: nothing is being retried any more.
    w.retries.succeeded('login gate');
  }
}

// S3, the login gate: may a new leader log in yet? A pure decision over what etcd and this
// node's own clock say, returning a sentence that is logged and tested.
//
// The rule: log in at once only on positive proof that every earlier term is over —
//   - it was moved to us by a transfer (which required its holder's confirmed logout);
//   - its holder confirmed logout (login record `false`, or a term-end record saying so);
//   - it never logged in (its login record, read after the term ended, is of an older term:
//     `true` is written before a service starts, guarded by the term's key, so a term whose
//     key is gone can no longer write it);
//   - its holder's session is gone and at least the holder's T has passed, on our monotonic
//     clock, since we last saw that session renewed (peers.ts says why that is proof);
//   - its holder's session is gone, and the node that ended it recorded that the holder's T
//     had passed on its clock since it saw the renewal we too saw last (lapse.ts): the same
//     proof, measured by a node that saw that renewal sooner.
// A lease that is simply gone proves nothing: it may have been revoked by its own agent, a
// controller or an operator while a service still ran. While the holder's session is alive
// and has not confirmed, the holder may still be logged in: wait for its word or its end.

/**
 * Longest wait between a waiting successor's reads. A holder's confirmed logout (its login or
 * term-end record) wakes the gate at once through the change feed, and a wait for a TTL is
 * read again when it runs out; this only bounds how late the gate sees what the feed does not
 * carry (an earlier holder's session ending). Reading every 250 ms instead, 1,900 identities
 * failing over onto one agent cost etcd some 7,600 reads a second for nothing.
 */
export const CLEARANCE_RECHECK_MS = 1_000;

/** An earlier term that must be proven over before a new leader logs in. */
export interface EarlierTerm {
  token: bigint;
  node: string;
  leaseId: string;
  /** The holder's T: how long after its last renewal it may still be logged in. */
  ttlMs: number;
  /** The key was moved to the new leader by a transfer (checked at the transfer's revision). */
  transferred?: boolean;
}

export interface ClearanceFacts {
  terms: EarlierTerm[];
  /** The identity's term-end record, if any. */
  termEnd?: { token: string; loggedOut: boolean };
  /** The identity's login record, if any, read after the terms above ended. */
  login?: { token: string; loggedIn: boolean };
  /**
   * Per lease: is its session key there now, when did we last see it renewed (monotonic), and,
   * once gone, at which revision (when our view of it kept up: the renewal that was its last).
   */
  sessions: ReadonlyMap<string, { present: boolean; lastSeenAt: number; lastRevision?: bigint }>;
  /** Per lease: what the node that ended it recorded (keys.ts, LapseRecord). */
  lapses?: ReadonlyMap<string, { by: string; sessionRevision: bigint; sinceMs: number }>;
  /** performance.now() of this decision. */
  now: number;
}

export type ClearanceVerdict =
  { proceed: true; reason: string } | { proceed: false; reason: string; recheckInMs: number };

type TermVerdict = { over: true; why: string } | { over: false; why: string; untilMs?: number };

function judgeTerm(term: EarlierTerm, f: ClearanceFacts): TermVerdict {
  const name = `term ${term.token} on ${term.node}`;
  if (term.transferred)
    return { over: true, why: `${name} was transferred after its holder confirmed logout` };
  if (f.termEnd?.token === String(term.token) && f.termEnd.loggedOut)
    return { over: true, why: `${name} confirmed its logout when it ended` };
  const login = f.login;
  if (login?.token === String(term.token)) {
    if (!login.loggedIn) return { over: true, why: `${name} confirmed its logout` };
  } else if (!login || BigInt(login.token) < term.token) {
    return { over: true, why: `${name} never logged in` };
  } else {
    // A later term logged in, and did so only after proving this one over.
    return { over: true, why: `${name} was superseded by term ${login.token}` };
  }
  const session = f.sessions.get(term.leaseId);
  if (!session || session.present) {
    return {
      over: false,
      why: `${name} ended without a confirmed logout while its holder's session is still alive; waiting for its logout or the end of its session`,
    };
  }
  const sinceRenewal = f.now - session.lastSeenAt;
  const lapse = f.lapses?.get(term.leaseId);
  if (
    lapse &&
    lapse.sinceMs >= term.ttlMs &&
    session.lastRevision !== undefined &&
    lapse.sessionRevision === session.lastRevision
  ) {
    return {
      over: true,
      why: `${name}: its session is gone, ended by ${lapse.by}, which had seen its last renewal (revision ${lapse.sessionRevision}) ${lapse.sinceMs} ms before, past its TTL of ${term.ttlMs} ms, so its holder self-fenced`,
    };
  }
  if (sinceRenewal >= term.ttlMs) {
    return {
      over: true,
      why: `${name}: its session is gone and was last seen renewed ${Math.round(sinceRenewal)} ms ago, past its TTL of ${term.ttlMs} ms, so its holder self-fenced`,
    };
  }
  return {
    over: false,
    why: `${name} ended without a confirmed logout; its session was last seen renewed ${Math.round(sinceRenewal)} ms ago, waiting out its TTL of ${term.ttlMs} ms`,
    untilMs: session.lastSeenAt + term.ttlMs,
  };
}

export function decideClearance(f: ClearanceFacts): ClearanceVerdict {
  if (f.terms.length === 0) return { proceed: true, reason: 'no earlier term on record' };
  const verdicts = f.terms.map((t) => judgeTerm(t, f));
  const pending = verdicts.filter((v): v is Extract<TermVerdict, { over: false }> => !v.over);
  if (pending.length === 0) return { proceed: true, reason: verdicts.map((v) => v.why).join('; ') };
  // Read again when the last deadline passes (a confirmed logout wakes the gate sooner), and
  // within CLEARANCE_RECHECK_MS at most.
  const until = Math.max(...pending.map((v) => v.untilMs ?? Number.POSITIVE_INFINITY));
  const recheckInMs = Math.max(1, Math.min(CLEARANCE_RECHECK_MS, Math.ceil(until - f.now)));
  return { proceed: false, reason: pending.map((v) => v.why).join('; '), recheckInMs };
}

import { expect } from 'chai';
import {
  CLEARANCE_RECHECK_MS,
  decideClearance,
  type ClearanceFacts,
  type EarlierTerm,
} from '../../pkg/lease/clearance.js';

const T = 5_000;
const NOW = 100_000;
const prev: EarlierTerm = { token: 40n, node: 'a', leaseId: 'L-a', ttlMs: T };

/** Facts about one earlier term, term 40 on `a`, which logged in; override what a row changes. */
function facts(over: Partial<ClearanceFacts> = {}): ClearanceFacts {
  return {
    terms: [prev],
    login: { token: '40', loggedIn: true },
    sessions: new Map([['L-a', { present: false, lastSeenAt: NOW - 1_000 }]]),
    now: NOW,
    ...over,
  };
}

describe('login gate: a successor logs in only on positive proof that earlier terms are over', function () {
  const proceeds: Array<[string, ClearanceFacts, RegExp]> = [
    ['no earlier term at all (a new identity)', facts({ terms: [], login: undefined }), /no earlier term/],
    [
      'the key was moved to us by a transfer',
      facts({ terms: [{ ...prev, transferred: true }] }),
      /transferred after its holder confirmed logout/,
    ],
    [
      'the holder confirmed its logout in the login record',
      facts({ login: { token: '40', loggedIn: false } }),
      /term 40 on a confirmed its logout/,
    ],
    [
      'the holder resigned saying it was logged out',
      facts({ termEnd: { token: '40', loggedOut: true } }),
      /confirmed its logout when it ended/,
    ],
    [
      'the term never logged in (the login record is of an older term)',
      facts({ login: { token: '31', loggedIn: true } }),
      /never logged in/,
    ],
    ['the term never logged in (no login record at all)', facts({ login: undefined }), /never logged in/],
    [
      'a later term logged in after proving this one over',
      facts({ login: { token: '52', loggedIn: false } }),
      /superseded by term 52/,
    ],
    [
      "the holder's session is gone and was last seen renewed a whole T ago (host died, lease expired)",
      facts({ sessions: new Map([['L-a', { present: false, lastSeenAt: NOW - T }]]) }),
      /last seen renewed 5000 ms ago, past its TTL of 5000 ms/,
    ],
  ];
  // A standby ended the holder's lease (lapse.ts) once T had passed since it saw the renewal at
  // revision 70; we saw that renewal 1,000 ms ago only, later than it did.
  const lapsed = (over: { sessionRevision?: bigint; sinceMs?: number; lastRevision?: bigint | null } = {}) =>
    facts({
      sessions: new Map([
        [
          'L-a',
          {
            present: false,
            lastSeenAt: NOW - 1_000,
            ...(over.lastRevision === null ? {} : { lastRevision: over.lastRevision ?? 70n }),
          },
        ],
      ]),
      lapses: new Map([
        ['L-a', { by: 'c', sessionRevision: over.sessionRevision ?? 70n, sinceMs: over.sinceMs ?? T + 3 }],
      ]),
    });
  proceeds.push([
    "the node that ended the holder's lease recorded T passed since the renewal we too saw last",
    lapsed(),
    /ended by c, which had seen its last renewal \(revision 70\) 5003 ms before, past its TTL of 5000 ms/,
  ]);
  for (const [name, f, why] of proceeds) {
    it(`logs in at once: ${name}`, function () {
      const verdict = decideClearance(f);
      expect(verdict.proceed, verdict.reason).to.equal(true);
      expect(verdict.reason).to.match(why);
    });
  }

  it('waits when the lease is simply gone: it proves nothing about when the holder last renewed', function () {
    // Revoked 1 s after a renewal we saw: the holder may act until 0.9 T after that renewal.
    const verdict = decideClearance(facts());
    expect(verdict).to.deep.include({ proceed: false });
    expect(verdict.reason).to.match(
      /without a confirmed logout.*last seen renewed 1000 ms ago.*TTL of 5000 ms/,
    );
  });

  it('reads again when the deadline passes, and within CLEARANCE_RECHECK_MS while it is far off (a confirmed logout wakes the gate through the change feed)', function () {
    const far = decideClearance(facts());
    expect(far.proceed === false && far.recheckInMs).to.equal(CLEARANCE_RECHECK_MS);
    const near = decideClearance(
      facts({ sessions: new Map([['L-a', { present: false, lastSeenAt: NOW - T + 30 }]]) }),
    );
    expect(near.proceed === false && near.recheckInMs).to.equal(30);
  });

  it("waits for the holder's word while its session is alive (its key was deleted under it)", function () {
    const verdict = decideClearance(
      facts({ sessions: new Map([['L-a', { present: true, lastSeenAt: NOW - 10 * T }]]) }),
    );
    expect(verdict).to.deep.include({ proceed: false, recheckInMs: CLEARANCE_RECHECK_MS });
    expect(verdict.reason).to.match(/session is still alive/);
  });

  it('a term-end record without confirmed logout is no proof', function () {
    const verdict = decideClearance(facts({ termEnd: { token: '40', loggedOut: false } }));
    expect(verdict.proceed).to.equal(false);
  });

  it('a confirmation of another term is no proof for this one', function () {
    const verdict = decideClearance(facts({ termEnd: { token: '39', loggedOut: true } }));
    expect(verdict.proceed).to.equal(false);
  });

  it('every earlier term must be over: one unproven term holds the gate', function () {
    const unseen: EarlierTerm = { token: 44n, node: 'c', leaseId: 'L-c', ttlMs: 2 * T };
    const verdict = decideClearance({
      terms: [{ ...prev, transferred: true }, unseen],
      login: { token: '44', loggedIn: true },
      sessions: new Map([['L-c', { present: false, lastSeenAt: NOW - T }]]),
      now: NOW,
    });
    expect(verdict.proceed).to.equal(false);
    expect(verdict.reason).to.match(/term 44 on c .*TTL of 10000 ms/);
  });

  const unproven: Array<[string, ClearanceFacts]> = [
    [
      'its last renewal came after the one the record is about (a renewal beat the revoke)',
      lapsed({ lastRevision: 71n }),
    ],
    [
      'our view cannot say which renewal was the last (it went while our watch was down)',
      lapsed({ lastRevision: null }),
    ],
    ['the recorder had not yet waited out T', lapsed({ sinceMs: T - 1 })],
    ['the record is about another renewal than the last we saw', lapsed({ sessionRevision: 69n })],
  ];
  for (const [name, f] of unproven) {
    it(`a lapse record is no proof when ${name}: the gate waits out its own sighting`, function () {
      const verdict = decideClearance(f);
      expect(verdict.proceed).to.equal(false);
      expect(verdict.reason).to.match(/last seen renewed 1000 ms ago, waiting out its TTL of 5000 ms/);
    });
  }

  it("a session never seen at all counts as unproven (the caller's read time bounds it)", function () {
    const verdict = decideClearance(facts({ sessions: new Map() }));
    expect(verdict.proceed).to.equal(false);
  });
});

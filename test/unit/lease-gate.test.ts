// The login gate's wait (pkg/lease/gate.ts) on a manual clock: it re-reads at the pace the
// decision asks for, says why it holds once per kind of wait, keeps the gate shut while etcd
// cannot be read (and says so), and gives up the moment the term ends. No real sleeps.
import { expect } from 'chai';
import { ManualClock } from '../../pkg/clock/index.js';
import type { Etcd3 } from 'etcd3';
import type { TxnBatcher } from '../../pkg/lease/batch.js';
import { CLEARANCE_RECHECK_MS, decideClearance, type ClearanceVerdict } from '../../pkg/lease/clearance.js';
import { readClearanceFacts, waitForClearance, type GateFacts } from '../../pkg/lease/gate.js';
import { Keys } from '../../pkg/lease/keys.js';
import type { PeerSessions } from '../../pkg/lease/peers.js';
import { RETRY_MS, RetryReport, type CampaignRetry } from '../../pkg/lease/retry.js';

const hold = (reason: string, recheckInMs = CLEARANCE_RECHECK_MS): ClearanceVerdict => ({
  proceed: false,
  reason,
  recheckInMs,
});

function gate(verdicts: Array<ClearanceVerdict | Error>, opts: { followsChanges?: boolean } = {}) {
  const clock = new ManualClock();
  /** Wakes the wait in progress, as a change of the records it read would. */
  let change: (() => void) | undefined;
  let following = 0;
  const reads: number[] = [];
  const waiting: string[] = [];
  const told: Array<CampaignRetry | undefined> = [];
  let active = true;
  let endTerm = () => undefined as void;
  const lost = new Promise<void>((resolve) => (endTerm = resolve));
  const done = waitForClearance(
    {
      identity: 'demo',
      token: 41n,
      verdict: async () => {
        reads.push(clock.monotonicMs());
        const next = verdicts.length > 1 ? verdicts.shift()! : verdicts[0]!;
        if (next instanceof Error) throw next;
        return next;
      },
      ...(opts.followsChanges
        ? {
            nextChange: () => {
              following++;
              const changed = new Promise<void>((resolve) => (change = resolve));
              return { changed, cancel: () => following-- };
            },
          }
        : {}),
      mayAct: () => active,
      lost,
      waiting: (reason) => waiting.push(reason),
      retries: new RetryReport(clock, (r) => told.push(r)),
      clock,
    },
    () => new Error('term 41 ended while waiting'),
  );
  const outcome = done.then(
    (reason) => ({ reason }),
    (err: Error) => ({ error: err.message }),
  );
  const end = () => {
    active = false;
    endTerm();
  };
  return { clock, reads, waiting, told, outcome, end, change: () => change?.(), following: () => following };
}

describe('login gate wait (manual clock)', function () {
  it('re-reads at the pace the decision asks, and lets the term in with the reason that did', async function () {
    const g = gate([
      hold('term 40 on a: last seen renewed 1000 ms ago, waiting out its TTL', 250),
      hold('term 40 on a: last seen renewed 1250 ms ago, waiting out its TTL', 100),
      { proceed: true, reason: 'term 40 on a: its session is gone, past its TTL' },
    ]);
    const start = g.clock.monotonicMs();
    await g.clock.advance(400);
    expect(await g.outcome).to.deep.equal({ reason: 'term 40 on a: its session is gone, past its TTL' });
    expect(g.reads.map((t) => t - start)).to.deep.equal([0, 250, 350]);
    // The figures changed, the kind of wait did not: said once.
    expect(g.waiting).to.have.length(1);
    expect(g.told).to.deep.equal([]);
  });

  it('keeps the gate shut while etcd cannot be read, says so once, and reports the retry until a read gets through', async function () {
    const g = gate([
      new Error('deadline exceeded'),
      new Error('deadline exceeded'),
      { proceed: true, reason: 'no earlier term on record' },
    ]);
    // A failed read is retried after RETRY_MS at most (jittered down to half of it), then
    // twice that: an overloaded etcd is not read again in step by every waiting term.
    await g.clock.advance(RETRY_MS / 2 - 1);
    expect(g.reads).to.have.length(1);
    expect(g.waiting).to.deep.equal([
      "cannot read the earlier term's state from etcd (deadline exceeded); not logging in until it can be read",
    ]);
    expect(g.told).to.have.length(1);
    expect(g.told[0]).to.include({
      what: "reading the earlier term's state for the login gate of demo",
      error: 'deadline exceeded',
    });
    await g.clock.advance(RETRY_MS + 2 * RETRY_MS);
    expect(await g.outcome).to.deep.equal({ reason: 'no earlier term on record' });
    expect(g.reads).to.have.length(3);
    expect(g.told.at(-1)).to.equal(undefined);
  });

  it('reads again the moment a record it read changes, not at its next recheck, and stops following once in', async function () {
    const g = gate(
      [
        hold('term 40 on a ended without a confirmed logout; waiting for its logout', CLEARANCE_RECHECK_MS),
        { proceed: true, reason: 'term 40 on a confirmed its logout' },
      ],
      { followsChanges: true },
    );
    const start = g.clock.monotonicMs();
    await g.clock.advance(10);
    expect(g.reads.map((t) => t - start)).to.deep.equal([0]);
    expect(g.following()).to.equal(1);
    g.change();
    expect(await g.outcome).to.deep.equal({ reason: 'term 40 on a confirmed its logout' });
    expect(g.reads.map((t) => t - start)).to.deep.equal([0, 10]);
    expect(g.following()).to.equal(0);
  });

  it('after a failed read, waits out its backoff: no change wakes it (the read it would follow never happened)', async function () {
    const g = gate([new Error('14 UNAVAILABLE'), { proceed: true, reason: 'no earlier term on record' }], {
      followsChanges: true,
    });
    await g.clock.advance(RETRY_MS / 2 - 1);
    expect(g.reads).to.have.length(1);
    expect(g.following(), 'no change followed after a failed read').to.equal(0);
    await g.clock.advance(RETRY_MS);
    expect(await g.outcome).to.deep.equal({ reason: 'no earlier term on record' });
    expect(g.reads).to.have.length(2);
  });

  it('rejects the moment the term ends, without waiting for the next read', async function () {
    const g = gate([hold('term 40 on a ended without a confirmed logout; waiting for its logout')]);
    await g.clock.advance(1_000);
    const readsBefore = g.reads.length;
    g.end();
    expect(await g.outcome).to.deep.equal({ error: 'term 41 ended while waiting' });
    expect(g.reads).to.have.length(readsBefore);
  });
});

describe('login gate facts read ahead, in the transaction that created the term', function () {
  const keys = new Keys();
  const kv = (key: string, value: unknown) => ({
    key: Buffer.from(key),
    mod_revision: '90',
    value: Buffer.from(JSON.stringify(value)),
  });
  /** A batcher that must not be asked: the first decision has its read already. */
  const noBatcher = {
    run: async () => {
      throw new Error('the gate read etcd although its first read was done ahead');
    },
  } as unknown as TxnBatcher;
  const previous = {
    token: 40n,
    transferred: false,
    record: { node: 'a', leaseId: '7a', ttlMs: 5_000, mustBeOutByMs: 4_000, since: 0 },
  };
  /**
   * The gate's facts from a read made ahead (revision 91, a's term 40 logged in on lease 7a),
   * `sessions` and `lapse` being that read's live sessions and lapse record.
   */
  const readAhead = (
    opts: Pick<GateFacts, 'clock' | 'peers'> & Partial<Pick<GateFacts, 'readAt'>>,
    receivedAt: number,
    sessions: ReturnType<typeof kv>[],
    lapse?: ReturnType<typeof kv>,
  ) =>
    readClearanceFacts(
      {
        client: {} as Etcd3,
        batcher: noBatcher,
        identity: 'demo',
        keys,
        sessionKeys: keys,
        token: 91n,
        previous,
        goneSince: new Map(),
        ...opts,
      },
      {
        receivedAt,
        result: {
          revision: '91',
          responses: [
            { response_range: { kvs: [] } },
            {
              response_range: {
                kvs: [
                  kv(keys.login('demo'), {
                    node: 'a',
                    token: '40',
                    loggedIn: true,
                    at: 0,
                    leaseId: '7a',
                    ttlMs: 5_000,
                  }),
                ],
              },
            },
            { response_range: { kvs: sessions } },
            ...(lapse ? [{ response_range: { kvs: [lapse] } }] : []),
          ],
        },
      },
    );

  it('decides from the read made beside the create, bounding a gone session by when that answer came', async function () {
    const clock = new ManualClock();
    const receivedAt = clock.monotonicMs();
    await clock.advance(30); // the campaign's own steps between the answer and the gate
    let readAtRevision: bigint | undefined;
    // Only b's session is live: a's is gone.
    const facts = await readAhead(
      {
        clock,
        peers: Promise.reject(new Error('no view of other sessions')),
        readAt: (revision) => (readAtRevision = revision),
      },
      receivedAt,
      [kv(keys.session('7b'), {})],
    );
    expect(readAtRevision, 'the gate follows changes after the creating revision').to.equal(91n);
    expect(facts.sessions.get('7a')).to.deep.equal({ present: false, lastSeenAt: receivedAt });
    const verdict = decideClearance(facts);
    expect(verdict.proceed, 'T has not passed since the answer came').to.equal(false);
    expect(verdict.reason).to.match(/last seen renewed 30 ms ago, waiting out its TTL of 5000 ms/);
  });
  it('reads what the node that ended the previous lease recorded, and lets the term in on it when that was the last renewal seen here', async function () {
    const clock = new ManualClock();
    const receivedAt = clock.monotonicMs();
    const lapse = { node: 'a', by: 'c', sessionRevision: '70', sinceMs: 5_004, at: 0 };
    // This node saw a's last renewal (revision 70) only just now: its own T has far to run.
    const view = {
      sightingUpTo: async () => ({
        lastSeenAt: receivedAt - 20,
        gone: true,
        goneAt: receivedAt,
        modRevision: 70n,
      }),
    } as unknown as PeerSessions;
    const read = (recorded: typeof lapse) =>
      readAhead({ clock, peers: Promise.resolve(view) }, receivedAt, [], kv(keys.lapse('7a'), recorded));
    const facts = await read(lapse);
    expect(facts.sessions.get('7a')).to.deep.include({ present: false, lastRevision: 70n });
    expect(facts.lapses?.get('7a')).to.deep.equal({ by: 'c', sessionRevision: 70n, sinceMs: 5_004 });
    expect(decideClearance(facts).reason).to.match(
      /ended by c, which had seen its last renewal \(revision 70\)/,
    );
    // About an earlier renewal than the last one seen here: no proof, the gate waits.
    expect(decideClearance(await read({ ...lapse, sessionRevision: '69' })).proceed).to.equal(false);
    // Unreadable (an operator's hand, a newer writer): ignored, the gate waits on its own sighting.
    const garbled = await read({ ...lapse, sessionRevision: 'seventy' });
    expect(garbled.lapses).to.equal(undefined);
    expect(decideClearance(garbled).proceed).to.equal(false);
  });
});

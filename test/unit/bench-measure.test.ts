import { expect } from 'chai';
import type { EventOf, HistoryEvent } from '../../chaos/history.js';
import {
  cpuWaitShare,
  measure,
  moveRate,
  stagesOf,
  summarize,
  tallyInbox,
  type Trial,
} from '../../bench/measure.js';

// The benchmarks' figures are read from a history written from outside the agents; these
// rules say which event each figure is, so a figure cannot quietly mean something else.
describe('benchmark measurements from a history', () => {
  const trial: Trial = {
    id: 'k1',
    kind: 'failover',
    fault: 'kill',
    ttlS: 5,
    identity: 'w1',
    node: 'a',
    token: '10',
    at: 1_000,
    until: 20_000,
  };
  const ping = (t: number, ...responders: Array<[string, string]>): HistoryEvent => ({
    kind: 'ping',
    t,
    identity: 'w1',
    responders: responders.map(([node, token]) => ({ node, token })),
  });
  const handover: HistoryEvent[] = [
    { kind: 'leader', t: 500, identity: 'w1', node: 'a', token: '10' },
    { kind: 'leader', t: 500, identity: 'w2', node: 'b', token: '11' },
    ping(950, ['a', '10']),
    ping(1_050, ['a', '10']), // sent after the fault, still answered by the old term
    ping(1_100),
    { kind: 'witness', t: 1_020, identity: 'w1', node: 'a', token: '10', what: 'exit' }, // seen dead from outside
    { kind: 'leader', t: 6_000, identity: 'w1' },
    { kind: 'leader', t: 6_040, identity: 'w1', node: 'b', token: '12' },
    { kind: 'login-record', t: 6_060, identity: 'w1', node: 'b', token: '12', loggedIn: true },
    { kind: 'witness', t: 6_100, identity: 'w1', node: 'b', token: '12', what: 'login' },
    ping(6_150),
    ping(6_200, ['b', '12']),
  ];

  it('times each step of the handover from the fault', () => {
    const r = measure(handover, trial);
    expect(r.handover).to.deep.equal({
      outMs: 20,
      vacatedMs: 5_000,
      electedMs: 5_040,
      recordedMs: 5_060,
      loginMs: 5_100,
      answerMs: 5_200,
      node: 'b',
      token: '12',
    });
  });

  it('splits a failover into stages, each its own duration, the lapse counted from T', () => {
    const r = measure(handover, trial);
    expect(stagesOf(r.handover, 5_000)).to.deep.equal({
      lapse: 0,
      elect: 40,
      record: 20,
      login: 40,
      answer: 100,
    });
    // The key gone before T (the holder's last renewal came before the fault), no answer seen.
    expect(stagesOf({ vacatedMs: 4_880, electedMs: 4_900 }, 5_000)).to.deep.equal({ lapse: -120, elect: 20 });
  });

  it('reads how much of a stretch some task waited for a core from the kernel’s cumulative CPU pressure', () => {
    // µs waited so far, at ms 0, 100, 200: 50 ms of waiting in the first 100 ms, none after.
    const samples = [
      [0, 0],
      [100, 50_000],
      [200, 50_000],
    ] as const;
    expect(cpuWaitShare(samples, 0, 100)).to.equal(0.5);
    expect(cpuWaitShare(samples, 50, 150)).to.equal(0.25); // between readings: linear
    expect(cpuWaitShare(samples, 100, 200)).to.equal(0);
    expect(cpuWaitShare(samples, 150, 250), 'past the last reading').to.equal(undefined);
    expect(cpuWaitShare(samples, -10, 50), 'before the first').to.equal(undefined);
    expect(cpuWaitShare([], 0, 100)).to.equal(undefined);
  });

  it('a planned handover is timed from the old service’s logout and its record saying so', () => {
    const planned: HistoryEvent[] = [
      ...handover.slice(0, 4),
      { kind: 'witness', t: 1_140, identity: 'w1', node: 'a', token: '10', what: 'logout' },
      { kind: 'login-record', t: 1_175, identity: 'w1', node: 'a', token: '10', loggedIn: false },
      { kind: 'leader', t: 1_200, identity: 'w1', node: 'b', token: '12' },
    ];
    const r = measure(planned, { ...trial, kind: 'switchover' });
    expect(r.handover).to.include({ outMs: 140, releasedMs: 175, vacatedMs: 200, electedMs: 200 });
  });

  it('the gap runs from the last PING the old term answered to the first the new one did', () => {
    expect(measure(handover, trial).gapMs).to.equal(6_200 - 1_050);
  });

  it('dates an answer by when it came, not by when its PING was sent: a PING held during the login is answered after it', () => {
    const held: HistoryEvent[] = [
      ...handover.slice(0, 9),
      // Sent at 6,080 while b's service was logging in, answered once it was in.
      { kind: 'ping', t: 6_080, identity: 'w1', responders: [{ node: 'b', token: '12', at: 6_130 }] },
      { kind: 'ping', t: 6_090, identity: 'w1', responders: [{ node: 'b', token: '12', at: 6_131 }] },
    ];
    // The old term's last answer came well after its PING was sent.
    held[3] = { kind: 'ping', t: 1_050, identity: 'w1', responders: [{ node: 'a', token: '10', at: 1_070 }] };
    const r = measure(held, trial);
    expect(r.handover.answerMs).to.equal(5_130);
    expect(r.gapMs).to.equal(6_130 - 1_070);
  });

  it('an answer saying the new term’s service cannot serve yet is not the service back', () => {
    const unready: HistoryEvent[] = [
      ...handover.slice(0, 10),
      {
        kind: 'ping',
        t: 6_150,
        identity: 'w1',
        responders: [{ node: 'b', token: '12', at: 6_160, error: 'unavailable' }],
      },
      ping(6_200, ['b', '12']),
    ];
    expect(measure(unready, trial).handover.answerMs).to.equal(5_200);
  });

  it('counts as moved only identities whose term changed during the trial', () => {
    expect(measure(handover, trial).moved).to.deep.equal(['w1']);
    expect(measure(handover, { ...trial, until: 5_000 }).moved).to.deep.equal([]);
  });

  it('a login by the old term again is not a handover', () => {
    const stayed: HistoryEvent[] = [...handover.slice(0, 4), ping(3_000, ['a', '10'])];
    const r = measure(stayed, trial);
    expect(r.handover.electedMs).to.equal(undefined);
    expect(r.gapMs).to.equal(undefined);
    expect(r.moved).to.deep.equal([]);
  });

  it('counts PINGs answered by two nodes', () => {
    expect(measure([...handover, ping(7_000, ['a', '10'], ['b', '12'])], trial).doubles).to.equal(1);
  });

  it('summarizes with nearest-rank quantiles: with 20 samples p99 is the largest', () => {
    const samples = Array.from({ length: 20 }, (_, i) => i + 1);
    expect(summarize(samples)).to.deep.equal({ n: 20, min: 1, median: 10, p90: 18, p99: 20, max: 20 });
    expect(summarize([])).to.equal(undefined);
  });

  it('states a false-failover rate with its 95 % upper bound', () => {
    // 0 in 25: the bound is 1 - 0.05^(1/25), 11.3 %.
    const none = moveRate(0, 25);
    expect(none.per100).to.equal(0);
    expect(none.upper95).to.be.closeTo(100 * (1 - 0.05 ** (1 / 25)), 0.01);
    const some = moveRate(2, 20);
    expect(some.per100).to.equal(10);
    expect(some.upper95).to.be.within(28, 29); // Clopper–Pearson one-sided 95 %: 28.3
    expect(moveRate(3, 3).upper95).to.equal(100);
  });

  describe('the durable inbox under load', () => {
    const req = (t: number, id: string, what: 'send' | 'reply' | 'error', node?: string): HistoryEvent => ({
      kind: 'request',
      t,
      identity: 'w3',
      id,
      what,
      durable: true,
      ...(node ? { node, token: node === 'b' ? '20' : '30' } : {}),
    });
    const history: HistoryEvent[] = [
      req(1_000, 'r1', 'send'),
      req(1_002, 'r1', 'reply', 'b'),
      req(1_500, 'r2', 'send'), // sent during the handover, served by the new term after it
      req(1_900, 'r2', 'reply', 'c'),
      req(1_600, 'r3', 'send'), // served by both terms: counted once as answered, and as doubled
      req(1_601, 'r3', 'reply', 'b'),
      req(1_700, 'r3', 'reply', 'c'),
      req(1_800, 'r4', 'send'), // stored, never answered: lost
      req(2_000, 'r5', 'send'),
      req(2_010, 'r5', 'error', 'c'), // refused with an error its sender saw: answered, not served
      { kind: 'request', t: 2_100, identity: 'w3', id: 'r6', what: 'send' }, // core, not durable
      { kind: 'request', t: 1_700, identity: 'w1', id: 'x1', what: 'send', durable: true }, // another identity
      req(9_000, 'r7', 'send'), // after the window
    ];

    it('counts what was stored in the window, and every stored request lost or answered twice', () => {
      const t = tallyInbox(history, 'w3', 1_000, 2_000);
      expect(t).to.deep.include({ identity: 'w3', stored: 5, replied: 3, errors: 1 });
      expect(t.lost).to.deep.equal(['r4']);
      expect(t.duplicated).to.deep.equal(['r3']);
      // Five sends over 1,000 ms: four intervals.
      expect(t.ratePerS).to.equal(4);
    });

    it("one term's reply seen twice, serve id and all, is one answer sent again; a different second one is a second answer", () => {
      const signed = (t: number, id: string, serve: string): HistoryEvent => ({
        ...(req(t, id, 'reply', 'b') as EventOf<'request'>),
        serve,
      });
      const resent = [req(1_000, 'q1', 'send'), signed(1_010, 'q1', 's1'), signed(1_020, 'q1', 's1')];
      const twice = [req(1_000, 'q2', 'send'), signed(1_010, 'q2', 's1'), signed(1_020, 'q2', 's2')];
      const t = tallyInbox([...resent, ...twice], 'w3', 1_000, 2_000);
      expect(t.duplicated).to.deep.equal(['q2']);
      expect(t.replied).to.equal(2);
    });

    it('an answer from before the window is of an earlier run whose client used the same id: not a second answer', () => {
      const t = tallyInbox([req(500, 'r1', 'reply', 'b'), ...history], 'w3', 1_000, 2_000);
      expect(t.duplicated).to.deep.equal(['r3']);
      expect(t.replied).to.equal(3);
    });

    it('an answer after the run (a later run whose client used the same id) is not a second answer, nor an answer', () => {
      const later = [req(9_500, 'r1', 'reply', 'b'), req(9_600, 'r4', 'reply', 'b')];
      const t = tallyInbox([...history, ...later], 'w3', 1_000, 2_000, 9_000);
      expect(t.duplicated).to.deep.equal(['r3']);
      expect(t.lost).to.deep.equal(['r4']);
    });

    it('says how many requests awaited their first answer at most, and how long after the last send the last came', () => {
      const t = tallyInbox(history, 'w3', 1_000, 2_000);
      // r2 (1,500–1,900), r3 (1,600–1,601) and r4 (from 1,800, never) overlap at 1,800.
      expect(t.maxOwed).to.equal(2);
      // The last send is r5's at 2,000; its answer, the last first answer, came 10 ms later.
      expect(t.drainMs).to.equal(10);
      const behind = tallyInbox(
        [
          req(100, 'a', 'send'),
          req(110, 'b', 'send'),
          req(120, 'c', 'send'),
          req(900, 'a', 'reply', 'b'),
          req(950, 'b', 'reply', 'b'),
          req(1_000, 'c', 'reply', 'b'),
        ],
        'w3',
        0,
        500,
      );
      expect(behind).to.deep.include({ maxOwed: 3, drainMs: 880, lost: [], duplicated: [] });
    });

    it('an answer with no stored send (never acknowledged) is owed nothing and counts nowhere', () => {
      const t = tallyInbox([req(1_001, 'z', 'reply', 'b')], 'w3', 0, 5_000);
      expect(t).to.deep.include({ stored: 0, replied: 0, errors: 0, ratePerS: 0 });
    });
  });
});

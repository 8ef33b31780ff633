// Which identities get a real PING: every due one while the budget allows, and past it the
// suspects first, then a rotating sample; the rest are judged from heartbeats only where the
// leader's own fresh heartbeat vouches for its service.
import { expect } from 'chai';
import {
  PingBudget,
  planProbes,
  suspicion,
  type DueProbe,
  type HeartbeatWitness,
} from '../../pkg/controller/probe-plan.js';

const base: HeartbeatWitness = {
  identity: 'bot',
  leader: { node: 'a', token: '7' },
  loggedIn: true,
  leaderBeatFresh: true,
  entry: { state: 'leader', token: '7', alive: true },
  otherClaimants: [],
  failures: 0,
  splitBrain: false,
};

describe('probe plan: can a heartbeat stand in for a PING?', () => {
  const table: Array<
    [string, Partial<HeartbeatWitness>, 'vouched-answer' | 'vouched-nothing-owed' | 'suspect', RegExp]
  > = [
    [
      'the leader reports its service alive under the current token',
      {},
      'vouched-answer',
      /heartbeat vouches/,
    ],
    [
      'the service failed the agent check',
      { entry: { state: 'leader', token: '7', alive: false } },
      'suspect',
      /not responding/,
    ],
    [
      'the agent did not check it lately',
      { entry: { state: 'leader', token: '7' } },
      'suspect',
      /does not report the service's liveness/,
    ],
    ['the heartbeat is late', { leaderBeatFresh: false }, 'suspect', /heartbeat is late/],
    [
      'the agent reports another term',
      { entry: { state: 'leader', token: '6', alive: true } },
      'suspect',
      /does not report it serving/,
    ],
    [
      'logged in by the record, not listed by its agent',
      { entry: undefined },
      'suspect',
      /does not report it serving/,
    ],
    [
      'still logging in (no answer owed)',
      { loggedIn: false, entry: { state: 'logging-in', token: '7' } },
      'vouched-nothing-owed',
      /no answer is owed/,
    ],
    [
      'another node also reports it logged in',
      { otherClaimants: ['b'] },
      'suspect',
      /b also report it logged in/,
    ],
    ['misses in a row keep it PINGed', { failures: 1 }, 'suspect', /1 probes missed/],
    ['a split brain keeps it PINGed', { splitBrain: true }, 'suspect', /split brain/],
    [
      'no leader and no claimant',
      { leader: undefined, entry: undefined },
      'vouched-nothing-owed',
      /no leader/,
    ],
    [
      'no leader but a node claims it',
      { leader: undefined, entry: undefined, otherClaimants: ['c'] },
      'suspect',
      /c also/,
    ],
  ];
  for (const [name, change, expected, reason] of table) {
    it(name, () => {
      const w: HeartbeatWitness = { ...base, ...change };
      if ('entry' in change && change.entry === undefined) delete w.entry;
      if ('leader' in change && change.leader === undefined) delete w.leader;
      const s = suspicion(w);
      const got = s.suspect
        ? 'suspect'
        : s.vouched?.leaderAnswered
          ? 'vouched-answer'
          : 'vouched-nothing-owed';
      expect(got, s.reason).to.equal(expected);
      expect(s.reason).to.match(reason);
    });
  }
});

describe('probe plan: spending the PING budget', () => {
  const ok = suspicion(base);
  const bad = suspicion({ ...base, leaderBeatFresh: false });
  const due = (identity: string, lastPingAt: number, s = ok): DueProbe => ({
    identity,
    lastPingAt,
    suspicion: s,
  });

  it('within budget every due identity is PINGed (a small cluster probes as without a budget)', () => {
    const plan = planProbes([due('a', 5), due('b', 1, bad)], 2);
    expect(plan).to.deep.equal({ ping: ['a', 'b'], vouched: [], waiting: [] });
  });

  it('over budget: suspects first, then the others oldest PING first; the rest vouched or waiting', () => {
    const plan = planProbes(
      [
        due('fresh', 90),
        due('old', 10),
        due('suspect', 95, bad),
        due('never', -Infinity),
        due('late-suspect', 99, bad),
      ],
      3,
    );
    expect(plan.ping).to.deep.equal(['suspect', 'late-suspect', 'never']);
    expect(plan.vouched).to.deep.equal(['old', 'fresh']);
    expect(plan.waiting).to.deep.equal([]);
  });

  it('suspects the budget cannot reach wait; they are never judged from a heartbeat', () => {
    const plan = planProbes([due('s1', 1, bad), due('s2', 2, bad), due('v', 0)], 1);
    expect(plan).to.deep.equal({ ping: ['s1'], vouched: ['v'], waiting: ['s2'] });
  });

  it('a flood of suspects still leaves a tenth of the budget (one at least) to the sample', () => {
    const plan = planProbes(
      [...Array.from({ length: 6 }, (_, i) => due(`s${i}`, i, bad)), due('old', 0), due('new', 50)],
      4,
    );
    expect(plan.ping).to.deep.equal(['s0', 's1', 's2', 'old']);
    expect(plan.vouched).to.deep.equal(['new']);
    expect(plan.waiting).to.deep.equal(['s3', 's4', 's5']);
  });

  it('a zero budget PINGs nothing', () => {
    expect(planProbes([due('a', 0)], 0).ping).to.deep.equal([]);
  });

  it('the budget refills at its rate up to one second of PINGs', () => {
    const b = new PingBudget(100, 0);
    expect(b.available(0)).to.equal(100);
    b.spend(100);
    expect(b.available(250)).to.equal(25);
    b.spend(25);
    expect(b.available(10_000)).to.equal(100);
  });
});

// Who tries first in a free election (pkg/lease/rank.ts): a pure decision over the registered
// candidates as read, with the reason it is logged with.
import { expect } from 'chai';
import type { CandidateRecord } from '../../pkg/lease/keys.js';
import {
  decideRank,
  parseCandidates,
  RANK_WHEN_UNREADABLE,
  STAGGER_STEP_MS,
  successorOf,
  type CandidatesRead,
} from '../../pkg/lease/rank.js';

const c = (node: string, priority = 0, healthy = true): CandidateRecord => ({
  node,
  leaseId: `L-${node}`,
  ttlMs: 5_000,
  mustBeOutByMs: 4_500,
  priority,
  healthy,
});
const read = (...candidates: CandidateRecord[]): CandidatesRead => ({ candidates, malformed: [] });

describe('free-election rank: the best live candidate tries first', function () {
  const rows: Array<[string, CandidatesRead, number, RegExp]> = [
    ['alone', read(c('me')), 0, /me \(priority 0\) is the best of 1 registered candidate: it tries at once/],
    ['the highest priority goes first', read(c('a', 1), c('me', 5), c('z', 3)), 0, /best of 3/],
    ['behind a higher priority', read(c('a', 9), c('me', 5)), 1, /ranks 1 of 2, behind a \(priority 9\)/],
    [
      'equal priority: by name',
      read(c('b'), c('me'), c('a')),
      2,
      /behind a \(priority 0\), b \(priority 0\)/,
    ],
    [
      'unhealthy ranks after every healthy candidate, whatever its priority',
      read(c('me', 100, false), c('a', -5), c('b', -9)),
      2,
      /me \(priority 100, unhealthy\) ranks 2 of 3/,
    ],
    [
      'a healthy candidate goes before unhealthy ones of higher priority',
      read(c('x', 50, false), c('me', 0)),
      0,
      /best of 2/,
    ],
    [
      'its own registration missing from the read: after all of them',
      read(c('a'), c('b')),
      2,
      /not among the 2 registered candidates read/,
    ],
    [
      'the candidates could not be read: not first, behind any candidate that can see them',
      { unreadable: 'etcdserver: permission denied' },
      RANK_WHEN_UNREADABLE,
      /could not be read \(etcdserver: permission denied\).*rank 8.*rather than first/,
    ],
  ];
  for (const [name, facts, rank, reason] of rows) {
    it(`${name} → rank ${rank}`, function () {
      const decision = decideRank('me', facts);
      expect(decision.rank).to.equal(rank);
      expect(decision.waitMs).to.equal(rank * STAGGER_STEP_MS);
      expect(decision.reason).to.match(reason);
    });
  }

  it('a read that failed is reported as a problem; a clean read is not', function () {
    expect(decideRank('me', { unreadable: 'deadline exceeded' }).problem).to.deep.equal({
      what: 'reading the registered candidates to rank this node',
      error: 'deadline exceeded',
    });
    expect(decideRank('me', read(c('me'))).problem).to.equal(undefined);
  });

  it('ranks at least one step behind every candidate a healthy read could put first', function () {
    expect(RANK_WHEN_UNREADABLE).to.be.greaterThan(0);
  });
});

describe('candidate records: a malformed one is named with why, never dropped unseen', function () {
  const key = (n: string) => `understudy/identities/demo/candidates/${n}`;
  const good = (n: string, priority = 0) => JSON.stringify(c(n, priority));

  it('parses good records and names each malformed one with its key and what is wrong', function () {
    const parsed = parseCandidates({
      [key('a')]: good('a'),
      [key('b')]: 'not json',
      [key('c')]: JSON.stringify({ ...c('c'), priority: 'high' }),
    });
    expect(parsed.candidates.map((x) => x.node)).to.deep.equal(['a']);
    expect(parsed.malformed.map((m) => m.key)).to.deep.equal([key('b'), key('c')]);
    expect(parsed.malformed[0]!.why).to.match(/^not JSON/);
    expect(parsed.malformed[1]!.why).to.match(/priority/);
  });

  it('a malformed record is left out of the ranking, and the decision reports it by key', function () {
    const decision = decideRank('me', parseCandidates({ [key('me')]: good('me'), [key('x')]: '{}' }));
    expect(decision.rank).to.equal(0);
    expect(decision.reason).to.match(/left out of the ranking as malformed: .*candidates\/x/);
    expect(decision.problem?.what).to.equal('ranking this node among the registered candidates');
    expect(decision.problem?.error).to.match(/candidates\/x .*; fix or delete it$/);
  });
});

describe('the successor a leaving leader hands its term to: who a free election would let try first', function () {
  const cases: Array<{ name: string; candidates: CandidateRecord[]; expected: string | undefined }> = [
    {
      name: 'the highest priority other than itself',
      candidates: [c('a', 9), c('b', 1), c('c', 5)],
      expected: 'c',
    },
    { name: 'by name among equals', candidates: [c('a', 9), c('d', 5), c('c', 5)], expected: 'c' },
    {
      name: 'never an unhealthy one, however high its priority',
      candidates: [c('a', 9), c('b', 20, false), c('c', 0)],
      expected: 'c',
    },
    {
      name: 'nobody when only unhealthy ones are left',
      candidates: [c('a'), c('b', 5, false)],
      expected: undefined,
    },
    { name: 'nobody when it is the only candidate', candidates: [c('a')], expected: undefined },
    { name: 'not itself, even when it would rank first', candidates: [c('b', 1), c('a', 9)], expected: 'b' },
  ];
  for (const { name, candidates, expected } of cases) {
    it(`${name} → ${expected ?? 'none (the election decides)'}`, function () {
      expect(successorOf('a', candidates)?.node).to.equal(expected);
    });
  }
});

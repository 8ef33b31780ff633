// A move where nothing was to move fails the chaos matrix, unless etcd itself stopped
// committing for so long that a holder had to fence itself: that move is the safe answer.
import { expect } from 'chai';
import { longestGap } from '../../chaos/commits.js';
import { judgeStay } from '../../chaos/runner.js';

describe('chaos: judging a move where the identity was to stay', function () {
  // T = 5 s, D = 3.5 s, renewals every 500 ms: a stretch of 3,000 ms without a commit can
  // leave a holder without an acknowledged renewal for D.
  const base = { scenario: 'etcd-raft-leader-kill', moved: ['w2'], selfFenceMs: 3_500, ttlMs: 5_000 };

  const rows: Array<[string, Parameters<typeof judgeStay>[0], 'problem' | 'note', RegExp]> = [
    [
      'etcd committed nothing for 3.4 s: the holder had to fence itself',
      { ...base, etcdFault: true, commitGapMs: 3_400 },
      'note',
      /w2 moved: etcd committed nothing for 3400 ms, at least D − T\/10 = 3000 ms/,
    ],
    [
      'exactly D − T/10 without a commit: still the self-fence’s answer',
      { ...base, etcdFault: true, commitGapMs: 3_000 },
      'note',
      /3000 ms, at least/,
    ],
    [
      'etcd was without a commit for 1.8 s only: the move is ours to explain',
      { ...base, etcdFault: true, commitGapMs: 1_800 },
      'problem',
      /w2 did, though etcd was without a commit for 1800 ms only, less than D − T\/10 = 3000 ms/,
    ],
    [
      'not an etcd fault: no excuse, however long etcd paused',
      { ...base, scenario: 'nats-restart', etcdFault: false, commitGapMs: 9_000 },
      'problem',
      /^nothing was to move after nats-restart, and w2 did$/,
    ],
    [
      'commits not watched: no excuse',
      { ...base, etcdFault: true, commitGapMs: undefined },
      'problem',
      /^nothing was to move/,
    ],
  ];
  for (const [name, facts, kind, why] of rows) {
    it(`${kind}: ${name}`, function () {
      const verdict = judgeStay(facts);
      expect(Object.keys(verdict)).to.deep.equal([kind]);
      expect(verdict[kind]).to.match(why);
    });
  }

  describe('the longest stretch without a commit', function () {
    const commits = [0, 200, 400, 600, 4_100, 4_300];
    it('spans the fault: from the last commit before it to the first after', function () {
      expect(longestGap(commits, 500, 6_000)).to.equal(3_500);
    });
    it('counts a stretch still open at the window’s end up to that end', function () {
      expect(longestGap([0, 200], 100, 5_000)).to.equal(4_800);
    });
    it('ignores stretches wholly outside the window', function () {
      expect(longestGap(commits, 4_200, 4_300)).to.equal(200);
    });
  });
});

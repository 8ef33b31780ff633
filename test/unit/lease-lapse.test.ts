import { expect } from 'chai';
import { decideLapse, type LapseFacts, type LapseVerdict } from '../../pkg/lease/lapse.js';

const T = 5_000;
const NOW = 100_000;

/** The holder's session, last seen renewed at revision 70, `ago` ms before the decision. */
function facts(ago: number, over: Partial<LapseFacts> = {}): LapseFacts {
  return {
    sighting: { lastSeenAt: NOW - ago, gone: false, modRevision: 70n },
    ttlMs: T,
    now: NOW,
    ...over,
  };
}

describe('lapse: a waiting standby ends a holder’s lease only once the holder is provably out', function () {
  const rows: Array<[string, LapseFacts, LapseVerdict['action'], RegExp, number?]> = [
    [
      'seen renewed within T: wait until T after that renewal',
      facts(1_200),
      'wait',
      /seen renewed 1200 ms ago, within its TTL of 5000 ms/,
      3_800,
    ],
    ['one millisecond short of T: still wait', facts(T - 1), 'wait', /within its TTL/, 1],
    [
      'not seen renewed for T: read the session key before acting on the watch alone',
      facts(T),
      'confirm',
      /not seen renewed for 5000 ms, past its TTL of 5000 ms; reading its session key/,
    ],
    [
      'the read finds no later write: revoke now, not at etcd’s next expiry check',
      facts(T + 40, { read: { present: true, modRevision: 70n } }),
      'revoke',
      /etcd has no later renewal: its holder self-fenced, so its lease is revoked now/,
    ],
    [
      'the read finds a write the watch has not delivered: the holder renews, wait a T from the read',
      facts(T + 40, { read: { present: true, modRevision: 88n } }),
      'wait',
      /rewritten at revision 88, after the last renewal seen here \(70\): it renews/,
      T,
    ],
    [
      'the read finds the session gone: etcd ended it, nothing to do',
      facts(T + 40, { read: { present: false, modRevision: 0n } }),
      'stop',
      /already gone/,
    ],
    [
      'the session is already gone in the view',
      facts(T * 3, { sighting: { lastSeenAt: NOW - T * 3, gone: true, goneAt: NOW - 10, modRevision: 70n } }),
      'stop',
      /already gone/,
    ],
    [
      'never seen renewed here: no bound on its last renewal, so etcd’s expiry decides',
      facts(0, { sighting: undefined }),
      'stop',
      /never seen renewed here/,
    ],
  ];
  for (const [name, f, action, why, checkInMs] of rows) {
    it(`${action}: ${name}`, function () {
      const v = decideLapse(f);
      expect(v.action).to.equal(action);
      expect(v.why).to.match(why);
      if (checkInMs !== undefined) expect(v).to.include({ checkInMs });
    });
  }

  it('never revokes on the watch alone, however long ago the last renewal was seen', function () {
    for (const ago of [T, T * 2, T * 100]) expect(decideLapse(facts(ago)).action).to.equal('confirm');
  });
});

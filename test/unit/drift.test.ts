// Drift: does a standby still run what the identity runs? One table per rule, each row a
// situation with the exact verdict and sentences the operator reads, so a changed rule (or a
// reason that stops naming the node and the values) fails a row.
import { expect } from 'chai';
import {
  decideNoneInSync,
  judgeDrift,
  snapshotLagMs,
  SPEC_APPLY_GRACE_MS,
  type DriftPolicy,
  type DriftReference,
  type DriftVerdict,
} from '../../pkg/controller/drift.js';
import type { HeartbeatIdentity } from '../../pkg/control/protocol.js';
import type { SnapshotRecord } from '../../pkg/snapshot/record.js';
import type { DriftChecks } from '../../pkg/spec/schema.js';

const NOW = Date.parse('2026-03-01T12:00:00.000Z');
const MIN = 60_000;

function record(token: number, agoMs: number, node = 'a'): SnapshotRecord {
  return {
    identity: 'fix-session',
    node,
    token: String(token),
    takenAt: new Date(NOW - agoMs).toISOString(),
    object: `fix-session/${token}-${NOW - agoMs}`,
    bytes: 1_000,
    files: 3,
    quiesced: true,
    manifestSha256: 'c'.repeat(64),
  };
}

type Fingerprint = Pick<HeartbeatIdentity, 'specRevision' | 'access' | 'version' | 'snapshot'>;
type Held = NonNullable<Fingerprint['snapshot']>;

function held(r: Pick<SnapshotRecord, 'object' | 'token' | 'takenAt'>, how = 'restored'): Held {
  return { object: r.object, token: r.token, takenAt: r.takenAt, how };
}

// Kept on record, newest first: term 6 left S1; term 7 took S2 and S3.
const S1 = record(6, 30 * MIN);
const S2 = record(7, 20 * MIN);
const S3 = record(7, 5 * MIN);
/** Pruned from the record (keep: 3) but still in an old standby's directory. */
const S0 = record(5, 2 * 60 * MIN);
/** Published by a leader whose record this controller has not seen yet. */
const S4 = record(8, 1 * MIN);

const REF: DriftReference = {
  specRevision: 42n,
  access: 'acl-1',
  version: 'v2',
  snapshots: [S3, S2, S1],
  specCurrentForMs: 60_000,
};
const ALL_CHECKS: DriftChecks = { spec: true, access: true, version: true, snapshot: true };
const POLICY: DriftPolicy = { checks: ALL_CHECKS, maxLagMs: 15 * MIN };
/** What a standby in step with REF reports. */
const IN_STEP: Fingerprint = { specRevision: '42', access: 'acl-1', version: 'v2', snapshot: held(S3) };

const inSync: DriftVerdict = {
  known: true,
  drifted: false,
  reason: 'b runs what the identity runs',
  unsure: [],
};
const drifted = (...reasons: string[]): DriftVerdict => ({ known: true, drifted: true, reasons });
/** Nothing against it, but some check could not be made: a hold on it would stay. */
const notJudged = (...unsure: string[]): DriftVerdict => ({
  known: true,
  drifted: false,
  reason: `nothing against b so far (not judged: ${unsure.join('; ')})`,
  unsure,
});

interface Row {
  situation: string;
  standby?: Partial<Fingerprint>;
  ref?: Partial<DriftReference>;
  checks?: Partial<DriftChecks>;
  maxLagMs?: number;
  verdict: DriftVerdict;
}

function judge(row: Row): DriftVerdict {
  return judgeDrift(
    'b',
    { ...IN_STEP, ...row.standby },
    { ...REF, ...row.ref },
    { checks: { ...ALL_CHECKS, ...row.checks }, maxLagMs: row.maxLagMs ?? POLICY.maxLagMs },
    NOW,
  );
}

function table(rows: Row[]) {
  for (const row of rows) {
    it(row.situation, function () {
      expect(judge(row)).to.deep.equal(row.verdict);
    });
  }
}

describe('drift of a standby (pkg/controller/drift.ts)', function () {
  describe('a standby that runs what the identity runs is in sync', function () {
    table([
      { situation: 'same spec revision, access lists, version, and the newest snapshot', verdict: inSync },
      {
        situation: 'a standby that does not report its access lists is not judged on them (nor cleared)',
        standby: { access: undefined },
        verdict: notJudged('b reports no access lists digest'),
      },
      {
        situation: 'a standby that does not report its version is not judged on it (nor cleared)',
        standby: { version: undefined },
        verdict: notJudged('b reports no service version'),
      },
      {
        situation: 'nor is any standby while the leader’s version is unknown',
        standby: { version: 'v1' },
        ref: { version: undefined },
        verdict: notJudged('no reference service version (no leader heard, none declared)'),
      },
      {
        situation: 'no snapshot on record: nothing to lack, even holding none',
        standby: { snapshot: undefined },
        ref: { snapshots: [] },
        verdict: inSync,
      },
    ]);
  });

  describe('each kind of drift says which node differs, and in what', function () {
    table([
      {
        situation: 'another spec revision',
        standby: { specRevision: '41' },
        verdict: drifted('b runs spec revision 41, the identity runs 42'),
      },
      {
        situation: 'no spec applied at all',
        standby: { specRevision: undefined },
        verdict: drifted('b has not applied the spec (the identity runs revision 42)'),
      },
      {
        situation: 'other access lists',
        standby: { access: 'acl-0' },
        verdict: drifted("b enforces other access lists than the identity's (acl-0 ≠ acl-1)"),
      },
      {
        situation: 'another service version than the leader',
        standby: { version: 'v1' },
        verdict: drifted('b runs service version v1, the leader runs v2'),
      },
      {
        situation: 'a snapshot lacking newer state for longer than state.maxLagMs',
        standby: { snapshot: held(S1) },
        verdict: drifted(
          `b holds snapshot ${S1.object}; it has lacked newer state for 1200 s (the newest is ${S3.object}), over state.maxLagMs 900 s`,
        ),
      },
      {
        situation: 'no snapshot held while some are on record',
        standby: { snapshot: undefined },
        verdict: drifted(
          `b holds no snapshot; it has lacked newer state for 1800 s (the newest is ${S3.object}), over state.maxLagMs 900 s`,
        ),
      },
      {
        situation: 'everything at once: every reason, in the order spec, access, version, snapshot',
        standby: { specRevision: '41', access: 'acl-0', version: 'v1', snapshot: held(S1) },
        verdict: drifted(
          'b runs spec revision 41, the identity runs 42',
          "b enforces other access lists than the identity's (acl-0 ≠ acl-1)",
          'b runs service version v1, the leader runs v2',
          `b holds snapshot ${S1.object}; it has lacked newer state for 1200 s (the newest is ${S3.object}), over state.maxLagMs 900 s`,
        ),
      },
    ]);
  });

  describe(`a new spec counts only once it has been current for SPEC_APPLY_GRACE_MS (${SPEC_APPLY_GRACE_MS} ms)`, function () {
    it('is ten seconds', function () {
      expect(SPEC_APPLY_GRACE_MS).to.equal(10_000);
    });
    const behind: Partial<Fingerprint> = { specRevision: '41', access: 'acl-0' };
    table([
      {
        situation:
          'just changed: a standby still on the old spec and access lists is not drifted yet (nor cleared)',
        standby: behind,
        ref: { specCurrentForMs: 0 },
        verdict: notJudged(
          'spec revision 42 is still within its grace on b',
          'the access lists changed within their grace on b',
        ),
      },
      {
        situation: 'one millisecond before the grace ends: still not',
        standby: behind,
        ref: { specCurrentForMs: SPEC_APPLY_GRACE_MS - 1 },
        verdict: notJudged(
          'spec revision 42 is still within its grace on b',
          'the access lists changed within their grace on b',
        ),
      },
      {
        situation: 'when the grace ends: spec and access lists count',
        standby: behind,
        ref: { specCurrentForMs: SPEC_APPLY_GRACE_MS },
        verdict: drifted(
          'b runs spec revision 41, the identity runs 42',
          "b enforces other access lists than the identity's (acl-0 ≠ acl-1)",
        ),
      },
      {
        situation: 'the grace does not cover the version or the snapshot',
        standby: { ...behind, version: 'v1', snapshot: held(S1) },
        ref: { specCurrentForMs: 0 },
        verdict: drifted(
          'b runs service version v1, the leader runs v2',
          `b holds snapshot ${S1.object}; it has lacked newer state for 1200 s (the newest is ${S3.object}), over state.maxLagMs 900 s`,
        ),
      },
    ]);
  });

  describe('each check can be switched off (state.drift)', function () {
    const everything: Partial<Fingerprint> = {
      specRevision: '41',
      access: 'acl-0',
      version: 'v1',
      snapshot: held(S1),
    };
    table([
      {
        situation: 'spec off: another revision alone is in sync',
        standby: { specRevision: '41' },
        checks: { spec: false },
        verdict: inSync,
      },
      {
        situation: 'spec off leaves the other three',
        standby: everything,
        checks: { spec: false },
        verdict: drifted(
          "b enforces other access lists than the identity's (acl-0 ≠ acl-1)",
          'b runs service version v1, the leader runs v2',
          `b holds snapshot ${S1.object}; it has lacked newer state for 1200 s (the newest is ${S3.object}), over state.maxLagMs 900 s`,
        ),
      },
      {
        situation: 'access off: other access lists alone are in sync',
        standby: { access: 'acl-0' },
        checks: { access: false },
        verdict: inSync,
      },
      {
        situation: 'version off: another version alone is in sync',
        standby: { version: 'v1' },
        checks: { version: false },
        verdict: inSync,
      },
      {
        situation: 'snapshot off: a stale snapshot alone is in sync',
        standby: { snapshot: undefined },
        checks: { snapshot: false },
        verdict: inSync,
      },
      {
        situation: 'all off: a standby different in everything is in sync',
        standby: everything,
        checks: { spec: false, access: false, version: false, snapshot: false },
        verdict: inSync,
      },
    ]);
  });

  describe('snapshot lag is how long since the first snapshot it lacks was taken', function () {
    table([
      { situation: 'holding the newest: no lag', standby: { snapshot: held(S3) }, verdict: inSync },
      {
        situation: 'lacking only the newest (5 min): within state.maxLagMs, though its own is 20 min old',
        standby: { snapshot: held(S2) },
        verdict: inSync,
      },
      {
        situation:
          'lacking two: measured from the older of them (20 min), not its own (30 min) nor the newest (5 min)',
        standby: { snapshot: held(S1) },
        maxLagMs: 19 * MIN,
        verdict: drifted(
          `b holds snapshot ${S1.object}; it has lacked newer state for 1200 s (the newest is ${S3.object}), over state.maxLagMs 1140 s`,
        ),
      },
      {
        situation: 'exactly state.maxLagMs behind is not over it',
        standby: { snapshot: held(S1) },
        maxLagMs: 20 * MIN,
        verdict: inSync,
      },
      {
        situation:
          'holding one older than every snapshot kept: counted from its own time (2 h), the longest it can have lacked newer state',
        standby: { snapshot: held(S0) },
        maxLagMs: 119 * MIN,
        verdict: drifted(
          `b holds snapshot ${S0.object}; it has lacked newer state for 7200 s (the newest is ${S3.object}), over state.maxLagMs 7140 s`,
        ),
      },
      {
        situation: 'holding a snapshot newer than any on record is not stale',
        standby: { snapshot: held(S4, 'published') },
        maxLagMs: 5_000,
        verdict: inSync,
      },
    ]);

    it('returns the lag and the newest snapshot it is measured against', function () {
      const rows: Array<
        [string, Held | undefined, readonly SnapshotRecord[], number, SnapshotRecord | undefined]
      > = [
        ['none on record', undefined, [], 0, undefined],
        ['none on record, one held', held(S1), [], 0, undefined],
        ['holds the newest', held(S3), [S3, S2, S1], 0, S3],
        ['holds one newer than the record', held(S4), [S3, S2, S1], 0, S3],
        ['lacks the newest only', held(S2), [S3, S2, S1], 5 * MIN, S3],
        ['lacks two', held(S1), [S3, S2, S1], 20 * MIN, S3],
        ['holds none', undefined, [S3, S2, S1], 30 * MIN, S3],
        ['holds a pruned one: from its own time', held(S0), [S3, S2, S1], 2 * 60 * MIN, S3],
        [
          'same term, earlier time: lacks the later one',
          held(record(7, 40 * MIN)),
          [S3, S2, S1],
          20 * MIN,
          S3,
        ],
      ];
      for (const [situation, h, snapshots, lagMs, newest] of rows) {
        expect(snapshotLagMs(h, snapshots, NOW), situation).to.deep.equal(
          newest ? { lagMs, newest } : { lagMs },
        );
      }
    });

    it('never says a negative lag when the wall clock is behind the snapshot', function () {
      expect(snapshotLagMs(undefined, [S4], NOW - 10 * MIN)).to.deep.equal({ lagMs: 0, newest: S4 });
    });
  });

  it('concludes nothing without a fresh heartbeat from the standby', function () {
    expect(judgeDrift('b', undefined, REF, POLICY, NOW)).to.deep.equal({
      known: false,
      reason: 'no fresh heartbeat from b: its drift is not judged',
    });
  });
});

describe('when no standby is in sync (decideNoneInSync)', function () {
  type Candidate = Parameters<typeof decideNoneInSync>[2][number];
  const cand = (node: string, priority: number, snapshot?: SnapshotRecord): Candidate => ({
    node,
    priority,
    snapshot: snapshot ? held(snapshot) : undefined,
    reasons: [`${node} is behind`],
  });

  it('has nothing to do without a live candidate', function () {
    for (const policy of ['stay-down', 'freshest'] as const) {
      expect(decideNoneInSync('fix-session', policy, [])).to.deep.equal({
        action: 'none',
        reason: 'fix-session has no live candidate',
      });
    }
  });

  it('stay-down: nobody takes over, and the reason lists every drifted candidate with why', function () {
    const candidates = [
      cand('b', 1, S3),
      { ...cand('c', 2), reasons: ['c runs spec revision 41', 'c is old'] },
    ];
    expect(decideNoneInSync('fix-session', 'stay-down', candidates)).to.deep.equal({
      action: 'stay-down',
      reason:
        'fix-session stays down: no in-sync standby (state.whenNoneInSync: stay-down); drifted: b (b is behind), c (c runs spec revision 41; c is old). Re-sync one, or set whenNoneInSync: freshest',
    });
  });

  it('freshest: lets the one holding the newest state through, and says it drifted', function () {
    const candidates = [cand('b', 1, S1), cand('c', 1, S3)];
    expect(decideNoneInSync('fix-session', 'freshest', candidates)).to.deep.equal({
      action: 'release',
      node: 'c',
      reason: `no in-sync standby of fix-session: letting the freshest, c (holds ${S3.object}), take over although it drifted (state.whenNoneInSync: freshest); drifted: b (b is behind), c (c is behind)`,
    });
    expect(decideNoneInSync('fix-session', 'freshest', [cand('d', 1)])).to.deep.include({
      node: 'd',
      reason:
        'no in-sync standby of fix-session: letting the freshest, d, take over although it drifted (state.whenNoneInSync: freshest); drifted: d (d is behind)',
    });
  });

  describe('freshest picks by newest snapshot, then priority, then name, whatever the order', function () {
    const rows: Array<{ situation: string; candidates: Candidate[]; pick: string }> = [
      {
        situation: 'the newest snapshot beats a higher priority',
        candidates: [cand('b', 100, S2), cand('c', 1, S3)],
        pick: 'c',
      },
      {
        situation: 'a later term beats a later time in an earlier term',
        candidates: [cand('b', 1, record(6, 1 * MIN)), cand('c', 1, record(7, 50 * MIN))],
        pick: 'c',
      },
      {
        situation: 'holding any snapshot beats holding none, whatever the priority',
        candidates: [cand('b', 100), cand('c', 1, S1)],
        pick: 'c',
      },
      {
        situation: 'the same snapshot: the higher priority',
        candidates: [cand('b', 1, S3), cand('c', 5, S3)],
        pick: 'c',
      },
      {
        situation: 'the same snapshot and priority: the first name',
        candidates: [cand('c', 5, S3), cand('b', 5, S3)],
        pick: 'b',
      },
      {
        situation: 'none holds a snapshot: priority, then name',
        candidates: [cand('d', 1), cand('c', 5), cand('b', 5)],
        pick: 'b',
      },
      {
        situation: 'three candidates: newest first, even listed last',
        candidates: [cand('a', 9, S1), cand('b', 9), cand('c', 0, S3), cand('d', 9, S2)],
        pick: 'c',
      },
    ];
    for (const row of rows) {
      it(row.situation, function () {
        for (const order of [row.candidates, [...row.candidates].reverse()]) {
          const d = decideNoneInSync('fix-session', 'freshest', order);
          expect(d.action).to.equal('release');
          expect(d.action === 'release' && d.node, order.map((c) => c.node).join(',')).to.equal(row.pick);
        }
      });
    }
  });
});

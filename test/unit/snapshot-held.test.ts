// Which snapshot a node's state directory holds, and when it should be replaced by a newer one
// (pkg/snapshot/held.ts): the catch-up rule, one row per branch with the sentence it says, and
// the small record kept beside the directory on a real filesystem.
import { expect } from 'chai';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  decideCatchUp,
  heldOf,
  heldPath,
  newer,
  readHeld,
  writeHeld,
  type CatchUp,
  type HeldSnapshot,
} from '../../pkg/snapshot/held.js';
import type { SnapshotRecord } from '../../pkg/snapshot/record.js';

function record(token: string, takenAt: string, node = 'a'): SnapshotRecord {
  return {
    identity: 'fix-session',
    node,
    token,
    takenAt,
    object: `fix-session/${token}-${Date.parse(takenAt)}`,
    bytes: 10,
    files: 1,
    quiesced: true,
    manifestSha256: 'd'.repeat(64),
  };
}

const T6 = record('6', '2026-03-01T11:00:00.000Z');
const T7_EARLY = record('7', '2026-03-01T11:30:00.000Z');
const T7 = record('7', '2026-03-01T11:55:00.000Z');
const T8 = record('8', '2026-03-01T11:58:00.000Z', 'b');
const what = (r: SnapshotRecord) => `snapshot ${r.object} (term ${r.token}, taken ${r.takenAt})`;

describe('the snapshot a state directory holds (pkg/snapshot/held.ts)', function () {
  describe('catching up: restore only when someone else’s state is newer than what is held', function () {
    const rows: Array<
      [
        situation: string,
        held: HeldSnapshot | undefined,
        newest: SnapshotRecord | undefined,
        expected: CatchUp,
      ]
    > = [
      [
        'nothing published yet: the directory stays',
        undefined,
        undefined,
        { restore: false, reason: 'no snapshot has been published yet: the directory stays as it is' },
      ],
      [
        'nothing published yet, something held: still stays',
        heldOf(T7, 'published'),
        undefined,
        { restore: false, reason: 'no snapshot has been published yet: the directory stays as it is' },
      ],
      [
        'holds nothing: restore the newest',
        undefined,
        T7,
        { restore: true, reason: `this node holds no snapshot; restoring ${what(T7)}` },
      ],
      [
        'published the newest itself: keep the directory (it went on writing after)',
        heldOf(T7, 'published'),
        T7,
        {
          restore: false,
          reason: `this node published the newest ${what(T7)} and its directory has only gone on from there`,
        },
      ],
      [
        'restored the newest already: nothing to do',
        heldOf(T7, 'restored'),
        T7,
        { restore: false, reason: `this node already holds the newest ${what(T7)}` },
      ],
      [
        'holds one newer than any on record (a later term’s, not listed yet): keep it',
        heldOf(T8, 'published'),
        T7,
        {
          restore: false,
          reason: `this node holds ${T8.object}, newer than any snapshot on record (${what(T7)}); keeping it`,
        },
      ],
      [
        'holds one of an earlier term: restore the newer',
        heldOf(T6, 'restored'),
        T7,
        { restore: true, reason: `${what(T7)} is newer than the ${T6.object} this node holds` },
      ],
      [
        'holds an earlier one of the same term: restore the later',
        heldOf(T7_EARLY, 'restored'),
        T7,
        { restore: true, reason: `${what(T7)} is newer than the ${T7_EARLY.object} this node holds` },
      ],
      [
        'published one itself, but another node led after: restore theirs',
        heldOf(T7, 'published'),
        T8,
        { restore: true, reason: `${what(T8)} is newer than the ${T7.object} this node holds` },
      ],
    ];
    for (const [situation, held, newest, expected] of rows) {
      it(situation, function () {
        expect(decideCatchUp(held, newest)).to.deep.equal(expected);
      });
    }
  });

  it('orders snapshots by term, then by time, comparing 64-bit terms exactly', function () {
    const at = (token: string, takenAt: string) => ({ token, takenAt });
    const rows: Array<
      [
        situation: string,
        a: { token: string; takenAt: string },
        b: { token: string; takenAt: string },
        aNewer: boolean,
      ]
    > = [
      ['a later term', at('8', '2026-03-01T10:00:00Z'), at('7', '2026-03-01T11:00:00Z'), true],
      [
        'an earlier term, taken later',
        at('7', '2026-03-01T11:00:00Z'),
        at('8', '2026-03-01T10:00:00Z'),
        false,
      ],
      ['the same term, later', at('7', '2026-03-01T11:00:01Z'), at('7', '2026-03-01T11:00:00Z'), true],
      ['the same term, earlier', at('7', '2026-03-01T11:00:00Z'), at('7', '2026-03-01T11:00:01Z'), false],
      [
        'the same term and time: not newer',
        at('7', '2026-03-01T11:00:00Z'),
        at('7', '2026-03-01T11:00:00Z'),
        false,
      ],
      [
        'beyond 2^53',
        at('9007199254740993', '2026-03-01T10:00:00Z'),
        at('9007199254740992', '2026-03-01T11:00:00Z'),
        true,
      ],
      ['numerically, not as text', at('10', '2026-03-01T10:00:00Z'), at('9', '2026-03-01T11:00:00Z'), true],
    ];
    for (const [situation, a, b, aNewer] of rows) expect(newer(a, b), situation).to.equal(aNewer);
  });

  it('keeps of a record what identifies it, and how it came', function () {
    expect(heldOf(T7, 'restored')).to.deep.equal({
      object: T7.object,
      token: '7',
      takenAt: T7.takenAt,
      manifestSha256: 'd'.repeat(64),
      how: 'restored',
    });
  });

  describe('the held record on disk', function () {
    let root: string;
    let dir: string;

    beforeEach(async () => {
      root = await mkdtemp(join(tmpdir(), 'understudy-held-'));
      dir = join(root, 'state');
      await mkdir(dir);
      await writeFile(join(dir, 'offset'), '99817\n');
    });

    afterEach(() => rm(root, { recursive: true, force: true }));

    it('lives beside the state directory, so swapping the directory in a restore never touches it', function () {
      expect(heldPath('/var/lib/fix/state')).to.equal('/var/lib/fix/.state.understudy-snapshot.json');
      expect(heldPath('/srv/b/fix')).to.equal('/srv/b/.fix.understudy-snapshot.json');
    });

    it('reads back what was written, as a 0600 file and without a temporary file left over', async function () {
      const held = heldOf(T7, 'published');
      await writeHeld(dir, held);
      expect(await readHeld(dir)).to.deep.equal(held);
      expect(await readdir(root)).to.have.members(['state', '.state.understudy-snapshot.json']);
      expect(await readdir(dir), 'the state directory itself is untouched').to.deep.equal(['offset']);
      expect((await stat(heldPath(dir))).mode & 0o777).to.equal(0o600);
    });

    it('replaces the record it had', async function () {
      await writeHeld(dir, heldOf(T6, 'restored'));
      await writeHeld(dir, heldOf(T8, 'restored'));
      expect(await readHeld(dir)).to.deep.equal(heldOf(T8, 'restored'));
      expect(await readdir(root)).to.have.members(['state', '.state.understudy-snapshot.json']);
    });

    it('holds nothing when there is no record, or one that does not parse', async function () {
      expect(await readHeld(dir), 'no record').to.equal(undefined);
      const good = heldOf(T7, 'restored');
      const bad: Array<[string, string]> = [
        ['not JSON', '{"object": "fix-session/7-1'],
        ['empty', ''],
        ['JSON, not an object', '"fix-session/7-1"'],
        ['an unknown way of coming', JSON.stringify({ ...good, how: 'copied' })],
        ['a token that is not a decimal', JSON.stringify({ ...good, token: '7a' })],
        ['a short digest', JSON.stringify({ ...good, manifestSha256: 'abc' })],
        ['a missing field', JSON.stringify({ ...good, object: undefined })],
        ['an unknown field', JSON.stringify({ ...good, extra: 1 })],
      ];
      for (const [situation, text] of bad) {
        await writeFile(heldPath(dir), text);
        expect(await readHeld(dir), situation).to.equal(undefined);
      }
      await writeFile(heldPath(dir), JSON.stringify(good));
      expect(await readHeld(dir), 'and a good one again').to.deep.equal(good);
      expect(await readFile(join(dir, 'offset'), 'utf8')).to.equal('99817\n');
    });
  });
});

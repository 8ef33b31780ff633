// An identity's state section as a spec writer meets it: what a state directory may be, the
// defaults a section starts from, and the access-list digest standbys are compared by.
import { expect } from 'chai';
import { accessFingerprint } from '../../pkg/spec/fingerprint.js';
import { AccessLists, IdentitySpec, stateDirFor } from '../../pkg/spec/schema.js';

const spec = (state: unknown) =>
  IdentitySpec.safeParse({ name: 'fix', service: { driver: 'process', command: ['fixd'] }, state });

describe('spec: the state section', function () {
  const refused: [string, unknown, RegExp][] = [
    ['a relative path', 'var/lib/fix', /absolute path/],
    ['a path ending in /', '/var/lib/fix/', /must not end in \//],
    ['a path with ..', '/var/lib/../etc', /must not end in \/ or contain \.\./],
    ['another placeholder', '/var/lib/{identity}', /the only placeholder is \{node\}/],
    ['no path at all', undefined, /expected string/],
  ];
  for (const [what, dir, message] of refused) {
    it(`refuses ${what}, naming state.dir`, function () {
      const parsed = spec({ dir });
      expect(parsed.success).to.equal(false);
      const issue = parsed.error!.issues[0]!;
      expect(issue.path.join('.')).to.equal('state.dir');
      expect(issue.message).to.match(message);
    });
  }

  it('`{node}` becomes the node name, so several agents on one host keep apart', function () {
    const parsed = spec({ dir: '/srv/{node}/fix' });
    expect(parsed.success).to.equal(true);
    expect(stateDirFor(parsed.data!.state!, 'b')).to.equal('/srv/b/fix');
  });

  it('defaults: five snapshots kept, every drift check on, and an identity with no in-sync standby stays down', function () {
    const state = spec({ dir: '/var/lib/fix' }).data!.state!;
    expect(state).to.deep.include({
      snapshotEveryMs: 300_000,
      keep: 5,
      refreshEveryMs: 60_000,
      maxLagMs: 900_000,
      whenNoneInSync: 'stay-down',
    });
    expect(state.drift).to.deep.equal({ spec: true, access: true, version: true, snapshot: true });
  });

  it('a spec without a state section keeps no state', function () {
    expect(IdentitySpec.parse({ name: 'x', service: { driver: 'process', command: ['x'] } }).state).to.equal(
      undefined,
    );
  });
});

describe('spec: the access lists digest', function () {
  const lists = (over: object = {}) => AccessLists.parse({ contacts: [], authorized: [], ...over });

  it('is the same for the same lists, whatever order their keys were written in', function () {
    const a = { open: false, contacts: [], authorized: [], blocked: [{ name: 'mallory' }] };
    const b = { blocked: [{ name: 'mallory' }], authorized: [], contacts: [], open: false };
    expect(accessFingerprint(AccessLists.parse(a))).to.equal(accessFingerprint(AccessLists.parse(b)));
    expect(accessFingerprint(lists())).to.match(/^[0-9a-f]{16}$/);
  });

  it('changes when any list changes', function () {
    const base = accessFingerprint(lists());
    expect(accessFingerprint(lists({ open: true }))).to.not.equal(base);
    expect(accessFingerprint(lists({ blocked: [{ name: 'mallory' }] }))).to.not.equal(base);
  });
});

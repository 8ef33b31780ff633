// The change feed's log: a waiter learns a key changed after its read, waits for the next
// change, or is told to read again — never that nothing happened when the log cannot know.
import { expect } from 'chai';
import { ChangeLog, type Change } from '../../pkg/lease/feed-log.js';

const scopeOf = (key: string) => key.split('/')[1];
const put = (revision: number): Change => ({ kind: 'put', revision: BigInt(revision) });
const del = (revision: number): Change => ({ kind: 'delete', revision: BigInt(revision) });

describe('the change feed log', () => {
  it('knows nothing before its watch runs, and nothing after the watch broke', () => {
    const log = new ChangeLog(scopeOf);
    log.interest('a');
    expect(log.lookup('identities/a/leader', 5n).verdict).to.equal('unknown');
    log.started(10n);
    expect(log.lookup('identities/a/leader', 10n).verdict).to.equal('wait');
    log.stopped();
    expect(log.lookup('identities/a/leader', 10n).verdict).to.equal('unknown');
  });

  const cases: Array<{ name: string; readAt: number; changes: Array<[string, Change]>; want: string }> = [
    { name: 'a read older than the watch may have missed a change', readAt: 9, changes: [], want: 'unknown' },
    {
      name: 'no change since the read: wait',
      readAt: 12,
      changes: [['identities/a/leader', put(11)]],
      want: 'wait',
    },
    {
      name: 'a put after the read is named',
      readAt: 11,
      changes: [['identities/a/leader', put(12)]],
      want: 'put',
    },
    {
      name: 'the latest change is named (a delete after a put)',
      readAt: 11,
      changes: [
        ['identities/a/leader', put(12)],
        ['identities/a/leader', del(13)],
      ],
      want: 'delete',
    },
    {
      name: 'another key of the scope does not count',
      readAt: 11,
      changes: [['identities/a/login', put(12)]],
      want: 'wait',
    },
    {
      name: 'a change at the read revision was seen by the read',
      readAt: 12,
      changes: [['identities/a/leader', put(12)]],
      want: 'wait',
    },
  ];
  for (const c of cases) {
    it(c.name, () => {
      const log = new ChangeLog(scopeOf);
      log.interest('a');
      log.started(10n);
      for (const [key, change] of c.changes) log.record(key, change);
      const found = log.lookup('identities/a/leader', BigInt(c.readAt));
      expect(found.verdict === 'changed' ? found.change.kind : found.verdict).to.equal(c.want);
    });
  }

  it('remembers a scope only from when it became interesting: an older read must read again', () => {
    const log = new ChangeLog(scopeOf);
    log.started(10n);
    expect(log.record('identities/b/leader', put(15))).to.equal(false);
    log.interest('b');
    // Read at 12: the put at 15 came before anyone cared, so the log cannot vouch for (12, 15].
    expect(log.lookup('identities/b/leader', 12n).verdict).to.equal('unknown');
    // Read at 15 or later: every change after it is recorded from now on.
    expect(log.lookup('identities/b/leader', 15n).verdict).to.equal('wait');
    expect(log.record('identities/b/leader', del(16))).to.equal(true);
    const found = log.lookup('identities/b/leader', 15n);
    expect(found.verdict === 'changed' && found.change.kind).to.equal('delete');
  });

  it('forgets what it recorded when the watch restarts, and covers reads from the new start on', () => {
    const log = new ChangeLog(scopeOf);
    log.interest('a');
    log.started(10n);
    log.record('identities/a/leader', put(12));
    log.stopped();
    log.started(20n);
    expect(log.lookup('identities/a/leader', 15n).verdict).to.equal('unknown');
    expect(log.lookup('identities/a/leader', 20n).verdict).to.equal('wait');
  });

  it('no longer covers reads older than a stream the client resumed by itself: it may have lost changes before it', () => {
    const log = new ChangeLog(scopeOf);
    log.interest('a');
    log.started(10n);
    log.record('identities/a/leader', put(12));
    // Resumed with its first header at 20: changes in (12, 20] may never come.
    log.resumed(20n);
    expect(log.lookup('identities/a/leader', 15n).verdict).to.equal('unknown');
    expect(log.changesUnder('identities/a/candidates/', 15n)).to.equal(undefined);
    expect(log.lookup('identities/a/leader', 20n).verdict).to.equal('wait');
    log.record('identities/a/leader', del(21));
    const found = log.lookup('identities/a/leader', 20n);
    expect(found.verdict === 'changed' && found.change.kind).to.equal('delete');
    // An older header (a late event) never lowers what it covers.
    log.resumed(18n);
    expect(log.lookup('identities/a/leader', 19n).verdict).to.equal('unknown');
  });

  describe('the keys under a prefix (a read of the candidates, brought up to date)', () => {
    const prefix = 'identities/a/candidates/';
    function logWith(changes: Array<[string, Change]>): ChangeLog {
      const log = new ChangeLog(scopeOf);
      log.interest('a');
      log.interest('b');
      log.started(10n);
      for (const [key, change] of changes) log.record(key, change);
      return log;
    }

    it('names each key under the prefix changed after the read, new keys included, with its latest change', () => {
      const log = logWith([
        [`${prefix}n1`, put(11)],
        [`${prefix}n2`, put(12)],
        [`${prefix}n1`, del(13)],
        ['identities/a/leader', del(13)],
        ['identities/b/candidates/n1', put(14)],
      ]);
      const found = log.changesUnder(prefix, 11n)!;
      expect([...found].map(([key, c]) => [key, c.kind, Number(c.revision)])).to.have.deep.members([
        [`${prefix}n1`, 'delete', 13],
        [`${prefix}n2`, 'put', 12],
      ]);
      expect(log.changesUnder(prefix, 13n)!.size, 'nothing after 13').to.equal(0);
      expect(log.knownThrough).to.equal(14n);
    });

    it('cannot tell for a read older than what it covers, or while its watch is down', () => {
      const log = logWith([[`${prefix}n1`, put(11)]]);
      expect(log.changesUnder(prefix, 9n)).to.equal(undefined);
      expect(log.changesUnder('identities/c/candidates/', 12n), 'a scope nobody asked for').to.equal(
        undefined,
      );
      log.stopped();
      expect(log.changesUnder(prefix, 12n)).to.equal(undefined);
    });

    it('forgets the keys of a scope with the rest when the watch restarts', () => {
      const log = logWith([[`${prefix}n1`, put(11)]]);
      log.stopped();
      log.started(20n);
      expect(log.changesUnder(prefix, 20n)!.size).to.equal(0);
    });
  });
});

// One identity's state directory on this node (pkg/agent/state-keeper.ts), against an
// in-memory snapshot store and a manual clock: catching up before a login, publishing at a
// clean logout (bounded), refreshing while standing by, and scheduled snapshots while leading
// that hold the service still and always let it go again.
import { expect } from 'chai';
import { deferred } from '../support/wait.js';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import {
  LOGOUT_SNAPSHOT_MAX_MS,
  QUIESCE_WAIT_MS,
  StateKeeper,
  type SnapshotPort,
} from '../../pkg/agent/state-keeper.js';
import { ManualClock } from '../../pkg/clock/index.js';
import type { IdentityDriver } from '../../pkg/identity/driver.js';
import { heldOf, newer, readHeld } from '../../pkg/snapshot/held.js';
import { MANIFEST_VERSION } from '../../pkg/snapshot/manifest.js';
import type { PublishOptions, SnapshotRecord } from '../../pkg/snapshot/store.js';
import { ServiceState } from '../../pkg/spec/schema.js';

const IDENTITY = 'fix-session';
const NODE = 'b';
const REFRESH_MS = 10_000;
const EVERY_MS = 60_000;

type Restored = Awaited<ReturnType<SnapshotPort['restoreLatest']>>;

/**
 * The snapshot store in memory. `calls` says what the keeper asked, in order; a restore
 * writes the snapshot's name into the directory, so a test sees which one it holds.
 */
class FakeStore implements SnapshotPort {
  records: SnapshotRecord[] = [];
  calls: Array<'list' | 'publish' | 'restore'> = [];
  published: PublishOptions[] = [];
  /** Replaces the default publish (which records the snapshot as the newest). */
  publishWith: ((o: PublishOptions) => Promise<SnapshotRecord>) | undefined;
  restoreError: Error | undefined;
  listError: Error | undefined;

  constructor(private readonly events: string[] = []) {}

  /** Another node published a snapshot: it is on record now. */
  add(node: string, token: number, takenAtMs: number): SnapshotRecord {
    const r = record(node, BigInt(token), takenAtMs);
    this.records = [...this.records, r].sort((a, b) => (newer(a, b) ? -1 : newer(b, a) ? 1 : 0));
    return r;
  }

  list(identity: string): Promise<SnapshotRecord[]> {
    expect(identity).to.equal(IDENTITY);
    this.calls.push('list');
    return this.listError ? Promise.reject(this.listError) : Promise.resolve([...this.records]);
  }

  publish(o: PublishOptions): Promise<SnapshotRecord> {
    this.calls.push('publish');
    this.events.push('publish');
    this.published.push(o);
    if (this.publishWith) return this.publishWith(o);
    return Promise.resolve(this.add(o.node, Number(o.token), o.nowMs));
  }

  async restoreLatest(identity: string, dir: string): Promise<Restored> {
    expect(identity).to.equal(IDENTITY);
    this.calls.push('restore');
    if (this.restoreError) throw this.restoreError;
    const newest = this.records[0];
    if (!newest) throw new Error(`no snapshot of ${identity} could be restored: there is none`);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'restored-from'), newest.object);
    return {
      manifest: {
        version: MANIFEST_VERSION,
        identity,
        node: newest.node,
        token: newest.token,
        takenAt: newest.takenAt,
        quiesced: newest.quiesced,
        entries: [
          {
            type: 'file',
            path: 'restored-from',
            size: newest.object.length,
            mode: 0o600,
            sha256: 'e'.repeat(64),
          },
        ],
        bytes: newest.object.length,
      },
      record: newest,
      refused: [],
    };
  }
}

function record(node: string, token: bigint, takenAtMs: number): SnapshotRecord {
  return {
    identity: IDENTITY,
    node,
    token: String(token),
    takenAt: new Date(takenAtMs).toISOString(),
    object: `${IDENTITY}/${token}-${takenAtMs}`,
    bytes: 10,
    files: 1,
    quiesced: true,
    manifestSha256: 'f'.repeat(64),
  };
}

/** Waits (in real time: the keeper does real file I/O) until `cond` holds. */
async function until(cond: () => boolean, what: string): Promise<void> {
  for (let i = 0; i < 400; i++) {
    if (cond()) return;
    await new Promise((r) => setTimeout(r, 5));
  }
  throw new Error(`timed out waiting until ${what}`);
}

/** Gives the keeper's file I/O time to happen, for things that must not. */
const idle = () => new Promise((r) => setTimeout(r, 50));

describe('the state keeper of an identity (pkg/agent/state-keeper.ts)', function () {
  let root: string;
  let dir: string;
  let clock: ManualClock;
  let events: string[];
  let store: FakeStore;
  let keepers: StateKeeper[];
  let state: ServiceState;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'understudy-keeper-'));
    dir = join(root, NODE, 'state');
    clock = new ManualClock();
    events = [];
    store = new FakeStore(events);
    keepers = [];
    state = ServiceState.parse({
      dir: join(root, '{node}', 'state'),
      snapshotEveryMs: EVERY_MS,
      refreshEveryMs: REFRESH_MS,
      keep: 3,
    });
  });

  afterEach(async () => {
    for (const k of keepers) k.close();
    await rm(root, { recursive: true, force: true, maxRetries: 10, retryDelay: 20 });
  });

  /** The keeper's timer fired, its step is done (file I/O included) and the timer is armed again. */
  const stepDone = () => until(() => clock.pending === 1, 'the step is done and the timer armed again');

  function keeper(): StateKeeper {
    const k = new StateKeeper({
      identity: IDENTITY,
      node: NODE,
      store,
      log: pino({ level: 'silent' }),
      clock,
    });
    keepers.push(k);
    return k;
  }

  /** A service that holds its state still when asked, and says when it is let go. */
  function quiescing(answer: 'holds' | 'cannot' = 'holds'): () => IdentityDriver {
    const driver = {
      quiesce(timeoutMs: number): Promise<(() => void) | undefined> {
        events.push(`quiesce ${timeoutMs}`);
        return Promise.resolve(answer === 'holds' ? () => void events.push('release') : undefined);
      },
    } as unknown as IdentityDriver;
    return () => driver;
  }
  const noDriver = () => undefined;

  const restoredFrom = () => readFile(join(dir, 'restored-from'), 'utf8');

  describe('before a term logs in (beginTerm)', function () {
    it('restores a newer snapshot another node left, and records it as held', async function () {
      const k = keeper();
      k.configure(state);
      const theirs = store.add('a', 6, clock.wallMs() - 60_000);
      const said = await k.beginTerm(7n, noDriver);
      expect(said).to.equal(
        `this node holds no snapshot; restoring snapshot ${theirs.object} (term 6, taken ${theirs.takenAt}): restored ${theirs.object} (1 entries)`,
      );
      expect(store.calls).to.deep.equal(['list', 'restore']);
      expect(await restoredFrom()).to.equal(theirs.object);
      expect(k.holding).to.deep.equal(heldOf(theirs, 'restored'));
      expect(await readHeld(dir), 'kept beside the directory, for a restart').to.deep.equal(
        heldOf(theirs, 'restored'),
      );
    });

    it('does not restore what it holds already', async function () {
      const k = keeper();
      k.configure(state);
      const theirs = store.add('a', 6, clock.wallMs() - 60_000);
      await k.beginTerm(7n, noDriver);
      k.endTerm();
      const said = await k.beginTerm(8n, noDriver);
      expect(said).to.equal(
        `this node already holds the newest snapshot ${theirs.object} (term 6, taken ${theirs.takenAt})`,
      );
      expect(store.calls).to.deep.equal(['list', 'restore', 'list']);
    });

    it('keeps the directory after publishing the newest snapshot: it went on writing after', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      const mine = await k.snapshot(7n, 'on demand');
      await writeFile(join(dir, 'offset'), 'written after the snapshot\n');
      k.endTerm();
      const said = await k.beginTerm(9n, noDriver);
      expect(said).to.equal(
        `this node published the newest snapshot ${mine.object} (term 7, taken ${mine.takenAt}) and its directory has only gone on from there`,
      );
      expect(store.calls).to.not.include('restore');
      expect(await readFile(join(dir, 'offset'), 'utf8')).to.equal('written after the snapshot\n');
      expect(k.holding).to.deep.equal(heldOf(mine, 'published'));
    });

    it('remembers across an agent restart that it published the newest (the record beside the directory)', async function () {
      const first = keeper();
      first.configure(state);
      await first.beginTerm(7n, noDriver);
      const mine = await first.snapshot(7n, 'on demand');
      first.close();

      const restarted = keeper();
      restarted.configure(state);
      const said = await restarted.beginTerm(9n, noDriver);
      expect(said).to.match(/^this node published the newest snapshot /);
      expect(store.calls).to.deep.equal(['list', 'publish', 'list']);
      expect(restarted.holding).to.deep.equal(heldOf(mine, 'published'));
    });

    it('restores when another node published after this one did', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      await k.snapshot(7n, 'on demand');
      k.endTerm();
      const theirs = store.add('a', 8, clock.wallMs() + 1_000);
      await k.beginTerm(9n, noDriver);
      expect(store.calls).to.deep.equal(['list', 'publish', 'list', 'restore']);
      expect(k.holding).to.deep.equal(heldOf(theirs, 'restored'));
    });

    it('refuses to log in on older state: a newer snapshot that cannot be restored rejects, saying what to check', async function () {
      const k = keeper();
      k.configure(state);
      store.add('a', 6, clock.wallMs() - 60_000);
      store.restoreError = new Error('archive fix-session/6-1 is missing from the object store');
      let err: Error | undefined;
      await k.beginTerm(7n, noDriver).catch((e: Error) => (err = e));
      expect(err?.message).to.equal(
        `the state directory ${dir} could not be brought up to date before logging in (archive fix-session/6-1 is missing from the object store); not logging in on older state. Check NATS JetStream and the snapshots (understudy snapshots ${IDENTITY})`,
      );
      expect(k.holding, 'nothing new is held').to.equal(undefined);
      expect(await readHeld(dir)).to.equal(undefined);
    });

    it('refuses as well when the records cannot even be listed', async function () {
      const k = keeper();
      k.configure(state);
      store.listError = new Error('etcd unavailable');
      let err: Error | undefined;
      await k.beginTerm(7n, noDriver).catch((e: Error) => (err = e));
      expect(err?.message).to.contain('(etcd unavailable); not logging in on older state');
    });

    it('has nothing to do for an identity that keeps no state', async function () {
      const k = keeper();
      k.configure(undefined);
      store.add('a', 6, clock.wallMs());
      expect(await k.beginTerm(7n, noDriver)).to.equal(undefined);
      expect(store.calls).to.deep.equal([]);
      expect(k.holding).to.equal(undefined);
    });
  });

  describe('at a clean logout (atLogout)', function () {
    it('publishes the stopped service’s directory as quiesced, without asking the service', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, quiescing());
      const said = await k.atLogout(7n, LOGOUT_SNAPSHOT_MAX_MS);
      const r = store.records[0]!;
      expect(said).to.equal(`published ${r.object} at logout`);
      expect(store.published).to.deep.equal([
        { identity: IDENTITY, node: NODE, token: 7n, dir, quiesced: true, keep: 3, nowMs: clock.wallMs() },
      ]);
      expect(events, 'a stopped service is not asked to quiesce').to.deep.equal(['publish']);
      expect(k.holding).to.deep.equal(heldOf(r, 'published'));
    });

    it('waits no longer than the logout budget left: a slow publish does not hold the handover', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      store.publishWith = () => new Promise<SnapshotRecord>(() => undefined);
      let said: string | undefined;
      const done = k.atLogout(7n, 2_000).then((s) => (said = s));
      await until(() => store.published.length === 1, 'the publish has begun');
      await clock.advance(1_999);
      expect(said, 'not before the budget').to.equal(undefined);
      await clock.advance(1);
      await done;
      expect(said).to.equal(
        'the snapshot at logout did not finish within the 2000 ms left of the logout budget; handing over without waiting for it (the successor starts from the newest snapshot on record)',
      );
      expect(k.holding).to.equal(undefined);
    });

    it(`and never longer than LOGOUT_SNAPSHOT_MAX_MS (${LOGOUT_SNAPSHOT_MAX_MS} ms), whatever the budget`, async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      store.publishWith = () => new Promise<SnapshotRecord>(() => undefined);
      let said: string | undefined;
      const done = k.atLogout(7n, 10 * LOGOUT_SNAPSHOT_MAX_MS).then((s) => (said = s));
      await until(() => store.published.length === 1, 'the publish has begun');
      await clock.advance(LOGOUT_SNAPSHOT_MAX_MS);
      await done;
      expect(said).to.contain(`within the ${LOGOUT_SNAPSHOT_MAX_MS} ms left`);
    });

    it('never rejects: a failed publish is said, and its bound is cancelled', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      const timers = clock.pending;
      store.publishWith = () => Promise.reject(new Error('fix-session is held by token 9 now, not 7'));
      expect(await k.atLogout(7n, LOGOUT_SNAPSHOT_MAX_MS)).to.equal(
        'no snapshot at logout: fix-session is held by token 9 now, not 7',
      );
      expect(clock.pending, 'no logout timer left behind').to.equal(timers);
    });

    it('does nothing for an identity that keeps no state', async function () {
      const k = keeper();
      expect(await k.atLogout(7n, LOGOUT_SNAPSHOT_MAX_MS)).to.equal(undefined);
      expect(store.calls).to.deep.equal([]);
    });
  });

  describe('standing by: a refresh every state.refreshEveryMs', function () {
    it('catches up at once when configured, then restores each newer snapshot as it appears, and only then', async function () {
      const k = keeper();
      k.configure(state);
      const first = store.add('a', 6, clock.wallMs());
      // At once when configured, not a refresh period later.
      await until(() => k.holding?.object === first.object, `${first.object} is held`);
      expect(await restoredFrom()).to.equal(first.object);

      await stepDone();
      await clock.advance(REFRESH_MS);
      await until(() => store.calls.length === 3, 'a second refresh');
      await stepDone();
      expect(store.calls, 'nothing newer: nothing restored').to.deep.equal(['list', 'restore', 'list']);

      const second = store.add('a', 6, clock.wallMs());
      await clock.advance(REFRESH_MS);
      await until(() => k.holding?.object === second.object, `${second.object} is held`);
      await stepDone();
      expect(await restoredFrom()).to.equal(second.object);
      expect(store.calls).to.deep.equal(['list', 'restore', 'list', 'list', 'restore']);
      expect(k.problem).to.equal(undefined);
    });

    it('says what fails, keeps trying, and says when it works again', async function () {
      const k = keeper();
      k.configure(state);
      const theirs = store.add('a', 6, clock.wallMs());
      store.restoreError = new Error('archive fix-session/6 is missing from the object store');
      await clock.advance(REFRESH_MS);
      await stepDone();
      expect(k.problem).to.equal('archive fix-session/6 is missing from the object store');
      store.restoreError = undefined;
      await clock.advance(REFRESH_MS);
      await stepDone();
      expect(k.holding?.object, 'restored on the next refresh').to.equal(theirs.object);
      expect(k.problem, 'and the problem is cleared').to.equal(undefined);
    });

    it('does not refresh while a term is being led, and resumes when it ends', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      expect(store.calls).to.deep.equal(['list']);
      const theirs = store.add('a', 8, clock.wallMs());
      for (let i = 0; i < 5; i++) await clock.advance(REFRESH_MS); // 50 s: before the first scheduled snapshot
      await idle();
      expect(store.calls, 'no refresh while leading').to.deep.equal(['list']);

      k.endTerm();
      await clock.advance(REFRESH_MS);
      await until(() => k.holding?.object === theirs.object, 'refreshed once standing by');
      await stepDone();
      expect(store.calls).to.deep.equal(['list', 'list', 'restore']);
    });

    it('a refresh waiting behind another operation does not run once a term has begun', async function () {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, noDriver);
      // The logout's publish hangs past its bound and keeps the keeper busy.
      const publish = deferred<SnapshotRecord>();
      store.publishWith = () => publish.promise;
      const logout = k.atLogout(7n, LOGOUT_SNAPSHOT_MAX_MS);
      await until(() => store.published.length === 1, 'the publish has begun');
      await clock.advance(LOGOUT_SNAPSHOT_MAX_MS);
      await logout;
      k.endTerm();
      const theirs = store.add('a', 8, clock.wallMs());
      await clock.advance(REFRESH_MS); // the refresh fires, and waits behind the publish
      const login = k.beginTerm(9n, noDriver);
      publish.resolve(record(NODE, 7n, clock.wallMs() - REFRESH_MS));
      await login;
      expect(store.calls, 'only the login catches up').to.deep.equal(['list', 'publish', 'list', 'restore']);
      expect(k.holding).to.deep.equal(heldOf(theirs, 'restored'));
    });
  });

  describe('leading: a scheduled snapshot every state.snapshotEveryMs', function () {
    async function leadOnePeriod(driver: () => IdentityDriver | undefined) {
      const k = keeper();
      k.configure(state);
      await k.beginTerm(7n, driver);
      await clock.advance(EVERY_MS - 1);
      expect(store.published, 'not before the period').to.deep.equal([]);
      await clock.advance(1);
      await stepDone();
      return k;
    }

    it('holds the service still for the copy, publishes it as quiesced, then lets it go', async function () {
      const k = await leadOnePeriod(quiescing());
      expect(events).to.deep.equal([`quiesce ${QUIESCE_WAIT_MS}`, 'publish', 'release']);
      expect(store.published).to.deep.equal([
        { identity: IDENTITY, node: NODE, token: 7n, dir, quiesced: true, keep: 3, nowMs: clock.wallMs() },
      ]);
      expect(k.holding).to.deep.equal(heldOf(store.records[0]!, 'published'));
    });

    const live: Array<[situation: string, driver: () => IdentityDriver | undefined, events: string[]]> = [
      [
        'a service that does not answer in time',
        quiescing('cannot'),
        [`quiesce ${QUIESCE_WAIT_MS}`, 'publish'],
      ],
      ['a driver that cannot quiesce (no process)', () => ({}) as IdentityDriver, ['publish']],
      ['no driver at hand', noDriver, ['publish']],
    ];
    for (const [situation, driver, expected] of live) {
      it(`copies the directory as it runs, and says so (quiesced: false): ${situation}`, async function () {
        await leadOnePeriod(driver);
        expect(events).to.deep.equal(expected);
        expect(store.published.map((o) => o.quiesced)).to.deep.equal([false]);
      });
    }

    it('lets the service go even when the publish fails, and tries again next period', async function () {
      store.publishWith = () => Promise.reject(new Error('fix-session is held by token 9 now, not 7'));
      const k = await leadOnePeriod(quiescing());
      expect(events).to.deep.equal([`quiesce ${QUIESCE_WAIT_MS}`, 'publish', 'release']);
      expect(k.problem).to.equal('fix-session is held by token 9 now, not 7');
      expect(k.holding).to.equal(undefined);

      store.publishWith = undefined;
      await clock.advance(EVERY_MS);
      await stepDone();
      expect(k.holding).to.deep.equal(heldOf(store.records[0]!, 'published'));
      expect(events).to.deep.equal([
        `quiesce ${QUIESCE_WAIT_MS}`,
        'publish',
        'release',
        `quiesce ${QUIESCE_WAIT_MS}`,
        'publish',
        'release',
      ]);
      expect(k.problem).to.equal(undefined);
    });

    it('stops when the term ends', async function () {
      const k = await leadOnePeriod(noDriver);
      k.endTerm();
      await clock.advance(EVERY_MS);
      await idle();
      expect(store.published).to.have.length(1);
    });
  });

  it('reports no held snapshot while the identity keeps no state', async function () {
    const k = keeper();
    k.configure(state);
    const theirs = store.add('a', 6, clock.wallMs());
    await k.beginTerm(7n, noDriver);
    expect(k.holding).to.deep.equal(heldOf(theirs, 'restored'));
    k.configure(undefined);
    expect(k.holding).to.equal(undefined);
  });
});

describe('state keeper: what a spec change and a restart leave in place', function () {
  let root: string;
  beforeEach(async () => (root = await mkdtemp(join(tmpdir(), 'understudy-keeper-spec-'))));
  afterEach(() => rm(root, { recursive: true, force: true }));
  const make = (store: FakeStore, clock: ManualClock) =>
    new StateKeeper({ identity: IDENTITY, node: NODE, store, log: pino({ level: 'silent' }), clock });
  const parse = () =>
    ServiceState.parse({
      dir: join(root, '{node}', 'state'),
      snapshotEveryMs: EVERY_MS,
      refreshEveryMs: REFRESH_MS,
    });

  it('a new spec revision with the same state section keeps the refresh timer running', async function () {
    const clock = new ManualClock();
    const store = new FakeStore();
    const k = make(store, clock);
    k.configure(parse());
    k.configure(parse()); // e.g. an access-list edit: an equal state section, a new object
    store.add('a', 6, clock.wallMs());
    await clock.advance(REFRESH_MS);
    await until(() => k.holding !== undefined, 'the first refresh');
    await idle();
    expect(clock.pending, 'the refresh is armed again').to.equal(1);
    k.close();
  });

  it('an on-demand snapshot without a state section names spec.state', async function () {
    const k = make(new FakeStore(), new ManualClock());
    let err: Error | undefined;
    await k.snapshot(7n, 'on demand').catch((e: Error) => (err = e));
    expect(err?.message).to.equal(`${IDENTITY} has no state directory in its spec (spec.state)`);
  });

  it('after a restart, the snapshot recorded beside the directory is reported before any refresh', async function () {
    const clock = new ManualClock();
    const store = new FakeStore();
    const first = make(store, clock);
    first.configure(parse());
    await first.beginTerm(7n, () => undefined);
    const mine = await first.snapshot(7n, 'on demand');
    first.close();
    const restarted = make(store, clock);
    restarted.configure(parse());
    await idle();
    expect(restarted.holding).to.deep.equal(heldOf(mine, 'published'));
    restarted.close();
  });
});

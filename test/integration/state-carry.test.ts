// The service's state goes with the identity: real etcd and NATS with JetStream (agents on
// their role users, so the object store's permissions are the shipped ones), two agents and a
// controller as processes, the demo rate bot keeping its count in its state directory. What
// is judged is the bot's own file on each node and the records in etcd, not what an agent
// says of itself.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { NatsConnection } from 'nats';
import type {
  CloneList,
  CloneView,
  Problem,
  SnapshotList,
  SnapshotRecord,
  Workflow,
} from '../../pkg/api/schema.js';
import { IdentityClient } from '../../pkg/identity/client.js';
import { readLeader } from '../../pkg/lease/index.js';
import { listSnapshots } from '../../pkg/snapshot/store.js';
import { putSpec } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import type { ControllerProcess } from '../support/controllers.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

/** A handover through the controller, including a warm bot's login, on a loaded machine. */
const HANDOVER_TIMEOUT_MS = 60_000;
const IDENTITY = 'carry';

describe('state: snapshots carry the service state to the next leader', function () {
  this.timeout(300_000);
  let cluster: IntegrationCluster;
  let nc: NatsConnection;
  let client: Etcd3;
  let ctl: ControllerProcess;
  let root: string;

  /** What the bot itself wrote on `node`: requests it and its predecessors served. */
  async function servedOn(node: string): Promise<number | undefined> {
    try {
      const text = await readFile(join(root, node, IDENTITY, 'state.json'), 'utf8');
      return (JSON.parse(text) as { servedTotal: number }).servedTotal;
    } catch {
      return undefined;
    }
  }

  async function rate(times: number): Promise<void> {
    const caller = new IdentityClient(nc, { identity: IDENTITY, timeoutMs: 5_000 });
    try {
      for (let i = 0; i < times; i++) await caller.requestOk('RATE USD');
    } finally {
      caller.close();
    }
  }

  async function switchoverTo(node: string): Promise<Workflow> {
    const asked = await ctl.api().post<Workflow>(`/v1/identities/${IDENTITY}/switchover`, { to: node });
    expect(asked.status, JSON.stringify(asked.body)).to.equal(202);
    return waitFor(
      async () => {
        const wf = (await ctl.api().get<Workflow>(`/v1/identities/${IDENTITY}/workflow`)).body;
        return wf.id === asked.body.id && (wf.state === 'done' || wf.state === 'aborted') ? wf : undefined;
      },
      { timeoutMs: HANDOVER_TIMEOUT_MS, what: `the switchover to ${node} to end` },
    );
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'understudy-state-'));
    cluster = await IntegrationCluster.start({ connect: true });
    ({ nc, client } = cluster);
    await putSpec(
      client,
      rateBotSpec(IDENTITY, {
        // One directory per node: both agents run on this machine.
        state: { dir: `${root}/{node}/${IDENTITY}`, snapshotEveryMs: 600_000, refreshEveryMs: 5_000 },
      }),
    );
    const a = await cluster.startAgent({ node: 'a', identities: { [IDENTITY]: null }, priority: 10 });
    await a.waitForState(IDENTITY, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
    const b = await cluster.startAgent({ node: 'b', identities: { [IDENTITY]: null }, priority: 5 });
    await b.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    ctl = await cluster.startController({ name: 'c1', extra: { switchover: { deadlineMs: 40_000 } } });
    await ctl.waitForActive();
  });

  afterEach(function () {
    return cluster.reportFailure(this.currentTest);
  });

  after(async () => {
    await cluster?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('a switchover carries the leader state: the new leader counts on from where the old one stopped', async () => {
    await rate(3);
    await waitFor(async () => (await servedOn('a')) === 3, {
      timeoutMs: 5_000,
      what: "a's bot saving its count",
    });
    expect(await servedOn('b'), 'b has no state of its own yet').to.equal(undefined);

    const done = await switchoverTo('b');
    expect(done.state, done.outcome).to.equal('done');
    const leader = await readLeader(client, IDENTITY);
    expect(leader?.record.node).to.equal('b');

    // a published its state at its clean logout, under its own term, before the key moved.
    const [newest] = await listSnapshots(client, IDENTITY);
    expect(newest, 'a snapshot at logout').to.not.equal(undefined);
    expect(newest!.node).to.equal('a');
    expect(newest!.token).to.equal(done.from!.token);
    expect(newest!.quiesced, 'taken with the service stopped').to.equal(true);

    // b restored it before its bot logged in: the bot's own file says 3, and the next request is its 4th.
    expect(await servedOn('b')).to.equal(3);
    await rate(1);
    await waitFor(async () => (await servedOn('b')) === 4, { timeoutMs: 5_000, what: "b's bot counting on" });
  });

  it('`snapshot` through the API: the leader publishes under its token, the list shows it first, and the standby applies it', async () => {
    const token = String((await readLeader(client, IDENTITY))!.token);
    const taken = await ctl.api().post<SnapshotRecord>(`/v1/identities/${IDENTITY}/snapshot`, {
      reason: 'before the test ends',
    });
    expect(taken.status, JSON.stringify(taken.body)).to.equal(201);
    expect(taken.body.node).to.equal('b');
    expect(taken.body.token).to.equal(token);
    const list = await ctl.api('viewer').get<SnapshotList>(`/v1/identities/${IDENTITY}/snapshots`);
    expect(list.body.snapshots[0]?.object).to.equal(taken.body.object);

    // a, standing by since the switchover, applies it within its refresh interval (5 s here).
    await waitFor(async () => (await servedOn('a')) === 4, {
      timeoutMs: 20_000,
      what: "the standby a refreshing its state to b's snapshot",
    });

    // A viewer may look but not take one; a bad body names its field and takes nothing.
    const refused = await ctl.api('viewer').post<Problem>(`/v1/identities/${IDENTITY}/snapshot`, {});
    expect(refused.status).to.equal(403);
    const bad = await ctl.api().post<Problem>(`/v1/identities/${IDENTITY}/snapshot`, { reason: 7 });
    expect(bad.status).to.equal(400);
    expect(JSON.stringify(bad.body)).to.contain('reason');
    expect((await listSnapshots(client, IDENTITY))[0]?.object).to.equal(taken.body.object);
  });

  it('clone, bootstrap a fresh agent with --clone, switch over to it: it serves with the state carried', async () => {
    await rate(2);
    await waitFor(async () => (await servedOn('b')) === 6, { timeoutMs: 5_000, what: "b's bot at 6" });
    const snapshot = await ctl.api().post<SnapshotRecord>(`/v1/identities/${IDENTITY}/snapshot`, {});
    expect(snapshot.status).to.equal(201);

    // A bad node name is refused naming the field, and records nothing.
    const bad = await ctl.api().post<Problem>(`/v1/identities/${IDENTITY}/clones`, { node: 'C D' });
    expect(bad.status).to.equal(400);
    expect(JSON.stringify(bad.body)).to.contain('node');
    expect((await ctl.api().get<CloneList>(`/v1/identities/${IDENTITY}/clones`)).body.clones).to.deep.equal(
      [],
    );

    const made = await ctl.api().post<CloneView>(`/v1/identities/${IDENTITY}/clones`, { node: 'c' });
    expect(made.status, JSON.stringify(made.body)).to.equal(201);
    expect(made.body.bundle.snapshot?.object).to.equal(snapshot.body.object);
    expect(made.body.bundle.version, "the leader's service version").to.match(/^sha256:/);
    expect(made.body.live).to.equal(false);

    // The fresh agent lists no identity: --clone (here its config field) is all it is told.
    const c = await cluster.startAgent({ node: 'c', identities: {}, extra: { clone: IDENTITY } });
    await c.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    expect(await servedOn('c'), "c's directory holds the snapshot's state").to.equal(6);
    const listed = await waitFor(
      async () => {
        const list = (await ctl.api().get<CloneList>(`/v1/identities/${IDENTITY}/clones`)).body;
        const entry = list.clones.find((x) => x.node === 'c');
        return entry?.live ? entry : undefined;
      },
      { timeoutMs: 10_000, what: 'the clone listed as running' },
    );
    expect(listed.bootstrappedAt, 'the bootstrap is recorded').to.be.a('string');
    expect(listed.drift).to.deep.equal([]);

    // One more request on b after the snapshot: the logout snapshot of the switchover carries it too.
    await rate(1);
    const done = await switchoverTo('c');
    expect(done.state, done.outcome).to.equal('done');
    expect((await readLeader(client, IDENTITY))?.record.node).to.equal('c');
    expect(await servedOn('c')).to.equal(7);
    await rate(1);
    await waitFor(async () => (await servedOn('c')) === 8, { timeoutMs: 5_000, what: "c's bot counting on" });
  });

  it('a clone that has not started is drifted once the access lists change, and back in sync once it bootstraps', async () => {
    const made = await ctl.api().post<CloneView>(`/v1/identities/${IDENTITY}/clones`, { node: 'e' });
    expect(made.status, JSON.stringify(made.body)).to.equal(201);
    const cloneOf = async (node: string) =>
      (await ctl.api().get<CloneList>(`/v1/identities/${IDENTITY}/clones`)).body.clones.find(
        (x) => x.node === node,
      );
    expect((await cloneOf('e'))?.drifted).to.equal(false);

    const blocked = await ctl
      .api('admin')
      .post(`/v1/identities/${IDENTITY}/acl`, { op: 'block', caller: { name: 'mallory' } });
    expect(blocked.status, JSON.stringify(blocked.body)).to.equal(200);
    const drifted = await waitFor(
      async () => {
        const e = await cloneOf('e');
        return e?.drifted ? e : undefined;
      },
      { timeoutMs: 10_000, what: 'the clone on e shown drifted' },
    );
    expect(drifted.drift.join(' ')).to.match(/e runs spec revision \d+, the identity runs \d+/);
    expect(drifted.drift.join(' ')).to.contain('other access lists');

    const e = await cluster.startAgent({ node: 'e', identities: {}, extra: { clone: IDENTITY } });
    await e.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    const synced = await waitFor(
      async () => {
        const entry = await cloneOf('e');
        return entry?.live && !entry.drifted ? entry : undefined;
      },
      { timeoutMs: 20_000, what: 'the clone on e in sync once its agent runs the current spec' },
    );
    expect(synced.drift).to.deep.equal([]);
    await e.stop();
    cluster.forget(e);
  });

  it('an agent started with --clone for a node no clone was registered for refuses to start, saying what to run', async () => {
    const d = await cluster.startAgent({ node: 'd', identities: {}, extra: { clone: IDENTITY } });
    const exit = await d.exited;
    cluster.forget(d);
    expect(exit.code).to.not.equal(0);
    expect(d.output()).to.contain(`understudy clone ${IDENTITY} --to d`);
  });
});

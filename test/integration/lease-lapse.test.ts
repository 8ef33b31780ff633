// A waiting standby ends a lapsed holder's lease itself (pkg/lease/lapse.ts), against a real
// etcd: only once the holder is provably out, never a holder that still renews.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { Keys, Session, connectEtcd, type LeaderRecord, type LoginRecord } from '../../pkg/lease/index.js';
import { LapseWatch, type LapseReport } from '../../pkg/lease/lapse.js';
import type { LapseRecord } from '../../pkg/lease/keys.js';
import { PeerSessions, type PeerSighting } from '../../pkg/lease/peers.js';
import { systemClock } from '../../pkg/clock/index.js';
import { Harness, type EtcdMember } from '../support/harness.js';
import { delay, waitFor } from '../support/wait.js';
import { openNode, type TestNode } from './lease-support.js';

const T = 2; // seconds: etcd's minimum
type Report = Parameters<LapseReport>[0] & { at: number };

/**
 * A holder logged in under T whose etcd lease (10 s) outlasts it, so that etcd's own expiry
 * never ends it first: its session key written once (its last renewal), then no more (its
 * host died). Returns its lease and the revision of that renewal.
 */
async function ghostHolder(client: Etcd3, identity: string): Promise<{ leaseId: string; renewal: string }> {
  const keys = new Keys();
  const { ID: leaseId } = await client.leaseClient.leaseGrant({ TTL: 10 });
  const ttlMs = T * 1000;
  const mustBeOutByMs = ttlMs * 0.9;
  const leader: LeaderRecord = { node: 'ghost', leaseId, ttlMs, mustBeOutByMs, since: Date.now() };
  const put = await client.put(keys.leader(identity)).value(JSON.stringify(leader)).lease(leaseId).exec();
  const login: LoginRecord = {
    node: 'ghost',
    token: put.header.revision,
    loggedIn: true,
    at: 0,
    leaseId,
    ttlMs,
  };
  await client.put(keys.login(identity)).value(JSON.stringify(login));
  const renewal = await client
    .put(keys.session(leaseId))
    .value(JSON.stringify({ node: 'ghost', ttlMs, mustBeOutByMs }))
    .lease(leaseId)
    .exec();
  return { leaseId, renewal: renewal.header.revision };
}

describe('pkg/lease: a waiting standby ends a lapsed holder’s lease (real etcd)', function () {
  let h: Harness;
  let etcd: EtcdMember;
  const nodes: TestNode[] = [];
  const open = async (...args: Parameters<typeof openNode>) => {
    const node = await openNode(...args);
    nodes.push(node);
    return node;
  };
  before(async function () {
    h = await Harness.create();
    etcd = await h.startEtcd();
  });
  afterEach(async function () {
    await Promise.all(nodes.splice(0).map((n) => n.close()));
  });
  after(async function () {
    await h?.close();
  });

  it('a frozen holder loses its lease no sooner than its must-be-out instant after its last renewal; the successor’s gate then opens at once', async function () {
    this.timeout(60_000);
    const identity = 'lapse-frozen';
    const holder = await h.startNodeProgram({
      script: 'test/fixtures/lease-candidate.ts',
      args: [etcd.networkEndpoint, 'a', identity, String(T), '10'],
    });
    const { leaseId } = JSON.parse(await holder.waitForLine(/"ev":"session"/)) as { leaseId: string };
    await holder.waitForLine(/"ev":"logged-in"/);
    const reports: Report[] = [];
    const standby = await open([etcd.hostEndpoint], 'b', identity, {
      candidate: { onLapse: (r) => reports.push({ ...r, at: Date.now() }) },
    });
    const won = standby.candidate.campaign();

    await holder.pause();
    const leadership = await won;
    const wonAt = Date.now();
    const lastRenewal = Math.max(
      ...holder.lines
        .filter((l) => l.includes('"ev":"renewed"'))
        .map((l) => (JSON.parse(l) as { t: number }).t),
    );
    await holder.unpause();

    const ttl = await standby.client.leaseClient.leaseTimeToLive({ ID: leaseId, keys: false });
    expect(Number(ttl.TTL), 'the frozen holder’s lease is gone').to.equal(-1);
    expect(leadership.previous?.record.node).to.equal('a');
    // Whoever ended the lease (the standby, or etcd's expiry check when it got there first),
    // the successor won only once the holder's own rule had put it out.
    expect(wonAt - lastRenewal, 'successor elected at or after the must-be-out instant').to.be.at.least(
      T * 1000 * 0.9,
    );
    for (const r of reports) {
      expect(r).to.include({ leaseId, node: 'a', revoked: true });
      expect(r.why).to.match(/its holder self-fenced/);
      expect(r.at - lastRenewal, 'revoked at or after the holder’s must-be-out instant').to.be.at.least(
        T * 1000 * 0.9,
      );
    }
    expect(await leadership.clearance()).to.match(/session is gone.* past its TTL .* self-fenced/);
  });

  it('a holder not renewed for its T loses its lease then, though etcd would keep it for seconds more', async function () {
    this.timeout(60_000);
    const identity = 'lapse-long-lease';
    const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    try {
      // A holder whose etcd lease (10 s) outlasts the T it runs by (2 s): it fenced itself at
      // D < 2 s after its last renewal, whatever etcd keeps. It renews once, then no more.
      const { leaseId } = await ghostHolder(client, identity);

      const reports: Report[] = [];
      const standby = await open([etcd.hostEndpoint], 'b', identity, {
        candidate: { onLapse: (r) => reports.push({ ...r, at: Date.now() }) },
      });
      const leadership = await standby.candidate.campaign();
      const ttl = await client.leaseClient.leaseTimeToLive({ ID: leaseId, keys: false });

      expect(Number(ttl.TTL), 'revoked, not left to run out its 10 s').to.equal(-1);
      expect(reports).to.have.length(1);
      expect(reports[0]).to.include({ leaseId, node: 'ghost', revoked: true });
      expect(reports[0]!.why).to.match(/not seen renewed for \d+ ms, past its TTL of 2000 ms/);
      expect(leadership.previous?.record.node).to.equal('ghost');
      expect(await leadership.clearance()).to.match(/term .* on ghost: its session is gone.* self-fenced/);
    } finally {
      client.close();
    }
  });

  it('a holder that renews is never revoked, even when the standby’s view of its renewals is stale', async function () {
    this.timeout(60_000);
    const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    const live = await Session.open(client, { node: 'live', timing: { ttlSeconds: T } });
    try {
      // A view whose watch fell behind: it last saw the session renewed 3 s ago, long past T.
      const stale: PeerSighting = { lastSeenAt: performance.now() - 3_000, gone: false, modRevision: 1n };
      const view = { sighting: (id: string) => (id === live.leaseId ? stale : undefined) };
      const reports: Array<Parameters<LapseReport>[0]> = [];
      const stop = LapseWatch.for(client, new Keys(), view, systemClock).watch(
        live.leaseId,
        'live',
        T * 1000,
        (r) => reports.push(r),
      );
      // Watch over a whole T of renewals (and with it, the stale view's every re-check).
      let renewals = 0;
      live.on('renewed', () => renewals++);
      await waitFor(() => renewals >= 15 || reports.length > 0 || live.state !== 'alive', {
        what: 'the live session to renew for 1.5 T',
        timeoutMs: 20_000,
      });
      stop();

      const ttl = await client.leaseClient.leaseTimeToLive({ ID: live.leaseId, keys: false });
      expect(Number(ttl.TTL), 'the live lease is still there').to.be.greaterThan(0);
      expect(live.state).to.equal('alive');
      expect(reports).to.deep.equal([]);
    } finally {
      await live.close();
      client.close();
    }
  });
  it('a successor that saw the holder’s last renewal late logs in on the record of the standby that saw it first, not a T after its own sighting', async function () {
    this.timeout(60_000);
    const identity = 'lapse-recorded';
    const keys = new Keys();
    const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    // b watches the holder's session from before its last renewal; it does not campaign, it
    // only ends the lease. Its view is the one that saw that renewal first.
    const b = await Session.open(client, { node: 'b', timing: { ttlSeconds: T } });
    const reports: Array<Parameters<LapseReport>[0]> = [];
    let stop = () => undefined as void;
    try {
      const view = await PeerSessions.for(client, keys).ready;
      const ttlMs = T * 1000;
      const { leaseId, renewal } = await ghostHolder(client, identity);
      await waitFor(() => view.sighting(leaseId)?.modRevision === BigInt(renewal), {
        what: "b to see the holder's last renewal",
        timeoutMs: 5_000,
      });
      stop = LapseWatch.for(client, keys, view, systemClock).watch(
        leaseId,
        'ghost',
        ttlMs,
        (r) => reports.push(r),
        {
          node: 'b',
          leaseId: b.leaseId,
        },
      );
      // c starts half a T after that renewal: the first it sees of the session is that late, so
      // on its own sighting it would wait half a T past the instant the holder was out.
      await delay(ttlMs / 2);
      const c = await open([etcd.hostEndpoint], 'c', identity);
      const leadership = await c.candidate.campaign();
      const reason = await leadership.clearance();

      expect(reports.map((r) => r.revoked)).to.deep.equal([true]);
      const record = (await client.get(keys.lapse(leaseId)).json()) as LapseRecord;
      expect(record).to.include({ node: 'ghost', by: 'b', sessionRevision: renewal });
      expect(record.sinceMs).to.be.at.least(ttlMs);
      expect(reason).to.match(
        new RegExp(
          `term \\d+ on ghost: its session is gone, ended by b, which had seen its last renewal \\(revision ${renewal}\\)`,
        ),
      );
    } finally {
      stop();
      await b.close();
      client.close();
    }
  });
});

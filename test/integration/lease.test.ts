// pkg/lease against a real etcd: the acceptance criteria of "Leadership with fencing tokens".
import { expect } from 'chai';
import { Range, type Etcd3 } from 'etcd3';
import {
  CampaignAbandonedError,
  Candidate,
  connectEtcd,
  ETCD_CALLS_IN_FLIGHT,
  etcdCalls,
  FencedNodeError,
  fence,
  fencedPut,
  holdOff,
  isTokenCurrent,
  releaseHoldOff,
  LeaderObserver,
  LeaseOperationError,
  NotEligibleError,
  readLeader,
  revokeHolder,
  Session,
  STAGGER_STEP_MS,
  StaleTokenError,
  transfer,
  unfence,
  within,
  type CampaignRetry,
  type Leadership,
  type LeaderState,
} from '../../pkg/lease/index.js';
import { ChangeFeed } from '../../pkg/lease/feed.js';
import { Keys } from '../../pkg/lease/keys.js';
import { RANK_WHEN_UNREADABLE } from '../../pkg/lease/rank.js';
import { CLEARANCE_RECHECK_MS } from '../../pkg/lease/clearance.js';
import { Harness, type EtcdMember, type NodeProgram } from '../support/harness.js';
import { etcdAnswers, untilAnswers } from '../support/probes.js';
import { waitFor } from '../support/wait.js';
import { believe, openNode, overlaps, type TermBelief, type TestNode } from './lease-support.js';

const T = 2; // seconds: etcd's minimum, keeps expiry-driven tests short

/** Until `count` candidates are registered for `identity` (they then take part in free elections). */
async function untilRegistered(client: Etcd3, identity: string, count: number): Promise<void> {
  await waitFor(
    async () => (await client.getAll().prefix(new Keys().candidates(identity)).keys()).length === count,
    {
      what: `${count} candidates to register for ${identity}`,
      timeoutMs: 5_000,
    },
  );
}

/**
 * The keys a client is asked to read from now on (its `get`), until `stop()`: a step that a
 * node decides on its watch reads nothing on the way.
 */
function readsOf(client: Etcd3): { keys: string[]; stop: () => void } {
  const keys: string[] = [];
  const get = client.get.bind(client);
  client.get = ((key: string) => {
    keys.push(key);
    return get(key);
  }) as Etcd3['get'];
  return { keys, stop: () => void delete (client as Partial<Pick<Etcd3, 'get'>>).get };
}

/** The leader changes a leader-observer fixture printed from line `from` on, as "node:token" or "none". */
async function reportedChanges(observer: NodeProgram, from: number, count: number): Promise<string[]> {
  const changes = () =>
    observer.lines
      .slice(from)
      .filter((l) => l.includes('"ev":"leader"'))
      .map((l) => JSON.parse(l) as { node: string | null; token: string })
      .map((e) => (e.node ? `${e.node}:${e.token}` : 'none'));
  await waitFor(() => changes().length >= count, {
    what: `the observer to report ${count} leader changes`,
    timeoutMs: 30_000,
  });
  return changes();
}

describe('pkg/lease (real etcd)', function () {
  let h: Harness;
  let etcd: EtcdMember;
  const nodes: TestNode[] = [];
  let identitySeq = 0;
  const freshIdentity = () => `id-${++identitySeq}`;
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

  describe('election', function () {
    it('three candidates elect exactly one leader; when its process dies abruptly, another is elected only once its lease expired', async function () {
      this.timeout(60_000);
      const identity = freshIdentity();
      // The first candidate runs in its own container, so its death is a real SIGKILL.
      const doomed = await h.startNodeProgram({
        script: 'test/fixtures/lease-candidate.ts',
        args: [etcd.networkEndpoint, 'a', identity, String(T), '10'],
      });
      const elected = JSON.parse(await doomed.waitForLine(/"ev":"elected"/)) as { token: string };
      const session = JSON.parse(await doomed.waitForLine(/"ev":"session"/)) as { leaseId: string };
      const [b, c] = await Promise.all(['b', 'c'].map((n) => open([etcd.hostEndpoint], n, identity)));
      const campaigns = [b!, c!].map((n) => n.candidate.campaign().then((l) => ({ node: n, l })));
      await untilRegistered(b!.client, identity, 3);
      const view = await readLeader(b!.client, identity);
      expect(view?.record.node).to.equal('a');
      expect(String(view?.token)).to.equal(elected.token);

      const diedAt = performance.now();
      await doomed.kill();
      const second = await Promise.race(campaigns);
      const electedAfterMs = performance.now() - diedAt;

      const ttl = await second.node.client.leaseClient.leaseTimeToLive({ ID: session.leaseId, keys: false });
      expect(Number(ttl.TTL), 'the dead leader lease is gone').to.equal(-1);
      // Nobody took over before etcd could have expired the lease (last renewal at most T/3 before death).
      expect(electedAfterMs).to.be.greaterThan((T * 1000 * 2) / 3);
      expect(second.l.token > BigInt(elected.token)).to.equal(true);
      expect(second.l.previous?.record.node).to.equal('a');
      // Exactly one of the two survivors leads.
      expect((await readLeader(b!.client, identity))?.record.node).to.equal(second.node.name);
    });

    it('fencing tokens of 50 successive terms strictly increase', async function () {
      this.timeout(120_000);
      const identity = freshIdentity();
      const group = await Promise.all(['a', 'b', 'c'].map((n) => open([etcd.hostEndpoint], n, identity)));
      const tokens: bigint[] = [];
      const leaders = group.map((n) => n.candidate.campaign());
      const pending = new Map(group.map((n, i) => [n, leaders[i]!]));
      while (tokens.length < 50) {
        const [node, leadership] = await Promise.race(
          [...pending].map(([n, p]) => p.then((l) => [n, l] as const)),
        );
        tokens.push(leadership.token);
        expect(await leadership.resign({ loggedOut: true })).to.equal(true);
        pending.set(node, node.candidate.campaign());
      }
      for (let i = 1; i < tokens.length; i++) {
        expect(tokens[i]! > tokens[i - 1]!, `term ${i}: ${tokens[i]} after ${tokens[i - 1]}`).to.equal(true);
      }
    });

    it('nofailover and fenced candidates never lead; the highest-priority healthy candidate wins', async function () {
      this.timeout(60_000);
      const identity = freshIdentity();
      const admin = connectEtcd({ endpoints: [etcd.hostEndpoint] });
      try {
        await fence(admin, { node: 'fenced-e', reason: 'maintenance', actor: 'test' });
        const low = await open([etcd.hostEndpoint], 'low-c', identity, { candidate: { priority: 1 } });
        const mid = await open([etcd.hostEndpoint], 'mid-b', identity, { candidate: { priority: 2 } });
        const high = await open([etcd.hostEndpoint], 'high-a', identity, { candidate: { priority: 3 } });
        const sick = await open([etcd.hostEndpoint], 'sick-f', identity, {
          candidate: { priority: 9, healthy: () => false },
        });
        const nofail = await open([etcd.hostEndpoint], 'nofail-d', identity, {
          candidate: { priority: 10, tags: { nofailover: true } },
        });
        const fenced = await open([etcd.hostEndpoint], 'fenced-e', identity, { candidate: { priority: 10 } });

        const err = await nofail.candidate.campaign().catch((e: unknown) => e);
        expect(err).to.be.instanceOf(NotEligibleError);
        let fencedWon = false;
        void fenced.candidate.campaign().then(
          () => (fencedWon = true),
          () => undefined,
        );

        // Register everyone before the key is free, so all take part in each free election.
        const order: string[] = [];
        const running = new Map<TestNode, Promise<Leadership>>();
        for (const n of [low, mid, high, sick]) running.set(n, n.candidate.campaign());
        for (let round = 0; round < 4; round++) {
          const [node, leadership] = await Promise.race(
            [...running].map(([n, p]) => p.then((l) => [n, l] as const)),
          );
          order.push(node.name);
          running.delete(node); // the winner leaves: the next election is among the rest
          await leadership.resign({ loggedOut: true });
        }
        expect(order).to.deep.equal(['high-a', 'mid-b', 'low-c', 'sick-f']);
        expect(fencedWon).to.equal(false);
        expect((await readLeader(admin, identity))?.record.node).to.not.equal('fenced-e');

        // Unfenced, it campaigns again and can win.
        await unfence(admin, { node: 'fenced-e' });
        await waitFor(async () => (await readLeader(admin, identity))?.record.node === 'fenced-e', {
          what: 'the unfenced node to win the free election',
          timeoutMs: 10_000,
        });
      } finally {
        admin.close();
      }
    });
  });

  describe('retries are visible', function () {
    it('a malformed leader record is reported once (which key, why) while the campaign retries; once it is gone the report clears and the candidate wins', async function () {
      this.timeout(30_000);
      const identity = freshIdentity();
      const keys = new Keys();
      const admin = connectEtcd({ endpoints: [etcd.hostEndpoint] });
      try {
        await admin.put(keys.leader(identity)).value('{"node":"x"}');
        const told: Array<CampaignRetry | undefined> = [];
        const a = await open([etcd.hostEndpoint], 'a', identity, {
          candidate: { onRetry: (r) => told.push(r) },
        });
        const campaign = a.candidate.campaign();
        await waitFor(() => (a.candidate.lastError?.attempts ?? 0) >= 3, {
          what: 'three failed reads of the malformed leader key',
          timeoutMs: 5_000,
        });
        expect(told, 'told once per change of reason, not per attempt').to.have.length(1);
        expect(told[0]!.what).to.equal(
          `reading ${identity}'s leader key and a's fence (registering a as its candidate)`,
        );
        expect(told[0]!.error)
          .to.include(keys.leader(identity))
          .and.match(/leaseId/);
        await admin.delete().key(keys.leader(identity));
        const leadership = await campaign;
        expect(leadership.node).to.equal('a');
        expect(told.at(-1)).to.equal(undefined);
        expect(a.candidate.lastError).to.equal(undefined);
      } finally {
        admin.close();
      }
    });

    it('a malformed candidate record is reported by key and left out of the ranking, not silently dropped', async function () {
      this.timeout(30_000);
      const identity = freshIdentity();
      const keys = new Keys();
      const admin = connectEtcd({ endpoints: [etcd.hostEndpoint] });
      try {
        await admin.put(keys.candidate(identity, 'broken')).value('{"node":"broken"}');
        const told: Array<CampaignRetry | undefined> = [];
        const a = await open([etcd.hostEndpoint], 'a', identity, {
          candidate: { onRetry: (r) => told.push(r) },
        });
        const leadership = await a.candidate.campaign();
        expect(leadership.node).to.equal('a');
        expect(told[0]).to.include({ what: 'ranking this node among the registered candidates' });
        expect(told[0]!.error).to.include(keys.candidate(identity, 'broken'));
        expect(a.candidate.lastRank?.rank).to.equal(0);
        expect(a.candidate.lastRank?.reason).to.match(/left out of the ranking as malformed/);
        // The campaign is over: nothing is retried any more.
        expect(told.at(-1)).to.equal(undefined);
      } finally {
        admin.close();
      }
    });
  });

  describe('self-fencing', function () {
    it('a leader partitioned from etcd stops acting by D, strictly before its key expires, and only then is another elected', async function () {
      this.timeout(120_000);
      const identity = freshIdentity();
      const leader = await h.startNodeProgram({
        script: 'test/fixtures/lease-candidate.ts',
        args: [etcd.networkEndpoint, 'partitioned', identity, String(T)],
      });
      await leader.waitForLine(/"ev":"elected"/);
      const standby = await open([etcd.hostEndpoint], 'standby', identity);
      let resolveGone: (at: number) => void = () => undefined;
      const keyGone = new Promise<number>((resolve) => (resolveGone = resolve));
      const observer = await LeaderObserver.start(standby.client, identity, (s: LeaderState) => {
        if (!s.leader) resolveGone(Date.now());
      });
      const standbyWon = standby.candidate.campaign().then((l) => ({ l, at: Date.now() }));

      const mark = leader.lines.length;
      const cutAt = Date.now();
      await leader.disconnect();
      const stopLine = await leader.waitForLine(/"ev":"must-stop"/, { from: mark, timeoutMs: 20_000 });
      const stop = JSON.parse(stopLine) as { t: number; reason: string; sinceRenewalMs: number };
      const expiredAt = await keyGone;
      const won = await standbyWon;
      await observer.close();

      expect(stop.reason).to.equal('keepalive-timeout');
      // Never before D = T/2; a late timer (a loaded machine) may eat into the drift margin
      // but not past it: the service must still be out by T × (1 − drift) = 0.9 T.
      expect(stop.sinceRenewalMs)
        .to.be.at.least(T * 500)
        .and.below(T * 900);
      expect(stop.t - cutAt).to.be.below(T * 900);
      expect(stop.t, 'must-stop strictly before the key expired').to.be.lessThan(expiredAt);
      expect(won.at, 'standby elected only after the key expired').to.be.at.least(expiredAt);
      expect(won.l.previous?.record.node).to.equal('partitioned');
      // The holder logged in and never confirmed its logout, but the standby saw its last
      // renewal a whole T before the key expired: proof enough, no second TTL to wait.
      const gateFrom = performance.now();
      const why = await won.l.clearance();
      expect(performance.now() - gateFrom).to.be.below(T * 500);
      expect(why).to.match(/session is gone.* self-fenced/);
    });

    it('etcd frozen longer than T and resumed: no two holders believe they lead at the same instant', async function () {
      this.timeout(120_000);
      const identity = freshIdentity();
      const beliefs: TermBelief[] = [];
      const group = await Promise.all(['a', 'b'].map((n) => open([etcd.hostEndpoint], n, identity)));
      const campaigns = group.map((n) =>
        n.candidate.campaign().then(
          (l) => (believe(l, beliefs), l),
          (e: unknown) => e,
        ),
      );
      const first = (await Promise.race(campaigns)) as Leadership;
      const standby = campaigns[1 - group.findIndex((n) => n.session === first.session)]!;

      await etcd.pause();
      await first.session.stopped(); // it must stop believing while etcd is frozen
      await waitFor(() => performance.now() - beliefs[0]!.to! > 2 * T * 1000, {
        what: 'etcd to stay frozen for 2 × T',
        timeoutMs: 4 * T * 1000,
        intervalMs: 100,
      });
      await etcd.unpause();

      // The standby's session also ran out during the freeze: its campaign is abandoned, it
      // must not win the key now free after the resume.
      expect(await standby).to.be.instanceOf(CampaignAbandonedError);
      // Every node with a dead session opens a new one and campaigns again.
      const reopened = await Promise.all(['a2', 'b2'].map((n) => open([etcd.hostEndpoint], n, identity)));
      const next = await Promise.race(reopened.map((n) => n.candidate.campaign()));
      believe(next, beliefs);
      await waitFor(() => group.every((n) => n.session.state !== 'alive'), {
        what: 'both old sessions to have ended',
        timeoutMs: 10_000,
      });
      expect(beliefs).to.have.length(2);
      expect(overlaps(beliefs)).to.deep.equal([]);
      expect(next.token > first.token).to.equal(true);
    });

    it('a campaign is abandoned the moment its session is revoked, and never reports leadership after', async function () {
      const identity = freshIdentity();
      const leader = await open([etcd.hostEndpoint], 'leader', identity);
      const held = await leader.candidate.campaign();
      const waiting = await open([etcd.hostEndpoint], 'waiting', identity);
      const outcome = waiting.candidate.campaign().then(
        () => 'elected',
        (e: Error) => e,
      );
      await untilRegistered(waiting.client, identity, 2);
      // Revoke the waiting node's lease from outside, then free the key at once.
      await leader.client.leaseClient.leaseRevoke({ ID: waiting.session.leaseId });
      await held.resign({ loggedOut: true });
      const result = await outcome;
      expect(result).to.be.instanceOf(CampaignAbandonedError);
      expect(waiting.session.mayAct()).to.equal(false);
      const lost = await waiting.session.lost();
      expect(lost.reason).to.equal('lease-gone');
    });

    it('a term whose resign never reached etcd is ended by its next campaign as logged out: the successor does not wait for a session that lives on', async function () {
      this.timeout(30_000);
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const term = await a.candidate.campaign();
      await term.setLoggedIn(true);
      // The resign is lost on the way (as when it timed out on a loaded etcd): the key and the
      // "logged in" record stay, on a session that keeps renewing.
      const leaderKey = new Keys().leader(identity);
      const ifOf = a.client.if.bind(a.client);
      let lose = true;
      a.client.if = ((...args: Parameters<Etcd3['if']>) => {
        if (lose && args[0] === leaderKey && args[1] === 'Mod') {
          lose = false;
          throw new Error('simulated: the resign did not reach etcd');
        }
        return ifOf(...args);
      }) as Etcd3['if'];
      expect(await term.resign({ loggedOut: true })).to.equal(false);
      expect((await readLeader(a.client, identity))?.token).to.equal(term.token);
      const b = await open([etcd.hostEndpoint], 'b', identity, { candidate: { priority: 10 } });
      const successor = b.candidate.campaign();
      // a's next campaign finds its own stale term and ends it; b (ranked first) takes over.
      const again = new AbortController();
      void a.candidate.campaign(again.signal).catch(() => undefined);
      const next = await successor;
      again.abort();
      const verdict = await Promise.race([
        next.clearance(),
        new Promise<string>((resolve) => setTimeout(() => resolve('still waiting after 3 s'), 3_000)),
      ]);
      expect(verdict).to.not.equal('still waiting after 3 s');
      expect(a.session.mayAct(), "a's session lives on").to.equal(true);
      // Where later successors look too: a's login record of that term says it logged out.
      const login = JSON.parse((await a.client.get(new Keys().login(identity)).string()) ?? '{}') as {
        token?: string;
        node?: string;
        loggedIn?: boolean;
      };
      expect(login).to.include({ node: 'a', token: String(term.token), loggedIn: false });
    });

    it('a leader whose lease is revoked by the controller loses leadership, and its successor waits it out', async function () {
      this.timeout(30_000);
      const identity = freshIdentity();
      const old = await open([etcd.hostEndpoint], 'old', identity);
      const term = await old.candidate.campaign();
      await term.setLoggedIn(true);
      const next = await open([etcd.hostEndpoint], 'next', identity);
      const nextTerm = next.candidate.campaign();
      await revokeHolder(next.client, { identity, expectToken: term.token, actor: 'test' });
      const revokedAt = performance.now();
      const lost = await term.whenLost();
      expect(['key-deleted', 'session']).to.include(lost.reason);
      expect(term.mayAct()).to.equal(false);
      const successor = await nextTerm;
      // The revoked holder never confirmed logout: its successor waits out the holder's T
      // from the holder's last renewal it saw, shortly before the revocation.
      const first = await successor.clearanceVerdict();
      expect(first.proceed).to.equal(false);
      expect(first.reason).to.match(/without a confirmed logout/);
      await successor.clearance();
      // About T after the revocation: no earlier (its renewals came every T/10 up to it, so
      // allow two intervals), and not a second T on top.
      expect(performance.now() - revokedAt)
        .to.be.at.least(T * 1000 * 0.8)
        .and.at.most(T * 1000 + 1_500);
    });
  });

  describe('login gate', function () {
    it('a leader fenced after winning cannot record a login until unfenced (S4)', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'gated', identity);
      const term = await a.candidate.campaign();
      await fence(a.client, { node: 'gated', reason: 'maintenance', actor: 'test' });
      try {
        const err = await term.setLoggedIn(true).catch((e: unknown) => e);
        expect(err).to.be.instanceOf(FencedNodeError);
        expect(term.loggedIn).to.equal(false);
        expect(term.mayAct(), 'still the leader, just not allowed to log in').to.equal(true);
        await term.setLoggedIn(false); // confirming a logout is always allowed
      } finally {
        await unfence(a.client, { node: 'gated' });
      }
      await term.setLoggedIn(true);
      expect(term.loggedIn).to.equal(true);
    });

    it('a resign without confirmed logout ends the session, and the successor waits out its TTL', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'unsure', identity);
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      const b = await open([etcd.hostEndpoint], 'b', identity);
      const bTerm = b.candidate.campaign();
      await untilRegistered(b.client, identity, 2);
      const resignedAt = performance.now();
      await aTerm.resign({ loggedOut: false });
      expect(a.session.mayAct()).to.equal(false);
      const successor = await bTerm;
      expect((await successor.clearanceVerdict()).proceed).to.equal(false);
      // The service was not confirmed out: the lease stays until the must-be-out instant
      // (0.9 T after the last renewal), and the successor then waits out the holder's T.
      await successor.clearance();
      expect(performance.now() - resignedAt)
        .to.be.at.least(T * 1000 * 0.8)
        .and.at.most(T * 1000 + 1_500);
    });

    it('a holder confirming its logout lets the waiting successor in at once: the change wakes the gate, no recheck is waited for', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'holder', identity);
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      const b = await open([etcd.hostEndpoint], 'next', identity);
      const bTerm = b.candidate.campaign();
      await untilRegistered(b.client, identity, 2);
      // An operator deletes the key: the holder's session lives on, its logout is unconfirmed.
      await a.client.delete().key(new Keys().leader(identity));
      expect((await aTerm.whenLost()).reason).to.equal('key-deleted');
      const successor = await bTerm;
      const reads: number[] = [];
      const read = successor.clearanceVerdict.bind(successor);
      successor.clearanceVerdict = async () => {
        reads.push(performance.now());
        return read();
      };
      const waiting = new Promise<string>((resolve) => successor.once('waiting', (w) => resolve(w.reason)));
      const cleared = successor.clearance();
      expect(await waiting).to.match(/session is still alive/);
      await aTerm.setLoggedIn(false);
      expect(await cleared).to.match(/confirmed its logout/);
      const tookMs = performance.now() - reads[0]!;
      expect(reads, 'one read to wait, one woken by the confirmation').to.have.length(2);
      expect(tookMs, 'let in before the gate would have read again on its own').to.be.below(
        CLEARANCE_RECHECK_MS,
      );
    });

    it('a standby that sees the key go goes straight to taking it: its unchanged registration is not written again on the way', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'holder', identity);
      await a.candidate.campaign();
      const b = await open([etcd.hostEndpoint], 'next', identity);
      // Its change feed running first: a first read made while the feed starts is read again
      // (the feed cannot tell what it missed), which registers b twice before the key goes.
      await ChangeFeed.for(b.client).ready();
      const bTerm = b.candidate.campaign();
      await untilRegistered(b.client, identity, 2);
      const registration = () => a.client.get(new Keys().candidate(identity, 'next')).exec();
      const before = (await registration()).kvs[0]!.mod_revision;
      const reads = readsOf(b.client);
      try {
        await a.client.delete().key(new Keys().leader(identity));
        const successor = await bTerm;
        expect(successor.node).to.equal('next');
      } finally {
        reads.stop();
      }
      // A write would have been a raft commit on the path from the key's end to the new term.
      expect((await registration()).kvs[0]!.mod_revision, 'the registration written once').to.equal(before);
      // So would a read be a round trip: the key's end and the candidates come from its watch.
      expect(reads.keys, 'b read the leader key again').to.not.include(new Keys().leader(identity));
    });

    it('a better candidate that registered while the standby waited still goes first when the key goes', async function () {
      this.timeout(30_000);
      const identity = freshIdentity();
      const keys = new Keys();
      const holder = await open([etcd.hostEndpoint], 'holder', identity);
      await holder.candidate.campaign();
      const low = await open([etcd.hostEndpoint], 'low', identity, { candidate: { priority: 1 } });
      await ChangeFeed.for(low.client).ready();
      const lowTerm = low.candidate.campaign();
      await untilRegistered(low.client, identity, 2);
      // Registered after low read the candidates: low learns of it from its watch alone.
      const high = await open([etcd.hostEndpoint], 'high', identity, { candidate: { priority: 5 } });
      await ChangeFeed.for(high.client).ready();
      const highTerm = high.candidate.campaign();
      await untilRegistered(high.client, identity, 3);
      // The holder's end as its lease's end looks: its registration and its key go together.
      await holder.client
        .if(keys.leader(identity), 'Create', '>', 0)
        .then(
          holder.client.delete().key(keys.candidate(identity, 'holder')),
          holder.client.delete().key(keys.leader(identity)),
        )
        .commit();
      const winner = await Promise.race([lowTerm, highTerm]);
      expect(winner.node).to.equal('high');
    });

    it('a successor that never saw the earlier holder’s session waits out T from when it first found it gone, then logs in', async function () {
      // Both hosts went down with the holder's logout unconfirmed (an etcd stopped with them):
      // the node that comes back never saw the holder's session renewed. Only the read that
      // found the session gone bounds its last renewal, and that bound must not move with
      // every re-read, or the successor waits for ever.
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'gone', identity);
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      await a.client.leaseClient.leaseRevoke({ ID: a.session.leaseId });
      const b = await open([etcd.hostEndpoint], 'late', identity);
      const startedAt = performance.now();
      const successor = await b.candidate.campaign();
      expect((await successor.clearanceVerdict()).proceed).to.equal(false);
      const why = await successor.clearance();
      expect(why).to.match(/its session is gone.* past its TTL/);
      expect(performance.now() - startedAt)
        .to.be.at.least(T * 1000 * 0.9)
        .and.at.most(T * 1000 + 2_000);
    });

    it('a login write that reached etcd but timed out for its term is confirmed out by the next campaign: no later term waits on its own live session', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'timedout', identity);
      const keys = new Keys();
      const first = await a.candidate.campaign();
      // What etcd holds when setLoggedIn(true) landed but its answer never came back: the
      // term went on as if the login failed (no service) and resigned as logged out.
      const landed = {
        node: 'timedout',
        token: String(first.token),
        loggedIn: true,
        at: Date.now(),
        leaseId: a.session.leaseId,
        ttlMs: T * 1000,
      };
      await a.client.put(keys.login(identity)).value(JSON.stringify(landed));
      await first.resign({ loggedOut: true });
      const second = await new Candidate(a.session, { identity }).campaign();
      const login = JSON.parse((await a.client.get(keys.login(identity)).string())!) as {
        token: string;
        loggedIn: boolean;
      };
      expect(login, 'confirmed out before the next term began').to.deep.include({
        token: String(first.token),
        loggedIn: false,
      });
      // A later term's end record no longer hides the first: the next term is let in at once.
      await second.resign({ loggedOut: true });
      const third = await new Candidate(a.session, { identity }).campaign();
      expect((await third.clearanceVerdict()).proceed).to.equal(true);
    });

    it('a leader key found on our own lease is adopted only with proof of a transfer', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const first = await a.candidate.campaign();
      // A second candidate object on the same session (say, after an agent restarted its
      // identity worker) finds the key on its lease, but no transfer put it there.
      const again = new Candidate(a.session, { identity });
      const second = await again.campaign();
      expect(second.previous?.transferred ?? false).to.equal(false);
      expect(second.token > first.token).to.equal(true);
      expect((await first.whenLost()).reason).to.equal('key-deleted');
    });
  });

  describe('transfer', function () {
    it('moves the key to the named target atomically, with a greater token, only after confirmed logout', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      const b = await open([etcd.hostEndpoint], 'b', identity);
      const bTerm = b.candidate.campaign();
      await untilRegistered(b.client, identity, 2);

      const refused = await transfer(a.client, {
        identity,
        target: 'b',
        expectToken: aTerm.token,
        actor: 'op',
      }).catch((e: unknown) => e);
      expect((refused as LeaseOperationError).code).to.equal('not-logged-out');

      await aTerm.setLoggedIn(false);
      const stale = await transfer(a.client, {
        identity,
        target: 'b',
        expectToken: aTerm.token - 1n,
        actor: 'op',
      }).catch((e: unknown) => e);
      expect((stale as LeaseOperationError).code).to.equal('changed');

      const token = await transfer(a.client, {
        identity,
        target: 'b',
        expectToken: aTerm.token,
        actor: 'op',
      });
      const won = await bTerm;
      expect(won.token).to.equal(token);
      expect(token > aTerm.token).to.equal(true);
      expect(won.previous?.transferred).to.equal(true);
      expect(await won.clearanceVerdict()).to.deep.include({ proceed: true });
      expect((await aTerm.whenLost()).reason).to.equal('key-moved');
    });

    it('fails cleanly when the holder changed between read and txn', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(false);
      const c = await open([etcd.hostEndpoint], 'c', identity, { candidate: { priority: 5 } });
      const cTerm = c.candidate.campaign();
      const b = await open([etcd.hostEndpoint], 'b', identity);
      void b.candidate.campaign().catch(() => undefined);
      await untilRegistered(b.client, identity, 3);
      const seen = await readLeader(a.client, identity);
      // Between the operator's read and the transfer, the holder resigns and c takes over.
      await aTerm.resign({ loggedOut: true });
      await cTerm;
      const err = await transfer(a.client, {
        identity,
        target: 'b',
        expectToken: seen!.token,
        actor: 'op',
      }).catch((e: unknown) => e);
      expect((err as LeaseOperationError).code).to.equal('changed');
      expect((await readLeader(a.client, identity))?.record.node).to.equal('c');
    });
  });

  describe('hand-over by the holder (a drain that names its target)', function () {
    /** The controller election key stand-in: the authority a drain's move compares. */
    const AUTHORITY_KEY = 'understudy-test/controllers/active';
    /** The workflow whose drain asks for the hand-over, as its hold-off record names it. */
    const WORKFLOW = 'switchover-1';

    /** a leads and is logged in, b campaigns, a is held off (a workflow runs), a controller term. */
    const holdOffA = (client: Etcd3, identity: string, workflow = WORKFLOW) =>
      holdOff(client, {
        identity,
        nodes: ['a'],
        ttlMs: 60_000,
        record: { reason: 'switchover to b', actor: 'op', at: Date.now(), workflow },
      });

    async function handOverSetup() {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      const b = await open([etcd.hostEndpoint], 'b', identity);
      // Its change feed running first, so its registration is written once (see above).
      await ChangeFeed.for(b.client).ready();
      const bTerm = b.candidate.campaign();
      await untilRegistered(b.client, identity, 2);
      const put = await a.client.put(AUTHORITY_KEY).value('c1').exec();
      const authority = { key: AUTHORITY_KEY, revision: put.header.revision };
      const heldOff = await holdOffA(a.client, identity);
      return { identity, a, aTerm, b, bTerm, authority, heldOff };
    }

    it('moves the key to the target in the step that confirms the logout; the target takes its term and logs in without a read or a write of its own', async function () {
      const { identity, a, aTerm, b, bTerm, authority } = await handOverSetup();
      const keys = new Keys();
      const registration = async () => (await a.client.get(keys.candidate(identity, 'b')).exec()).kvs[0]!;
      const registeredAt = (await registration()).mod_revision;
      const plan = await aTerm.readHandOver('b', WORKFLOW, authority);
      const reads = readsOf(b.client);
      // The service is out (the caller's part); one transaction says so and moves the key.
      expect(await aTerm.handOver(plan, { actor: 'op' })).to.equal(true);
      expect((await aTerm.whenLost()).reason).to.equal('key-moved');
      expect(aTerm.loggedIn).to.equal(false);
      const won = await bTerm.finally(reads.stop);
      // The move, the term-end record and the cleared login record come from its watch.
      expect(reads.keys, 'b read the moved key').to.not.include(keys.leader(identity));
      expect(won.node).to.equal('b');
      expect(won.token > aTerm.token).to.equal(true);
      expect(won.previous?.transferred).to.equal(true);
      const end = JSON.parse((await a.client.get(keys.termEnd(identity)).string())!) as Record<
        string,
        unknown
      >;
      expect(end).to.include({
        token: String(aTerm.token),
        node: 'a',
        how: 'transferred',
        loggedOut: true,
        actor: 'op',
      });
      expect(await a.client.get(keys.login(identity)).string(), 'the login record cleared').to.equal(null);
      // The target took its term on a read: its registration was not written again.
      expect((await registration()).mod_revision).to.equal(registeredAt);
      // Its gate decides on the read that adopted the term: it lets the term in with etcd
      // paused (a read of its own would wait for etcd).
      await etcd.pause();
      let why: string;
      try {
        why = await won.clearance();
      } finally {
        await etcd.unpause();
      }
      expect(why).to.match(/^term \d+ on a was transferred after its holder confirmed logout$/);
      await won.setLoggedIn(true);
      expect(b.session.mayAct()).to.equal(true);
    });

    for (const { name, breaks } of [
      { name: "the workflow's hold-off was released (it was cancelled or ran out)", breaks: 'released' },
      {
        name: 'the hold-off was released and written again (a later workflow, not the drain’s)',
        breaks: 'held-again',
      },
      { name: "the controller's term moved on", breaks: 'authority' },
      { name: 'the target re-registered since its registration was read', breaks: 'target' },
      { name: 'the target is fenced', breaks: 'fence' },
    ] as const) {
      it(`refuses, changing nothing, when ${name}; the logout is then recorded as before`, async function () {
        const { identity, a, aTerm, authority, heldOff } = await handOverSetup();
        const keys = new Keys();
        let plan = await aTerm.readHandOver('b', WORKFLOW, authority);
        if (breaks === 'released' || breaks === 'held-again') await releaseHoldOff(a.client, heldOff);
        if (breaks === 'held-again') await holdOffA(a.client, identity);
        if (breaks === 'authority') {
          const put = await a.client.put(AUTHORITY_KEY).value('c2').exec();
          plan = { ...plan, authority: { ...authority, revision: String(BigInt(put.header.revision) - 1n) } };
        }
        if (breaks === 'target') {
          const key = keys.candidate(identity, 'b');
          await a.client
            .put(key)
            .value((await a.client.get(key).string())!)
            .ignoreLease();
        }
        if (breaks === 'fence') await fence(a.client, { node: 'b', reason: 'maintenance', actor: 'test' });
        try {
          const before = await a.client.getAll().prefix(`${keys.prefix}/identities/${identity}/`).strings();
          expect(await aTerm.handOver(plan, { actor: 'op' })).to.equal(false);
          expect(
            await a.client.getAll().prefix(`${keys.prefix}/identities/${identity}/`).strings(),
          ).to.deep.equal(before);
          expect(aTerm.mayAct()).to.equal(true);
          await aTerm.setLoggedIn(false);
          const leader = (await readLeader(a.client, identity))!;
          expect([leader.record.node, leader.token, leader.login?.loggedIn]).to.deep.equal([
            'a',
            aTerm.token,
            false,
          ]);
        } finally {
          if (breaks === 'fence') await unfence(a.client, { node: 'b' });
        }
      });
    }

    it('plans no hand-over for a node that is not held off (no workflow moves the identity)', async function () {
      const { identity, a, aTerm, heldOff, authority } = await handOverSetup();
      await releaseHoldOff(a.client, heldOff);
      const err = await aTerm.readHandOver('b', WORKFLOW, authority).catch((e: unknown) => e);
      expect((err as LeaseOperationError).code).to.equal('changed');
      expect((err as Error).message).to.equal(
        `a is not held off ${identity}: no handover of it is under way`,
      );
    });

    it('plans no hand-over under the hold-off of another workflow than the drain’s (a drain that arrived late)', async function () {
      const { identity, a, aTerm, heldOff, authority } = await handOverSetup();
      await releaseHoldOff(a.client, heldOff);
      await holdOffA(a.client, identity, 'switchover-2');
      const err = await aTerm.readHandOver('b', WORKFLOW, authority).catch((e: unknown) => e);
      expect((err as LeaseOperationError).code).to.equal('changed');
      expect((err as Error).message).to.equal(
        `a is held off ${identity} by workflow switchover-2, not by ${WORKFLOW} that asked for the handover`,
      );
    });

    it('does not hand over a term that never logged in: its gate may not have let it in', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const aTerm = await a.candidate.campaign();
      const b = await open([etcd.hostEndpoint], 'b', identity);
      void b.candidate.campaign().catch(() => undefined);
      await untilRegistered(b.client, identity, 2);
      await holdOffA(a.client, identity);
      const put = await a.client.put(AUTHORITY_KEY).value('c1').exec();
      const plan = await aTerm.readHandOver('b', WORKFLOW, {
        key: AUTHORITY_KEY,
        revision: put.header.revision,
      });
      expect(await aTerm.handOver(plan, { actor: 'op' })).to.equal(false);
      expect((await readLeader(a.client, identity))?.record.node).to.equal('a');
    });
  });

  describe('hand-over by a leader that leaves (its agent stops)', function () {
    /**
     * T = 5 s here: a standby counts as alive for 3 renewal intervals (1.5 s) after a renewal
     * the leader saw, which a loaded machine's watch delivers well within.
     */
    const timing = { ttlSeconds: 5 };

    /** a leads and is logged in (priority 9); b (5) and c (1) campaign behind it. */
    async function leavingSetup(bTiming = timing) {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity, { timing, candidate: { priority: 9 } });
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      const b = await open([etcd.hostEndpoint], 'b', identity, {
        timing: bTiming,
        candidate: { priority: 5 },
      });
      const bTerm = b.candidate.campaign();
      bTerm.catch(() => undefined);
      const c = await open([etcd.hostEndpoint], 'c', identity, { timing, candidate: { priority: 1 } });
      const cTerm = c.candidate.campaign();
      await untilRegistered(a.client, identity, 3);
      return { identity, a, aTerm, b, bTerm, c, cTerm };
    }

    /** The plan readSuccessor makes once it names `node` (the leader's view of the others' renewals catches up). */
    async function successor(term: Leadership, node: string) {
      let plan: Awaited<ReturnType<Leadership['readSuccessor']>>;
      await waitFor(async () => (plan = await term.readSuccessor())?.target.node === node, {
        what: `the leaving leader to choose ${node}`,
        timeoutMs: 8_000,
      });
      return plan!;
    }

    it('hands its term to the standby an election would let try first, passing over one held off', async function () {
      const { identity, a, aTerm, cTerm } = await leavingSetup();
      const keys = new Keys();
      await successor(aTerm, 'b');
      // b is held off (a workflow moves the identity elsewhere): c is the one that may take it.
      await holdOff(a.client, {
        identity,
        nodes: ['b'],
        ttlMs: 60_000,
        record: { reason: 'failover to c', actor: 'op', at: Date.now() },
      });
      const plan = await successor(aTerm, 'c');
      expect(await aTerm.handOver(plan, { actor: 'a (leaving)' })).to.equal(true);
      const won = await cTerm;
      expect(won.previous?.transferred).to.equal(true);
      expect(await won.clearanceVerdict()).to.deep.include({ proceed: true });
      // The leaver is no candidate any more: another leader leaving must not hand it back.
      expect(await a.client.get(keys.candidate(identity, 'a')).string()).to.equal(null);
    });

    it('does not hand its term to a standby held off since it was read: nothing changes', async function () {
      const { identity, a, aTerm } = await leavingSetup();
      const plan = await successor(aTerm, 'b');
      await holdOff(a.client, {
        identity,
        nodes: ['b'],
        ttlMs: 60_000,
        record: { reason: 'maintenance of b', actor: 'op', at: Date.now() },
      });
      expect(await aTerm.handOver(plan, { actor: 'a (leaving)' })).to.equal(false);
      expect((await readLeader(a.client, identity))?.record.node).to.equal('a');
      expect(aTerm.mayAct()).to.equal(true);
    });

    it('passes over a standby whose session stopped renewing, while its registration is still there', async function () {
      this.timeout(30_000);
      // b's lease (T = 10 s) outlives its last renewal long after it stops counting as alive.
      const { identity, a, aTerm, b, cTerm } = await leavingSetup({ ttlSeconds: 10 });
      // Planned while b was alive (its service's stop takes a while)…
      const toB = await successor(aTerm, 'b');
      // …then b's agent freezes or loses etcd: no renewal from here on, nothing revoked.
      b.client.close();
      const toC = await successor(aTerm, 'c');
      const registrations = await a.client.getAll().prefix(new Keys().candidates(identity)).keys();
      expect(registrations, "b's registration outlives its renewals").to.include(
        new Keys().candidate(identity, 'b'),
      );
      // The move checks again: the plan made while b was alive is refused, changing nothing.
      expect(await aTerm.handOver(toB, { actor: 'a (leaving)' })).to.equal(false);
      expect((await readLeader(a.client, identity))?.record.node).to.equal('a');
      expect(await aTerm.handOver(toC, { actor: 'a (leaving)' })).to.equal(true);
      expect((await cTerm).node).to.equal('c');
    });

    it('a standby whose campaign stops gives back a term moved to it that it never took; the others elect one', async function () {
      const identity = freshIdentity();
      const keys = new Keys();
      const a = await open([etcd.hostEndpoint], 'a', identity, { candidate: { priority: 9 } });
      const aTerm = await a.candidate.campaign();
      await aTerm.setLoggedIn(true);
      // b is held off before it campaigns: its campaign registers, then waits on the hold only
      // and does not follow the leader key, so a move to it lands with nobody here to take it.
      await holdOff(a.client, {
        identity,
        nodes: ['b'],
        ttlMs: 60_000,
        record: { reason: 'maintenance of b', actor: 'op', at: Date.now() },
      });
      const b = await open([etcd.hostEndpoint], 'b', identity, { candidate: { priority: 5 } });
      const stopB = new AbortController();
      const bCampaign = b.candidate.campaign(stopB.signal).catch((e: unknown) => e);
      const c = await open([etcd.hostEndpoint], 'c', identity, { candidate: { priority: 1 } });
      const cTerm = c.candidate.campaign();
      await untilRegistered(a.client, identity, 3);
      await aTerm.setLoggedIn(false);
      const token = await transfer(a.client, {
        identity,
        target: 'b',
        expectToken: aTerm.token,
        actor: 'op',
      });
      expect((await readLeader(a.client, identity))?.record.node).to.equal('b');

      // b's campaign stops (its identity removed, its agent stopping); its session lives on.
      stopB.abort();
      expect(await bCampaign).to.be.instanceOf(CampaignAbandonedError);
      const won = await cTerm;
      expect(won.node).to.equal('c');
      expect(won.token > token).to.equal(true);
      // b said where successors look that nobody ran under the term it gave back.
      expect(JSON.parse((await a.client.get(keys.termEnd(identity)).string())!)).to.include({
        token: String(token),
        node: 'b',
        how: 'resigned',
        loggedOut: true,
        actor: 'b (no longer a candidate)',
      });
      expect(b.session.mayAct(), "b's session lives on").to.equal(true);
      expect(await a.client.get(keys.candidate(identity, 'b')).string()).to.equal(null);
      expect(await won.clearanceVerdict()).to.deep.include({ proceed: true });
    });
  });

  describe('observing', function () {
    it('an observer cut off from etcd by a partition reports every term it missed, in order', async function () {
      this.timeout(60_000);
      const identity = freshIdentity();
      const observer = await h.startNodeProgram({
        script: 'test/fixtures/leader-observer.ts',
        args: [etcd.networkEndpoint, identity],
      });
      await observer.waitForLine(/"ev":"observing"/);
      await observer.disconnect();

      // Three terms begin and end while the observer cannot see etcd.
      const expected: string[] = [];
      for (const name of ['a', 'b', 'c']) {
        const n = await open([etcd.hostEndpoint], name, identity);
        const term = await n.candidate.campaign();
        expected.push(`${name}:${term.token}`, 'none');
        await term.resign({ loggedOut: true });
      }
      const mark = observer.lines.length;
      await observer.reconnect();
      expect(await reportedChanges(observer, mark, expected.length)).to.deep.equal(expected);
    });
  });

  describe('calls in flight', function () {
    it(`an agent's client has at most ETCD_CALLS_IN_FLIGHT calls at etcd; the rest wait their turn and all get through`, async function () {
      const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
      try {
        await client.put('bulkhead/probe').value('1');
        const total = ETCD_CALLS_IN_FLIGHT + 36;
        await etcd.pause();
        let calls: Array<Promise<unknown>>;
        try {
          calls = Array.from({ length: total }, () =>
            client.get('bulkhead/probe').options(within(30_000)).string(),
          );
          await waitFor(() => etcdCalls(client)?.waiting === 36, {
            what: 'the calls past the bound to wait in the client',
            timeoutMs: 5_000,
          });
          expect(etcdCalls(client)).to.deep.equal({ running: ETCD_CALLS_IN_FLIGHT, waiting: 36 });
        } finally {
          await etcd.unpause();
        }
        expect(await Promise.all(calls)).to.deep.equal(Array.from({ length: total }, () => '1'));
        expect(etcdCalls(client)).to.deep.equal({ running: 0, waiting: 0 });
      } finally {
        client.close();
      }
    });
  });

  describe('fenced writes', function () {
    it('a write guarded by a stale token is rejected once a new term began', async function () {
      const identity = freshIdentity();
      const a = await open([etcd.hostEndpoint], 'a', identity);
      const aTerm = await a.candidate.campaign();
      await fencedPut(a.client, { identity, token: aTerm.token, key: 'data/x', value: 'from-a' });
      const b = await open([etcd.hostEndpoint], 'b', identity);
      const bTerm = b.candidate.campaign();
      await aTerm.resign({ loggedOut: true });
      const bLead = await bTerm;

      const err = await fencedPut(a.client, {
        identity,
        token: aTerm.token,
        key: 'data/x',
        value: 'stale',
      }).catch((e: unknown) => e);
      expect(err).to.be.instanceOf(StaleTokenError);
      expect(await isTokenCurrent(a.client, identity, aTerm.token)).to.equal(false);
      expect(await isTokenCurrent(a.client, identity, bLead.token)).to.equal(true);
      await fencedPut(b.client, { identity, token: bLead.token, key: 'data/x', value: 'from-b' });
      expect(await b.client.get('data/x').string()).to.equal('from-b');
    });
  });
});

describe('pkg/lease on a 3-member etcd cluster (real etcd)', function () {
  // Each test builds its own cluster: every harness is closed after its test, not only the
  // last one (a single shared variable left the first test's three members running).
  const harnesses: Harness[] = [];
  const newHarness = async () => {
    const h = await Harness.create();
    harnesses.push(h);
    return h;
  };
  afterEach(async function () {
    await Promise.all(harnesses.splice(0).map((h) => h.close()));
  });

  it('an observer whose etcd member dies reconnects to another and reports every term it missed, in order', async function () {
    this.timeout(180_000);
    const h = await newHarness();
    const cluster = await h.startEtcdCluster(3, 'obs');
    const identity = 'observed';
    const [m0, m1, m2] = cluster.members;
    const observer = await h.startNodeProgram({
      script: 'test/fixtures/leader-observer.ts',
      args: [[m0!, m1!].map((m) => m.networkEndpoint).join(','), identity],
    });
    await observer.waitForLine(/"ev":"observing"/);
    const mark = observer.lines.length;
    const expected: string[] = [];
    // Kill each of the observer's only two members in turn, so whichever one carries its
    // watch dies while terms change (through the third member).
    for (const victim of [m0!, m1!]) {
      await victim.kill();
      // Losing the raft leader means a re-election first: wait for the survivors to serve.
      await untilAnswers(
        () => etcdAnswers(m2!.hostEndpoint),
        'the surviving members to elect a raft leader',
        15_000,
      );
      for (const name of ['a', 'b']) {
        const n = await openNode([m2!.hostEndpoint], name, identity);
        try {
          const term = await n.candidate.campaign();
          expected.push(`${name}:${term.token}`, 'none');
          await term.resign({ loggedOut: true });
        } finally {
          await n.close();
        }
      }
      await victim.start();
    }
    expect(await reportedChanges(observer, mark, expected.length)).to.deep.equal(expected);
  });

  it('losing one member changes no leader', async function () {
    this.timeout(120_000);
    const h = await newHarness();
    const cluster = await h.startEtcdCluster(3);
    const identity = 'cluster-id';
    const timing = { ttlSeconds: 6 };
    const a = await openNode(cluster.hostEndpoints, 'a', identity, { timing });
    const b = await openNode(cluster.hostEndpoints, 'b', identity, { timing });
    try {
      const term = await a.candidate.campaign();
      void b.candidate.campaign().catch(() => undefined);
      const changes: LeaderState[] = [];
      const observer = await LeaderObserver.start(b.client, identity, (s) => changes.push(s));

      // Kill the raft leader: the worst member to lose (writes wait for a new election).
      let raftLeader = cluster.members[0]!;
      for (const member of cluster.members) {
        const probe = connectEtcd({ endpoints: [member.hostEndpoint] });
        const status = await probe.maintenance.status();
        probe.close();
        if (status.leader === status.header.member_id) raftLeader = member;
      }
      await raftLeader.kill();
      // Hold for two TTLs: several keepalives must go through the surviving members.
      const until = performance.now() + 2 * timing.ttlSeconds * 1000;
      await waitFor(() => performance.now() >= until || term.isEnded, {
        what: 'two TTLs to pass',
        timeoutMs: 3 * timing.ttlSeconds * 1000,
        intervalMs: 100,
      });
      expect(term.isEnded, 'leadership ended').to.equal(false);
      expect(term.mayAct()).to.equal(true);
      expect(changes.map((c) => c.leader?.token)).to.deep.equal([term.token]);
      await observer.close();
    } finally {
      await a.close();
      await b.close();
    }
  });
});

describe('pkg/lease under etcd RBAC (real etcd)', function () {
  let h: Harness;
  let etcd: EtcdMember;
  before(async function () {
    h = await Harness.create();
    etcd = await h.startEtcd('etcd-rbac');
  });
  after(async function () {
    await h?.close();
  });

  it('a node RBAC forbids to read the candidates ranks last, not best; denied the identities prefix, its term says what to grant', async function () {
    this.timeout(60_000);
    const identity = 'rbac-id';
    const keys = new Keys();
    const root = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    const nodes: TestNode[] = [];
    try {
      // Everything a candidate needs, except reading the candidates: it may only write its own.
      await root.role('root').create();
      await root.user('root').create('root-pw');
      await root.user('root').addRole('root');
      const role = await root.role('agent').create();
      const id = (k: string) => `${keys.prefix}/identities/${identity}/${k}`;
      await role.grant([
        { permission: 'Readwrite', range: Range.prefix(keys.sessions()) },
        { permission: 'Readwrite', range: Range.prefix(`${keys.prefix}/nodes/`) },
        { permission: 'Readwrite', key: keys.leader(identity) },
        { permission: 'Readwrite', key: id('login') },
        { permission: 'Readwrite', key: id('term-end') },
        { permission: 'Readwrite', range: Range.prefix(keys.holdOffs(identity)) },
        // The controller writes drift holds; a candidate reads its own in the campaign's step.
        { permission: 'Read', range: Range.prefix(keys.drifts(identity)) },
        { permission: 'Write', range: Range.prefix(keys.candidates(identity)) },
      ]);
      await root.user('agent').create('agent-pw');
      await root.user('agent').addRole('agent');
      await root.auth.authEnable();

      const client = connectEtcd({
        endpoints: [etcd.hostEndpoint],
        auth: { username: 'agent', password: 'agent-pw' },
      });
      const session = await Session.open(client, { node: 'a', timing: { ttlSeconds: 2 } });
      const told: Array<CampaignRetry | undefined> = [];
      const candidate = new Candidate(session, { identity, onRetry: (r) => told.push(r) });
      nodes.push({
        name: 'a',
        client,
        session,
        candidate,
        async close() {
          await session.close();
          client.close();
        },
      });
      const started = performance.now();
      const leadership = await candidate.campaign();
      const tookMs = performance.now() - started;

      expect(told[0]).to.include({ what: 'reading the registered candidates to rank this node' });
      expect(told[0]!.error).to.match(/permission denied/);
      expect(candidate.lastRank).to.include({ rank: RANK_WHEN_UNREADABLE });
      expect(tookMs, 'it waited behind any candidate that can see the others').to.be.at.least(
        RANK_WHEN_UNREADABLE * STAGGER_STEP_MS,
      );
      expect(leadership.node).to.equal('a');
      // The term follows its key on the agent's one watch of the identities prefix, which
      // this role may not read: it falls back to reading its own key, and says so.
      const last = await waitFor(() => told.at(-1), {
        timeoutMs: 10_000,
        what: 'the term reports its watch',
      });
      expect(last.what).to.match(/watching .*rbac-id\/leader/);
      expect(last.error).to.match(/read access to the prefix understudy\/identities\//);
    } finally {
      await Promise.all(nodes.map((n) => n.close()));
      root.close();
    }
  });
});

// Signed presence, replays and the verified inbox, end to end on an open NATS (no
// authorization) with real etcd and agents: forged PONGs are ignored by the client helper and
// the presence probe; every replay case gets `unauthenticated` (also from the next leader
// after a failover: the shared KV replay cache); an inbox stream that cannot be trusted
// refuses the login.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import {
  headers as natsHeaders,
  nanos,
  RetentionPolicy,
  AckPolicy,
  type Msg,
  type NatsConnection,
} from 'nats';
import { generateCallerKey, signRequest } from '../../pkg/identity/access.js';
import {
  collectResponders,
  IdentityClient,
  msgHeaders,
  type NodeKeySource,
} from '../../pkg/identity/client.js';
import { signReply } from '../../pkg/identity/presence.js';
import { headers as H, inboxStream, subjects } from '../../pkg/identity/wire.js';
import { readNodeKey, userSigner } from '../../pkg/keys/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import type { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import { TestAuthority } from '../support/control.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

const utf8 = new TextEncoder();

describe('signed presence, replays and the verified inbox (open NATS)', function () {
  this.timeout(240_000);
  let cluster: IntegrationCluster;
  let nc: NatsConnection;
  let client: Etcd3;
  let authority: TestAuthority;
  /** Node keys as the controller reads them: from etcd, with their session lease. */
  let keys: NodeKeySource;

  before(async () => {
    cluster = await IntegrationCluster.start({ connect: true });
    ({ nc, client } = cluster);
    authority = await TestAuthority.start(client, nc);
    keys = (node) => readNodeKey(client, node);
  });

  afterEach(function () {
    return cluster.afterTest(this.currentTest);
  });

  after(async () => {
    await authority?.stop();
    await cluster?.close();
  });

  /** Answers PING on `identity` as `node` with every forgery this test knows. */
  function impostor(identity: string, node: string, token: bigint) {
    const mallory = userSigner(generateCallerKey().seed);
    return nc.subscribe(subjects.identity(identity), {
      callback: (_err, msg) => {
        const requestId = msg.headers?.get(H.requestId) ?? '';
        const forge = (t: string, opts: { sign?: boolean; id?: string; as?: string } = {}) => {
          const h = natsHeaders();
          const who = opts.as ?? node;
          h.set(H.identity, identity);
          h.set(H.token, t);
          h.set(H.node, who);
          h.set(H.requestId, opts.id ?? requestId);
          if (opts.sign) {
            const f = {
              identity,
              node: who,
              token: BigInt(t),
              requestId: opts.id ?? requestId,
              mode: 'core' as const,
              error: '',
            };
            h.set(H.replySignature, signReply(mallory, f, `PONG ${who} ${t}`));
          }
          msg.respond(`PONG ${who} ${t}`, { headers: h });
        };
        forge(String(token + 100n)); // unsigned, a higher token
        forge(String(token + 100n), { sign: true }); // signed with a key of nobody's
        forge(String(token + 100n), { as: 'b' }); // another node's name
        forge('9'.repeat(40)); // a huge token
        forge(String(token + 100n), { sign: true, id: 'an-old-request-id' }); // an old PONG
      },
    });
  }

  it('forged PONGs are ignored by the client helper and the presence probe', async () => {
    await putSpec(client, rateBotSpec('present'));
    const a = await cluster.startAgent({ node: 'a', identities: { present: null } });
    await a.waitForState('present', 'leader');
    const real = await waitFor(
      async () => (await collectResponders(nc, 'present', 200, { keys })).find((r) => r.node === 'a'),
      { what: 'a verified PONG from a', timeoutMs: 10_000 },
    );
    const rogue = impostor('present', 'a', real.token);
    const caller = new IdentityClient(nc, { identity: 'present', keys, timeoutMs: 3_000 });
    try {
      for (let i = 0; i < 5; i++) {
        expect(await caller.request('PING')).to.deep.include({
          node: 'a',
          token: real.token,
          verified: true,
        });
      }
      expect(caller.highestToken, 'no forged token raised the gate').to.equal(real.token);
      const ignored: string[] = [];
      const seen = await collectResponders(nc, 'present', 300, { keys, ignored: (p) => ignored.push(p) });
      expect(seen.map((r) => `${r.node}@${r.token}`)).to.deep.equal([`a@${real.token}`]);
      expect(ignored.length).to.be.at.least(5);

      // The leader gone, only the impostor answers: no responder at all, and the client says
      // it heard only unverified answers.
      await a.stop();
      await waitFor(async () => (await collectResponders(nc, 'present', 200, { keys })).length === 0, {
        what: 'no verified responder left',
        timeoutMs: 10_000,
      });
      const err = await caller.request('PING', { timeoutMs: 500 }).catch((e: Error) => e);
      expect((err as Error).name).to.equal('UnverifiedReplyError');
      expect(caller.highestToken).to.equal(real.token);
    } finally {
      rogue.unsubscribe();
      caller.close();
    }
  });

  describe('replays', function () {
    const alice = { name: 'alice', ...generateCallerKey() };
    let a: AgentProcess;
    let b: AgentProcess;

    /** Raw core request with the given headers: the reply's error code and body. */
    async function core(headers: Record<string, string>, body: string) {
      const h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
      const m = await nc.request(subjects.identity('replayed'), utf8.encode(body), {
        headers: h,
        timeout: 3_000,
      });
      return answerOf(m);
    }
    const answerOf = (m: Msg) => ({
      error: msgHeaders(m.headers)(H.error),
      node: msgHeaders(m.headers)(H.node),
      body: new TextDecoder().decode(m.data),
    });

    /** Raw durable publish: the answer published to `replyTo`. */
    async function durable(headers: Record<string, string>, body: string, msgID: string, replyTo: string) {
      const sub = nc.subscribe(replyTo, { max: 1 });
      const h = natsHeaders();
      for (const [k, v] of Object.entries(headers)) h.set(k, v);
      h.set(H.replyTo, replyTo);
      h.set(H.requestId, msgID);
      await nc.jetstream().publish(subjects.inbox('replayed'), utf8.encode(body), { msgID, headers: h });
      const timer = setTimeout(() => sub.unsubscribe(), 10_000);
      for await (const m of sub) {
        clearTimeout(timer);
        return answerOf(m);
      }
      throw new Error(`no answer to durable request ${msgID} within 10 s`);
    }

    const sign = (opts: { now?: number; replyTo?: string; body?: string } = {}) =>
      signRequest({
        identity: 'replayed',
        caller: 'alice',
        seed: alice.seed,
        body: opts.body ?? 'RATE USD',
        ...(opts.now !== undefined && { now: opts.now }),
        ...(opts.replyTo !== undefined && { delivery: { mode: 'durable' as const, replyTo: opts.replyTo } }),
      });

    before(async () => {
      await putSpec(
        client,
        rateBotSpec('replayed', {
          inbox: { durable: true },
          access: { open: false, contacts: [{ name: 'alice', nkey: alice.publicKey }] },
        }),
      );
      a = await cluster.startAgent({ node: 'a', identities: { replayed: { priority: 10 } } });
      await a.waitForState('replayed', 'leader');
      b = await cluster.startAgent({ node: 'b', identities: { replayed: null } });
      await b.waitForState('replayed', 'standby');
    });
    after(() => cluster.stopProcesses());

    it('each replay case gets unauthenticated; a nonce used with one leader is refused by the next', async () => {
      // Core: served once, refused again (same leader).
      const once = sign();
      expect(await core(once, 'RATE USD')).to.deep.include({ error: undefined, node: 'a' });
      const again = await core(once, 'RATE USD');
      expect(again.error).to.equal('unauthenticated');
      expect(again.body).to.match(/replayed request/);

      // A core request replayed into the durable inbox.
      const coreSigned = sign();
      const intoInbox = await durable(coreSigned, 'RATE USD', coreSigned[H.nonce]!, '_INBOX.replay-test.r1');
      expect(intoInbox.error).to.equal('unauthenticated');
      expect(intoInbox.body).to.match(/for durable delivery/);

      // A durable request replayed as core.
      const durableSigned = sign({ replyTo: '_INBOX.replay-test.r2' });
      const asCore = await core(durableSigned, 'RATE USD');
      expect(asCore.error).to.equal('unauthenticated');
      expect(asCore.body).to.match(/for core delivery/);

      // Reply-to changed.
      const redirected = sign({ replyTo: '_INBOX.replay-test.meant' });
      const stolen = await durable(
        redirected,
        'RATE USD',
        redirected[H.nonce]!,
        '_INBOX.replay-test.mallory',
      );
      expect(stolen.error).to.equal('unauthenticated');
      expect(stolen.body).to.match(/with this reply-to/);

      // A durable message whose Nats-Msg-Id differs from the nonce.
      const other = sign({ replyTo: '_INBOX.replay-test.r3' });
      const wrongId = await durable(other, 'RATE USD', 'another-message-id', '_INBOX.replay-test.r3');
      expect(wrongId.error).to.equal('unauthenticated');
      expect(wrongId.body).to.match(/Nats-Msg-Id must equal/);

      // A request from the future (beyond the 5 s skew).
      const future = await core(sign({ now: Date.now() + 60_000 }), 'RATE USD');
      expect(future.error).to.equal('unauthenticated');
      expect(future.body).to.match(/60 s ahead of/);

      // A correctly signed durable request is served.
      const good = sign({ replyTo: '_INBOX.replay-test.r4' });
      expect(await durable(good, 'RATE USD', good[H.nonce]!, '_INBOX.replay-test.r4')).to.deep.include({
        error: undefined,
      });

      // Failover: the next leader refuses the nonce the first one served (shared KV cache).
      const served = sign();
      expect((await core(served, 'RATE USD')).error).to.equal(undefined);
      a.kill('SIGTERM');
      await b.waitForState('replayed', 'leader', { timeoutMs: 30_000 });
      const onB = await waitFor(
        async () => {
          const r = await core(served, 'RATE USD').catch(() => undefined);
          return r?.node === 'b' ? r : undefined;
        },
        { what: 'b to answer', timeoutMs: 10_000, intervalMs: 100 },
      );
      expect(onB.error).to.equal('unauthenticated');
      expect(onB.body).to.match(/replayed request/);
      // A fresh request is served by b.
      expect(await core(sign(), 'RATE USD')).to.deep.include({ error: undefined, node: 'b' });
    });
  });

  describe('the inbox stream is checked at login', function () {
    /** Pre-create the inbox stream of `identity` (before any agent does). */
    async function precreate(identity: string, duplicateWindowMs: number, extraConsumer?: string) {
      const jsm = await nc.jetstreamManager();
      await jsm.streams.add({
        name: inboxStream(identity),
        subjects: [subjects.inbox(identity)],
        retention: RetentionPolicy.Workqueue,
        duplicate_window: nanos(duplicateWindowMs),
      });
      if (extraConsumer) {
        await jsm.consumers.add(inboxStream(identity), {
          durable_name: extraConsumer,
          ack_policy: AckPolicy.Explicit,
        });
      }
    }

    async function refused(identity: string, reason: RegExp) {
      await putSpec(client, rateBotSpec(identity, { inbox: { durable: true } }));
      const agent = await cluster.startAgent({ node: 'a', identities: { [identity]: null } });
      const record = await agent.waitForRecord(
        (r) => r.msg === 'durable inbox refused' && r.identity === identity,
        'the inbox refused',
        { timeoutMs: 20_000 },
      );
      expect(String(record.err)).to.match(reason);
      expect(String(record.err)).to.match(/nats stream rm UNDERSTUDY_INBOX_/);
      expect(await collectResponders(nc, identity, 300, { keys })).to.deep.equal([]);
      await agent.stop();
      cluster.forget(agent);
    }

    it('a stream with a tiny duplicate window refuses the login, saying why', async () => {
      await precreate('tinydup', 1_000);
      await refused('tinydup', /duplicate window is 1000 ms, shorter than the 60000 ms/);
    });

    it('a stream with an extra consumer refuses the login, saying why', async () => {
      await precreate('spied', 120_000, 'spy');
      await refused('spied', /consumers other than 'leader' \(spy\)/);
    });

    it('a correct pre-made stream is accepted (its consumer made), and the identity serves', async () => {
      await precreate('premade', 120_000);
      await putSpec(client, rateBotSpec('premade', { inbox: { durable: true } }));
      const agent = await cluster.startAgent({ node: 'a', identities: { premade: null } });
      await agent.waitForState('premade', 'leader');
      const sender = new IdentityClient(nc, { identity: 'premade', keys, timeoutMs: 5_000 });
      try {
        expect(await sender.requestDurable('RATE USD', 10_000)).to.deep.include({
          node: 'a',
          verified: true,
        });
      } finally {
        sender.close();
      }
    });
  });
});

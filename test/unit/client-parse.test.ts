// The caller-side rules of client.ts, without a NATS server: reply parsing and verification,
// stale-token rejection, at-most-once delivery of durable answers, and error translation. A
// small fake stands in for the connection; the integration suite runs the same paths against NATS.
import { expect } from 'chai';
import { headers as natsHeaders, NatsError, type Msg, type MsgHdrs, type NatsConnection } from 'nats';
import { generateCallerKey, RequestAuthenticator } from '../../pkg/identity/access.js';
import {
  collectResponders,
  DurableReplies,
  ResponderCollector,
  IdentityClient,
  IdentityRequestError,
  IdentityTimeoutError,
  msgHeaders,
  NoDurableInboxError,
  NoResponderError,
  parseReply,
  StaleReplyError,
  TooManyOutstandingError,
  UnverifiedReplyError,
  type DurableReply,
  type NodeKeySource,
} from '../../pkg/identity/client.js';
import { signReply, type DeliveryMode } from '../../pkg/identity/presence.js';
import { headers as H, subjects } from '../../pkg/identity/wire.js';
import { userSigner } from '../../pkg/keys/index.js';
import { TokenGate } from '../../pkg/lease/fenced.js';

const IDENTITY = 'msggateway';
const lookup =
  (h: Record<string, string>) =>
  (name: string): string | undefined =>
    h[name];

function replyHeaders(h: Record<string, string>): MsgHdrs {
  const hdrs = natsHeaders();
  for (const [k, v] of Object.entries(h)) hdrs.set(k, v);
  return hdrs;
}
const msg = (h: Record<string, string>, body = '') =>
  ({ headers: replyHeaders(h), data: new TextEncoder().encode(body) }) as unknown as Msg;
const noResponders = () =>
  ({ headers: { code: 503, get: () => '' }, data: new Uint8Array() }) as unknown as Msg;

/** The nodes' keys, and a key source that knows them. */
const nodeA = userSigner(generateCallerKey().seed);
const nodeB = userSigner(generateCallerKey().seed);
const signers: Record<string, typeof nodeA> = { 'node-a': nodeA, 'node-b': nodeB };
const keys: NodeKeySource = async (node) =>
  signers[node] ? { key: signers[node].publicKey, lease: `lease-${node}` } : undefined;

/** A reply as an agent sends it: signed by `node` over the request id it answers. */
function reply(
  o: { token: number; node?: string; requestId: string; body?: string; error?: string; mode?: DeliveryMode },
  signer?: typeof nodeA,
) {
  const node = o.node ?? 'node-a';
  const body = o.body ?? `PONG ${node} ${o.token}`;
  const h: Record<string, string> = {
    [H.identity]: IDENTITY,
    [H.token]: String(o.token),
    [H.node]: node,
    [H.requestId]: o.requestId,
    ...(o.error !== undefined && { [H.error]: o.error }),
  };
  const by = signer ?? signers[node];
  if (by) {
    h[H.replySignature] = signReply(
      by,
      {
        identity: IDENTITY,
        node,
        token: BigInt(o.token),
        requestId: o.requestId,
        mode: o.mode ?? 'core',
        error: o.error ?? '',
      },
      body,
    );
  }
  return msg(h, body);
}

type Callback = (err: NatsError | null, m: Msg) => void;
type Script = (subject: string, requestId: string) => Msg[];

/** Just enough of a NatsConnection for the client: scripted replies, recorded publishes. */
class FakeNats {
  requests: Array<{ subject: string; data: Uint8Array; headers: MsgHdrs; reply: string }> = [];
  published: Array<{ subject: string; data: Uint8Array; msgID: string; headers: MsgHdrs }> = [];
  subs = new Map<string, Callback>();
  /** Every subject subscribed to, in order (a subscription per PING shows here). */
  subscribed: string[] = [];
  onRequest: Script = () => [];
  publishError: Error | undefined;

  subscribe(subject: string, opts: { callback: Callback }) {
    this.subs.set(subject, opts.callback);
    this.subscribed.push(subject);
    return { unsubscribe: () => this.subs.delete(subject) };
  }
  publish(subject: string, data: Uint8Array, opts: { reply: string; headers: MsgHdrs }) {
    this.requests.push({ subject, data, headers: opts.headers, reply: opts.reply });
    const answers = this.onRequest(subject, opts.headers.get(H.requestId));
    setImmediate(() => answers.forEach((m) => this.deliver(opts.reply, m)));
  }
  jetstream() {
    return {
      publish: (subject: string, data: Uint8Array, opts: { msgID: string; headers: MsgHdrs }) => {
        if (this.publishError !== undefined) return Promise.reject(this.publishError);
        this.published.push({ subject, data, msgID: opts.msgID, headers: opts.headers });
        return Promise.resolve({ stream: 'S', seq: this.published.length, duplicate: false });
      },
    };
  }
  /** Deliver a message to the subscriptions it matches (a trailing `*` is one token), as the server would. */
  deliver(subject: string, m: Msg) {
    const routed = Object.assign(Object.create(m) as Msg, { subject });
    for (const [pattern, callback] of this.subs) {
      const prefix = pattern.endsWith('.*') ? pattern.slice(0, -1) : undefined;
      const matches =
        pattern === subject ||
        (prefix !== undefined && subject.startsWith(prefix) && !subject.slice(prefix.length).includes('.'));
      if (matches) callback(null, routed);
    }
  }
  asConnection() {
    return this as unknown as NatsConnection;
  }
}

/** Resolves after pending callbacks and microtasks ran. */
const settle = () => new Promise((resolve) => setImmediate(resolve));

describe('identity client: parsing replies', function () {
  it('reads body, token and node, unverified', function () {
    const r = parseReply(lookup({ [H.token]: '42', [H.node]: 'node-a' }), 'PONG node-a 42');
    expect(r).to.deep.equal({
      ok: true,
      reply: { body: 'PONG node-a 42', token: 42n, node: 'node-a', verified: false },
    });
  });

  it('reads a known error code, and an unknown one as internal', function () {
    const known = parseReply(lookup({ [H.token]: '1', [H.node]: 'n1', [H.error]: 'not-a-contact' }), 'no');
    expect(known).to.deep.include({ ok: true });
    expect((known as { reply: { error: string } }).reply.error).to.equal('not-a-contact');
    const unknown = parseReply(lookup({ [H.token]: '1', [H.node]: 'n1', [H.error]: 'from-the-future' }), '');
    expect((unknown as { reply: { error: string } }).reply.error).to.equal('internal');
  });

  // Table: token header → accepted?
  const tokens: Array<[string | undefined, boolean]> = [
    ['1', true],
    ['9223372036854775807', true], // the largest etcd revision
    ['9223372036854775808', false], // beyond int64
    ['1' + '0'.repeat(40), false], // a huge token would lift the stale-reply gate for good
    ['0', false],
    ['007', false],
    ['-3', false],
    [undefined, false],
  ];
  for (const [token, ok] of tokens) {
    it(`${ok ? 'accepts' : 'rejects'} token ${token === undefined ? '(missing)' : token.slice(0, 24)}`, function () {
      const h = { [H.node]: 'n1', ...(token !== undefined && { [H.token]: token }) };
      expect(parseReply(lookup(h), '')).to.deep.include({ ok });
    });
  }

  it('rejects a reply without a node', function () {
    expect(parseReply(lookup({ [H.token]: '3' }), '')).to.deep.include({ ok: false });
  });

  it('reads NATS headers, treating empty as missing', function () {
    const get = msgHeaders(replyHeaders({ [H.node]: 'n1' }));
    expect(get(H.node)).to.equal('n1');
    expect(get(H.token)).to.equal(undefined);
    expect(msgHeaders(undefined)(H.node)).to.equal(undefined);
  });
});

describe('identity client: durable answers (DurableReplies)', function () {
  const answer = (requestId: string, token: number, body = 'ok', signer?: typeof nodeA) =>
    reply({ requestId, token, body, mode: 'durable' }, signer);
  const verify = (d: DurableReplies, m: Msg, k: NodeKeySource | undefined = keys) =>
    d.verify(IDENTITY, msgHeaders(m.headers), m.data, k);

  it('delivers each request id once, even when the server re-sends the answer', async function () {
    const d = new DurableReplies(new TokenGate());
    d.expect('request-1');
    expect(await verify(d, answer('request-1', 5))).to.deep.equal({
      requestId: 'request-1',
      body: 'ok',
      token: 5n,
      node: 'node-a',
      verified: true,
    });
    expect(await verify(d, answer('request-1', 7, 'ok again'))).to.equal(undefined);
    expect(d.duplicatesDropped).to.equal(1);
    expect(d.size).to.equal(0);
  });

  it('drops an answer with a token below one already seen, and keeps waiting for a fresh one', async function () {
    const gate = new TokenGate();
    gate.admit(10n);
    const d = new DurableReplies(gate);
    d.expect('request-2');
    expect(await verify(d, answer('request-2', 9, 'stale'))).to.equal(undefined);
    expect(d.staleDropped).to.equal(1);
    expect((await verify(d, answer('request-2', 11, 'fresh')))?.body).to.equal('fresh');
  });

  it('drops a forged answer (wrong key), a huge token, and a core reply passed off as durable; the gate stays', async function () {
    const gate = new TokenGate();
    const d = new DurableReplies(gate);
    d.expect('request-4');
    const mallory = userSigner(generateCallerKey().seed);
    expect(await verify(d, answer('request-4', 99, 'forged', mallory))).to.equal(undefined);
    expect(await verify(d, reply({ requestId: 'request-4', token: 6, mode: 'core' }))).to.equal(undefined);
    const huge = msg({
      [H.identity]: IDENTITY,
      [H.token]: '9'.repeat(40),
      [H.node]: 'node-a',
      [H.requestId]: 'request-4',
    });
    expect(await verify(d, huge)).to.equal(undefined);
    expect(d.unverifiedDropped).to.equal(2);
    expect(d.malformedDropped).to.equal(1);
    expect(gate.current).to.equal(0n);
    expect((await verify(d, answer('request-4', 6)))?.token).to.equal(6n);
  });

  it('without a key source, returns answers unverified and never raises the gate with them', async function () {
    const gate = new TokenGate();
    const d = new DurableReplies(gate);
    d.expect('request-5');
    const m = answer('request-5', 50);
    expect(await d.verify(IDENTITY, msgHeaders(m.headers), m.data, undefined)).to.deep.include({
      verified: false,
      token: 50n,
    });
    expect(gate.current).to.equal(0n);
  });

  it('drops answers without a request id or token', async function () {
    const d = new DurableReplies(new TokenGate());
    d.expect('request-3');
    expect(await verify(d, msg({ [H.token]: '1', [H.node]: 'n1' }))).to.equal(undefined);
    expect(await verify(d, msg({ [H.requestId]: 'request-3', [H.node]: 'n1' }))).to.equal(undefined);
    expect(d.malformedDropped).to.equal(2);
  });

  it('bounds the requests awaiting answers, and forgets them after the inbox would have', function () {
    const d = new DurableReplies(new TokenGate(), 2, 1_000);
    expect(d.expect('request-a', 0)).to.equal(true);
    expect(d.expect('request-b', 10)).to.equal(true);
    expect(d.expect('request-c', 20)).to.equal(false);
    expect(d.expect('request-a', 20)).to.equal(true); // a re-send of one already expected
    expect(d.expect('request-c', 1_005)).to.equal(true); // request-a expired
    expect(d.size).to.equal(2);
  });
});

describe('identity client: core requests over a fake connection', function () {
  const pong =
    (token: number, node = 'node-a'): Script =>
    (_s, requestId) => [reply({ token, node, requestId })];

  it('signs requests that the identity can verify, with the request id as nonce', async function () {
    const fake = new FakeNats();
    fake.onRequest = pong(3);
    const caller = { name: 'alice', seed: generateCallerKey().seed };
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, caller, keys });
    expect(await client.ping()).to.deep.equal({ node: 'node-a', token: 3n });
    const sent = fake.requests[0]!;
    expect(sent.subject).to.equal(subjects.identity(IDENTITY));
    expect(sent.headers.get(H.requestId)).to.equal(sent.headers.get(H.nonce));
    const r = new RequestAuthenticator().authenticate({
      identity: IDENTITY,
      headers: msgHeaders(sent.headers),
      body: sent.data,
    });
    expect(r).to.deep.include({ kind: 'verified', name: 'alice' });
  });

  it('sends a request id but no signature headers without a caller', async function () {
    const fake = new FakeNats();
    fake.onRequest = pong(3);
    await new IdentityClient(fake.asConnection(), { identity: IDENTITY, keys }).request('HELP');
    expect(fake.requests[0]!.headers.has(H.signature)).to.equal(false);
    expect(fake.requests[0]!.headers.get(H.requestId)).to.match(/^[A-Za-z0-9_-]{22}$/);
  });

  it('ignores forged answers (any node, any token, a huge token) and returns the verified one', async function () {
    const fake = new FakeNats();
    const mallory = userSigner(generateCallerKey().seed);
    fake.onRequest = (_s, requestId) => [
      msg({ [H.identity]: IDENTITY, [H.token]: '999', [H.node]: 'node-b', [H.requestId]: requestId }, 'PONG'),
      reply({ token: 998, node: 'node-b', requestId }, mallory),
      msg({ [H.identity]: IDENTITY, [H.token]: '9'.repeat(40), [H.node]: 'node-a' }, 'PONG'),
      reply({ token: 4, requestId: 'an-older-request-id' }), // an old PONG replayed
      reply({ token: 4, requestId }),
    ];
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, keys });
    expect(await client.request('PING')).to.deep.include({ node: 'node-a', token: 4n, verified: true });
    expect(client.highestToken).to.equal(4n);
  });

  it('fails with UnverifiedReplyError when only forged answers come', async function () {
    const fake = new FakeNats();
    const nodeZ = userSigner(generateCallerKey().seed);
    fake.onRequest = (_s, requestId) => [reply({ token: 7, node: 'node-z', requestId }, nodeZ)];
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, keys, timeoutMs: 50 });
    const err = await client.request('PING').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(UnverifiedReplyError);
    expect((err as Error).message).to.match(/no trusted key is known for node node-z/);
    expect(client.highestToken).to.equal(0n);
  });

  it('without a key source, returns the first answer marked unverified, and it never raises the gate', async function () {
    const fake = new FakeNats();
    fake.onRequest = pong(30, 'node-b');
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY });
    expect(await client.request('PING')).to.deep.include({ token: 30n, verified: false });
    expect(client.highestToken).to.equal(0n);
  });

  it('rejects a reply from a stale leader once a newer term answered', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, keys });
    fake.onRequest = pong(20, 'node-b');
    await client.request('PING');
    fake.onRequest = pong(19, 'node-a');
    const err = await client.request('PING').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(StaleReplyError);
    expect((err as Error).message).to.match(/token 19.*newer term \(token 20\) already answered/);
    fake.onRequest = pong(20, 'node-b');
    expect((await client.request('PING')).token).to.equal(20n);
  });

  it('returns an error reply, and requestOk throws it', async function () {
    const fake = new FakeNats();
    fake.onRequest = (_s, requestId) => [
      reply({ token: 4, requestId, error: 'not-a-contact', body: 'STATUS is for contacts' }),
    ];
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, keys });
    expect((await client.request('STATUS')).error).to.equal('not-a-contact');
    const err = await client.requestOk('STATUS').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(IdentityRequestError);
    expect(err).to.deep.include({ code: 'not-a-contact', message: 'STATUS is for contacts' });
  });

  it('says no one is logged in when NATS has no responders', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => [noResponders()];
    const err = await new IdentityClient(fake.asConnection(), { identity: IDENTITY })
      .request('PING')
      .catch((e) => e);
    expect(err).to.be.instanceOf(NoResponderError);
    expect((err as Error).message).to.match(/no one is logged in as msggateway/);
  });

  it('names the identity on a timeout', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, timeoutMs: 50 });
    const err = await client.request('PING').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(IdentityTimeoutError);
    expect((err as Error).message).to.match(/no reply from msggateway within 50 ms/);
    expect(fake.subs.size).to.equal(0);
  });

  it('refuses an oversized request before sending it', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY });
    const err = await client.request('X'.repeat(70_000)).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/70000 bytes; the limit is 65536/);
    expect(fake.requests).to.have.length(0);
  });
});

describe('identity client: durable requests over a fake connection', function () {
  const answerTo = async (fake: FakeNats, i: number, token: number, body: string) => {
    const p = fake.published[i]!;
    fake.deliver(
      p.headers.get(H.replyTo),
      reply({ requestId: p.headers.get(H.requestId), token, body, mode: 'durable' }),
    );
    await settle();
  };

  it('stores the request with its id as message id and nonce, and a signed reply subject', async function () {
    const fake = new FakeNats();
    const caller = { name: 'alice', seed: generateCallerKey().seed };
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, caller });
    const { requestId } = await client.send('RATE USD', { requestId: 'my-request-1' });
    const p = fake.published[0]!;
    expect(requestId).to.equal('my-request-1');
    expect(p.subject).to.equal(subjects.inbox(IDENTITY));
    expect(p.msgID).to.equal('my-request-1');
    expect(p.headers.get(H.requestId)).to.equal('my-request-1');
    expect(p.headers.get(H.nonce)).to.equal('my-request-1');
    expect(p.headers.get(H.replyTo)).to.equal(client.replySubject);
    expect(fake.subs.has(client.replySubject)).to.equal(true);
    const durable = (replyTo: string) => ({
      mode: 'durable' as const,
      storedAtMs: Date.now(),
      messageId: p.msgID,
      replyTo,
    });
    const check = (replyTo: string) =>
      new RequestAuthenticator().authenticate({
        identity: IDENTITY,
        headers: msgHeaders(p.headers),
        body: p.data,
        delivery: durable(replyTo),
      });
    expect(check(client.replySubject).kind).to.equal('verified');
    expect(check('_INBOX.mallory').kind).to.equal('invalid');
    client.close();
    expect(fake.subs.size).to.equal(0);
  });

  it('answers requestDurable once, and drops re-sent and stale answers', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, keys });
    const seen: DurableReply[] = [];
    client.onReply((r) => seen.push(r));
    const pending = client.requestDurable('RATE USD', 1_000);
    await settle();
    await answerTo(fake, 0, 8, 'USD 1.0');
    await answerTo(fake, 0, 8, 'USD 1.0'); // re-sent by the server
    const answer = await pending;
    expect(answer).to.deep.include({ body: 'USD 1.0', token: 8n });
    expect(seen).to.have.length(1);
    expect(client.duplicatesDropped).to.equal(1);

    await client.send('RATE EUR');
    await answerTo(fake, 1, 7, 'from a stale term');
    expect(client.staleDropped).to.equal(1);
    expect(seen).to.have.length(1);
    client.close();
  });
  it('tells the caller when the identity has no durable inbox', async function () {
    const fake = new FakeNats();
    fake.publishError = new NatsError('503', '503');
    const err = await new IdentityClient(fake.asConnection(), { identity: IDENTITY })
      .send('RATE')
      .catch((e) => e);
    expect(err).to.be.instanceOf(NoDurableInboxError);
    expect((err as Error).message).to.match(/set inbox.durable/);
  });

  it('times out requestDurable, naming the request', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY });
    const err = await client
      .requestDurable('RATE', 20, { requestId: 'slow-request' })
      .catch((e: unknown) => e);
    expect(err).to.be.instanceOf(IdentityTimeoutError);
    expect((err as Error).message).to.match(/slow-request.*stays in the inbox/);
    client.close();
  });

  it('refuses an invalid request id', async function () {
    const client = new IdentityClient(new FakeNats().asConnection(), { identity: IDENTITY });
    const err = await client.send('RATE', { requestId: 'a b' }).catch((e: unknown) => e);
    expect((err as Error).message).to.match(/requestId 'a b' must be 8-64 characters/);
  });

  it('exports the backpressure error', function () {
    expect(new TooManyOutstandingError(IDENTITY, 3).message).to.match(/3 durable requests to msggateway/);
  });
});

describe('identity client: counting responders', function () {
  it('gathers every verified PONG within the window, not only the first, and ignores forged ones', async function () {
    const fake = new FakeNats();
    const ignored: string[] = [];
    fake.onRequest = (subject, requestId) => {
      expect(subject).to.equal(subjects.identity(IDENTITY));
      return [
        reply({ token: 5, node: 'node-a', requestId }),
        reply({ token: 6, node: 'node-b', requestId }),
        reply({ token: 7, node: 'node-b', requestId }, nodeA), // node-b's name, node-a's key
        msg({}, 'not an understudy reply'),
      ];
    };
    const found = await collectResponders(fake.asConnection(), IDENTITY, 20, {
      keys,
      ignored: (p) => ignored.push(p),
    });
    expect(found).to.deep.equal([
      { node: 'node-a', token: 5n, verified: true, lease: 'lease-node-a' },
      { node: 'node-b', token: 6n, verified: true, lease: 'lease-node-b' },
    ]);
    expect(ignored).to.have.length(2);
    expect(fake.subs.size).to.equal(0);
  });

  it('answers each of many overlapping PINGs through one subscription, each answer to the PING it answers', async function () {
    const fake = new FakeNats();
    const answering = ['node-a', 'node-b', 'node-a'];
    fake.onRequest = (_s, requestId) => [reply({ token: 5, node: answering.shift(), requestId })];
    const collector = new ResponderCollector(fake.asConnection());
    const found = await Promise.all([1, 2, 3].map(() => collector.collect(IDENTITY, 20, { keys })));
    expect(found.map((answers) => answers.map((a) => a.node))).to.deep.equal([
      ['node-a'],
      ['node-b'],
      ['node-a'],
    ]);
    expect(found[1]).to.deep.equal([{ node: 'node-b', token: 5n, verified: true, lease: 'lease-node-b' }]);
    expect(fake.subscribed).to.have.length(1);
    expect(new Set(fake.requests.map((r) => r.reply)).size).to.equal(3);
    collector.close();
    expect(fake.subs.size).to.equal(0);
    const late = await collector.collect(IDENTITY, 20).catch((e: unknown) => e);
    expect((late as Error).message).to.match(/collector was closed/);
    expect(fake.requests).to.have.length(3); // no PING sent that nothing could hear answered
  });

  it('counts no answer that comes after its PING window, nor one meant for another PING', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => [];
    const collector = new ResponderCollector(fake.asConnection());
    await collector.collect(IDENTITY, 10, { keys });
    const late = fake.requests[0]!;
    const pending = collector.collect(IDENTITY, 30, { keys });
    // The first PING's answer, late: its window closed, and it answers a request id this one did not send.
    fake.deliver(late.reply, reply({ token: 9, requestId: late.headers.get(H.requestId) }));
    const current = fake.requests[1]!;
    fake.deliver(current.reply, reply({ token: 9, requestId: late.headers.get(H.requestId) }));
    const ignored: string[] = [];
    expect(await pending).to.deep.equal([]);
    const third = collector.collect(IDENTITY, 30, { keys, ignored: (p) => ignored.push(p) });
    const mine = fake.requests[2]!;
    fake.deliver(mine.reply, reply({ token: 9, requestId: late.headers.get(H.requestId) }));
    expect(await third).to.deep.equal([]);
    expect(ignored).to.have.length(1);
    collector.close();
  });

  it('without keys, returns every well-formed answer marked unverified', async function () {
    const fake = new FakeNats();
    fake.onRequest = (_s, requestId) => [reply({ token: 5, node: 'node-z', requestId })];
    expect(await collectResponders(fake.asConnection(), IDENTITY, 20)).to.deep.equal([
      { node: 'node-z', token: 5n, verified: false },
    ]);
  });
});

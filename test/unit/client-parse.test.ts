// The caller-side rules of client.ts, without a NATS server: reply parsing, stale-token
// rejection, at-most-once delivery of durable answers, and error translation. A small fake
// stands in for the connection; the integration suite runs the same paths against NATS.
import { expect } from 'chai';
import { headers as natsHeaders, NatsError, type Msg, type MsgHdrs, type NatsConnection } from 'nats';
import { generateCallerKey, RequestAuthenticator } from '../../pkg/identity/access.js';
import {
  collectResponders,
  DurableReplies,
  IdentityClient,
  IdentityProtocolError,
  IdentityRequestError,
  IdentityTimeoutError,
  msgHeaders,
  NoDurableInboxError,
  NoResponderError,
  parseReply,
  StaleReplyError,
  TooManyOutstandingError,
  type DurableReply,
} from '../../pkg/identity/client.js';
import { headers as H, subjects } from '../../pkg/identity/wire.js';
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

type Callback = (err: NatsError | null, m: Msg) => void;

/** Just enough of a NatsConnection for the client: scripted replies, recorded publishes. */
class FakeNats {
  requests: Array<{ subject: string; data: Uint8Array; headers: MsgHdrs }> = [];
  published: Array<{ subject: string; data: Uint8Array; msgID: string; headers: MsgHdrs }> = [];
  subs = new Map<string, Callback>();
  onRequest: (subject: string) => Msg | Error = () => new Error('no script');
  onPublish: (subject: string, reply: string) => void = () => undefined;
  publishError: Error | undefined;

  request(subject: string, data: Uint8Array, opts: { headers: MsgHdrs }): Promise<Msg> {
    this.requests.push({ subject, data, headers: opts.headers });
    const r = this.onRequest(subject);
    return r instanceof Error ? Promise.reject(r) : Promise.resolve(r);
  }
  subscribe(subject: string, opts: { callback: Callback }) {
    this.subs.set(subject, opts.callback);
    return { unsubscribe: () => this.subs.delete(subject) };
  }
  publish(subject: string, _data: Uint8Array, opts: { reply: string }) {
    this.onPublish(subject, opts.reply);
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
  /** Deliver a message to a subscription, as the server would. */
  deliver(subject: string, m: Msg) {
    this.subs.get(subject)?.(null, m);
  }
  asConnection() {
    return this as unknown as NatsConnection;
  }
}

const pong = (token: number, node = 'node-a', extra: Record<string, string> = {}) =>
  msg({ [H.token]: String(token), [H.node]: node, ...extra }, `PONG ${node} ${token}`);

describe('identity client: parsing replies', function () {
  it('reads body, token and node', function () {
    const r = parseReply(lookup({ [H.token]: '42', [H.node]: 'node-a' }), 'PONG node-a 42');
    expect(r).to.deep.equal({ ok: true, reply: { body: 'PONG node-a 42', token: 42n, node: 'node-a' } });
  });

  it('reads a known error code, and an unknown one as internal', function () {
    const known = parseReply(lookup({ [H.token]: '1', [H.node]: 'n1', [H.error]: 'not-a-contact' }), 'no');
    expect(known).to.deep.include({ ok: true });
    expect((known as { reply: { error: string } }).reply.error).to.equal('not-a-contact');
    const unknown = parseReply(lookup({ [H.token]: '1', [H.node]: 'n1', [H.error]: 'from-the-future' }), '');
    expect((unknown as { reply: { error: string } }).reply.error).to.equal('internal');
  });

  it('rejects a reply without a valid token or node', function () {
    expect(parseReply(lookup({ [H.node]: 'n1' }), '')).to.deep.include({ ok: false });
    expect(parseReply(lookup({ [H.token]: '-3', [H.node]: 'n1' }), '')).to.deep.include({ ok: false });
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
  const answer = (requestId: string, token: number) =>
    lookup({ [H.requestId]: requestId, [H.token]: String(token), [H.node]: 'node-a' });

  it('delivers each request id once, even when the server re-sends the answer', function () {
    const d = new DurableReplies(new TokenGate());
    d.expect('request-1');
    expect(d.accept(answer('request-1', 5), 'ok')).to.deep.equal({
      requestId: 'request-1',
      body: 'ok',
      token: 5n,
      node: 'node-a',
    });
    expect(d.accept(answer('request-1', 7), 'ok again')).to.equal(undefined);
    expect(d.duplicatesDropped).to.equal(1);
    expect(d.size).to.equal(0);
  });

  it('drops an answer with a token below one already seen, and keeps waiting for a fresh one', function () {
    const gate = new TokenGate();
    gate.admit(10n);
    const d = new DurableReplies(gate);
    d.expect('request-2');
    expect(d.accept(answer('request-2', 9), 'stale')).to.equal(undefined);
    expect(d.staleDropped).to.equal(1);
    expect(d.accept(answer('request-2', 11), 'fresh')?.body).to.equal('fresh');
  });

  it('drops answers without a request id or token', function () {
    const d = new DurableReplies(new TokenGate());
    expect(d.accept(lookup({ [H.token]: '1', [H.node]: 'n1' }), '')).to.equal(undefined);
    expect(d.accept(lookup({ [H.requestId]: 'request-3', [H.node]: 'n1' }), '')).to.equal(undefined);
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
  it('signs requests that the identity can verify', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => pong(3);
    const caller = { name: 'alice', seed: generateCallerKey().seed };
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, caller });
    expect(await client.ping()).to.deep.equal({ node: 'node-a', token: 3n });
    const sent = fake.requests[0]!;
    expect(sent.subject).to.equal(subjects.identity(IDENTITY));
    const r = new RequestAuthenticator().authenticate({
      identity: IDENTITY,
      headers: msgHeaders(sent.headers),
      body: sent.data,
    });
    expect(r).to.deep.include({ kind: 'verified', name: 'alice' });
  });

  it('sends no signature headers without a caller', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => pong(3);
    await new IdentityClient(fake.asConnection(), { identity: IDENTITY }).request('HELP');
    expect(fake.requests[0]!.headers.has(H.signature)).to.equal(false);
  });

  it('rejects a reply from a stale leader once a newer term answered', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY });
    fake.onRequest = () => pong(20, 'node-b');
    await client.request('PING');
    fake.onRequest = () => pong(19, 'node-a');
    const err = await client.request('PING').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(StaleReplyError);
    expect((err as Error).message).to.match(/token 19.*newer term \(token 20\) already answered/);
    fake.onRequest = () => pong(20, 'node-b');
    expect((await client.request('PING')).token).to.equal(20n);
  });

  it('returns an error reply, and requestOk throws it', async function () {
    const fake = new FakeNats();
    fake.onRequest = () =>
      msg({ [H.token]: '4', [H.node]: 'n1', [H.error]: 'not-a-contact' }, 'STATUS is for contacts');
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY });
    expect((await client.request('STATUS')).error).to.equal('not-a-contact');
    const err = await client.requestOk('STATUS').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(IdentityRequestError);
    expect(err).to.deep.include({ code: 'not-a-contact', message: 'STATUS is for contacts' });
  });

  it('says no one is logged in when NATS has no responders', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => new NatsError('503', '503');
    const err = await new IdentityClient(fake.asConnection(), { identity: IDENTITY })
      .request('PING')
      .catch((e) => e);
    expect(err).to.be.instanceOf(NoResponderError);
    expect((err as Error).message).to.match(/no one is logged in as msggateway/);
  });

  it('names the identity on a timeout', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => new NatsError('TIMEOUT', 'TIMEOUT');
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY, timeoutMs: 250 });
    const err = await client.request('PING').catch((e: unknown) => e);
    expect(err).to.be.instanceOf(IdentityTimeoutError);
    expect((err as Error).message).to.match(/no reply from msggateway within 250 ms/);
  });

  it('refuses a reply without a token', async function () {
    const fake = new FakeNats();
    fake.onRequest = () => msg({ [H.node]: 'n1' }, 'PONG');
    const err = await new IdentityClient(fake.asConnection(), { identity: IDENTITY })
      .request('PING')
      .catch((e) => e);
    expect(err).to.be.instanceOf(IdentityProtocolError);
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
  const answerTo = (fake: FakeNats, i: number, token: number, body: string) => {
    const p = fake.published[i]!;
    fake.deliver(
      p.headers.get(H.replyTo),
      msg({ [H.requestId]: p.headers.get(H.requestId), [H.token]: String(token), [H.node]: 'node-a' }, body),
    );
  };

  it('stores the request with its id as message id and nonce, and a reply subject', async function () {
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
    const r = new RequestAuthenticator().authenticate({
      identity: IDENTITY,
      headers: msgHeaders(p.headers),
      body: p.data,
      durable: { storedAtMs: Date.now(), messageId: p.msgID },
    });
    expect(r.kind).to.equal('verified');
    client.close();
    expect(fake.subs.size).to.equal(0);
  });

  it('answers requestDurable once, and drops re-sent and stale answers', async function () {
    const fake = new FakeNats();
    const client = new IdentityClient(fake.asConnection(), { identity: IDENTITY });
    const seen: DurableReply[] = [];
    client.onReply((r) => seen.push(r));
    const pending = client.requestDurable('RATE USD', 1_000);
    await new Promise((resolve) => setImmediate(resolve));
    answerTo(fake, 0, 8, 'USD 1.0');
    answerTo(fake, 0, 8, 'USD 1.0'); // re-sent by the server
    const reply = await pending;
    expect(reply).to.deep.include({ body: 'USD 1.0', token: 8n });
    expect(seen).to.have.length(1);
    expect(client.duplicatesDropped).to.equal(1);

    await client.send('RATE EUR');
    answerTo(fake, 1, 7, 'from a stale term');
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
  it('gathers every PONG within the window, not only the first', async function () {
    const fake = new FakeNats();
    fake.onPublish = (subject, reply) => {
      expect(subject).to.equal(subjects.identity(IDENTITY));
      fake.deliver(reply, pong(5, 'node-a'));
      fake.deliver(reply, pong(6, 'node-b'));
      fake.deliver(reply, msg({}, 'not an understudy reply'));
    };
    const found = await collectResponders(fake.asConnection(), IDENTITY, 20);
    expect(found).to.deep.equal([
      { node: 'node-a', token: 5n },
      { node: 'node-b', token: 6n },
    ]);
    expect(fake.subs.size).to.equal(0);
  });
});

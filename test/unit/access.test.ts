import { createHash } from 'node:crypto';
import { expect } from 'chai';
import { userSigner } from '../../pkg/keys/index.js';
import { nkeys } from 'nats';
import {
  canonicalPayload,
  claimedCaller,
  CLOCK_WINDOW_MS,
  decide,
  FUTURE_SKEW_MS,
  generateCallerKey,
  RequestAuthenticator,
  signRequest,
  type AuthResult,
} from '../../pkg/identity/access.js';
import { headers as H } from '../../pkg/identity/wire.js';
import { AccessLists } from '../../pkg/spec/schema.js';
import { claims, newCaller, T0, verified, type TestCaller } from '../support/callers.js';

const IDENTITY = 'msggateway';
const alice = newCaller('alice');
const bob = newCaller('bob');

const lookup =
  (h: Record<string, string>) =>
  (name: string): string | undefined =>
    h[name];

function signed(
  opts: {
    body?: string;
    now?: number;
    nonce?: string;
    who?: TestCaller;
    identity?: string;
    replyTo?: string;
  } = {},
) {
  const who = opts.who ?? alice;
  const body = opts.body ?? 'RATE USD';
  const headers = signRequest({
    identity: opts.identity ?? IDENTITY,
    caller: who.name,
    seed: who.seed,
    body,
    now: opts.now ?? T0,
    ...(opts.nonce !== undefined && { nonce: opts.nonce }),
    ...(opts.replyTo !== undefined && { delivery: { mode: 'durable' as const, replyTo: opts.replyTo } }),
  });
  return { headers, body };
}

function auth(a: RequestAuthenticator, h: Record<string, string>, body: string, now = T0): AuthResult {
  return a.authenticate({ identity: IDENTITY, headers: lookup(h), body, now });
}

function reasonOf(r: AuthResult): string {
  expect(r.kind).to.equal('invalid');
  return (r as { reason: string }).reason;
}

describe('request signing (access.ts)', function () {
  it('signs the documented canonical payload', function () {
    const payload = new TextDecoder().decode(
      canonicalPayload({
        identity: 'id',
        caller: 'c',
        key: 'UKEY',
        time: '5',
        nonce: 'nonce123',
        delivery: { mode: 'durable', replyTo: '_INBOX.x' },
        body: 'abc',
      }),
    );
    expect(payload).to.equal(
      'understudy-request-v2\nid\nc\nUKEY\n5\nnonce123\ndurable\n_INBOX.x\n' +
        'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad',
    );
    const core = canonicalPayload({
      identity: 'id',
      caller: 'c',
      key: 'UKEY',
      time: '5',
      nonce: 'nonce123',
      delivery: { mode: 'core' },
      body: 'abc',
    });
    expect(new TextDecoder().decode(core)).to.contain('\nnonce123\ncore\n\n');
  });

  it('refuses a request signed with the old v1 payload, naming the version to sign', function () {
    const { headers, body } = signed();
    const digest = createHash('sha256').update(body).digest('hex');
    const v1 = [
      'understudy-request-v1',
      IDENTITY,
      'alice',
      headers[H.key],
      String(T0),
      headers[H.nonce],
      digest,
    ];
    const sig = userSigner(alice.seed).sign(new TextEncoder().encode(v1.join('\n')));
    const legacy = { ...headers, [H.signature]: Buffer.from(sig).toString('base64url') };
    expect(reasonOf(auth(new RequestAuthenticator(), legacy, body))).to.match(
      /understudy-request-v2.*upgrade/,
    );
  });

  it('round-trips: a signed request verifies as its caller and key', function () {
    const { headers, body } = signed();
    expect(Object.keys(headers).sort()).to.deep.equal([H.caller, H.key, H.nonce, H.signature, H.time].sort());
    expect(auth(new RequestAuthenticator(), headers, body)).to.deep.equal({
      kind: 'verified',
      name: 'alice',
      key: alice.publicKey,
      nonce: headers[H.nonce],
      signedAt: T0,
    });
  });

  it('accepts the seed as bytes as well as a string, and a byte body', function () {
    const body = new TextEncoder().encode('RATE EUR');
    const headers = signRequest({
      identity: IDENTITY,
      caller: 'alice',
      seed: new TextEncoder().encode(alice.seed),
      body,
      now: T0,
    });
    const r = new RequestAuthenticator().authenticate({
      identity: IDENTITY,
      headers: lookup(headers),
      body,
      now: T0,
    });
    expect(r.kind).to.equal('verified');
  });

  describe('interoperates with NATS nkeys (nkeys.js)', function () {
    it('generates seeds nkeys reads as the same user key', function () {
      const k = generateCallerKey();
      expect(k.seed).to.match(/^SU[A-Z2-7]{56}$/);
      expect(nkeys.fromSeed(new TextEncoder().encode(k.seed)).getPublicKey()).to.equal(k.publicKey);
    });

    it('signs with an nkeys seed so that nkeys verifies the signature', function () {
      const kp = nkeys.createUser();
      const seed = new TextDecoder().decode(kp.getSeed() as Uint8Array);
      const headers = signRequest({
        identity: IDENTITY,
        caller: 'erin',
        seed,
        body: 'HELP',
        now: T0,
        nonce: 'nonce-nk1',
      });
      expect(headers[H.key]).to.equal(kp.getPublicKey());
      const payload = canonicalPayload({
        identity: IDENTITY,
        caller: 'erin',
        key: kp.getPublicKey() as string,
        time: String(T0),
        nonce: 'nonce-nk1',
        delivery: { mode: 'core' },
        body: 'HELP',
      });
      const sig = Buffer.from(headers[H.signature]!, 'base64url');
      expect(nkeys.fromPublic(kp.getPublicKey()).verify(payload, sig)).to.equal(true);
    });

    it('verifies a signature made by nkeys', function () {
      const kp = nkeys.createUser();
      const key = kp.getPublicKey() as string;
      const fields = {
        identity: IDENTITY,
        caller: 'erin',
        key,
        time: String(T0),
        nonce: 'nonce-nk2',
        delivery: { mode: 'core' as const },
        body: 'HELP',
      };
      const sig = Buffer.from(kp.sign(canonicalPayload(fields)) as Uint8Array).toString('base64url');
      const headers = {
        [H.caller]: 'erin',
        [H.key]: key,
        [H.time]: String(T0),
        [H.nonce]: 'nonce-nk2',
        [H.signature]: sig,
      };
      expect(auth(new RequestAuthenticator(), headers, 'HELP')).to.deep.equal({
        kind: 'verified',
        name: 'erin',
        key,
        nonce: 'nonce-nk2',
        signedAt: T0,
      });
    });

    it('refuses a public key whose checksum does not hold', function () {
      const { headers, body } = signed();
      const key = headers[H.key]!;
      const bad = key.slice(0, 10) + (key[10] === 'A' ? 'B' : 'A') + key.slice(11);
      expect(reasonOf(auth(new RequestAuthenticator(), { ...headers, [H.key]: bad }, body))).to.match(
        /public nkey/,
      );
    });
  });

  it('treats a request without signature headers (or with empty ones) as anonymous', function () {
    const a = new RequestAuthenticator();
    expect(auth(a, {}, 'PING')).to.deep.equal({ kind: 'anonymous' });
    expect(auth(a, { [H.caller]: '', [H.signature]: '' }, 'PING')).to.deep.equal({ kind: 'anonymous' });
  });

  it('refuses a partly signed request, naming the missing headers', function () {
    const reason = reasonOf(auth(new RequestAuthenticator(), { [H.caller]: 'alice' }, 'RATE USD'));
    expect(reason).to.match(/partly signed.*Understudy-Key.*Understudy-Signature/);
  });

  it('refuses malformed signature headers', function () {
    const { headers, body } = signed();
    const a = new RequestAuthenticator();
    expect(reasonOf(auth(a, { ...headers, [H.key]: 'not-a-key' }, body))).to.match(/public nkey/);
    expect(reasonOf(auth(a, { ...headers, [H.time]: '12x' }, body))).to.match(/milliseconds/);
    expect(reasonOf(auth(a, { ...headers, [H.nonce]: 'short' }, body))).to.match(/Nonce/);
    expect(reasonOf(auth(a, { ...headers, [H.signature]: 'abc' }, body))).to.match(/base64url/);
    expect(reasonOf(auth(a, { ...headers, [H.caller]: 'Alice!' }, body))).to.match(/caller name/);
  });

  it('refuses a tampered body', function () {
    const { headers } = signed({ body: 'RATE USD' });
    expect(reasonOf(auth(new RequestAuthenticator(), headers, 'RATE GBP'))).to.match(
      /signature does not verify/,
    );
  });

  it('refuses a signature made with another key than the one claimed', function () {
    const { headers, body } = signed();
    const r = auth(new RequestAuthenticator(), { ...headers, [H.key]: bob.publicKey }, body);
    expect(reasonOf(r)).to.match(/signature does not verify/);
  });

  it('refuses a request whose claimed name was changed after signing', function () {
    const { headers, body } = signed();
    expect(reasonOf(auth(new RequestAuthenticator(), { ...headers, [H.caller]: 'bob' }, body))).to.match(
      /does not verify/,
    );
  });

  it('refuses a request signed for another identity', function () {
    const { headers, body } = signed({ identity: 'smsgateway' });
    expect(reasonOf(auth(new RequestAuthenticator(), headers, body))).to.match(/for identity 'msggateway'/);
  });

  // Table: signed time relative to the verifier's clock → accepted or the reason.
  const windowCases: Array<[string, number, RegExp | 'verified']> = [
    ['now', 0, 'verified'],
    ['the whole past window behind', -CLOCK_WINDOW_MS, 'verified'],
    ['the future skew ahead', FUTURE_SKEW_MS, 'verified'],
    ['just beyond the future skew', FUTURE_SKEW_MS + 1_000, /6 s ahead of.*5 s ahead, 30 s behind.*NTP/],
    ['a whole window ahead (accepted before the future bound)', CLOCK_WINDOW_MS, /30 s ahead of/],
    ['beyond the past window', -CLOCK_WINDOW_MS - 5_000, /35 s behind/],
  ];
  for (const [what, offset, outcome] of windowCases) {
    it(`clock window: a request signed ${what} is ${outcome === 'verified' ? 'accepted' : 'refused'}`, function () {
      const { headers, body } = signed({ now: T0 + offset });
      const r = auth(new RequestAuthenticator(), headers, body);
      if (outcome === 'verified') expect(r.kind).to.equal('verified');
      else expect(reasonOf(r)).to.match(outcome);
    });
  }

  it('is stateless: the same signed request verifies twice (replays are replay.ts)', function () {
    const a = new RequestAuthenticator();
    const { headers, body } = signed({ nonce: 'nonce-0001' });
    expect(auth(a, headers, body).kind).to.equal('verified');
    expect(auth(a, headers, body).kind).to.equal('verified');
  });

  describe('delivery mode and reply-to', function () {
    const storedAtMs = T0 + 1_000;
    const durable = (messageId: string | undefined, replyTo: string | undefined) => ({
      mode: 'durable' as const,
      storedAtMs,
      messageId,
      replyTo,
    });
    const run = (
      h: Record<string, string>,
      body: string,
      delivery?: Parameters<RequestAuthenticator['authenticate']>[0]['delivery'],
    ) =>
      new RequestAuthenticator().authenticate({
        identity: IDENTITY,
        headers: lookup(h),
        body,
        now: T0 + 3_600_000,
        ...(delivery !== undefined && { delivery }),
      });

    it('checks the clock window against the time JetStream stored the request, not delivery time', function () {
      const { headers, body } = signed({ nonce: 'request-0001', replyTo: '_INBOX.a' });
      expect(run(headers, body, durable('request-0001', '_INBOX.a')).kind).to.equal('verified');
    });

    // Table: how a request was signed → how it arrives → refused with.
    const cases: Array<[string, { replyTo?: string }, ReturnType<typeof durable> | undefined, RegExp]> = [
      [
        'a core request replayed into the inbox',
        {},
        durable('request-0002', '_INBOX.a'),
        /for durable delivery/,
      ],
      ['a durable request replayed as core', { replyTo: '_INBOX.a' }, undefined, /for core delivery/],
      [
        'a durable request with its reply-to changed',
        { replyTo: '_INBOX.a' },
        durable('request-0002', '_INBOX.evil'),
        /with this reply-to/,
      ],
      [
        'a durable request whose Nats-Msg-Id differs from the nonce',
        { replyTo: '_INBOX.a' },
        durable('another-id', '_INBOX.a'),
        /Nats-Msg-Id must equal/,
      ],
      [
        'a durable request without Nats-Msg-Id',
        { replyTo: '_INBOX.a' },
        durable(undefined, '_INBOX.a'),
        /Nats-Msg-Id must equal/,
      ],
      [
        'a durable request without reply-to',
        { replyTo: '_INBOX.a' },
        durable('request-0002', undefined),
        /needs Understudy-Reply-To/,
      ],
    ];
    for (const [what, how, delivery, reason] of cases) {
      it(`refuses ${what}`, function () {
        const { headers, body } = signed({
          nonce: 'request-0002',
          now: delivery ? T0 : T0 + 3_600_000,
          ...how,
        });
        expect(reasonOf(run(headers, body, delivery))).to.match(reason);
      });
    }
  });

  it('refuses to sign with a seed that is not a user seed, without echoing it', function () {
    const account = new TextDecoder().decode(nkeys.createAccount().getSeed() as Uint8Array);
    expect(() => signRequest({ identity: IDENTITY, caller: 'alice', seed: account, body: '' })).to.throw(
      /user\* seed/,
    );
    let message = '';
    try {
      signRequest({ identity: IDENTITY, caller: 'alice', seed: 'SUnotaseed', body: '' });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).to.match(/not a valid NATS nkey seed/);
    expect(message).not.to.contain('SUnotaseed');
  });

  it('refuses to sign as an invalid caller name', function () {
    expect(() => signRequest({ identity: IDENTITY, caller: 'Alice', seed: alice.seed, body: '' })).to.throw(
      /caller name 'Alice'/,
    );
  });

  it('reads the claimed caller from headers, signed or not', function () {
    expect(claimedCaller(lookup({ [H.caller]: 'eve' }))).to.deep.equal({ name: 'eve' });
    expect(claimedCaller(lookup({ [H.key]: bob.publicKey, [H.caller]: '' }))).to.deep.equal({
      key: bob.publicKey,
    });
  });
});

describe('access decisions (decide)', function () {
  const carol = newCaller('carol');
  const mallory = newCaller('mallory');
  const lists = AccessLists.parse({
    contacts: [{ name: 'alice', nkey: alice.publicKey }],
    authorized: [{ name: 'bob', nkey: bob.publicKey }],
    blocked: [{ name: 'mallory' }, { nkey: carol.publicKey }],
  });
  const open = { ...lists, open: true };
  const anonymous: AuthResult = { kind: 'anonymous' };
  const stranger = newCaller('dave');

  describe('blocked callers', function () {
    it('a blocked caller is dropped even when its signature is invalid', function () {
      const d = decide(lists, { name: 'mallory' }, { kind: 'invalid', reason: 'bad' }, 'RATE', IDENTITY);
      expect(d).to.deep.equal({ action: 'drop' });
    });

    it('a blocked caller is dropped even when it is verified', function () {
      expect(decide(lists, claims(mallory), verified(mallory), 'RATE', IDENTITY)).to.deep.equal({
        action: 'drop',
      });
    });

    it('a caller blocked by key is dropped whatever name it claims', function () {
      const d = decide(lists, { name: 'alice', key: carol.publicKey }, anonymous, 'HELP', IDENTITY);
      expect(d).to.deep.equal({ action: 'drop' });
    });

    it('a blocked caller is dropped even for PING', function () {
      expect(decide(lists, { name: 'mallory' }, anonymous, 'PING', IDENTITY)).to.deep.equal({
        action: 'drop',
      });
    });
  });

  it('an invalid signature is refused as unauthenticated, with the reason', function () {
    const d = decide(
      lists,
      { name: 'alice' },
      { kind: 'invalid', reason: 'replayed request' },
      'PING',
      IDENTITY,
    );
    expect(d).to.deep.include({ action: 'refuse', code: 'unauthenticated' });
    expect((d as { message: string }).message).to.match(/replayed request/);
  });

  it('a verified caller whose key differs from the one on file is refused as unauthenticated', function () {
    const impostor = { name: 'alice', publicKey: stranger.publicKey };
    const d = decide(lists, claims(impostor), verified(impostor), 'RATE', IDENTITY);
    expect(d).to.deep.include({ action: 'refuse', code: 'unauthenticated' });
    expect((d as { message: string }).message).to.match(
      /key does not match the one on file for alice.*msggateway/,
    );
  });

  it('a key on file is refused under another name, and told which name to use', function () {
    const renamed = { name: 'robert', publicKey: bob.publicKey };
    const d = decide(lists, claims(renamed), verified(renamed), 'RATE', IDENTITY);
    expect(d).to.deep.include({ action: 'refuse', code: 'unauthenticated' });
    expect((d as { message: string }).message).to.match(/on file for caller 'bob'.*send requests as bob/);
  });

  describe('PING and HELP', function () {
    it('are answered for anyone not blocked, even unsigned, whatever the case of the verb', function () {
      expect(decide(lists, {}, anonymous, 'PING', IDENTITY)).to.deep.equal({
        action: 'allow',
        role: 'anyone',
      });
      expect(decide(lists, {}, anonymous, 'help', IDENTITY)).to.deep.equal({
        action: 'allow',
        role: 'anyone',
      });
    });

    it('carry the verified caller and its role', function () {
      expect(decide(lists, claims(alice), verified(alice), 'PING', IDENTITY)).to.deep.equal({
        action: 'allow',
        caller: 'alice',
        role: 'contact',
      });
      expect(decide(lists, claims(stranger), verified(stranger), 'HELP', IDENTITY)).to.deep.equal({
        action: 'allow',
        caller: 'dave',
        role: 'anyone',
      });
    });
  });

  describe('STATUS', function () {
    it('is answered for a verified contact', function () {
      expect(decide(lists, claims(alice), verified(alice), 'status', IDENTITY)).to.deep.equal({
        action: 'allow',
        caller: 'alice',
        role: 'contact',
      });
    });

    it('is refused to an authorized caller who is not a contact, saying it is for contacts', function () {
      const d = decide(lists, claims(bob), verified(bob), 'STATUS', IDENTITY);
      expect(d).to.deep.include({ action: 'refuse', code: 'not-a-contact' });
      expect((d as { message: string }).message).to.match(
        /STATUS is for the contacts of msggateway.*add bob/,
      );
    });

    it('is refused to an unsigned caller claiming a contact name, telling it to sign', function () {
      const d = decide(lists, { name: 'alice' }, anonymous, 'STATUS', IDENTITY);
      expect(d).to.deep.include({ action: 'refuse', code: 'not-a-contact' });
      expect((d as { message: string }).message).to.match(/sign requests with your nkey/);
    });

    it('stays for contacts even on an open identity', function () {
      expect(decide(open, {}, anonymous, 'STATUS', IDENTITY)).to.deep.include({ code: 'not-a-contact' });
    });
  });

  describe('service commands', function () {
    it('are allowed for verified contacts and authorized callers, with their role', function () {
      expect(decide(lists, claims(alice), verified(alice), 'RATE', IDENTITY)).to.deep.equal({
        action: 'allow',
        caller: 'alice',
        role: 'contact',
      });
      expect(decide(lists, claims(bob), verified(bob), 'RATE', IDENTITY)).to.deep.equal({
        action: 'allow',
        caller: 'bob',
        role: 'authorized',
      });
    });

    it('are allowed for anyone, even unsigned, on an open identity', function () {
      expect(decide(open, {}, anonymous, 'RATE', IDENTITY)).to.deep.equal({
        action: 'allow',
        role: 'anyone',
      });
      expect(decide(open, claims(stranger), verified(stranger), 'RATE', IDENTITY)).to.deep.equal({
        action: 'allow',
        caller: 'dave',
        role: 'anyone',
      });
    });

    it('a verified caller on no list is refused and its authorization request is recorded as pending', function () {
      const d = decide(lists, claims(stranger), verified(stranger), 'RATE', IDENTITY);
      expect(d).to.deep.include({
        action: 'refuse',
        code: 'not-authorized',
        pending: { name: 'dave', nkey: stranger.publicKey },
      });
      expect((d as { message: string }).message).to.match(
        /your request for authorization is recorded as pending \(while fewer than 100 are\); an admin of msggateway can approve it/,
      );
    });

    it('an unsigned caller is refused and told to sign its requests with its nkey', function () {
      const d = decide(lists, { name: 'bob' }, anonymous, 'RATE', IDENTITY);
      expect(d).to.deep.include({ action: 'refuse', code: 'not-authorized' });
      expect(d).not.to.have.property('pending');
      expect((d as { message: string }).message).to.match(/sign requests with your NATS user nkey/);
    });
  });

  it('words its messages for "this identity" when the identity is not given', function () {
    const d = decide(lists, claims(stranger), verified(stranger), 'RATE');
    expect((d as { message: string }).message).to.match(/an admin of this identity can approve it/);
  });

  it('works end to end from signed headers', function () {
    const { headers, body } = signed({ who: bob });
    const h = lookup(headers);
    const r = new RequestAuthenticator().authenticate({ identity: IDENTITY, headers: h, body, now: T0 });
    expect(decide(lists, claimedCaller(h), r, 'RATE', IDENTITY)).to.deep.equal({
      action: 'allow',
      caller: 'bob',
      role: 'authorized',
    });
  });
});

// Credentials released only to the lease holder (issue 12, point 7): sealing at rest, the
// release decision (one row per check, each broken once), the reply's encryption and
// signature, the replay cache and the controller's key file.
import { expect } from 'chai';
import { randomBytes } from 'node:crypto';
import { chmod, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { specForRole, REDACTED } from '../../pkg/api/redact.js';
import { loadCredentialKey, NonceCache } from '../../pkg/controller/credentials.js';
import {
  openReply,
  replyKeyPair,
  replySignedBy,
  REQUEST_WINDOW_MS,
  sealReply,
  signReply,
  signRequest,
  type CredentialRequest,
} from '../../pkg/credentials/protocol.js';
import { decideRelease, type ReleaseFacts, type ReleaseState } from '../../pkg/credentials/release.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';
import { keyId, openCredential, sealCredential } from '../../pkg/spec/credential-store.js';

const NOW = 1_800_000_000_000;

describe('credentials (pkg/credentials, pkg/spec/credential-store)', () => {
  describe('sealed at rest', () => {
    const key = randomBytes(32);
    const stored = (identity: string, secret: string) =>
      Buffer.from(JSON.stringify(sealCredential(key, identity, Buffer.from(secret))));

    it('opens for the identity it was sealed for, and the stored value does not contain the secret', () => {
      const raw = stored('gw', 'hunter2-secret');
      expect(raw.toString()).to.not.include('hunter2');
      const opened = openCredential(key, 'gw', raw);
      expect(opened.ok && opened.secret.toString()).to.equal('hunter2-secret');
    });

    it('does not open under another identity (the identity is authenticated data)', () => {
      const opened = openCredential(key, 'other', stored('gw', 'hunter2-secret'));
      expect(opened).to.include({ ok: false, code: 'tampered' });
    });

    it('refuses a plain-text value left by an older version, telling the operator to store it again', () => {
      const opened = openCredential(key, 'gw', Buffer.from('hunter2-secret'));
      expect(opened).to.include({ ok: false, code: 'plaintext' });
      expect(!opened.ok && opened.reason).to.match(/understudy credential set gw --from-file/);
      expect(!opened.ok && opened.reason).to.not.include('hunter2');
    });

    it('names the key that sealed a value when this controller holds another', () => {
      const opened = openCredential(randomBytes(32), 'gw', stored('gw', 'x'));
      expect(opened).to.include({ ok: false, code: 'wrong-key' });
      expect(!opened.ok && opened.reason).to.include(keyId(key));
    });

    it('refuses a changed ciphertext, and says when nothing is stored', () => {
      const sealed = sealCredential(key, 'gw', Buffer.from('hunter2-secret'));
      const flipped = Buffer.from(sealed.ct, 'base64url');
      flipped[0]! ^= 1;
      const raw = Buffer.from(JSON.stringify({ ...sealed, ct: flipped.toString('base64url') }));
      expect(openCredential(key, 'gw', raw)).to.include({ ok: false, code: 'tampered' });
      expect(openCredential(key, 'gw', undefined)).to.include({ ok: false, code: 'absent' });
    });
  });

  describe('the release decision', () => {
    const node = userSigner(generateCallerKey().seed);
    const intruder = userSigner(generateCallerKey().seed);
    const reply = replyKeyPair();
    const request = (over: Partial<CredentialRequest> = {}, signer = node): CredentialRequest => {
      const base = {
        identity: 'gw',
        node: 'a',
        token: '42',
        at: NOW,
        nonce: 'n'.repeat(24),
        replyKey: reply.publicKey,
      };
      return { ...signRequest(signer, { ...base, ...over }) };
    };
    const state = (over: Partial<ReleaseState> = {}): ReleaseState => ({
      nodeKey: { node: 'a', key: node.publicKey, lease: '7' },
      leader: { node: 'a', leaseId: '7', token: '42' },
      source: 'etcd',
      stored: true,
      ...over,
    });
    const facts = (over: Partial<ReleaseFacts> = {}): ReleaseFacts => ({
      subjectIdentity: 'gw',
      request: request(),
      nowMs: NOW,
      nonceSeen: false,
      state: state(),
      ...over,
    });

    it('releases to the node whose key, session lease and token match the leader key', () => {
      expect(decideRelease(facts())).to.include({ release: true });
    });

    const rows: [string, Partial<ReleaseFacts>, string, boolean][] = [
      ['sent on another identity’s subject', { subjectIdentity: 'other' }, 'bad-request', false],
      ['signed too long ago', { nowMs: NOW + REQUEST_WINDOW_MS + 1 }, 'stale-request', false],
      ['signed too far ahead', { nowMs: NOW - REQUEST_WINDOW_MS - 1 }, 'stale-request', false],
      ['from a node with no live key', { state: state({ nodeKey: undefined }) }, 'unknown-node', false],
      ['signed by another key', { request: request({}, intruder) }, 'bad-signature', false],
      [
        'with a field changed after signing',
        { request: { ...request(), token: '43' } },
        'bad-signature',
        false,
      ],
      ['replayed', { nonceSeen: true }, 'replayed', true],
      ['when no one holds the term', { state: state({ leader: undefined }) }, 'not-leader', true],
      [
        'from the standby (the leader key names another node)',
        { state: state({ leader: { node: 'b', leaseId: '8', token: '42' } }) },
        'not-leader',
        true,
      ],
      [
        'with the previous term’s token',
        { state: state({ leader: { node: 'a', leaseId: '7', token: '50' } }) },
        'stale-token',
        true,
      ],
      [
        'from a node key bound to another session than the term’s',
        { state: state({ nodeKey: { node: 'a', key: node.publicKey, lease: '9' } }) },
        'wrong-session',
        true,
      ],
      [
        'when the spec does not ask for an etcd credential',
        { state: state({ source: 'file' }) },
        'no-credential',
        true,
      ],
      ['when no spec is stored', { state: state({ source: undefined }) }, 'no-credential', true],
      ['when nothing is stored', { state: state({ stored: false }) }, 'no-credential', true],
    ];
    for (const [what, over, code, authenticated] of rows) {
      it(`refuses a request ${what} (${code})`, () => {
        const d = decideRelease(facts(over));
        expect(d).to.include({ release: false, code, authenticated });
        expect(!d.release && d.reason.length).to.be.greaterThan(10);
      });
    }
  });

  describe('the reply', () => {
    const controller = userSigner(generateCallerKey().seed);
    const context = { identity: 'gw', node: 'a', token: '42', nonce: 'n'.repeat(24) };

    it('opens only with the request’s private key and for the same request', () => {
      const pair = replyKeyPair();
      const sealed = sealReply(Buffer.from('hunter2-secret'), pair.publicKey, context);
      expect(JSON.stringify(sealed)).to.not.include('hunter2');
      expect(openReply(sealed, pair.privateKey, context).toString()).to.equal('hunter2-secret');
      expect(() => openReply(sealed, replyKeyPair().privateKey, context)).to.throw();
      expect(() => openReply(sealed, pair.privateKey, { ...context, token: '43' })).to.throw();
    });

    it('is signed by the answering controller for this request only', () => {
      const sealed = sealReply(Buffer.from('x'), replyKeyPair().publicKey, context);
      const sig = signReply(controller, 'ctl-a', context, sealed);
      expect(replySignedBy(controller.publicKey, 'ctl-a', context, sealed, sig)).to.equal(true);
      expect(replySignedBy(controller.publicKey, 'ctl-b', context, sealed, sig)).to.equal(false);
      expect(
        replySignedBy(controller.publicKey, 'ctl-a', { ...context, nonce: 'm'.repeat(24) }, sealed, sig),
      ).to.equal(false);
    });
  });

  describe('the replay cache', () => {
    it('remembers a nonce for its TTL, and drops the oldest when full', () => {
      const cache = new NonceCache(1_000, 2);
      cache.add('a', 0);
      expect(cache.has('a', 999)).to.equal(true);
      expect(cache.has('a', 1_000)).to.equal(false);
      cache.add('b', 10);
      cache.add('c', 20);
      expect(cache.size).to.equal(2);
      expect(cache.has('a', 30)).to.equal(false);
      expect(cache.has('c', 30)).to.equal(true);
    });
  });

  describe("the controller's key file", () => {
    it('takes 32 raw bytes or 64 hex digits, mode 0600, and says what to do otherwise', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'understudy-key-'));
      const raw = join(dir, 'raw');
      await writeFile(raw, randomBytes(32), { mode: 0o600 });
      expect(loadCredentialKey(raw)).to.have.length(32);
      const hex = join(dir, 'hex');
      await writeFile(hex, `${randomBytes(32).toString('hex')}\n`, { mode: 0o600 });
      expect(loadCredentialKey(hex)).to.have.length(32);
      await chmod(hex, 0o644);
      expect(() => loadCredentialKey(hex)).to.throw(
        /credentials.keyFile: .* readable by others .* chmod 600/,
      );
      const short = join(dir, 'short');
      await writeFile(short, 'too short', { mode: 0o600 });
      expect(() => loadCredentialKey(short)).to.throw(
        /must hold 32 random bytes .*head -c 32 \/dev\/urandom/,
      );
      expect(() => loadCredentialKey(join(dir, 'missing'))).to.throw(/cannot read .* \(ENOENT\)/);
    });
  });

  describe('what a viewer sees of a spec', () => {
    const spec = {
      name: 'gw',
      service: { driver: 'process', command: ['x'], env: { TOKEN: 'abc', A: 'b' } },
    };

    it('replaces the values of service.env for viewers (and callers without a role), keeping the names', () => {
      for (const role of ['viewer', undefined] as const) {
        expect(specForRole(role, spec)).to.deep.equal({
          ...spec,
          service: { ...spec.service, env: { TOKEN: REDACTED, A: REDACTED } },
        });
      }
      expect(spec.service.env.TOKEN, 'the input is not changed').to.equal('abc');
    });

    it('shows operators and admins the spec whole, and leaves specs without env alone', () => {
      expect(specForRole('operator', spec)).to.equal(spec);
      expect(specForRole('admin', spec)).to.equal(spec);
      const inProcess = { name: 'x', service: { driver: 'nats-service', handler: 'h' } };
      expect(specForRole('viewer', inProcess)).to.deep.equal(inProcess);
    });
  });
});

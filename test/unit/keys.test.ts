import { expect } from 'chai';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  canonical,
  generateCallerKey,
  loadSigner,
  parseNodeKey,
  signFields,
  userSigner,
  verifyFields,
} from '../../pkg/keys/index.js';

describe('signing keys (pkg/keys)', () => {
  const signer = userSigner(generateCallerKey().seed);
  const other = userSigner(generateCallerKey().seed);

  describe('signed fields', () => {
    const sig = signFields(signer, 'understudy-test-v1', ['a', 'b'], 'body');

    it('verify under the signing key for exactly the same kind, fields and body', () => {
      expect(verifyFields(signer.publicKey, sig, 'understudy-test-v1', ['a', 'b'], 'body')).to.equal(true);
    });

    it('do not verify under another key, kind, field list or body', () => {
      expect(verifyFields(other.publicKey, sig, 'understudy-test-v1', ['a', 'b'], 'body')).to.equal(false);
      expect(verifyFields(signer.publicKey, sig, 'understudy-other-v1', ['a', 'b'], 'body')).to.equal(false);
      expect(verifyFields(signer.publicKey, sig, 'understudy-test-v1', ['a', 'c'], 'body')).to.equal(false);
      expect(verifyFields(signer.publicKey, sig, 'understudy-test-v1', ['a', 'b', ''], 'body')).to.equal(
        false,
      );
      expect(verifyFields(signer.publicKey, sig, 'understudy-test-v1', ['a', 'b'], 'body!')).to.equal(false);
    });

    it('refuse missing or malformed signatures without throwing', () => {
      expect(verifyFields(signer.publicKey, undefined, 'k', [], '')).to.equal(false);
      expect(verifyFields(signer.publicKey, 'x'.repeat(5000), 'k', [], '')).to.equal(false);
      expect(verifyFields('not-a-key', sig, 'understudy-test-v1', ['a', 'b'], 'body')).to.equal(false);
    });

    it('cannot be made ambiguous by a newline inside a field', () => {
      expect(() => canonical('k', ['a\nb'], '')).to.throw(/newline/);
      expect(verifyFields(signer.publicKey, sig, 'understudy-test-v1', ['a\nb'], 'body')).to.equal(false);
    });
  });

  describe('loadSigner', () => {
    it('makes a fresh key when no file is given', async () => {
      const a = await loadSigner(undefined);
      const b = await loadSigner(undefined);
      expect(a.publicKey).to.match(/^U/).and.not.equal(b.publicKey);
    });

    it('loads a seed file readable by its owner only', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'keys-'));
      const { seed, publicKey } = generateCallerKey();
      await writeFile(join(dir, 'seed'), `${seed}\n`, { mode: 0o600 });
      expect((await loadSigner(join(dir, 'seed'))).publicKey).to.equal(publicKey);
    });

    it('refuses a seed file others can read, naming the field and the fix', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'keys-'));
      await writeFile(join(dir, 'seed'), generateCallerKey().seed, { mode: 0o644 });
      let error: Error | undefined;
      await loadSigner(join(dir, 'seed'), 'keyFile').catch((e: Error) => (error = e));
      expect(error?.message).to.match(/^keyFile: .* readable by others .*chmod 600/);
    });

    it('refuses a missing file and a file that is not a seed, naming the field', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'keys-'));
      await writeFile(join(dir, 'junk'), 'not a seed', { mode: 0o600 });
      const messages: string[] = [];
      await loadSigner(join(dir, 'absent'), 'keyFile').catch((e: Error) => messages.push(e.message));
      await loadSigner(join(dir, 'junk'), 'keyFile').catch((e: Error) => messages.push(e.message));
      expect(messages).to.have.length(2);
      expect(messages[0]).to.match(/^keyFile: cannot read/);
      expect(messages[1]).to.match(/^keyFile: .*not a valid NATS nkey seed/);
      expect(messages[1]).not.to.include('not a seed');
    });
  });

  describe('node key records', () => {
    it('are read only when well formed', () => {
      const good = JSON.stringify({ node: 'a', key: signer.publicKey, lease: '42' });
      expect(parseNodeKey(good)).to.deep.equal({ node: 'a', key: signer.publicKey, lease: '42' });
      expect(parseNodeKey(JSON.stringify({ node: 'a', key: 'Ubogus', lease: '42' }))).to.equal(undefined);
      expect(parseNodeKey('{')).to.equal(undefined);
      expect(parseNodeKey(null)).to.equal(undefined);
    });
  });
});

// Pending authorization requests (pkg/spec/pending.ts): the per-identity cap, and which
// record an approval or denial acts on — an approval authorizes exactly the (name, key) pair
// that asked, never a key that asked later under the same name.
import { expect } from 'chai';
import { generateCallerKey } from '../../pkg/keys/index.js';
import { admitPending, choosePending, MAX_PENDING_PER_IDENTITY } from '../../pkg/spec/pending.js';
import { AccessLists, type PendingRequest } from '../../pkg/spec/schema.js';

const alice = generateCallerKey().publicKey;
const mallory = generateCallerKey().publicKey;
const bob = generateCallerKey().publicKey;
const rec = (name: string, nkey: string): PendingRequest => ({
  name,
  nkey,
  request: 'RATE',
  node: 'a',
  at: 0,
});

describe('pending requests: the cap per identity', function () {
  const rows: Array<[number, boolean]> = [
    [0, true],
    [MAX_PENDING_PER_IDENTITY - 1, true],
    [MAX_PENDING_PER_IDENTITY, false],
    [MAX_PENDING_PER_IDENTITY + 5, false],
  ];
  for (const [count, ok] of rows) {
    it(`${count} kept: ${ok ? 'recorded' : 'refused, saying what to do'}`, function () {
      const a = admitPending('bot', count);
      expect(a.record).to.equal(ok);
      if (!a.record) expect(a.reason).to.match(/limit is 100.*nothing was recorded.*approve or deny/);
    });
  }
});

describe('pending requests: which record a decision acts on', function () {
  const none = AccessLists.parse({});
  const aliceOnFile = AccessLists.parse({ authorized: [{ name: 'alice', nkey: alice }] });
  const one = [rec('alice', alice), rec('bob', bob)];
  const two = [rec('alice', alice), rec('alice', mallory), rec('bob', bob)];
  type Row = [
    string,
    PendingRequest[],
    'approve' | 'deny' | 'block',
    AccessLists,
    string | undefined,
    string[] | RegExp,
  ];
  const rows: Row[] = [
    ['approve the one key that asked as alice', one, 'approve', none, undefined, [alice]],
    ['approve by key', two, 'approve', none, alice, [alice]],
    [
      'approve when two keys asked as alice: refused',
      two,
      'approve',
      none,
      undefined,
      /2 different keys asked as alice/,
    ],
    [
      'approve a key that did not ask',
      one,
      'approve',
      none,
      mallory,
      /no pending authorization request from alice with key/,
    ],
    [
      'approve a name with no request',
      one,
      'approve',
      none,
      undefined,
      /no pending authorization request from carol|from alice/,
    ],
    [
      'approve a second key for a name on file: refused',
      [rec('alice', mallory)],
      'approve',
      aliceOnFile,
      undefined,
      /already on bot's lists with key/,
    ],
    ['deny all keys that asked as alice', two, 'deny', none, undefined, [alice, mallory]],
    ['deny one key', two, 'deny', none, mallory, [mallory]],
    ['block one key', two, 'block', none, mallory, [mallory]],
  ];
  for (const [what, records, decision, access, key, outcome] of rows) {
    it(what, function () {
      const name = what.includes('no request') ? 'carol' : 'alice';
      const choice = choosePending('bot', name, records, decision, access, key);
      if (Array.isArray(outcome)) {
        expect(choice.ok).to.equal(true);
        expect((choice as { records: PendingRequest[] }).records.map((r) => r.nkey)).to.deep.equal(outcome);
      } else {
        expect(choice.ok).to.equal(false);
        expect((choice as { message: string }).message).to.match(outcome);
      }
    });
  }
});

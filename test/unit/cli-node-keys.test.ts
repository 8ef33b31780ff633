// --trust-node-key values (pkg/cli/node-keys.ts): NODE=KEY pairs, each bad one refused by name.
import { expect } from 'chai';
import { parseTrustedKeys } from '../../pkg/cli/node-keys.js';
import { EXIT } from '../../pkg/cli/exit.js';
import { generateCallerKey } from '../../pkg/keys/index.js';

describe('CLI: --trust-node-key', function () {
  const key = generateCallerKey().publicKey;
  it('reads NODE=KEY pairs, the last one for a node winning', function () {
    const other = generateCallerKey().publicKey;
    const keys = parseTrustedKeys([`a=${other}`, `b=${key}`, `a=${key}`]);
    expect([...keys]).to.deep.equal([
      ['a', { key }],
      ['b', { key }],
    ]);
  });
  const bad: Array<[string, string]> = [
    ['no equals sign', 'a'],
    ['an empty node', `=${key}`],
    ['a node name that is not one', `A*=${key}`],
    ['a key that is not a user nkey', 'a=SUABC'],
    ['a key with a broken checksum', `a=${key.slice(0, 55)}${key[55] === 'A' ? 'B' : 'A'}`],
  ];
  for (const [what, value] of bad) {
    it(`refuses ${what}, naming the value and the expected form`, function () {
      let err: unknown;
      try {
        parseTrustedKeys([value]);
      } catch (e) {
        err = e;
      }
      expect((err as Error).message).to.match(/--trust-node-key .* must be NODE=KEY/);
      expect((err as { exitCode: number }).exitCode).to.equal(EXIT.usage);
    });
  }
});

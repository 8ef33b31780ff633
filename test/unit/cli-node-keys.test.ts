// --trust-node-key values (pkg/cli/node-keys.ts): NODE=KEY pairs, each bad one refused by name.
import { expect } from 'chai';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { cliKeys, NODE_KEYS_REFRESH_MS, parseTrustedKeys } from '../../pkg/cli/node-keys.js';
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

describe('CLI: node keys from the controller', function () {
  it('reads the list again after NODE_KEYS_REFRESH_MS, so a node that restarted with a new key is believed', async function () {
    const first = generateCallerKey().publicKey;
    const second = generateCallerKey().publicKey;
    let current = first;
    let asked = 0;
    const server: Server = createServer((_req, res) => {
      asked++;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ nodes: [{ node: 'b', alive: true, identities: [], key: current }] }));
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    try {
      const { port } = server.address() as AddressInfo;
      let clock = 1_000;
      const found = await cliKeys(
        {
          controller: `http://127.0.0.1:${port}`,
          token: 'x'.repeat(20),
          output: 'text',
          nats: 'nats://127.0.0.1:1',
        },
        () => clock,
      );
      expect(found.source).to.equal('controller');
      expect(await found.keys!('b')).to.deep.equal({ key: first });
      current = second;
      // Within the refresh period the list is not read again (a flood of lookups costs nothing) ...
      expect(await found.keys!('b')).to.deep.equal({ key: first });
      expect(asked).to.equal(1);
      // ... after it, the restarted node's new key is used.
      clock += NODE_KEYS_REFRESH_MS;
      expect(await found.keys!('b')).to.deep.equal({ key: second });
      expect(asked).to.equal(2);
    } finally {
      server.close();
    }
  });
});

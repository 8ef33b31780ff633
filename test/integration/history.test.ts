// The history writer against a real etcd: entries queued while a write is out go together in
// one transaction, none is lost or reordered, and the caller never waits.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { HistoryWriter, readHistory } from '../../pkg/history/index.js';
import { IntegrationCluster } from '../support/cluster.js';
import { waitFor } from '../support/wait.js';

describe('history writer (real etcd)', function () {
  this.timeout(60_000);
  let harness: IntegrationCluster;
  let client: Etcd3;

  before(async () => {
    harness = await IntegrationCluster.start({ nats: false });
    client = harness.client;
  });

  after(() => harness?.close());

  it('writes a burst in a few transactions, every entry once and in order per identity', async () => {
    // Count the requests that reach etcd's KV service: puts and transactions.
    let requests = 0;
    const kv = client.kv as unknown as Record<'put' | 'txn', (...args: unknown[]) => unknown>;
    for (const method of ['put', 'txn'] as const) {
      const original = kv[method].bind(kv);
      kv[method] = (...args: unknown[]) => {
        requests++;
        return original(...args);
      };
    }
    const writer = new HistoryWriter(client);
    const at = Date.now();
    for (let i = 0; i < 150; i++) {
      writer.record({ identity: `w${i % 3}`, node: 'a', at: at + i, kind: 'action', reason: `step ${i}` });
    }
    await waitFor(
      async () =>
        (await Promise.all(['w0', 'w1', 'w2'].map((id) => readHistory(client, id)))).flat().length === 150,
      { what: 'all 150 entries in etcd', timeoutMs: 20_000 },
    );
    for (const id of ['w0', 'w1', 'w2']) {
      const reasons = (await readHistory(client, id)).map((e) => e.reason);
      const expected = Array.from({ length: 50 }, (_, k) => `step ${k * 3 + Number(id.slice(1))}`);
      expect(reasons, id).to.deep.equal(expected);
    }
    // The first entry alone (nothing else was queued yet), then the rest 64 at a time.
    expect(requests).to.be.at.most(1 + Math.ceil(149 / 64));
    await writer.close();
  });
});

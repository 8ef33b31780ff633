// Campaign steps of many identities merged into few etcd transactions (real etcd): each step
// gets exactly its own responses at the merged transaction's revision, a batch never exceeds
// etcd's operations per transaction, and a step that etcd refuses fails alone. Large prefixes
// are read a page at a time at one revision.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { MAX_TXN_OPS, TxnBatcher } from '../../pkg/lease/batch.js';
import { readPrefixes } from '../../pkg/lease/paged.js';
import { IntegrationCluster } from '../support/cluster.js';

describe('lease: batched campaign steps (real etcd)', function () {
  this.timeout(60_000);
  let harness: IntegrationCluster;
  let client: Etcd3;
  let commits = 0;

  before(async () => {
    harness = await IntegrationCluster.start({ nats: false });
    client = harness.client;
    const original = client.if.bind(client);
    client.if = ((...args: Parameters<Etcd3['if']>) => {
      commits++;
      return original(...args);
    }) as Etcd3['if'];
  });

  after(() => harness?.close());

  it('merges steps issued together, each answered with its own reads, within the limit per transaction', async () => {
    const lease = client.lease(30, { autoKeepAlive: false });
    const leaseId = await lease.grant();
    for (let i = 0; i < 60; i++) await client.put(`understudy/b/${i}/leader`).value(`leader ${i}`);
    commits = 0;
    const batcher = TxnBatcher.for(client);
    const steps = await Promise.all(
      Array.from({ length: 60 }, (_, i) =>
        batcher.run(
          [
            client.put(`understudy/b/${i}/candidate`).value(`c${i}`).lease(leaseId),
            client.get(`understudy/b/${i}/leader`),
            client.get(`understudy/b/${i}/absent`),
          ],
          `understudy/b/${i}/leader`,
        ),
      ),
    );
    steps.forEach((step, i) => {
      expect(step.responses).to.have.length(3);
      expect(step.responses[1]!.response_range!.kvs[0]!.value.toString()).to.equal(`leader ${i}`);
      expect(step.responses[2]!.response_range!.kvs).to.have.length(0);
    });
    // 60 steps × 3 operations in transactions of at most MAX_TXN_OPS: 2, not 60.
    expect(commits).to.equal(Math.ceil((60 * 3) / (Math.floor(MAX_TXN_OPS / 3) * 3)));
    expect(new Set(steps.map((s) => s.revision)).size).to.equal(commits);
    expect(await client.get('understudy/b/59/candidate').string()).to.equal('c59');
    await lease.revoke();
  });

  it('a step etcd refuses (its lease is gone) fails alone; the others in its batch land', async () => {
    const live = client.lease(30, { autoKeepAlive: false });
    const liveId = await live.grant();
    const dead = client.lease(30, { autoKeepAlive: false });
    const deadId = await dead.grant();
    await dead.revoke();
    const batcher = TxnBatcher.for(client);
    const results = await Promise.allSettled(
      ['x', 'bad', 'y'].map((name) =>
        batcher.run(
          [
            client
              .put(`understudy/c/${name}`)
              .value(name)
              .lease(name === 'bad' ? deadId : liveId),
          ],
          `understudy/c/${name}`,
        ),
      ),
    );
    expect(results.map((r) => r.status)).to.deep.equal(['fulfilled', 'rejected', 'fulfilled']);
    expect((results[1] as PromiseRejectedResult).reason.message).to.match(/lease not found/i);
    expect(await client.get('understudy/c/x').string()).to.equal('x');
    expect(await client.get('understudy/c/y').string()).to.equal('y');
    expect(await client.get('understudy/c/bad').string()).to.equal(null);
    await live.revoke();
  });

  it("reads prefixes a page at a time, every key once and in order, all at the first page's revision", async () => {
    for (let i = 0; i < 23; i++) await client.put(`understudy/p/${String(i).padStart(2, '0')}`).value(`${i}`);
    await client.put('understudy/q/only').value('q');
    const before = await client.get('understudy/p/00').exec();
    const { ranges, revision } = await readPrefixes(
      client,
      ['understudy/p/', 'understudy/q/', 'understudy/none/'],
      5,
    );
    expect(ranges[0]!.map((kv) => kv.value.toString())).to.deep.equal(
      Array.from({ length: 23 }, (_, i) => `${i}`),
    );
    expect(ranges[1]!.map((kv) => kv.key.toString())).to.deep.equal(['understudy/q/only']);
    expect(ranges[2]).to.deep.equal([]);
    expect(revision).to.equal(BigInt(before.header.revision));
  });

  it('refuses a step too large for one transaction, saying the limit', async () => {
    const ops = Array.from({ length: MAX_TXN_OPS + 1 }, (_, i) => client.get(`understudy/d/${i}`));
    const err = await TxnBatcher.for(client)
      .run(ops, 'understudy/d/0')
      .catch((e: Error) => e);
    expect((err as Error).message).to.include(`1 to ${MAX_TXN_OPS} operations`);
  });
});

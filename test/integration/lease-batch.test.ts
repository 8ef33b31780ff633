// Campaign steps of many identities merged into few etcd transactions (real etcd): each step
// gets exactly its own responses at the merged transaction's revision, a batch never exceeds
// etcd's operations per transaction, and a step that etcd refuses fails alone. Large prefixes
// are read a page at a time at one revision.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { MAX_TXN_OPS, TxnBatcher } from '../../pkg/lease/batch.js';
import { Candidate, connectEtcd, Session, type Leadership } from '../../pkg/lease/index.js';
import { readPrefixes } from '../../pkg/lease/paged.js';
import { IntegrationCluster } from '../support/cluster.js';
import { waitFor } from '../support/wait.js';

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

  it('merges guarded steps, each judged by its own guards alone: a refused one writes nothing, the others land at the one revision', async () => {
    const lease = client.lease(30, { autoKeepAlive: false });
    const leaseId = await lease.grant();
    // Every third key is taken already: its create-if-absent must fail, and only its own.
    const taken = (i: number) => i % 3 === 0;
    for (let i = 0; i < 90; i++) if (taken(i)) await client.put(`understudy/g/${i}/leader`).value('someone');
    commits = 0;
    const batcher = TxnBatcher.for(client);
    const steps = await Promise.all(
      Array.from({ length: 90 }, (_, i) =>
        batcher.runIf(
          [
            [`understudy/g/${i}/leader`, 'Create', '==', 0],
            [`understudy/g/${i}/fence`, 'Create', '==', 0],
            [`understudy/g/${i}/hold-off`, 'Create', '==', 0],
          ],
          [client.put(`understudy/g/${i}/leader`).value(`mine ${i}`).lease(leaseId)],
        ),
      ),
    );
    expect(steps.map((s) => s.succeeded)).to.deep.equal(Array.from({ length: 90 }, (_, i) => !taken(i)));
    // 90 guarded steps of 3 guards: 4 each of the limit per transaction (etcd checks a nested
    // transaction against what its parent leaves), so 3 transactions, not 90.
    expect(commits).to.equal(Math.ceil(90 / Math.floor(MAX_TXN_OPS / 4)));
    for (let i = 0; i < 90; i++) {
      const kv = (await client.get(`understudy/g/${i}/leader`).exec()).kvs[0]!;
      expect(kv.value.toString()).to.equal(taken(i) ? 'someone' : `mine ${i}`);
      // The fencing token of a won key is its mod revision: the merged transaction's revision.
      if (!taken(i)) expect(kv.mod_revision).to.equal(steps[i]!.revision);
    }
    await lease.revoke();
  });

  it('a guarded step reads what it asks for, at the merged revision, only when its guards hold', async () => {
    await client.put('understudy/h/a').value('A');
    await client.put('understudy/h/b').value('B');
    const before = await client.get('understudy/h/a').exec();
    const batcher = TxnBatcher.for(client);
    const [held, refused, plain] = await Promise.all([
      batcher.runIf(
        [['understudy/h/a', 'Mod', '==', before.kvs[0]!.mod_revision]],
        [client.get('understudy/h/b')],
      ),
      batcher.runIf(
        [['understudy/h/a', 'Mod', '==', '1']],
        [client.put('understudy/h/b').value('overwritten')],
      ),
      batcher.run([client.get('understudy/h/a')], 'understudy/h/a'),
    ]);
    expect(held.succeeded).to.equal(true);
    expect(held.responses[0]!.response_range!.kvs[0]!.value.toString()).to.equal('B');
    expect(refused.succeeded).to.equal(false);
    expect(refused.responses).to.deep.equal([]);
    expect(plain.responses[0]!.response_range!.kvs[0]!.value.toString()).to.equal('A');
    expect(new Set([held.revision, refused.revision, plain.revision]).size).to.equal(1);
    expect(await client.get('understudy/h/b').string()).to.equal('B');
  });

  it('a node taking over 40 identities at once merges their campaigns, login gates and login records: a few transactions, not several per identity', async () => {
    const connect = () => connectEtcd({ endpoints: [harness.etcd.hostEndpoint] });
    const [clientA, clientB] = [connect(), connect()];
    let commitsB = 0;
    const original = clientB.if.bind(clientB);
    clientB.if = ((...args: Parameters<Etcd3['if']>) => {
      commitsB++;
      return original(...args);
    }) as Etcd3['if'];
    const timing = { ttlSeconds: 2 };
    const a = await Session.open(clientA, { node: 'a', timing });
    const b = await Session.open(clientB, { node: 'b', timing });
    const ids = Array.from({ length: 40 }, (_, i) => `takeover-${i}`);
    try {
      const held = await Promise.all(ids.map((identity) => new Candidate(a, { identity }).campaign()));
      await Promise.all(held.map((t) => t.setLoggedIn(true)));
      const waiting = ids.map((identity) => new Candidate(b, { identity }).campaign());
      await waitFor(
        async () =>
          (await harness.client.getAll().prefix('understudy/identities/takeover-').keys()).filter((k) =>
            k.endsWith('/candidates/b'),
          ).length === ids.length,
        { what: "b's 40 candidate registrations", timeoutMs: 10_000 },
      );
      commitsB = 0;
      // a logs out of everything at once (confirmed), as a switchover of the whole node would.
      await Promise.all(held.map((t) => t.resign({ loggedOut: true })));
      const terms: Leadership[] = await Promise.all(waiting);
      await Promise.all(terms.map(async (t) => (await t.clearance(), t.setLoggedIn(true))));
      for (const [i, t] of terms.entries()) {
        const kv = (await harness.client.get(`understudy/identities/${ids[i]}/leader`).exec()).kvs[0]!;
        expect(t.node).to.equal('b');
        expect(String(t.token), "the token is the leader key's own revision").to.equal(kv.mod_revision);
        expect(t.token > held[i]!.token).to.equal(true);
      }
      // Per identity: a registration read, a rank read, the winning put, the login gate's read
      // and the login record: 200 transactions sent one by one.
      expect(commitsB, 'transactions b sent for 40 takeovers').to.be.below(40);
    } finally {
      await Promise.all([a.close(), b.close()]);
      clientA.close();
      clientB.close();
    }
  });

  it('a read merged with a write of the same key sees the write, whichever was queued first: its revision is after every write it is told of', async () => {
    await client.put('understudy/rw/k').value('before');
    const batcher = TxnBatcher.for(client);
    const [read, write, unguarded] = await Promise.all([
      batcher.run([client.get('understudy/rw/k')], 'understudy/rw/k'),
      batcher.runIf(
        [['understudy/rw/k', 'Value', '==', 'before']],
        [client.put('understudy/rw/k').value('after')],
      ),
      batcher.run([client.put('understudy/rw/other').value('x')], 'understudy/rw/other'),
    ]);
    expect(write.succeeded, 'the guard is judged on the state before the transaction').to.equal(true);
    const kv = read.responses[0]!.response_range!.kvs[0]!;
    expect(kv.value.toString()).to.equal('after');
    expect(kv.mod_revision).to.equal(read.revision);
    expect(unguarded.revision).to.equal(read.revision);
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
    const guarded = await TxnBatcher.for(client)
      .runIf([['understudy/d/0', 'Create', '==', 0]], ops.slice(0, MAX_TXN_OPS))
      .catch((e: Error) => e);
    expect((guarded as Error).message).to.include(`a guarded one ${MAX_TXN_OPS - 1}`);
  });
});

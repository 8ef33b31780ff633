// Renewals never wait for a name lookup once their channels are open. Node resolves names on
// libuv's four threads, shared by the whole process; when an etcd raft leader died, lookups
// of its name took 5 s to fail in Docker's DNS, held all four threads, and a holder whose
// renewals needed a lookup (the etcd library reopened its channels after every failed or
// cancelled call) fenced itself while etcd was already committing again: a false failover.
import dns from 'node:dns';
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { connectEtcd, Session } from '../../pkg/lease/index.js';
import { perEndpointClients, within } from '../../pkg/lease/etcd.js';
import { Harness, type EtcdMember } from '../support/harness.js';
import { waitFor } from '../support/wait.js';

/** Puts with a 1 ms deadline tried until one fails on it (each that succeeds needs no lookup either). */
const CALLS_TO_FAIL_ONE = 20;

describe('renewals and name lookups (real etcd)', function () {
  this.timeout(60_000);
  let h: Harness;
  let etcd: EtcdMember;
  let client: Etcd3;
  const cleanups: Array<() => unknown> = [];
  before(async function () {
    h = await Harness.create();
    etcd = await h.startEtcd('etcd-renewal-dns');
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
  });
  afterEach(async function () {
    for (const clean of cleanups.splice(0).reverse()) await clean();
  });
  after(async function () {
    client?.close();
    await h?.close();
  });

  /** From now on, no name lookup of this process ever answers (libuv's threads all held). */
  function holdEveryLookup(): { held: () => number } {
    const lookups = dns.promises as { lookup: typeof dns.promises.lookup };
    const original = lookups.lookup;
    let held = 0;
    lookups.lookup = (() => {
      held += 1;
      return new Promise(() => undefined);
    }) as typeof dns.promises.lookup;
    cleanups.push(() => (lookups.lookup = original));
    return { held: () => held };
  }

  it('a session renewing through a member by name goes on renewing when lookups stop answering, even after a call to it failed', async function () {
    // By name, so that every new channel needs a lookup; T = 2 s: renewals every 200 ms, D = 1.4 s.
    const byName = etcd.hostEndpoint.replace('127.0.0.1', 'localhost');
    expect(byName, 'the member is reached by a name').to.include('localhost');
    const via = perEndpointClients({ endpoints: [byName] });
    cleanups.push(() => via.forEach((c) => c.close()));
    const session = await Session.open(client, { node: 'by-name', timing: { ttlSeconds: 2 }, renewVia: via });
    cleanups.push(() => session.close());
    let renewed = 0;
    session.on('renewed', () => (renewed += 1));
    await waitFor(() => renewed >= 3, { what: 'renewals through the named member', timeoutMs: 5_000 });

    const lookups = holdEveryLookup();
    // A call that fails on the renewal channel (its deadline passes at once), as calls to a
    // follower do during a raft election: the etcd library would reopen the channels. A put can
    // beat a 1 ms deadline on a quiet machine (CI saw one); the first of a few that fails is it.
    let failed: Error | undefined;
    for (let attempt = 0; attempt < CALLS_TO_FAIL_ONE && failed === undefined; attempt++) {
      failed = await via[0]!
        .put('renewal-dns/probe')
        .value('x')
        .options(within(1))
        .then(
          () => undefined,
          (err: Error) => err,
        );
    }
    expect(failed, 'a call failed on its deadline').to.be.instanceOf(Error);

    // Twice D: every renewal in that time went through the channels opened before.
    const since = renewed;
    await new Promise((resolve) => setTimeout(resolve, 2 * 1_400));
    expect(session.state, session.mayAct() ? '' : 'fenced: renewals waited for a lookup').to.equal('alive');
    expect(session.mayAct()).to.equal(true);
    expect(renewed - since, 'renewals acknowledged with no lookup answering').to.be.at.least(7);
    expect(lookups.held(), 'lookups asked for meanwhile').to.equal(0);
  });
});

// The session's self-fence clock is pure bookkeeping over send times and answers: specified
// here against a scripted lease client, so every ordering can be forced. (The same rules
// against a real etcd: test/integration/lease.test.ts.)
import { EventEmitter } from 'node:events';
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { Session, type MustStop } from '../../pkg/lease/session.js';
import { leaseTiming, LeaseTimingError } from '../../pkg/lease/timing.js';
import { waitFor } from '../support/wait.js';

class FakeStream extends EventEmitter {
  readonly sends: number[] = [];
  ended = false;
  write(): void {
    this.sends.push(performance.now());
  }
  end(): void {
    this.ended = true;
  }
  answer(ttl = '2'): void {
    this.emit('data', { ID: '7', TTL: ttl });
  }
}

function fakeEtcd() {
  const streams: FakeStream[] = [];
  const revoked: string[] = [];
  const client = {
    leaseClient: {
      leaseGrant: async () => ({ ID: '7', TTL: '2' }),
      leaseKeepAlive: async () => {
        const stream = new FakeStream();
        streams.push(stream);
        return stream;
      },
      leaseRevoke: async ({ ID }: { ID: string }) => {
        revoked.push(ID);
        return {};
      },
    },
  } as unknown as Etcd3;
  return { client, streams, revoked };
}

const TIMING = { ttlSeconds: 2 }; // keepalive every 666 ms, D = 1000 ms

describe('lease session (self-fence clock)', function () {
  const sessions: Session[] = [];
  const open = async (client: Etcd3) => {
    const session = await Session.open(client, { node: 'n', timing: TIMING });
    sessions.push(session);
    return session;
  };
  afterEach(async function () {
    await Promise.all(sessions.splice(0).map((s) => s.close()));
  });

  it('credits an answer to the oldest keepalive still in flight on its stream, never a newer one', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd.client);
    const renewals: number[] = [];
    session.on('renewed', (e) => renewals.push(e.sentAt));
    await waitFor(() => etcd.streams[0]?.sends.length === 2, {
      what: 'two keepalives sent',
      timeoutMs: 3_000,
    });
    const [first, second] = etcd.streams[0]!.sends;
    etcd.streams[0]!.answer();
    expect(renewals).to.have.length(1);
    // The answer belongs to the first send: crediting the second would move D later than etcd knows.
    expect(renewals[0]!).to.be.lessThan(second!);
    expect(Math.abs(renewals[0]! - first!)).to.be.lessThan(5);
  });

  it('ignores a late answer from a stream that was replaced', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd.client);
    const renewals: number[] = [];
    session.on('renewed', (e) => renewals.push(e.sentAt));
    await waitFor(() => etcd.streams[0]?.sends.length === 1, { what: 'a keepalive sent', timeoutMs: 1_000 });
    etcd.streams[0]!.emit('error', new Error('stream reset'));
    await waitFor(() => etcd.streams[1]?.sends.length === 1, {
      what: 'the stream reopened',
      timeoutMs: 1_000,
    });
    etcd.streams[0]!.answer();
    expect(renewals, 'answer on the broken stream').to.deep.equal([]);
    etcd.streams[1]!.answer();
    expect(renewals).to.have.length(1);
  });

  it('raises must-stop at D without answers, and refuses to act from then on', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd.client);
    const opened = performance.now();
    expect(session.mayAct()).to.equal(true);
    const stop: MustStop = await session.stopped();
    expect(stop.reason).to.equal('keepalive-timeout');
    expect(performance.now() - opened).to.be.at.least(1_000);
    expect(stop.sinceRenewalMs).to.be.at.least(1_000);
    expect(session.mayAct()).to.equal(false);
    // A finished session revokes its lease so standbys need not wait for the TTL.
    expect((await session.lost()).revoked).to.equal(true);
    expect(etcd.revoked).to.deep.equal(['7']);
  });

  it('an answer arriving after D does not revive the session', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd.client);
    await waitFor(() => etcd.streams[0]?.sends.length === 1, { what: 'a keepalive sent', timeoutMs: 1_000 });
    await waitFor(() => !session.mayAct(), { what: 'the self-fence deadline', timeoutMs: 3_000 });
    etcd.streams[0]!.answer();
    expect(session.mayAct()).to.equal(false);
    expect(session.state).to.not.equal('alive');
  });

  it('treats TTL 0 as the lease gone: must-stop and lost at once', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd.client);
    await waitFor(() => etcd.streams[0]?.sends.length === 1, { what: 'a keepalive sent', timeoutMs: 1_000 });
    etcd.streams[0]!.answer('0');
    expect((await session.stopped()).reason).to.equal('lease-gone');
    expect((await session.lost()).reason).to.equal('lease-gone');
    expect(session.mayAct()).to.equal(false);
  });

  it('re-validates a precomputed timing object instead of trusting it', async function () {
    const bad = { ...leaseTiming({ ttlSeconds: 6 }), selfFenceMs: 5_900 };
    const err = await Session.open(fakeEtcd().client, { node: 'n', timing: bad }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(LeaseTimingError);
  });
});

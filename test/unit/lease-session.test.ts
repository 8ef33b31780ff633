// The session's self-fence clock is pure bookkeeping over send times and answers: specified
// here against a scripted etcd client, so every ordering can be forced. (The same rules
// against a real etcd: test/integration/lease.test.ts.)
import { EventEmitter } from 'node:events';
import { expect } from 'chai';
import { EtcdLeaseInvalidError, type Etcd3 } from 'etcd3';
import { ManualClock } from '../../pkg/clock/index.js';
import { Session, type MustStop } from '../../pkg/lease/session.js';
import { Keys } from '../../pkg/lease/keys.js';
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
  cancel(): void {
    this.ended = true;
  }
  answer(ttl = '2'): void {
    this.emit('data', { ID: '7', TTL: ttl });
  }
}

/** One write of the session key, answered (or not) when the test says. */
interface PendingPut {
  key: string;
  lease: string;
  sentAt: number;
  ack(): void;
  fail(err: Error): void;
  settled: boolean;
}

function fakeEtcd(opts: { grantedTtl?: string; enforceDeadline?: boolean; keepaliveOpenMs?: number } = {}) {
  const streams: FakeStream[] = [];
  const revoked: string[] = [];
  const puts: PendingPut[] = [];
  /** Calls that only open the renewal channels (Renewer.warmUp). */
  const warmUps: string[] = [];
  const client = {
    get(key: string) {
      return { options: async () => (warmUps.push(`get ${key}`), null) };
    },
    leaseClient: {
      leaseTimeToLive: async ({ ID }: { ID: string }) => (warmUps.push(`ttl ${ID}`), { TTL: '2' }),
      leaseGrant: async () => ({ ID: '7', TTL: opts.grantedTtl ?? '2' }),
      leaseKeepAlive: async () => {
        if (opts.keepaliveOpenMs) await new Promise((resolve) => setTimeout(resolve, opts.keepaliveOpenMs));
        const stream = new FakeStream();
        streams.push(stream);
        return stream;
      },
      leaseRevoke: async ({ ID }: { ID: string }) => {
        revoked.push(ID);
        return {};
      },
    },
    put(key: string) {
      let lease = '';
      const builder = {
        value: () => builder,
        lease: (id: string) => ((lease = id), builder),
        // Like the real client, a call past its deadline fails on its own.
        options: ({ deadline }: { deadline: Date }) =>
          new Promise<void>((resolve, reject) => {
            const put: PendingPut = {
              key,
              lease,
              sentAt: performance.now(),
              settled: false,
              ack: () => settle(() => resolve()),
              fail: (err) => settle(() => reject(err)),
            };
            const timer = setTimeout(
              () => put.fail(new Error('deadline exceeded')),
              deadline.getTime() - Date.now(),
            );
            const settle = (f: () => void) => {
              if (put.settled) return;
              put.settled = true;
              clearTimeout(timer);
              f();
            };
            puts.push(put);
          }),
      };
      return builder;
    },
  } as unknown as Etcd3;
  return { client, streams, revoked, puts, warmUps };
}

const TIMING = { ttlSeconds: 2 }; // renewal every 200 ms (each call bounded by 200 ms), D = 1400 ms, out by 1800 ms

describe('lease session (self-fence clock)', function () {
  const sessions: Session[] = [];
  /** Open a session, acknowledging the first write of its session key. */
  const open = async (etcd: ReturnType<typeof fakeEtcd>, renewVia?: Etcd3[]) => {
    const opening = Session.open(etcd.client, {
      node: 'n',
      timing: TIMING,
      ...(renewVia ? { renewVia } : {}),
    });
    await waitFor(() => etcd.puts.length === 1, { what: 'the first session-key write', timeoutMs: 1_000 });
    etcd.puts[0]!.ack();
    const session = await opening;
    sessions.push(session);
    return session;
  };
  const nextPut = async (etcd: ReturnType<typeof fakeEtcd>, n: number) => {
    await waitFor(() => etcd.puts.length >= n, { what: `session-key write #${n}`, timeoutMs: 3_000 });
    return etcd.puts[n - 1]!;
  };
  afterEach(async function () {
    await Promise.all(sessions.splice(0).map((s) => s.close()));
  });

  it('writes its session key on its own lease at open, so other nodes can see it renewed', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    expect(etcd.puts[0]).to.deep.include({ key: 'understudy/sessions/7', lease: '7' });
    expect(session.mayAct()).to.equal(true);
  });

  it('renews from the send time of an acknowledged session-key write, never from its answer', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    const renewals: Array<{ sentAt: number; rttMs: number }> = [];
    session.on('renewed', (e) => renewals.push(e));
    const put = await nextPut(etcd, 2);
    await waitFor(() => performance.now() - put.sentAt >= 120, { what: 'a slow answer', timeoutMs: 1_000 });
    put.ack();
    await waitFor(() => renewals.length === 1, { what: 'the renewal', timeoutMs: 1_000 });
    expect(renewals[0]!.sentAt).to.be.closeTo(put.sentAt, 2);
    expect(renewals[0]!.rttMs).to.be.at.least(120);
  });

  it('keepalive answers keep the lease but do not move the clock: only writes others can see do', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    let answered = 0;
    const answering = setInterval(() => {
      for (const stream of etcd.streams) if (stream.sends.length > 0 && !stream.ended) stream.answer();
      answered = etcd.streams.length;
    }, 20);
    try {
      const stop = await session.stopped();
      expect(stop.reason).to.equal('keepalive-timeout');
      expect(stop.sinceRenewalMs).to.be.at.least(1_400);
      expect(answered, 'keepalives answered meanwhile').to.be.at.least(3);
    } finally {
      clearInterval(answering);
    }
  });

  it('raises must-stop at D without acknowledged writes, refuses to act, and revokes when nothing runs under it', async function () {
    const etcd = fakeEtcd();
    const opening = performance.now();
    const session = await open(etcd);
    const stop: MustStop = await session.stopped();
    expect(stop.reason).to.equal('keepalive-timeout');
    expect(stop.sinceRenewalMs).to.be.at.least(1_400);
    // The operator is told why renewals failed, not just that they did.
    expect(stop.lastError).to.match(
      /^(session-key write failed: .+|keepalive (unanswered within \d+ ms|failed: .+)) \(endpoint 1 of 1\)$/,
    );
    // Less a millisecond: the wall clock, which counts too, ticks in whole milliseconds, so it
    // may say 1,400 ms have passed while the monotonic clock says 1,399.x.
    expect(performance.now() - opening).to.be.at.least(1_399);
    expect(session.mayAct()).to.equal(false);
    expect((await session.lost()).revoked).to.equal(true);
    expect(etcd.revoked).to.deep.equal(['7']);
  });

  it('tells, at must-stop, every renewal attempt that failed since the last acknowledged one: endpoint, send time, duration, error', async function () {
    const first = fakeEtcd();
    const second = fakeEtcd();
    const session = await open(first, [first.client, second.client]);
    const stop = await session.stopped();
    const attempts = (stop.failedRenewals ?? '').split('; ');
    // Neither endpoint answered: renewals went back and forth between them, each attempt
    // abandoned at its bound (200 ms at T = 2 s), and the account shows it.
    expect(attempts.length, stop.failedRenewals).to.be.at.least(4);
    for (const a of attempts) {
      expect(a).to.match(
        /^(write|keepalive) to endpoint [12] at \+\d+ ms failed after \d+ ms: (session-key write failed|keepalive unanswered)/,
      );
      expect(Number(/failed after (\d+) ms/.exec(a)![1])).to.be.at.least(195);
    }
    expect(stop.failedRenewals).to.include('endpoint 1').and.to.include('endpoint 2');
  });

  it('an acknowledgement arriving after D does not revive the session', async function () {
    const etcd = fakeEtcd({ enforceDeadline: false });
    const session = await open(etcd);
    const late = await nextPut(etcd, 2);
    await waitFor(() => !session.mayAct(), { what: 'the self-fence deadline', timeoutMs: 3_000 });
    late.ack();
    await new Promise((resolve) => setImmediate(resolve));
    expect(session.mayAct()).to.equal(false);
    expect(session.state).to.not.equal('alive');
  });

  it('a write left unanswered (a frozen member) is sent again to the next endpoint within T/10, well before D', async function () {
    const frozen = fakeEtcd();
    const healthy = fakeEtcd();
    const session = await open(frozen, [frozen.client, healthy.client]);
    const stuck = await nextPut(frozen, 2);
    const retry = await nextPut(healthy, 1);
    expect(retry.sentAt - stuck.sentAt).to.be.below(1_400 / 2);
    retry.ack();
    await waitFor(() => session.msUntilSelfFence() > 1_100, {
      what: 'renewed by the retry',
      timeoutMs: 1_000,
    });
    expect(session.mayAct()).to.equal(true);
  });

  it('a host suspended past D (monotonic clock stood still, wall clock went on) refuses to act on resume', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    const realNow = Date.now;
    Date.now = () => realNow() + 1_500; // the 1.5 s the suspension took, unseen by performance.now()
    try {
      expect(session.mayAct()).to.equal(false);
      expect((await session.stopped()).sinceRenewalMs).to.be.at.least(1_500);
    } finally {
      Date.now = realNow;
    }
  });

  it('treats TTL 0 as the lease gone: must-stop and lost at once', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    await waitFor(() => etcd.streams.some((s) => s.sends.length === 1), {
      what: 'a keepalive sent',
      timeoutMs: 1_000,
    });
    etcd.streams.find((s) => s.sends.length === 1)!.answer('0');
    expect((await session.stopped()).reason).to.equal('lease-gone');
    expect((await session.lost()).reason).to.equal('lease-gone');
    expect(session.mayAct()).to.equal(false);
  });

  it('treats a write refused for want of the lease as the lease gone', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    (await nextPut(etcd, 2)).fail(new EtcdLeaseInvalidError('7'));
    expect((await session.stopped()).reason).to.equal('lease-gone');
    expect(etcd.revoked).to.deep.equal([]);
  });

  it('sends each keepalive on a stream of its own, cancelled after its answer or its bound', async function () {
    const etcd = fakeEtcd();
    await open(etcd);
    await waitFor(() => etcd.streams.length >= 3, { what: 'three keepalives', timeoutMs: 3_000 });
    expect(etcd.streams.slice(0, 2).map((s) => [s.sends.length, s.ended])).to.deep.equal([
      [1, true],
      [1, true],
    ]);
  });

  it('a keepalive stream that opens only after its bound ran out is dropped at once, not left open', async function () {
    const etcd = fakeEtcd({ keepaliveOpenMs: 300 }); // the bound is 200 ms at T = 2 s
    await open(etcd);
    await waitFor(() => etcd.streams.length >= 2, { what: 'two late streams', timeoutMs: 3_000 });
    expect(etcd.streams.slice(0, 2).map((s) => [s.sends.length, s.ended])).to.deep.equal([
      [0, true],
      [0, true],
    ]);
  });

  it('opens its renewal channels to every endpoint as it starts, so a move between members waits for no connection', async function () {
    const first = fakeEtcd();
    const second = fakeEtcd();
    const session = await open(first, [first.client, second.client]);
    const key = new Keys().session(session.leaseId);
    for (const etcd of [first, second]) {
      expect(etcd.warmUps).to.have.members([`get ${key}`, `ttl ${session.leaseId}`]);
    }
  });

  it('a keepalive unanswered within its bound moves renewals to the next endpoint', async function () {
    const frozen = fakeEtcd();
    const healthy = fakeEtcd();
    await open(frozen, [frozen.client, healthy.client]);
    // The first endpoint acknowledged only the opening write; from then on it answers nothing.
    await waitFor(() => healthy.streams.length > 0 || healthy.puts.length > 0, {
      what: 'a renewal on the second endpoint',
      timeoutMs: 2_000,
    });
    const firstTry = frozen.streams[0]!.sends[0]!;
    const moved = Math.min(healthy.streams[0]?.sends[0] ?? Infinity, healthy.puts[0]?.sentAt ?? Infinity);
    // It was tried first, and left only once its bound (200 ms at T = 2 s) ran out.
    expect(moved - firstTry).to.be.at.least(190);
  });

  it('never revokes while a service may run under it: a hold delays the revoke until released', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    const release = session.hold();
    const closing = session.close();
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(etcd.revoked, 'revoked with a service still held').to.deep.equal([]);
    release();
    expect((await closing).revoked).to.equal(true);
    expect(etcd.revoked).to.deep.equal(['7']);
  });

  it('a hold never released (a logout that went wrong) is revoked at the must-be-out instant, not before', async function () {
    const etcd = fakeEtcd();
    const session = await open(etcd);
    session.hold();
    const stop = await session.stopped();
    const lost = await session.lost();
    expect(lost.revoked).to.equal(true);
    expect(performance.now()).to.be.at.least(stop.mustBeOutBy);
  });

  it('refuses a lease whose granted TTL differs from the one asked, naming both', async function () {
    const etcd = fakeEtcd({ grantedTtl: '5' });
    const err = await Session.open(etcd.client, { node: 'n', timing: TIMING }).catch((e: unknown) => e);
    expect((err as Error).message).to.match(
      /granted a lease TTL of 5 s for the 2 s asked \(lease\.ttlSeconds\)/,
    );
    expect(etcd.revoked).to.deep.equal(['7']);
  });

  it('re-validates a precomputed timing object instead of trusting it', async function () {
    const bad = { ...leaseTiming({ ttlSeconds: 6 }), selfFenceMs: 5_900 };
    const err = await Session.open(fakeEtcd().client, { node: 'n', timing: bad }).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(LeaseTimingError);
  });
});

describe('lease session on a manual clock (the self-fence deadline, to the millisecond)', function () {
  const sessions: Session[] = [];
  /** Open a session on `clock` (monotonic 1000 at open), acknowledging its first write. */
  const open = async (etcd: ReturnType<typeof fakeEtcd>, clock: ManualClock) => {
    const opening = Session.open(etcd.client, { node: 'n', timing: TIMING, clock });
    await waitFor(() => etcd.puts.length === 1, { what: 'the first session-key write', timeoutMs: 1_000 });
    etcd.puts[0]!.ack();
    const session = await opening;
    sessions.push(session);
    return session;
  };
  afterEach(async function () {
    for (const s of sessions.splice(0)) {
      void s.close();
      // Let the revoke run without waiting out a hold on a clock nobody moves.
      await (s.clock as ManualClock).advance(10_000);
    }
  });

  it('raises must-stop at D after the send of the last acknowledged write: alive 1 ms before, stopped at D', async function () {
    const etcd = fakeEtcd();
    const clock = new ManualClock({ monotonicMs: 1_000 });
    const session = await open(etcd, clock);
    let stop: MustStop | undefined;
    session.on('must-stop', (e) => (stop = e));
    await clock.advance(1_399);
    expect(stop, 'must-stop before D').to.equal(undefined);
    expect(session.mayAct()).to.equal(true);
    expect(session.msUntilSelfFence()).to.equal(1);
    await clock.advance(1);
    expect(stop).to.deep.include({
      reason: 'keepalive-timeout',
      sinceRenewalMs: 1_400,
      mustBeOutBy: 1_000 + 1_800,
    });
    expect(session.mayAct()).to.equal(false);
  });

  it("a fence timer that fires early (Node times timers from the event loop's cached now) still stops the session at D", async function () {
    /** Long timers fire 50 ms early, as when armed late in a busy tick; short ones on time. */
    class EarlyClock extends ManualClock {
      override after(ms: number, fn: () => void): () => void {
        return super.after(ms >= 100 ? ms - 50 : ms, fn);
      }
    }
    const etcd = fakeEtcd();
    const clock = new EarlyClock({ monotonicMs: 1_000 });
    const session = await open(etcd, clock);
    let stop: MustStop | undefined;
    session.on('must-stop', (e) => (stop = e));
    await clock.advance(1_401);
    expect(stop, 'must-stop by D').to.deep.include({ reason: 'keepalive-timeout' });
    expect(stop!.sinceRenewalMs).to.be.within(1_400, 1_401);
  });

  it('an acknowledged write moves the deadline to its own send time + D, whenever its answer came', async function () {
    const etcd = fakeEtcd();
    const clock = new ManualClock({ monotonicMs: 1_000 });
    const session = await open(etcd, clock);
    etcd.puts[1]!.ack(); // the first renewal, sent at open (1000)
    await clock.advance(200); // the next renewal is sent at 1200 …
    const renewal = etcd.puts[2]!;
    await clock.advance(300); // … and answered at 1500
    renewal.ack();
    await clock.advance(0);
    expect(session.msUntilSelfFence()).to.equal(1_200 + 1_400 - 1_500);
    await clock.advance(1_099);
    expect(session.mayAct()).to.equal(true);
    await clock.advance(2);
    expect(session.mayAct()).to.equal(false);
  });

  it('a host suspended past D (only the wall clock moved) refuses to act on resume', async function () {
    const clock = new ManualClock({ monotonicMs: 1_000 });
    const session = await open(fakeEtcd(), clock);
    clock.stepWall(1_400);
    expect(session.mayAct()).to.equal(false);
    expect((await session.stopped()).sinceRenewalMs).to.equal(1_400);
  });

  it('a hold never released is revoked at the must-be-out instant, not before', async function () {
    const etcd = fakeEtcd();
    const clock = new ManualClock({ monotonicMs: 1_000 });
    const session = await open(etcd, clock);
    session.hold();
    await clock.advance(1_401); // must-stop at D
    expect(session.state).to.equal('stopping');
    await clock.advance(1_800 - 1_401 - 1); // one ms before the must-be-out instant
    expect(etcd.revoked).to.deep.equal([]);
    await clock.advance(2);
    expect(etcd.revoked).to.deep.equal(['7']);
    expect((await session.lost()).revoked).to.equal(true);
  });
});

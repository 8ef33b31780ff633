// The bound on an etcd client's calls in flight (pkg/lease/call-slots.ts): calls past it wait
// their turn in order, and no longer than their wait: a call made from inside a running one
// (the etcd3 library's retry after a stale auth token) fails instead of waiting for ever.
import { expect } from 'chai';
import { GRPCDeadlineExceededError } from 'etcd3';
import { CallSlots } from '../../pkg/lease/call-slots.js';

/** A call that stays in flight until released. */
function pending<T>(value: T) {
  let release!: () => void;
  const started = { yes: false };
  const call = async () => {
    started.yes = true;
    await new Promise<void>((resolve) => (release = resolve));
    return value;
  };
  return { call, started, release: () => release() };
}

const tick = () => new Promise((resolve) => setImmediate(resolve));

describe('etcd call slots: a bound on calls in flight', function () {
  it('runs at most `limit` calls; the others wait and start in the order they came', async function () {
    const slots = new CallSlots(2, 60_000);
    const calls = [1, 2, 3, 4].map((n) => pending(n));
    const results = calls.map((c) => slots.run(c.call));
    await tick();
    expect(calls.map((c) => c.started.yes)).to.deep.equal([true, true, false, false]);
    expect(slots.stats).to.deep.equal({ running: 2, waiting: 2 });
    calls[1]!.release();
    await tick();
    expect(calls.map((c) => c.started.yes)).to.deep.equal([true, true, true, false]);
    calls[0]!.release();
    calls[2]!.release();
    await tick();
    calls[3]!.release();
    expect(await Promise.all(results)).to.deep.equal([1, 2, 3, 4]);
    expect(slots.stats).to.deep.equal({ running: 0, waiting: 0 });
  });

  it('a call that gets no slot within its wait fails as timed out; one made inside a running call cannot wedge the slots', async function () {
    const slots = new CallSlots(1, 20);
    const blocked = pending('later');
    // Every slot is held by a call that waits for another call: a bound without a wait
    // limit would hold that slot for ever.
    const outer = slots.run(async () => `outer after ${await slots.run(async () => 'inner')}`);
    const queued = slots.run(blocked.call);
    const err = await outer.catch((e: unknown) => e);
    expect(err).to.be.instanceOf(GRPCDeadlineExceededError);
    expect((err as Error).message).to.match(/no etcd call slot within 20 ms/);
    // The slot the failed call held goes to the next in line.
    await tick();
    expect(blocked.started.yes).to.equal(true);
    blocked.release();
    expect(await queued).to.equal('later');
    expect(slots.stats).to.deep.equal({ running: 0, waiting: 0 });
  });

  it('frees the slot when a call fails', async function () {
    const slots = new CallSlots(1, 60_000);
    const failed = slots.run(async () => {
      throw new Error('deadline exceeded');
    });
    await failed.catch(() => undefined);
    expect(await slots.run(async () => 'next')).to.equal('next');
    expect(slots.stats).to.deep.equal({ running: 0, waiting: 0 });
  });

  it('refuses a limit below one', function () {
    expect(() => new CallSlots(0, 1_000)).to.throw(/limit must be ≥ 1/);
  });
});

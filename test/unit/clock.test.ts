import { expect } from 'chai';
import { ManualClock } from '../../pkg/clock/index.js';

describe('ManualClock (time moves only when a test moves it)', function () {
  it('fires timers in deadline order, each with the clock at its deadline', async function () {
    const clock = new ManualClock({ monotonicMs: 0, wallMs: 0 });
    const seen: string[] = [];
    clock.after(300, () => seen.push(`b@${clock.monotonicMs()}`));
    clock.after(100, () => seen.push(`a@${clock.monotonicMs()}`));
    clock.after(900, () => seen.push('late'));
    await clock.advance(500);
    expect(seen).to.deep.equal(['a@100', 'b@300']);
    expect(clock.monotonicMs()).to.equal(500);
    expect(clock.pending).to.equal(1);
  });

  it('runs a loop that sleeps again within one advance', async function () {
    const clock = new ManualClock({ monotonicMs: 0 });
    let ticks = 0;
    const stop = new AbortController();
    const loop = (async () => {
      while (!stop.signal.aborted) {
        await clock.sleep(100, stop.signal);
        if (!stop.signal.aborted) ticks++;
      }
    })();
    await clock.advance(1_000);
    expect(ticks).to.equal(10);
    stop.abort();
    await loop;
  });

  it('a cancelled timer never fires; an aborted sleep resolves at once', async function () {
    const clock = new ManualClock();
    let fired = false;
    const cancel = clock.after(10, () => (fired = true));
    cancel();
    const stop = new AbortController();
    const slept = clock.sleep(10_000, stop.signal);
    stop.abort();
    await slept;
    await clock.advance(20);
    expect(fired).to.equal(false);
  });

  it('the wall clock can be stepped alone, the monotonic clock cannot go back', async function () {
    const clock = new ManualClock({ monotonicMs: 0, wallMs: 1_000 });
    clock.stepWall(-500);
    await clock.advance(100);
    expect(clock.wallMs()).to.equal(600);
    expect(clock.monotonicMs()).to.equal(100);
  });
});

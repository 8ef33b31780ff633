// A campaign's retries are visible (pkg/lease/retry.ts): its owner hears when a streak of
// failures starts, when its reason changes, and when attempts get through again.
import { expect } from 'chai';
import { ManualClock } from '../../pkg/clock/index.js';
import { PeerHealth } from '../../pkg/lease/peers.js';
import { backoffMs, RETRY_MAX_MS, RETRY_MS, RetryReport, type CampaignRetry } from '../../pkg/lease/retry.js';
import { retryDelayMs } from '../../pkg/lease/watch.js';

function report() {
  const clock = new ManualClock({ wallMs: 1_000_000 });
  const told: Array<CampaignRetry | undefined> = [];
  return { clock, told, retries: new RetryReport(clock, (r) => told.push(r)) };
}

describe('retry report: every failure a loop retries after is visible, once per change', function () {
  it('tells the start of a streak, not every attempt of it, and counts the attempts', async function () {
    const { clock, told, retries } = report();
    retries.failed('campaign', 'reading the leader key', new Error('permission denied'));
    await clock.advance(200);
    retries.failed('campaign', 'reading the leader key', new Error('permission denied'));
    retries.failed('campaign', 'reading the leader key', new Error('permission denied'));
    expect(told).to.deep.equal([
      { what: 'reading the leader key', error: 'permission denied', since: 1_000_000, attempts: 1 },
    ]);
    expect(retries.current).to.deep.equal({
      what: 'reading the leader key',
      error: 'permission denied',
      since: 1_000_000,
      attempts: 3,
    });
  });

  it('a new figure in the same message is no new reason; a new message or step is', function () {
    const { told, retries } = report();
    retries.failed('campaign', 'reading the leader key', new Error('deadline exceeded after 2001 ms'));
    retries.failed('campaign', 'reading the leader key', new Error('deadline exceeded after 2003 ms'));
    expect(told).to.have.length(1);
    retries.failed('campaign', 'reading the leader key', new Error('permission denied'));
    retries.failed('campaign', 'registering as a candidate', new Error('permission denied'));
    expect(told.map((t) => [t?.what, t?.error, t?.attempts])).to.deep.equal([
      ['reading the leader key', 'deadline exceeded after 2001 ms', 1],
      ['reading the leader key', 'permission denied', 3],
      ['registering as a candidate', 'permission denied', 4],
    ]);
  });

  it('says undefined once an attempt gets through, and only if something was being retried', function () {
    const { told, retries } = report();
    retries.succeeded('campaign');
    expect(told).to.deep.equal([]);
    retries.failed('campaign', 'creating the leader key', 'etcd unreachable');
    retries.succeeded('campaign');
    retries.succeeded('campaign');
    expect(told.map((t) => t?.error)).to.deep.equal(['etcd unreachable', undefined]);
    expect(retries.current).to.equal(undefined);
  });

  it('a loop getting through does not hide another that still fails', function () {
    const { told, retries } = report();
    retries.failed('login gate', 'reading the earlier term', new Error('deadline exceeded'));
    retries.failed('own-key watch', 'watching the leader key again', new Error('unavailable'));
    retries.succeeded('own-key watch');
    expect(told.map((t) => t?.what)).to.deep.equal([
      'reading the earlier term',
      'watching the leader key again',
      'reading the earlier term',
    ]);
    retries.succeeded('login gate');
    expect(told.at(-1)).to.equal(undefined);
  });

  it("the view of other sessions says when it fails and when it recovers, never 'recovered' unprompted", function () {
    const health = new PeerHealth();
    const seen: Array<string | undefined> = [];
    health.on('change', (err) => seen.push(err?.message));
    health.report(undefined); // a first snapshot: nothing was wrong
    health.report(new Error('14 UNAVAILABLE'));
    expect(health.current?.message).to.equal('14 UNAVAILABLE');
    health.report(undefined);
    expect(seen).to.deep.equal(['14 UNAVAILABLE', undefined]);
    expect(health.current).to.equal(undefined);
  });
});

describe('watch retries after a failed read', () => {
  it('back off exponentially to 5 s, jittered over the upper half so that many clients spread', () => {
    expect([1, 2, 3, 4, 5, 9].map((a) => retryDelayMs(a, () => 1))).to.deep.equal([
      500, 1000, 2000, 4000, 5000, 5000,
    ]);
    expect([1, 2, 5].map((a) => retryDelayMs(a, () => 0))).to.deep.equal([250, 500, 2500]);
  });
});

describe('a loop that keeps failing waits longer each time', () => {
  it('doubles from RETRY_MS up to RETRY_MAX_MS, so an overloaded etcd is not retried in step', () => {
    expect([1, 2, 3, 4, 5, 40].map((f) => backoffMs(f, undefined, () => 1))).to.deep.equal([
      RETRY_MS,
      2 * RETRY_MS,
      4 * RETRY_MS,
      8 * RETRY_MS,
      RETRY_MAX_MS,
      RETRY_MAX_MS,
    ]);
    // The jitter spreads over the upper half: never below half the ceiling.
    expect([1, 40].map((f) => backoffMs(f, undefined, () => 0))).to.deep.equal([
      RETRY_MS / 2,
      RETRY_MAX_MS / 2,
    ]);
  });

  it('counts the failures in a row per loop, from 1 again after a success', () => {
    const { retries } = report();
    expect(retries.failed('campaign', 'reading', new Error('timeout'))).to.equal(1);
    expect(retries.failed('campaign', 'reading', new Error('timeout'))).to.equal(2);
    expect(retries.failed('login gate', 'reading', new Error('timeout'))).to.equal(1);
    retries.succeeded('campaign');
    expect(retries.failed('campaign', 'reading', new Error('timeout'))).to.equal(1);
  });
});

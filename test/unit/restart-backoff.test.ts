import { expect } from 'chai';
import { backoffDelayMs, countCrash, restartDecision } from '../../pkg/identity/process.js';

const policy = { maxAttempts: 3, backoffMs: 200, maxBackoffMs: 1_000, resetAfterMs: 60_000 };

describe('process restart schedule', function () {
  it('doubles the delay from backoffMs and caps it at maxBackoffMs', function () {
    expect([1, 2, 3, 4, 5, 6].map((n) => backoffDelayMs(n, policy))).to.deep.equal([
      200, 400, 800, 1000, 1000, 1000,
    ]);
  });

  it('never overflows for absurd attempt counts', function () {
    expect(backoffDelayMs(10_000, policy)).to.equal(1000);
  });

  it('counts consecutive crashes, starting over after a run of resetAfterMs', function () {
    expect(countCrash(0, 10, 60_000)).to.equal(1);
    expect(countCrash(2, 59_999, 60_000)).to.equal(3);
    expect(countCrash(5, 60_000, 60_000)).to.equal(1);
  });

  it('restarts maxAttempts times, then gives up on the next crash', function () {
    expect(restartDecision(1, policy)).to.deep.equal({ action: 'restart', attempt: 1, delayMs: 200 });
    expect(restartDecision(3, policy)).to.deep.equal({ action: 'restart', attempt: 3, delayMs: 800 });
    expect(restartDecision(4, policy)).to.deep.equal({ action: 'give-up', crashes: 4 });
  });

  it('gives up at the first crash when maxAttempts is 0', function () {
    expect(restartDecision(1, { ...policy, maxAttempts: 0 })).to.deep.equal({
      action: 'give-up',
      crashes: 1,
    });
  });
});

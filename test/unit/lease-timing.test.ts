import { expect } from 'chai';
import { leaseTiming, LeaseTimingError } from '../../pkg/lease/timing.js';

describe('lease timing (the self-fencing inequality)', function () {
  it('defaults satisfy D + logout budget <= T × (1 − drift)', function () {
    const t = leaseTiming({ ttlSeconds: 6 });
    expect(t.keepaliveIntervalMs).to.equal(600);
    expect(t.selfFenceMs).to.equal(4200);
    expect(t.selfFenceMs + t.logoutBudgetMs).to.be.at.most(t.ttlMs * (1 - t.driftMargin));
  });

  it('accepts explicit values that satisfy the inequality', function () {
    const t = leaseTiming({ ttlSeconds: 10, selfFenceMs: 5000, logoutBudgetMs: 3000, driftMargin: 0.2 });
    expect(t.mustBeOutByMs).to.equal(8000);
  });

  it('refuses a logout budget that would outlive the lease, naming the values', function () {
    const err = (() => {
      try {
        leaseTiming({ ttlSeconds: 6, selfFenceMs: 4000, logoutBudgetMs: 2000 });
      } catch (e) {
        return e;
      }
    })();
    expect(err).to.be.instanceOf(LeaseTimingError);
    expect((err as LeaseTimingError).field).to.equal('logoutBudgetMs');
    expect((err as Error).message).to.match(/4000.*2000.*6000 ms exceeds.*5400 ms/);
  });

  it('refuses a TTL below what etcd grants', function () {
    expect(() => leaseTiming({ ttlSeconds: 1 })).to.throw(LeaseTimingError, /ttlSeconds/);
  });

  it('refuses a self-fence deadline shorter than one keepalive interval', function () {
    expect(() => leaseTiming({ ttlSeconds: 6, selfFenceMs: 500 })).to.throw(
      LeaseTimingError,
      /selfFenceMs \(500\) must exceed the keepalive interval T\/10 \(600 ms\)/,
    );
  });

  it('names the field and its bounds when a value is out of range', function () {
    expect(() => leaseTiming({ ttlSeconds: 2.5 })).to.throw(
      LeaseTimingError,
      /ttlSeconds: must be a whole number of seconds/,
    );
    expect(() => leaseTiming({ ttlSeconds: 5, selfFenceMs: 0 })).to.throw(
      LeaseTimingError,
      /selfFenceMs: must be at least 1 ms; raise it/,
    );
  });

  it('refuses unknown fields (a typo must not silently fall back to a default)', function () {
    expect(() => leaseTiming({ ttlSeconds: 6, selfFenceMS: 3000 } as never)).to.throw(LeaseTimingError);
  });
});

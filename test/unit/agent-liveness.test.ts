// What an agent's heartbeat says about each service it leads: the last check, for the term it
// was taken under, and only while fresh; checks run a bounded number at a time.
import { expect } from 'chai';
import { LIVENESS_CONCURRENCY, ServiceLiveness } from '../../pkg/agent/liveness.js';

describe('agent: service liveness in heartbeats', () => {
  let now = 0;
  const clock = () => now;

  it('reports the last check for the term it was taken under', async () => {
    const l = new ServiceLiveness(clock, 4_000);
    await l.refresh([
      { identity: 'up', token: 7n, check: async () => true },
      { identity: 'frozen', token: 7n, check: async () => false },
      { identity: 'broken', token: 7n, check: async () => Promise.reject(new Error('channel closed')) },
    ]);
    expect(l.report('up', 7n)).to.equal(true);
    expect(l.report('frozen', 7n)).to.equal(false);
    expect(l.report('broken', 7n), 'a check that throws is a failed check').to.equal(false);
    expect(l.report('up', 8n), 'a newer term was not checked').to.equal(undefined);
    expect(l.report('up', undefined)).to.equal(undefined);
    expect(l.report('never', 7n)).to.equal(undefined);
  });

  it('says nothing once the check is older than its limit, and forgets services no longer led', async () => {
    now = 1_000;
    const l = new ServiceLiveness(clock, 4_000);
    await l.refresh([{ identity: 'up', token: 7n, check: async () => true }]);
    now = 5_000;
    expect(l.report('up', 7n)).to.equal(true);
    now = 5_001;
    expect(l.report('up', 7n)).to.equal(undefined);
    await l.refresh([]);
    now = 5_001;
    expect(l.report('up', 7n)).to.equal(undefined);
  });

  it(`checks ${LIVENESS_CONCURRENCY} services at a time, and a round still running is not doubled`, async () => {
    const l = new ServiceLiveness(clock, 4_000);
    let running = 0;
    let most = 0;
    let calls = 0;
    const release: Array<() => void> = [];
    const subjects = Array.from({ length: 40 }, (_, i) => ({
      identity: `id${i}`,
      token: 1n,
      check: () =>
        new Promise<boolean>((resolve) => {
          calls++;
          most = Math.max(most, ++running);
          release.push(() => {
            running--;
            resolve(true);
          });
        }),
    }));
    const round = l.refresh(subjects);
    void l.refresh(subjects); // asked again while the first runs: ignored
    while (release.length > 0 || running > 0) {
      release.splice(0).forEach((r) => r());
      await new Promise((r) => setImmediate(r));
    }
    await round;
    expect(most).to.equal(LIVENESS_CONCURRENCY);
    expect(calls).to.equal(40);
    expect(l.report('id39', 1n)).to.equal(true);
  });
});

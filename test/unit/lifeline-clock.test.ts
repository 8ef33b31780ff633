// The clock the lifeline's deadline instants are written on: /proc/uptime, read by the agent
// exactly as the reaper's shell reads it (whole seconds and hundredths, no rounding).
import { expect } from 'chai';
import { uptimeMs } from '../../pkg/clock/uptime.js';

describe('lifeline clock (/proc/uptime in ms)', () => {
  const cases: Array<[string, number]> = [
    ['12345.67 23456.01\n', 12_345_670],
    ['0.07 0.00\n', 70],
    ['40391.80 80000.00\n', 40_391_800],
  ];
  for (const [text, ms] of cases) {
    it(`reads ${JSON.stringify(text.split(' ')[0])} as ${ms} ms`, () => {
      expect(uptimeMs(text)).to.equal(ms);
    });
  }

  it('refuses a reading it does not understand, quoting it', () => {
    expect(() => uptimeMs('abc')).to.throw(/unexpected \/proc\/uptime: "abc"/);
  });

  it('reads this machine', () => {
    const before = uptimeMs();
    expect(before).to.be.above(0);
    expect(uptimeMs()).to.be.at.least(before);
  });
});

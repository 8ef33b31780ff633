// Readings beside a benchmark (bench/sampling.ts): a steady loop that keeps what it reads, and
// the kernel's CPU pressure.
import { existsSync } from 'node:fs';
import { expect } from 'chai';
import { cpuWaitedUs, sampleEvery } from '../../bench/sampling.js';
import { waitFor } from '../support/wait.js';

describe('bench: readings taken while it runs', function () {
  it('reads at once, then at every interval, and once more when stopped, in order', async function () {
    let n = 0;
    const sampler = sampleEvery(5, () => ++n);
    expect(n, 'the first reading is taken at once').to.equal(1);
    await waitFor(() => n >= 3, { what: 'two readings on the interval', timeoutMs: 10_000, intervalMs: 5 });
    const before = n;
    const samples = sampler.stop();
    expect(n, 'stop takes a last reading').to.equal(before + 1);
    expect(samples).to.deep.equal(Array.from({ length: n }, (_, i) => i + 1));
    const last = n;
    await new Promise((resolve) => setTimeout(resolve, 20));
    expect(n, 'nothing is read after stop').to.equal(last);
  });

  it('skips a reading that came back undefined (a counter not there, or not on this kernel)', function () {
    let n = 0;
    const sampler = sampleEvery(3_600_000, () => (++n % 2 === 0 ? n : undefined));
    expect(sampler.stop()).to.deep.equal([2]);
  });

  it("reads the kernel's CPU pressure as a count that only grows, and nothing where the kernel keeps none", function () {
    const first = cpuWaitedUs();
    if (first === undefined) {
      expect(existsSync('/proc/pressure/cpu'), 'undefined only without PSI').to.equal(false);
      return;
    }
    expect(first).to.be.a('number').and.at.least(0);
    expect(cpuWaitedUs()).to.be.at.least(first);
  });
});

// Readings taken beside a benchmark while it runs: the kernel's CPU pressure, and a loop that
// reads any counter at a steady pace. Kept cheap (one small read each) so that they do not
// add to what they measure.
import { readFileSync } from 'node:fs';

const PRESSURE_FILE = '/proc/pressure/cpu';

/**
 * Microseconds, since boot, in which some runnable task waited for a core (the kernel's
 * "some" CPU pressure total): what says whether a slow step waited for a core rather than for
 * etcd or the network. Undefined on a kernel without pressure stall information.
 */
export function cpuWaitedUs(): number | undefined {
  try {
    const some = /^some .*total=(\d+)/m.exec(readFileSync(PRESSURE_FILE, 'utf8'));
    return some ? Number(some[1]) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Take a reading now, every `everyMs`, and once more when stopped; `stop` returns them in
 * order. A reading that comes back undefined is skipped (a counter not there yet, or not on
 * this kernel).
 */
export function sampleEvery<S>(everyMs: number, read: () => S | undefined): { stop(): S[] } {
  const samples: S[] = [];
  const take = () => {
    const sample = read();
    if (sample !== undefined) samples.push(sample);
  };
  const timer = setInterval(take, everyMs);
  take();
  return {
    stop: () => {
      clearInterval(timer);
      take();
      return samples;
    },
  };
}

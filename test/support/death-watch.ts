// When processes die, seen from outside the code under test and off the test's event loop.
// A child's 'exit' event is late by however long this process takes to handle a thousand
// SIGCHLDs at once (libuv asks every child handle in turn); that latency is the observer's,
// not the reaper's. A worker thread reading /proc sees a process dead within a pass over /proc
// of its being a zombie or gone (tens of ms for a thousand), whatever the main thread does.
import { Worker } from 'node:worker_threads';

/** Pause between passes over /proc: the resolution of the death times, at a small CPU cost. */
const POLL_PAUSE_MS = 2;

const WATCHER = `
const { parentPort, workerData } = require('node:worker_threads');
const { readFileSync } = require('node:fs');
const { pids, pauseMs, timeoutMs } = workerData;
const now = () => performance.timeOrigin + performance.now();
const pause = new Int32Array(new SharedArrayBuffer(4));
function dead(pid) {
  try {
    const stat = readFileSync('/proc/' + pid + '/stat', 'latin1');
    return stat.charAt(stat.lastIndexOf(')') + 2) === 'Z';
  } catch {
    return true;
  }
}
const deaths = {};
let alive = pids.slice();
const until = now() + timeoutMs;
parentPort.postMessage({ watching: true });
while (alive.length > 0 && now() < until) {
  const still = [];
  for (const pid of alive) {
    if (dead(pid)) deaths[pid] = now();
    else still.push(pid);
  }
  alive = still;
  if (alive.length > 0) Atomics.wait(pause, 0, 0, pauseMs);
}
parentPort.postMessage({ deaths, alive });
`;

export interface Deaths {
  /** Wall-clock instant (performance.timeOrigin + performance.now()) each pid was first seen dead. */
  at: Map<number, number>;
  /** Pids still alive when the watch timed out. */
  alive: number[];
}

/**
 * Start watching `pids`; resolves once the worker is polling. `deaths` settles when all are
 * dead or `timeoutMs` passed. Times are wall-clock milliseconds: compare them with
 * `performance.timeOrigin + performance.now()` taken on the main thread.
 */
export async function watchDeaths(pids: number[], timeoutMs: number): Promise<{ deaths: Promise<Deaths> }> {
  const worker = new Worker(WATCHER, {
    eval: true,
    workerData: { pids, pauseMs: POLL_PAUSE_MS, timeoutMs },
  });
  let started!: () => void;
  const watching = new Promise<void>((resolve) => (started = resolve));
  const deaths = new Promise<Deaths>((resolve, reject) => {
    worker.on('error', reject);
    type Message = {
      watching?: true;
      deaths?: Record<string, number>;
      alive?: number[];
    };
    const byPid = (times: Record<string, number> | undefined) =>
      new Map(Object.entries(times ?? {}).map(([pid, t]) => [Number(pid), t]));
    worker.on('message', (m: Message) => {
      if (m.watching) return started();
      resolve({
        at: byPid(m.deaths),
        alive: m.alive ?? [],
      });
      void worker.terminate();
    });
  });
  await Promise.race([watching, deaths]);
  return { deaths };
}

/** Now, on the clock watchDeaths reports in. */
export function wallNow(): number {
  return performance.timeOrigin + performance.now();
}

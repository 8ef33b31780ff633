// The renewal thread's body (renewal-thread.ts): renew every interval on connections of its
// own, record each acknowledged renewal in shared memory, and stop for good at the
// self-fence deadline, when the main thread stops showing signs of life, or when told.
import { readlinkSync } from 'node:fs';
import { setPriority } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import { systemClock, type Clock } from '../clock/index.js';
import { perEndpointClients } from './etcd.js';
import {
  hrMs,
  RENEWAL_NICE,
  SLOT,
  type ThreadBegin,
  type ThreadInput,
  type ThreadMessage,
} from './renewal-shared.js';
import { Renewer, type FailedAttempt } from './renewer.js';

const input = workerData as ThreadInput;
const shared = new BigInt64Array(input.shared);
const post = (m: ThreadMessage) => parentPort?.postMessage(m);
// One monotonic clock across threads: the process-wide one, not this thread's performance.now().
const clock: Clock = { ...systemClock, monotonicMs: hrMs };
// Buffers cross threads as plain Uint8Arrays: give the client Buffers back.
const credentials = input.connect.credentials && {
  rootCertificate: Buffer.from(input.connect.credentials.rootCertificate),
  ...(input.connect.credentials.privateKey
    ? { privateKey: Buffer.from(input.connect.credentials.privateKey) }
    : {}),
  ...(input.connect.credentials.certChain
    ? { certChain: Buffer.from(input.connect.credentials.certChain) }
    : {}),
};

/** Raise this thread alone (Linux: a thread's id is a pid for setpriority). */
function raisePriority(): string | undefined {
  try {
    const tid = Number(readlinkSync('/proc/thread-self').split('/').pop());
    if (!Number.isInteger(tid) || tid <= 0) return 'no thread id in /proc/thread-self';
    setPriority(tid, RENEWAL_NICE);
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

const clients = perEndpointClients({ ...input.connect, ...(credentials ? { credentials } : {}) });

let lastSentAt = 0;
let lastSentWall = 0;
let stopped = false;
let timer: NodeJS.Timeout | undefined;
let lastTrouble: string | undefined;
let lastAttempt: FailedAttempt | undefined;
let renewer: Renewer | undefined;

function stop(why?: string): void {
  if (stopped) return;
  stopped = true;
  clearTimeout(timer);
  if (why) post({ type: 'trouble', error: why, attempts: [...(renewer?.failedAttempts ?? [])] });
  for (const c of clients) c.close();
  parentPort?.close();
}

function mayRenew(): boolean {
  if (stopped) return false;
  const since = Math.max(hrMs() - lastSentAt, Date.now() - lastSentWall);
  if (since >= input.selfFenceMs) {
    stop(`no renewal acknowledged for ${Math.round(since)} ms (self-fence deadline ${input.selfFenceMs} ms)`);
    return false;
  }
  const mainSilentMs = hrMs() - Number(Atomics.load(shared, SLOT.mainTick)) / 1e6;
  if (mainSilentMs >= input.mainStallMs) {
    stop(
      `the agent's main thread has not run for ${Math.round(mainSilentMs)} ms: renewals stop so its identities fail over`,
    );
    return false;
  }
  return true;
}

const renewerFor = (target: ThreadBegin['target']) =>
  new Renewer(clients, target, input.boundMs, clock, mayRenew, {
    renewed(sentAt, sentWall) {
      if (sentAt > lastSentAt) {
        lastSentAt = sentAt;
        lastSentWall = sentWall;
        Atomics.store(shared, SLOT.sentWall, BigInt(Math.round(sentWall)));
        Atomics.store(shared, SLOT.sentAt, BigInt(Math.round(sentAt * 1e6)));
      }
      post({ type: 'renewed', sentAtHr: sentAt, sentWall });
    },
    gone() {
      post({ type: 'gone' });
      stop();
    },
  });

function every(renewer: Renewer): void {
  if (stopped) return;
  renewer.round();
  // Told on every new failed attempt, not only a new error: a fence lists them all.
  const latest = renewer.failedAttempts.at(-1);
  if (renewer.lastError !== lastTrouble || latest !== lastAttempt) {
    lastTrouble = renewer.lastError;
    lastAttempt = latest;
    if (lastTrouble) post({ type: 'trouble', error: lastTrouble, attempts: [...renewer.failedAttempts] });
  }
  timer = setTimeout(() => every(renewer), input.intervalMs);
}

parentPort?.on('message', (m: ThreadBegin | { type: 'stop' }) => {
  if (m.type === 'stop') return stop();
  if (m.type !== 'begin' || stopped) return;
  lastSentAt = m.sentAtHr;
  lastSentWall = m.sentWall;
  renewer = renewerFor(m.target);
  renewer.warmUp();
  every(renewer);
});
const refused = raisePriority();
post({ type: 'ready', ...(refused ? { priority: refused } : { nice: RENEWAL_NICE }) });

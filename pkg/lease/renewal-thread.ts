// A session's renewals from a thread of their own. The agent's main thread does everything
// per identity: campaigns, logins (each process spawn blocks it until the child has exec'd,
// tens of ms on a busy host), logouts, NATS. At a few hundred identities a login storm held
// renewals back past the self-fence deadline, every identity logged out, and the next storm
// began (issue: "Scale"). Here a worker thread owns the renewal I/O, on etcd connections of
// its own, and records each acknowledged renewal in shared memory. The session (main thread)
// reads that record synchronously whenever it asks whether it may act, so a renewal is
// never missed because the main thread was busy; and its self-fence deadline stays where it
// was: at D after the send of the last acknowledged renewal, on the same monotonic clock.
//
// A main thread that stops running altogether (wedged, not merely busy) must not keep its
// identities' leases alive for ever while their services are gone: the worker renews only
// while the main thread showed a sign of life within MAIN_STALL_SHARE × T.
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { EtcdConnectOptions } from './etcd.js';
import type { FailedAttempt, RenewalTarget, RenewerReport } from './renewer.js';
import type { RenewalEngine } from './session.js';
import type { LeaseTiming } from './timing.js';
import { hrMs, SLOT, type ThreadBegin, type ThreadInput, type ThreadMessage } from './renewal-shared.js';

/**
 * The worker stops renewing once the main thread has not run for this share of T: long past
 * any stall a busy agent shows (the event-loop delay metric reads tens of ms under a storm),
 * short enough that a wedged agent's identities fail over within about 2 T.
 */
export const MAIN_STALL_SHARE = 1;
/** After stop(), the worker gets this long to close its connections before it is terminated. */
const STOP_GRACE_MS = 1_000;

/**
 * The renewal thread's young generation, in MiB. It allocates little (a keepalive and a put
 * every T/10), and V8's default lets each isolate's new space grow to tens of MiB: memory
 * the agent holds for nothing. The old generation keeps V8's default: a thread that ran out
 * of it would stop renewing.
 */
const RENEWAL_YOUNG_GENERATION_MB = 4;

/** A worker that does not load and connect within this is taken as broken (it takes ~1 s under tsx on a busy host). */
const READY_TIMEOUT_MS = 30_000;

export class RenewalThread implements RenewalEngine {
  private readonly shared = new BigInt64Array(new SharedArrayBuffer(4 * 8));
  /** hrMs() − performance.now(): both run on the same monotonic clock, from different origins. */
  private readonly offset = hrMs() - performance.now();
  private readonly worker: Worker;
  private readonly readyPromise: Promise<void>;
  private tick: NodeJS.Timeout | undefined;
  private stopped = false;
  private report: RenewerReport | undefined;
  lastError: string | undefined;
  failedAttempts: readonly FailedAttempt[] = [];
  /** The thread's scheduling priority, or why it could not be raised (once ready). */
  priority: string | undefined;

  get where(): string {
    return `renewal thread (${this.priority ?? 'starting'})`;
  }

  /**
   * Start the worker now and let it load and connect; the session begins it (begin()) once it
   * holds a lease, so no renewal ever waits for a thread to start.
   */
  constructor(connect: EtcdConnectOptions, timing: LeaseTiming, boundMs: number) {
    const beat = () => Atomics.store(this.shared, SLOT.mainTick, BigInt(Math.round(hrMs() * 1e6)));
    beat();
    this.tick = setInterval(beat, timing.keepaliveIntervalMs);
    this.tick.unref();
    this.worker = startWorker({
      connect,
      boundMs,
      intervalMs: timing.keepaliveIntervalMs,
      selfFenceMs: timing.selfFenceMs,
      mainStallMs: MAIN_STALL_SHARE * timing.ttlMs,
      shared: this.shared.buffer as SharedArrayBuffer,
    });
    this.readyPromise = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`the renewal thread did not start within ${READY_TIMEOUT_MS} ms`)),
        READY_TIMEOUT_MS,
      );
      this.worker.on('message', (m: ThreadMessage) => {
        if (m.type === 'ready') {
          clearTimeout(timer);
          this.priority = m.priority === undefined ? `nice ${m.nice}` : `not raised: ${m.priority}`;
          resolve();
        } else this.onMessage(m);
      });
      this.worker.on('error', (err) => {
        clearTimeout(timer);
        this.lastError = `renewal thread failed: ${err.message}`;
        reject(new Error(this.lastError));
      });
      this.worker.on('exit', (code) => {
        clearTimeout(timer);
        if (!this.stopped) this.lastError ??= `renewal thread exited (code ${code})`;
        reject(new Error(this.lastError ?? 'renewal thread exited'));
      });
    });
    this.readyPromise.catch(() => undefined);
  }

  /** Resolves once the worker is loaded and connected; rejects (and stops it) if it is not. */
  async ready(): Promise<void> {
    try {
      await this.readyPromise;
    } catch (err) {
      this.stop();
      throw err;
    }
  }

  /** Renew `target` from now on; `sentAt` is the send of the session's first write (performance.now()). */
  begin(target: RenewalTarget, sentAt: number, report: RenewerReport): void {
    this.report = report;
    this.worker.postMessage({
      type: 'begin',
      target,
      sentAtHr: sentAt + this.offset,
      sentWall: Date.now() - (performance.now() - sentAt),
    } satisfies ThreadBegin);
  }

  /** Renewals begin with begin(); nothing more to start. */
  start(): void {}

  private onMessage(m: ThreadMessage): void {
    switch (m.type) {
      case 'renewed':
        this.lastError = undefined;
        this.failedAttempts = [];
        this.report?.renewed(m.sentAtHr - this.offset, m.sentWall);
        return;
      case 'gone':
        this.report?.gone();
        return;
      case 'trouble':
        this.lastError = m.error;
        this.failedAttempts = m.attempts.map((a) => ({ ...a, sentAt: a.sentAt - this.offset }));
        return;
    }
  }

  latest(): { sentAt: number; sentWall: number } | undefined {
    const ns = Atomics.load(this.shared, SLOT.sentAt);
    if (ns === 0n) return undefined;
    return {
      sentAt: Number(ns) / 1e6 - this.offset,
      sentWall: Number(Atomics.load(this.shared, SLOT.sentWall)),
    };
  }

  stop(): void {
    if (this.stopped) return;
    this.stopped = true;
    clearInterval(this.tick);
    const worker = this.worker;
    worker.postMessage({ type: 'stop' });
    setTimeout(() => void worker.terminate(), STOP_GRACE_MS).unref();
  }
}

/**
 * Built, the worker is the .js beside this file. Run from source under tsx (development,
 * tests), it is the .ts, and a worker does not inherit the main thread's tsx hooks: it
 * registers them itself before loading it.
 */
function startWorker(input: ThreadInput): Worker {
  const options = {
    workerData: input,
    resourceLimits: { maxYoungGenerationSizeMb: RENEWAL_YOUNG_GENERATION_MB },
  };
  if (!import.meta.url.endsWith('.ts')) {
    return new Worker(new URL('./renewal-worker.js', import.meta.url), options);
  }
  const source = new URL('./renewal-worker.ts', import.meta.url).href;
  // The ESM entry of tsx's API (require.resolve finds its CommonJS twin beside it).
  const api = createRequire(import.meta.url)
    .resolve('tsx/esm/api')
    .replace(/\.cjs$/, '.mjs');
  const tsx = pathToFileURL(api).href;
  const code = `import(${JSON.stringify(tsx)}).then(({ register }) => { register(); return import(${JSON.stringify(source)}); });`;
  return new Worker(code, { ...options, eval: true });
}

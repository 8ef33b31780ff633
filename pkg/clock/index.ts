// Time, injected. Logic that depends on time (self-fence deadlines, campaign waits, workflow
// deadlines, probe intervals, logout budgets) takes a Clock, so unit tests can move time by
// hand instead of sleeping, and so a reader sees which clock a deadline runs on.
//
// Two clocks, two jobs:
//   - monotonicMs() for every deadline and interval measured on this host: it never jumps
//     back when NTP steps the wall clock.
//   - wallMs() for timestamps other hosts read (records in etcd, history, events), and as a
//     second opinion where a deadline must also count time the host spent suspended (Linux's
//     monotonic clock stands still then; see pkg/lease/session.ts).
/**
 * `background`: the timer does not keep the process alive. For pauses between retries and
 * clean-ups that may be cut short when the program ends; never for a deadline that must fire.
 */
export interface TimerOptions {
  background?: boolean;
}

export interface Clock {
  /** Milliseconds on this host's monotonic clock (origin arbitrary). */
  monotonicMs(): number;
  /** Milliseconds since the Unix epoch, as the wall clock says. */
  wallMs(): number;
  /** Resolves after `ms` on this clock, or at once when `signal` aborts (it never rejects). */
  sleep(ms: number, signal?: AbortSignal, opts?: TimerOptions): Promise<void>;
  /** Calls `fn` once after `ms`; the returned function cancels it. */
  after(ms: number, fn: () => void, opts?: TimerOptions): () => void;
}

export const systemClock: Clock = {
  monotonicMs: () => performance.now(),
  wallMs: () => Date.now(),
  sleep(ms: number, signal?: AbortSignal, opts?: TimerOptions): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      if (opts?.background) timer.unref();
      signal?.addEventListener('abort', done, { once: true });
    });
  },
  after(ms: number, fn: () => void, opts?: TimerOptions): () => void {
    const timer = setTimeout(fn, Math.max(0, ms));
    if (opts?.background) timer.unref();
    return () => clearTimeout(timer);
  },
};

export { ManualClock } from './manual.js';

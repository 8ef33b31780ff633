// A level-free wake-up signal: wait() resolves at the next notify(). Loops use it to sleep
// until "something relevant changed" (spec, fence, operator request) without polling.
import { systemClock, type Clock } from '../clock/index.js';

export class Wakeup {
  private waiters: Array<() => void> = [];

  constructor(private readonly clock: Clock = systemClock) {}

  notify(): void {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** Resolves at the next notify(), after `timeoutMs` if given, or when `signal` aborts. */
  wait(timeoutMs?: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let cancel: (() => void) | undefined;
      const done = () => {
        cancel?.();
        signal?.removeEventListener('abort', done);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      if (signal?.aborted) return resolve();
      this.waiters.push(done);
      if (timeoutMs !== undefined) cancel = this.clock.after(Math.max(0, timeoutMs), done);
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

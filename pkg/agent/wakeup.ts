// A level-free wake-up signal: wait() resolves at the next notify(). Loops use it to sleep
// until "something relevant changed" (spec, fence, operator request) without polling.
export class Wakeup {
  private waiters: Array<() => void> = [];

  notify(): void {
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** Resolves at the next notify(), after `timeoutMs` if given, or when `signal` aborts. */
  wait(timeoutMs?: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        this.waiters = this.waiters.filter((w) => w !== done);
        resolve();
      };
      if (signal?.aborted) return resolve();
      this.waiters.push(done);
      if (timeoutMs !== undefined) timer = setTimeout(done, Math.max(0, timeoutMs));
      signal?.addEventListener('abort', done, { once: true });
    });
  }
}

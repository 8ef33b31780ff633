// A clock that moves only when told to, for unit tests of time-dependent decisions. Timers
// and sleeps fire in deadline order as advance() passes them; the wall clock moves with the
// monotonic one unless a test steps it on its own (an NTP jump, a suspended host).
import type { Clock } from './index.js';

interface Timer {
  at: number;
  seq: number;
  fn: () => void;
}

export class ManualClock implements Clock {
  private mono: number;
  private wall: number;
  private seq = 0;
  private timers: Timer[] = [];

  constructor(start: { monotonicMs?: number; wallMs?: number } = {}) {
    this.mono = start.monotonicMs ?? 1_000;
    this.wall = start.wallMs ?? Date.UTC(2026, 0, 1);
  }

  monotonicMs(): number {
    return this.mono;
  }

  wallMs(): number {
    return this.wall;
  }

  sleep(ms: number, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      if (signal?.aborted) return resolve();
      const cancel = this.after(ms, () => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      });
      const onAbort = () => {
        cancel();
        resolve();
      };
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  }

  after(ms: number, fn: () => void): () => void {
    const timer: Timer = { at: this.mono + Math.max(0, ms), seq: this.seq++, fn };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** Timers not yet fired. */
  get pending(): number {
    return this.timers.length;
  }

  /**
   * Moves both clocks forward by `ms`, firing each timer that falls due in deadline order,
   * with the clock set to its deadline, and letting promise callbacks run between them (so a
   * loop that sleeps again inside a fired timer is seen within the same advance).
   */
  async advance(ms: number): Promise<void> {
    const until = this.mono + ms;
    for (;;) {
      await settle();
      const next = this.timers.filter((t) => t.at <= until).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.wall += next.at - this.mono;
      this.mono = next.at;
      next.fn();
    }
    this.wall += until - this.mono;
    this.mono = until;
    await settle();
  }

  /** Steps only the wall clock (an NTP correction, or time a suspended host missed). */
  stepWall(ms: number): void {
    this.wall += ms;
  }
}

/** Lets queued promise callbacks run (a few macrotask turns, enough for chained awaits). */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise<void>((r) => setImmediate(r));
}

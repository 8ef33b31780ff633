// Admission of logins: the per-identity work that holds this agent's event loop. Starting a
// process service blocks the loop until the child has exec'd (tens of ms on a busy host), and
// a failover hands an agent hundreds of logins at once. Run all at once, they held the loop
// for seconds: lease renewals were answered late, the lifeline's deadline was not pushed back
// in time and it killed the services it was meant to protect.
//
// Logins are therefore admitted a few at a time, the highest priority first (then the
// oldest), and a new one only while the loop keeps up: when its recent delay passes
// LATE_LOOP_MS, admissions wait (one still runs, so nothing starves). Logouts are never
// queued here: each is a signal and a wait, and each has its must-be-out instant to meet.
import type { Clock } from '../clock/index.js';

/**
 * Logins in flight at once: most of a login is waiting (etcd round trips, the service's
 * start), so this sets the pace of a failover. Measured in the scale bench (1,000 identities,
 * ~190 failing over onto one agent, T = 5 s): 8 → 8.4–9.3 s, 16 → 7.5 s, 32 → 6.9 s, with no
 * session stop or lifeline kill; the loop-lateness brake below still holds spawns back.
 */
export const LOGIN_CONCURRENCY = 32;
/** The event loop is late beyond this: admit nothing more until it keeps up again. */
export const LATE_LOOP_MS = 100;
/** How often a held-back admission looks at the loop again. */
const LATE_RECHECK_MS = 20;

interface Waiter {
  priority: number;
  seq: number;
  admit: () => void;
}

export interface AdmissionStats {
  inFlight: number;
  queued: number;
}

export class Admission {
  private active = 0;
  private seq = 0;
  private readonly queue: Waiter[] = [];
  private recheck: (() => void) | undefined;

  constructor(
    private readonly clock: Clock,
    /** The loop's recent delay in ms (LoopDelay.recentMs); admissions hold back while it is late. */
    private readonly loopDelayMs: () => number = () => 0,
    private readonly concurrency = LOGIN_CONCURRENCY,
  ) {}

  get stats(): AdmissionStats {
    return { inFlight: this.active, queued: this.queue.length };
  }

  /**
   * Run `work` once admitted. A wait cut short by `signal` rejects with its reason and runs
   * nothing; `work`'s own outcome is returned as is.
   */
  async run<T>(priority: number, work: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const release = await this.acquire(priority, signal);
    try {
      return await work();
    } finally {
      release();
    }
  }

  /** Wait for a slot; call the returned function (once) when the work is done. */
  async acquire(priority: number, signal?: AbortSignal): Promise<() => void> {
    await this.admitted(priority, signal);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.active--;
      this.pump();
    };
  }

  private admitted(priority: number, signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(signal.reason ?? new Error('aborted'));
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        priority,
        seq: this.seq++,
        admit: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
      };
      const onAbort = () => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) this.queue.splice(i, 1);
        reject(signal?.reason ?? new Error('aborted'));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      // Highest priority first, then in order of arrival.
      let at = this.queue.findIndex((w) => w.priority < priority);
      if (at < 0) at = this.queue.length;
      this.queue.splice(at, 0, waiter);
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0 && this.active < this.concurrency) {
      if (this.active > 0 && this.loopDelayMs() > LATE_LOOP_MS) {
        this.recheck ??= this.clock.after(LATE_RECHECK_MS, () => {
          this.recheck = undefined;
          this.pump();
        });
        return;
      }
      this.active++;
      this.queue.shift()!.admit();
    }
  }
}

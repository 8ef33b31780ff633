// A bound on one etcd client's unary calls in flight (etcd.ts says why), as a policy the etcd3
// library runs every call through. Calls past the bound wait their turn, in order.
//
// A wait is bounded too: a call that gets no slot within its wait fails as a timed-out call
// would (it would fail at etcd anyway by then: ordinary calls have ETCD_CALL_MS). This also
// keeps the library's own nested call from waiting for ever: it calls again from inside a
// call whose auth token went stale, and with every slot held that way no slot would ever free.
// (Marking the nested call as "inside" needs AsyncLocalStorage, whose promise hooks slow down
// every promise of the agent: not worth it for a rare case that now costs one failed call.)
import { GRPCDeadlineExceededError } from 'etcd3';

export class CallSlots {
  private running = 0;
  private readonly waiting: Array<(slot: boolean) => void> = [];

  constructor(
    readonly limit: number,
    /** How long a call waits for a slot before it fails. */
    readonly maxWaitMs: number,
  ) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`call slots: limit must be ≥ 1, not ${limit}`);
  }

  /** Calls running on a slot now, and calls waiting for one. */
  get stats(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.running < this.limit) this.running++;
    else if (!(await this.turn())) {
      throw new GRPCDeadlineExceededError(
        `no etcd call slot within ${this.maxWaitMs} ms (${this.limit} calls in flight, ${this.waiting.length} waiting): etcd answers slower than this process asks; see understudy_etcd_calls and etcd's request latency and CPU`,
      );
    }
    try {
      return await call();
    } finally {
      // Hand the slot straight to the next in line (running stays the same), or free it.
      const next = this.waiting.shift();
      if (next) next(true);
      else this.running--;
    }
  }

  /** Resolves true when handed a slot, false when the wait ran out first. */
  private turn(): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        const at = this.waiting.indexOf(take);
        if (at >= 0) this.waiting.splice(at, 1);
        resolve(false);
      }, this.maxWaitMs);
      const take = (slot: boolean) => {
        clearTimeout(timer);
        resolve(slot);
      };
      this.waiting.push(take);
    });
  }
}

// A bound on one etcd client's unary calls in flight (etcd.ts says why), as a policy the etcd3
// library runs every call through. Calls past the bound wait their turn, in order.
//
// Re-entrant on purpose: the library makes a call again from inside the first one when its
// auth token went stale (connection-pool.ts, EtcdInvalidAuthTokenError). With a plain
// bulkhead that second call waits for a slot while the first holds one; once every slot is
// held that way (a token expiring under load), no call of the agent ever runs again. A call
// made while holding a slot therefore runs at once, on that slot.
import { AsyncLocalStorage } from 'node:async_hooks';

export class CallSlots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly holding = new AsyncLocalStorage<true>();

  constructor(readonly limit: number) {
    if (!Number.isInteger(limit) || limit < 1) throw new Error(`call slots: limit must be ≥ 1, not ${limit}`);
  }

  /** Calls running on a slot now, and calls waiting for one. */
  get stats(): { running: number; waiting: number } {
    return { running: this.running, waiting: this.waiting.length };
  }

  async run<T>(call: () => Promise<T>): Promise<T> {
    if (this.holding.getStore()) return call();
    if (this.running >= this.limit) await new Promise<void>((resolve) => this.waiting.push(resolve));
    else this.running++;
    try {
      return await this.holding.run(true, call);
    } finally {
      // Hand the slot straight to the next in line (running stays the same), or free it.
      const next = this.waiting.shift();
      if (next) next();
      else this.running--;
    }
  }
}

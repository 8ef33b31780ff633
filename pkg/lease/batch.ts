// Many small transactions of one process, merged into few.
//
// Each campaign step is one unconditional transaction: register the candidate, read the
// leader key, the fence, the end-of-term record and the hold-off. At 1,000 identities a
// failover wakes 1,000 of them in the same instant: 1,000 round trips, each a raft entry
// (the registration is a write). Steps issued in the same turn of the event loop are sent as
// one transaction (up to etcd's limit of operations per transaction); the fencing token of
// each identity is still its own leader key's revision. If a merged transaction fails (one
// registration on a lease etcd no longer has fails them all), each step is sent again alone,
// so one caller's fault is never another's.
import {
  ClientClosedError,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type Etcd3,
  type IOperation,
} from 'etcd3';
import { ETCD_CALL_MS, within } from './etcd.js';

/** etcd's default --max-txn-ops: a merged transaction holds at most this many operations. */
export const MAX_TXN_OPS = 128;

/** What one step gets back: its own operations' responses, and the transaction's revision. */
export interface StepResult {
  responses: Array<{ response_range?: { kvs: Array<{ mod_revision: string; value: Buffer }> } | null }>;
  revision: string;
}

interface Pending {
  ops: IOperation[];
  /** A key the caller may read: the always-true compare is made on it (etcd checks read access). */
  compareKey: string;
  resolve(result: StepResult): void;
  reject(err: unknown): void;
}

export class TxnBatcher {
  private static readonly shared = new WeakMap<Etcd3, TxnBatcher>();
  private queue: Pending[] = [];
  private scheduled = false;

  private constructor(private readonly client: Etcd3) {}

  static for(client: Etcd3): TxnBatcher {
    let batcher = TxnBatcher.shared.get(client);
    if (!batcher) TxnBatcher.shared.set(client, (batcher = new TxnBatcher(client)));
    return batcher;
  }

  /**
   * Run `ops` as one unconditional transaction (possibly inside a larger one). `compareKey`: any
   * key the caller may read (the transaction's always-true compare is made on it).
   */
  run(ops: IOperation[], compareKey: string): Promise<StepResult> {
    if (ops.length === 0 || ops.length > MAX_TXN_OPS) {
      return Promise.reject(
        new Error(`a batched step holds 1 to ${MAX_TXN_OPS} operations, not ${ops.length}`),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ ops, compareKey, resolve, reject });
      if (!this.scheduled) {
        this.scheduled = true;
        setImmediate(() => this.flush());
      }
    });
  }

  private flush(): void {
    this.scheduled = false;
    const queue = this.queue;
    this.queue = [];
    let batch: Pending[] = [];
    let size = 0;
    for (const p of queue) {
      if (size + p.ops.length > MAX_TXN_OPS) {
        void this.send(batch);
        batch = [];
        size = 0;
      }
      batch.push(p);
      size += p.ops.length;
    }
    if (batch.length > 0) void this.send(batch);
  }

  private async send(batch: Pending[]): Promise<void> {
    try {
      const results = await this.commit(
        batch[0]!.compareKey,
        batch.flatMap((p) => p.ops),
      );
      let at = 0;
      for (const p of batch) {
        p.resolve({ responses: results.responses.slice(at, at + p.ops.length), revision: results.revision });
        at += p.ops.length;
      }
    } catch (err) {
      // etcd slow or away: every step failed alike; each caller retries in its own time (sent
      // again one by one now, 40 requests would pile onto an etcd already too slow).
      if (batch.length === 1 || !refusedByEtcd(err)) {
        for (const p of batch) p.reject(err);
        return;
      }
      // Refused (one step's lease gone, say): find whose, each alone, so the others land.
      for (const p of batch) void this.send([p]);
    }
  }

  private async commit(compareKey: string, ops: IOperation[]): Promise<StepResult> {
    const res = await this.client
      .if(compareKey, 'Create', '>', -1) // always true: an unconditional transaction
      .then(...ops)
      .options(within(ETCD_CALL_MS))
      .commit();
    return { responses: res.responses as StepResult['responses'], revision: res.header.revision };
  }
}

/** etcd answered and said no (as opposed to: did not answer in time, or is unreachable). */
function refusedByEtcd(err: unknown): boolean {
  return !(
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCCancelledError ||
    err instanceof ClientClosedError
  );
}

// Many small transactions of one process, merged into few.
//
// Each campaign step is one unconditional transaction: register the candidate, read the
// leader key, the fence, the end-of-term record and the hold-off. At 1,000 identities a
// failover wakes 1,000 of them in the same instant: 1,000 round trips, each a raft entry
// (the registration is a write). Steps issued in the same turn of the event loop are sent as
// one transaction (up to etcd's limit of operations per transaction). If a merged transaction
// fails (one registration on a lease etcd no longer has fails them all), each step is sent
// again alone, so one caller's fault is never another's.
//
// Guarded steps (a winning put "if the key is free", a login record "if the term is still
// ours") are merged too: each rides in the merged transaction as a nested transaction of its
// own (etcd >= 3.3), with its own compares and its own verdict, so one identity's refusal
// never touches another's write. All writes of a merged transaction share its revision: an
// identity's fencing token is still its own leader key's mod revision, and tokens stay unique
// and increasing per identity (two identities may share one, which nothing compares).
import {
  ClientClosedError,
  comparator,
  CompareTarget,
  compareTarget,
  GRPCCancelledError,
  GRPCDeadlineExceededError,
  GRPCUnavailableError,
  type Etcd3,
  type ICompare,
  type IOperation,
  type IRequestOp,
} from 'etcd3';
import { ETCD_CALL_MS, within } from './etcd.js';

/** etcd's default --max-txn-ops: a merged transaction holds at most this many operations. */
export const MAX_TXN_OPS = 128;

/** One key-value as a read returns it. */
export interface StepKv {
  key: Buffer;
  mod_revision: string;
  value: Buffer;
}

/** What one step gets back: its own operations' responses, and the transaction's revision. */
export interface StepResult {
  responses: Array<{ response_range?: { kvs: StepKv[] } | null }>;
  revision: string;
}

/** A guarded step's result: `succeeded` says whether its compares held (its ops ran only then). */
export interface GuardedResult extends StepResult {
  succeeded: boolean;
}

/** One compare, as `client.if(key, column, cmp, value)` takes it. */
export type Guard = [
  key: string,
  column: keyof typeof CompareTarget,
  cmp: keyof typeof comparator,
  value: string | number,
];

interface Pending {
  ops: IOperation[];
  /** Absent: an unconditional step. */
  guards?: Guard[];
  /** A key the caller may read: the always-true compare is made on it (etcd checks read access). */
  compareKey: string;
  resolve(result: GuardedResult): void;
  reject(err: unknown): void;
}

/**
 * Room a step takes in a merged transaction. etcd checks a nested transaction against the
 * limit less what its parent already holds, so a guarded step counts its own largest list
 * as well as its slot in the parent: merged, no nested one can then exceed what is left.
 */
function cost(p: { ops: unknown[]; guards?: unknown[] | undefined }): number {
  return p.guards ? 1 + Math.max(p.guards.length, p.ops.length) : p.ops.length;
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
    return this.enqueue({ ops, compareKey });
  }

  /**
   * Run `ops` only if every guard holds, as one transaction (possibly nested in a larger one);
   * resolves with whether they held. Never partly applied: the guards and the ops are one
   * transaction of their own whether merged or not.
   */
  runIf(guards: Guard[], ops: IOperation[]): Promise<GuardedResult> {
    if (guards.length === 0) return Promise.reject(new Error('a guarded step needs at least one guard'));
    return this.enqueue({ ops, guards, compareKey: guards[0]![0] });
  }

  private enqueue(step: Pick<Pending, 'ops' | 'guards' | 'compareKey'>): Promise<GuardedResult> {
    if (step.ops.length === 0 || cost(step) > MAX_TXN_OPS) {
      return Promise.reject(
        new Error(
          `a batched step holds 1 to ${MAX_TXN_OPS} operations (a guarded one ${MAX_TXN_OPS - 1}), not ${step.ops.length}`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ ...step, resolve, reject });
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
      if (size + cost(p) > MAX_TXN_OPS) {
        void this.send(batch);
        batch = [];
        size = 0;
      }
      batch.push(p);
      size += cost(p);
    }
    if (batch.length > 0) void this.send(batch);
  }

  private async send(batch: Pending[]): Promise<void> {
    let results: GuardedResult[];
    try {
      results = batch.length === 1 ? [await this.alone(batch[0]!)] : await this.merged(batch);
    } catch (err) {
      // etcd slow or away: every step failed alike; each caller retries in its own time (sent
      // again one by one now, 40 requests would pile onto an etcd already too slow).
      if (batch.length === 1 || !refusedByEtcd(err)) {
        for (const p of batch) p.reject(err);
        return;
      }
      // Refused (one step's lease gone, say): find whose, each alone, so the others land.
      for (const p of batch) void this.send([p]);
      return;
    }
    batch.forEach((p, i) => p.resolve(results[i]!));
  }

  /** One step as a transaction of its own, exactly as its caller would have sent it. */
  private async alone(p: Pending): Promise<GuardedResult> {
    const [first, ...rest] = p.guards ?? [[p.compareKey, 'Create', '>', -1] as Guard];
    let txn = this.client.if(...first!);
    for (const guard of rest) txn = txn.and(...guard);
    const res = await txn
      .then(...p.ops)
      .options(within(ETCD_CALL_MS))
      .commit();
    return {
      succeeded: res.succeeded,
      responses: res.responses as StepResult['responses'],
      revision: res.header.revision,
    };
  }

  /**
   * The steps as one transaction, each guarded one nested; their results in their order.
   * Steps that write go first: inside one transaction a read sees only the writes before it,
   * and every step is told the transaction's revision, after which its caller follows
   * changes. A read placed before a write of the same key would report the key as it was and
   * the change would never be followed. Guards are judged on the state before the whole
   * transaction wherever they sit (etcd evaluates every compare first).
   */
  private async merged(batch: Pending[]): Promise<GuardedResult[]> {
    const steps = await Promise.all(
      batch.map(async (p) => {
        const ops = await Promise.all(p.ops.map((op) => op.op()));
        const writes = ops.some((op) => op.request_put || op.request_delete_range || op.request_txn);
        const request: IRequestOp[] = p.guards
          ? [{ request_txn: { compare: p.guards.map(toCompare), success: ops, failure: [] } }]
          : ops;
        return { p, request, writes };
      }),
    );
    const ordered = [...steps.filter((s) => s.writes), ...steps.filter((s) => !s.writes)];
    const res = await this.client
      .if(batch[0]!.compareKey, 'Create', '>', -1) // always true: an unconditional transaction
      .then(...ordered.flatMap((s) => s.request))
      .options(within(ETCD_CALL_MS))
      .commit();
    const responses = res.responses as Array<StepResult['responses'][number] & NestedResponse>;
    const revision = res.header.revision;
    const results = new Map<Pending, GuardedResult>();
    let at = 0;
    for (const { p, request } of ordered) {
      const own = responses.slice(at, (at += request.length));
      if (!p.guards) {
        results.set(p, { succeeded: true, responses: own, revision });
        continue;
      }
      const nested = own[0]?.response_txn;
      // Applied, whatever it said: this is no refusal, and the step is never sent again.
      if (!nested) throw new MalformedAnswerError();
      results.set(p, {
        succeeded: nested.succeeded,
        responses: nested.responses as StepResult['responses'],
        revision,
      });
    }
    return batch.map((p) => results.get(p)!);
  }
}

/** etcd's answer did not have the shape of the merged request (a step's outcome is unknown). */
class MalformedAnswerError extends Error {
  constructor() {
    super(
      'etcd answered a merged transaction without the nested result of a guarded step; its outcome is unknown, read it again',
    );
  }
}

interface NestedResponse {
  response_txn?: { succeeded: boolean; responses: unknown[] } | null;
}

/** A guard as etcd's wire compare (the client root has no namespace: keys are as given). */
function toCompare([key, column, cmp, value]: Guard): ICompare {
  return {
    key: Buffer.from(key),
    result: comparator[cmp],
    target: CompareTarget[column],
    // A value is bytes on the wire (a string would be taken for base64).
    [compareTarget[column]]: column === 'Value' ? Buffer.from(String(value)) : value,
  };
}

/** etcd answered and said no (as opposed to: did not answer in time, or is unreachable). */
function refusedByEtcd(err: unknown): boolean {
  return !(
    err instanceof MalformedAnswerError ||
    err instanceof GRPCDeadlineExceededError ||
    err instanceof GRPCUnavailableError ||
    err instanceof GRPCCancelledError ||
    err instanceof ClientClosedError
  );
}

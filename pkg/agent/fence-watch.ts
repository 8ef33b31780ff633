// Whether this node is fenced, kept current by a watch on its fence key. The campaign code
// checks the fence in etcd on its own (pkg/lease); this watch is how a node that is already
// leading learns it must log out.
import type { Etcd3 } from 'etcd3';
import { EventEmitter } from 'node:events';
import { decode, FenceRecord, Keys } from '../lease/keys.js';
import { ResyncingWatch } from '../lease/watch.js';

export class FenceWatch extends EventEmitter {
  private record: FenceRecord | undefined;
  private watch: ResyncingWatch | undefined;

  private constructor(private readonly key: string) {
    super();
  }

  /** Resolves once the fence state is known; `onTrouble` hears about etcd failures meanwhile. */
  static async start(
    client: Etcd3,
    node: string,
    onTrouble?: (err: Error, attempt: number) => void,
    keys = new Keys(),
  ): Promise<FenceWatch> {
    const w = new FenceWatch(keys.fence(node));
    w.watch = await ResyncingWatch.start(
      client,
      { key: w.key },
      {
        snapshot: (kvs) => w.set(kvs[0]?.value),
        put: (kv) => w.set(kv.value),
        delete: () => w.set(undefined),
        ...(onTrouble ? { trouble: onTrouble } : {}),
      },
    );
    return w;
  }

  get fenced(): FenceRecord | undefined {
    return this.record;
  }

  private set(raw: Buffer | undefined): void {
    let record: FenceRecord | undefined;
    try {
      record = decode(FenceRecord, raw, this.key);
    } catch {
      // A malformed fence record still fences: excluding a node is the safe reading.
      record = { reason: 'unreadable fence record', actor: 'unknown', at: Date.now() };
    }
    const changed = (record === undefined) !== (this.record === undefined);
    this.record = record;
    if (changed) this.emit('change', record);
  }

  async close(): Promise<void> {
    await this.watch?.close();
  }
}

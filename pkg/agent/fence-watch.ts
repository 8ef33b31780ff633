// Whether this node is fenced, kept current by a watch on its fence key. The campaign code
// checks the fence in etcd on its own (pkg/lease); this watch is how a node that is already
// leading learns it must log out.
import type { Etcd3, Watcher } from 'etcd3';
import { EventEmitter } from 'node:events';
import { within } from '../lease/etcd.js';
import { decode, FenceRecord, Keys } from '../lease/keys.js';

const CALL_MS = 2_000;
const RETRY_MS = 500;

export class FenceWatch extends EventEmitter {
  private record: FenceRecord | undefined;
  private watcher: Watcher | undefined;
  private closed = false;

  private constructor(
    private readonly client: Etcd3,
    private readonly key: string,
  ) {
    super();
  }

  static async start(client: Etcd3, node: string, keys = new Keys()): Promise<FenceWatch> {
    const w = new FenceWatch(client, keys.fence(node));
    await w.resync();
    return w;
  }

  get fenced(): FenceRecord | undefined {
    return this.record;
  }

  private set(record: FenceRecord | undefined): void {
    const changed = (record === undefined) !== (this.record === undefined);
    this.record = record;
    if (changed) this.emit('change', record);
  }

  private async resync(): Promise<void> {
    while (!this.closed) {
      try {
        const res = await this.client.get(this.key).options(within(CALL_MS)).exec();
        this.set(decode(FenceRecord, res.kvs[0]?.value, this.key));
        const watcher = await this.client
          .watch()
          .key(this.key)
          .startRevision(String(BigInt(res.header.revision) + 1n))
          .create();
        if (this.closed) return void (await watcher.cancel());
        this.watcher = watcher;
        watcher.on('put', (kv) => {
          try {
            this.set(decode(FenceRecord, kv.value, this.key));
          } catch {
            // A malformed fence record still fences: excluding a node is the safe reading.
            this.set({ reason: 'unreadable fence record', actor: 'unknown', at: Date.now() });
          }
        });
        watcher.on('delete', () => this.set(undefined));
        watcher.on('error', () => {
          void watcher.cancel().catch(() => undefined);
          if (this.watcher === watcher) this.watcher = undefined;
          void this.resync();
        });
        return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.watcher?.cancel().catch(() => undefined);
  }
}

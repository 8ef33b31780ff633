// Read-then-watch that never ends up on a stale view: the state of a key (or prefix) at one
// revision, then every change after it, in order. After a watch error (compaction, a
// server cancel) or a watch that could not be created in time, it reads again and watches
// from that read. The leader observer, the agent's spec watcher and its fence watch all
// stand on this one piece.
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { ETCD_CALL_MS, isClientClosed, within } from './etcd.js';
import { readPrefixes } from './paged.js';
import { backoffMs, type Backoff } from './retry.js';

/**
 * Pauses between attempts while etcd does not answer, from 500 ms doubling to 5 s: many
 * processes re-reading a large prefix at once after an etcd hiccup must spread out, not retry
 * in step (each full read then slows the next).
 */
const WATCH_BACKOFF: Backoff = { firstMs: 500, maxMs: 5_000 };

export function retryDelayMs(attempt: number, random = Math.random): number {
  return backoffMs(attempt, WATCH_BACKOFF, random);
}

/**
 * A key, or a prefix. A prefix may come with its own first read (a few ranges under it read
 * at one revision, say): what it returns is the snapshot, and the watch covers the whole prefix.
 */
export type WatchTarget =
  { key: string } | { prefix: string; read?: () => Promise<{ kvs: IKeyValue[]; revision: bigint }> };

export interface WatchHandlers {
  /** Everything under the target at `revision` (a fresh start, or after a resync). */
  snapshot(kvs: IKeyValue[], revision: bigint): void;
  put(kv: IKeyValue): void;
  delete(kv: IKeyValue): void;
  /** A read or watch attempt failed (`attempt` counts consecutive failures); it retries by itself. */
  trouble?(err: Error, attempt: number): void;
  /**
   * Read everything again when the watch's stream breaks, instead of letting the library resume
   * it from the last response header it saw (which may lie past events it never delivered).
   * For holders of a snapshot (the controller's mirror); a follower that must report every
   * change in order (the leader observer) keeps the resumed stream.
   */
  resyncOnDisconnect?: boolean;
}

export class ResyncingWatch {
  private watcher: Watcher | undefined;
  private closed = false;

  private constructor(
    private readonly client: Etcd3,
    private readonly target: WatchTarget,
    private readonly on: WatchHandlers,
  ) {}

  /** Resolves once the first snapshot was delivered and the watch runs (retrying meanwhile). */
  static async start(client: Etcd3, target: WatchTarget, on: WatchHandlers): Promise<ResyncingWatch> {
    const w = new ResyncingWatch(client, target, on);
    await w.resync();
    return w;
  }

  /** The same, returned at once: the first snapshot arrives through `on` when etcd answers. */
  static open(client: Etcd3, target: WatchTarget, on: WatchHandlers): ResyncingWatch {
    const w = new ResyncingWatch(client, target, on);
    void w.resync();
    return w;
  }

  private async resync(): Promise<void> {
    for (let attempt = 1; !this.closed; attempt++) {
      try {
        const { kvs, revision } = await this.read();
        if (this.closed) return;
        this.on.snapshot(kvs, revision);
        await this.watchFrom(revision + 1n);
        return;
      } catch (err) {
        // A closed client never answers again: stop rather than retry for ever.
        if (isClientClosed(err)) {
          this.closed = true;
          return;
        }
        this.on.trouble?.(err as Error, attempt);
        await new Promise((resolve) => setTimeout(resolve, retryDelayMs(attempt)));
      }
    }
  }

  private async read(): Promise<{ kvs: IKeyValue[]; revision: bigint }> {
    const target = this.target;
    if ('prefix' in target && target.read) return target.read();
    if ('prefix' in target) {
      const { ranges, revision } = await readPrefixes(this.client, [target.prefix]);
      return { kvs: ranges[0] ?? [], revision };
    }
    const res = await this.client.get(target.key).options(within(ETCD_CALL_MS)).exec();
    return { kvs: res.kvs, revision: BigInt(res.header.revision) };
  }

  private async watchFrom(revision: bigint): Promise<void> {
    const builder = this.client.watch();
    const pending = ('key' in this.target ? builder.key(this.target.key) : builder.prefix(this.target.prefix))
      .startRevision(String(revision))
      .create();
    let timer: NodeJS.Timeout | undefined;
    const watcher = await Promise.race([
      pending,
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ETCD_CALL_MS))),
    ]).finally(() => clearTimeout(timer));
    if (!watcher || this.closed) {
      // Created late (or after close): cancel it when it arrives, so no watch leaks.
      void pending.then((w) => w.cancel()).catch(() => undefined);
      if (!watcher) throw new Error(`etcd did not create a watch within ${ETCD_CALL_MS} ms`);
      return;
    }
    this.watcher = watcher;
    watcher.on('put', (kv: IKeyValue) => this.on.put(kv));
    watcher.on('delete', (kv: IKeyValue) => this.on.delete(kv));
    const restart = (err: Error) => {
      void watcher.cancel().catch(() => undefined);
      if (this.watcher !== watcher) return;
      this.watcher = undefined;
      this.on.trouble?.(err, 1);
      void this.resync();
    };
    watcher.on('error', restart);
    if (this.on.resyncOnDisconnect) {
      watcher.on('disconnected', (err?: Error) =>
        restart(new Error(`the watch's stream broke (${err?.message ?? 'disconnected'}); reading again`)),
      );
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.watcher?.cancel().catch(() => undefined);
  }
}

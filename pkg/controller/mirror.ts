// The controller's copy of the cluster, kept current by one watch.
//
// Every round, every API call and every workflow step decides on a snapshot of the whole
// cluster. Read from etcd each time, that is a range of every key of every identity four
// times a second (at 10,000 identities, some 60,000 keys per read). The mirror reads them once,
// then follows one watch of the whole prefix, the way client-go's informers and the API
// server's watch cache do.
//
// A mirror may lag etcd, so a snapshot is served from it only once it is provably caught up:
// the caller reads etcd's current revision (one key, a linearizable read), and the mirror
// must have applied every change up to it. Every write under the prefix, history included,
// reaches the mirror as an event, so on an etcd used by understudy alone that takes the
// watch's latency. When it does not catch up in time (writes outside the prefix moved the
// revision, the watch is reconnecting) the caller reads the full snapshot from etcd as
// before: never a stale answer, only a slower one.
import type { Etcd3, IKeyValue } from 'etcd3';
import type { z } from 'zod';
import { readPrefixes } from '../lease/paged.js';
import { ResyncingWatch } from '../lease/watch.js';
import type { IdentitySpec } from '../spec/schema.js';
import {
  buildSnapshot,
  plainParser,
  snapshotPrefixes,
  snapshotUses,
  type ClusterSnapshot,
  type ControllerKeys,
  type SnapshotParser,
} from './store.js';

/**
 * Wait for the mirror to reach a revision before giving up on it: a watch's latency is
 * milliseconds, but a storm of thousands of changes can put it a few hundred behind, and the
 * alternative (reading every key) only adds to that storm.
 */
export const CATCH_UP_MS = 1_000;

export class ClusterMirror {
  private readonly kvs = new Map<string, IKeyValue>();
  private readonly prefixes: string[];
  /** The revision everything up to has been applied (the first read's, then each event's). */
  private revision = -1n;
  private synced = false;
  private built: ClusterSnapshot | undefined;
  private watch: ResyncingWatch | undefined;
  private closed = false;
  private readonly waiters = new Set<() => void>();
  /** Callers waiting for a change to one identity's keys (see `changed`). */
  private readonly watchers = new Map<string, Set<() => void>>();
  /** Parsed values by the key-value object that held them: an unchanged key is parsed once. */
  private readonly parsed = new WeakMap<IKeyValue, unknown>();
  private readonly parser: SnapshotParser;

  private constructor(
    private readonly etcd: Etcd3,
    private readonly keys: ControllerKeys,
  ) {
    this.prefixes = snapshotPrefixes(keys);
    const cached = <T>(kv: IKeyValue, parse: () => T): T => {
      if (this.parsed.has(kv)) return this.parsed.get(kv) as T;
      const value = parse();
      this.parsed.set(kv, value);
      return value;
    };
    this.parser = {
      json: <T>(schema: z.ZodType<T>, kv: IKeyValue) => cached(kv, () => plainParser.json(schema, kv)),
      spec: (kv: IKeyValue, key: string): IdentitySpec => {
        const result = cached(kv, () => {
          try {
            return { spec: plainParser.spec(kv, key) };
          } catch (err) {
            return { error: err as Error };
          }
        });
        if ('error' in result) throw result.error;
        return result.spec;
      },
    };
  }

  /** Start following (in the background: until the first read lands, nothing is served). */
  static start(
    etcd: Etcd3,
    keys: ControllerKeys,
    hooks: { trouble?: (err: Error) => void; synced?: () => void } = {},
  ): ClusterMirror {
    const mirror = new ClusterMirror(etcd, keys);
    mirror.watch = ResyncingWatch.open(
      etcd,
      { prefix: `${keys.prefix}/`, read: () => mirror.firstRead() },
      {
        snapshot: (kvs, revision) => {
          mirror.reset(kvs, revision);
          hooks.synced?.();
        },
        put: (kv) => mirror.apply(kv, 'put'),
        delete: (kv) => mirror.apply(kv, 'delete'),
        trouble: (err) => {
          mirror.synced = false;
          hooks.trouble?.(err);
        },
        resyncOnDisconnect: true,
      },
    );
    return mirror;
  }

  /** The snapshot's ranges at one revision, paged (not the history and other keys under the prefix). */
  private async firstRead(): Promise<{ kvs: IKeyValue[]; revision: bigint }> {
    const { ranges, revision } = await readPrefixes(this.etcd, this.prefixes);
    return { kvs: ranges.flat(), revision };
  }

  private reset(kvs: IKeyValue[], revision: bigint): void {
    this.kvs.clear();
    for (const kv of kvs) {
      const key = kv.key.toString();
      if (snapshotUses(this.keys, key)) this.kvs.set(key, kv);
    }
    this.revision = revision;
    this.synced = true;
    this.built = undefined;
    this.wake();
  }

  private apply(kv: IKeyValue, kind: 'put' | 'delete'): void {
    const key = kv.key.toString();
    if (snapshotUses(this.keys, key)) {
      if (kind === 'put') this.kvs.set(key, kv);
      else this.kvs.delete(key);
      this.built = undefined;
    }
    // Any event under the prefix moves the revision, history included.
    const at = BigInt(kv.mod_revision);
    if (at > this.revision) this.revision = at;
    this.wake();
    const identity = this.identityOf(key);
    if (identity !== undefined) for (const wake of [...(this.watchers.get(identity) ?? [])]) wake();
  }

  private identityOf(key: string): string | undefined {
    const under = `${this.keys.prefix}/identities/`;
    if (!key.startsWith(under)) return undefined;
    const end = key.indexOf('/', under.length);
    return end < 0 ? undefined : key.slice(under.length, end);
  }

  /**
   * Resolves at the next change to one of `identity`'s keys (its leader key, login record,
   * candidates, hold-offs) or after `withinMs`, whichever comes first: a running workflow
   * steps as soon as what it waits for is written, not at its next poll, and is not woken by
   * the rest of the cluster.
   */
  changed(identity: string, withinMs: number): Promise<'changed' | 'timeout'> {
    return new Promise((resolve) => {
      let set = this.watchers.get(identity);
      if (!set) this.watchers.set(identity, (set = new Set()));
      const done = (why: 'changed' | 'timeout') => {
        clearTimeout(timer);
        set.delete(woken);
        if (set.size === 0) this.watchers.delete(identity);
        resolve(why);
      };
      const woken = () => done('changed');
      const timer = setTimeout(() => done('timeout'), withinMs);
      set.add(woken);
    });
  }

  private wake(): void {
    for (const wake of [...this.waiters]) wake();
  }

  /** True once everything up to `revision` is applied; false if that takes over `timeoutMs`. */
  reach(revision: bigint, timeoutMs = CATCH_UP_MS): Promise<boolean> {
    if (this.synced && this.revision >= revision) return Promise.resolve(true);
    return new Promise((resolve) => {
      const done = (ok: boolean) => {
        clearTimeout(timer);
        this.waiters.delete(check);
        resolve(ok);
      };
      const check = () => {
        if (this.closed) done(false);
        else if (this.synced && this.revision >= revision) done(true);
      };
      const timer = setTimeout(() => done(false), timeoutMs);
      this.waiters.add(check);
    });
  }

  /** The mirrored cluster at the revision reached (built again only after a change). */
  snapshot(): ClusterSnapshot | undefined {
    if (!this.synced) return undefined;
    if (!this.built) {
      const ranges: IKeyValue[][] = this.prefixes.map(() => []);
      for (const [key, kv] of this.kvs) {
        const i = this.prefixes.findIndex((p) => key.startsWith(p));
        if (i >= 0) ranges[i]!.push(kv);
      }
      this.built = buildSnapshot(this.keys, this.revision, ranges, this.parser);
    }
    return this.built;
  }

  /** The mirror holds a full read and follows its watch (it may still lag). */
  get isSynced(): boolean {
    return this.synced;
  }

  close(): void {
    this.synced = false;
    this.closed = true;
    void this.watch?.close();
    for (const wake of [...this.waiters]) wake();
  }
}

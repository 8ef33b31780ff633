// One watch per prefix per process, shared by every identity it hosts: the change feed.
//
// A campaign waits for its leader key, its fence and its hold-off to change; a term watches
// its own key; the agent shows who leads. Done with a watch per key, 1,000 identities meant
// 4,000 watches, created one after another on the client's single watch stream: creations
// queued past their deadline, campaigns retried, and the retries queued more (seen at 300
// identities). Here each prefix (`<prefix>/identities/`, `<prefix>/nodes/`) is watched once;
// a waiter registers the key and the revision it read at, and the feed's log (feed-log.ts)
// tells it at once if the key changed since, or calls it on the next change.
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import { ETCD_CALL_MS, isClientClosed, within } from './etcd.js';
import { ChangeLog, type Change } from './feed-log.js';
import { Keys } from './keys.js';

export type { Change, ChangeKind } from './feed-log.js';

/** Pause between attempts to (re)start a prefix watch while etcd does not answer. */
const RESTART_MS = 500;

export interface Follower {
  /** The key changed after the revision it was read at (called for each later change). */
  change(change: Change): void;
  /**
   * What was read may be stale and the feed cannot tell: read again. `error` when the feed
   * itself is in trouble (etcd unreachable, the watch broke), undefined when the read was
   * merely older than what the feed covers.
   */
  resync(error?: Error): void;
}

interface Subscription {
  readAt: bigint;
  follower: Follower;
}

/** One watched prefix: its log of changes and who follows which key under it. */
class PrefixWatch {
  readonly log: ChangeLog;
  private readonly followers = new Map<string, Set<Subscription>>();
  private watcher: Watcher | undefined;
  private closed = false;
  private trouble: Error | undefined;
  private readonly readyWaiters: Array<() => void> = [];

  constructor(
    private readonly client: Etcd3,
    readonly prefix: string,
  ) {
    // A scope is what follows the prefix up to the next '/': an identity, or a node.
    this.log = new ChangeLog((key) => {
      if (!key.startsWith(prefix)) return undefined;
      const rest = key.slice(prefix.length);
      const end = rest.indexOf('/');
      return end > 0 ? rest.slice(0, end) : undefined;
    });
    void this.run();
  }

  /** Resolves once the watch runs (or at once if it does). */
  ready(): Promise<void> {
    if (this.log.running || this.closed) return Promise.resolve();
    return new Promise((resolve) => this.readyWaiters.push(resolve));
  }

  /** Remember changes of the scope `key` is in from now on, before anyone follows it. */
  interest(key: string): void {
    const scope = key.slice(this.prefix.length).split('/')[0];
    if (scope) this.log.interest(scope);
  }

  follow(key: string, readAt: bigint, follower: Follower): () => void {
    this.interest(key);
    const sub: Subscription = { readAt, follower };
    let set = this.followers.get(key);
    if (!set) this.followers.set(key, (set = new Set()));
    set.add(sub);
    const unfollow = () => {
      set.delete(sub);
      if (set.size === 0 && this.followers.get(key) === set) this.followers.delete(key);
    };
    const found = this.log.lookup(key, readAt);
    // Told after the caller has its handle, never from inside follow().
    if (found.verdict === 'changed') queueMicrotask(() => set.has(sub) && follower.change(found.change));
    else if (found.verdict === 'unknown' && (this.log.running || this.trouble)) {
      // Running: the read is older than what the log covers. Broken: say why, so the caller
      // pauses and shows it. Still starting: wait, every follower is told once it runs.
      const error = this.log.running ? undefined : this.trouble;
      queueMicrotask(() => set.has(sub) && follower.resync(error));
    }
    return unfollow;
  }

  private deliver(kind: Change['kind'], kv: IKeyValue): void {
    const key = kv.key.toString();
    const change: Change = {
      kind,
      revision: BigInt(kv.mod_revision),
      ...(kind === 'put' ? { value: kv.value } : {}),
    };
    if (!this.log.record(key, change)) return;
    for (const sub of [...(this.followers.get(key) ?? [])]) {
      if (change.revision > sub.readAt) sub.follower.change(change);
    }
  }

  private resyncAll(error: Error | undefined): void {
    for (const set of [...this.followers.values()]) for (const sub of [...set]) sub.follower.resync(error);
  }

  private async run(): Promise<void> {
    while (!this.closed) {
      try {
        // Any read gives the revision to watch from; this one reads a key that never exists.
        const res = await this.client.get(this.prefix).options(within(ETCD_CALL_MS)).exec();
        const revision = BigInt(res.header.revision);
        const watcher = await this.create(revision + 1n);
        if (!watcher) return;
        this.watcher = watcher;
        this.trouble = undefined;
        this.log.started(revision);
        watcher.on('put', (kv: IKeyValue) => this.deliver('put', kv));
        watcher.on('delete', (kv: IKeyValue) => this.deliver('delete', kv));
        // Created already: each later 'connected' is the library resuming a broken stream.
        watcher.on('connected', (res: { header: { revision: string } }) =>
          this.log.resumed(BigInt(res.header.revision)),
        );
        for (const wake of this.readyWaiters.splice(0)) wake();
        // Followers that came while it was starting cannot know what they missed.
        this.resyncAll(undefined);
        const broken = await new Promise<Error>((resolve) => watcher.once('error', resolve));
        if (this.closed) return;
        void watcher.cancel().catch(() => undefined);
        this.watcher = undefined;
        this.fail(broken);
      } catch (err) {
        if (isClientClosed(err)) return void this.close();
        this.fail(err as Error);
        await new Promise((resolve) => setTimeout(resolve, RESTART_MS));
      }
    }
  }

  /** Why the watch does not run, while it does not (after its first failure). */
  get troubled(): Error | undefined {
    return this.log.running ? undefined : this.trouble;
  }

  private fail(err: Error): void {
    const hint = /permission denied/i.test(err.message)
      ? `; grant this node's etcd user read access to the prefix ${this.prefix}`
      : '';
    this.trouble = new Error(`watching ${this.prefix}: ${err.message}${hint}`);
    this.log.stopped();
    this.resyncAll(this.trouble);
  }

  /** A watch created within ETCD_CALL_MS, or an error; undefined once closed. */
  private async create(fromRevision: bigint): Promise<Watcher | undefined> {
    const pending = this.client.watch().prefix(this.prefix).startRevision(String(fromRevision)).create();
    let timer: NodeJS.Timeout | undefined;
    const watcher = await Promise.race([
      pending,
      new Promise<undefined>((resolve) => (timer = setTimeout(() => resolve(undefined), ETCD_CALL_MS))),
    ]).finally(() => clearTimeout(timer));
    if (!watcher || this.closed) {
      // Created late (or after close): cancel it when it arrives, so no watch leaks.
      void pending.then((w) => w.cancel()).catch(() => undefined);
      if (!watcher) throw new Error(`etcd did not create a watch within ${ETCD_CALL_MS} ms`);
      return undefined;
    }
    return watcher;
  }

  close(): void {
    this.closed = true;
    for (const wake of this.readyWaiters.splice(0)) wake();
    void this.watcher?.cancel().catch(() => undefined);
  }
}

export class ChangeFeed {
  /** Per client and key prefix: one feed, started on first use. */
  private static readonly shared = new WeakMap<Etcd3, Map<string, ChangeFeed>>();
  private readonly identities: PrefixWatch;
  private readonly nodes: PrefixWatch;

  private constructor(
    client: Etcd3,
    readonly keys: Keys,
  ) {
    this.identities = new PrefixWatch(client, `${keys.prefix}/identities/`);
    this.nodes = new PrefixWatch(client, `${keys.prefix}/nodes/`);
  }

  static for(client: Etcd3, keys = new Keys()): ChangeFeed {
    let byPrefix = ChangeFeed.shared.get(client);
    if (!byPrefix) ChangeFeed.shared.set(client, (byPrefix = new Map()));
    let feed = byPrefix.get(keys.prefix);
    if (!feed) {
      const created = new ChangeFeed(client, keys);
      byPrefix.set(keys.prefix, (feed = created));
      // The library keeps re-creating a watch still attached when its client closes (a timer
      // loop that keeps the process alive): cancel ours first, synchronously.
      const closeClient = client.close.bind(client);
      client.close = () => {
        created.close();
        closeClient();
      };
    }
    return feed;
  }

  /** Resolves once both prefixes are watched. */
  async ready(): Promise<void> {
    await Promise.all([this.identities.ready(), this.nodes.ready()]);
  }

  /**
   * Follow `key` from the revision it was read at: `change` for each later change, `resync`
   * when the caller must read again. Returns the function that stops following.
   */
  follow(key: string, readAt: bigint, follower: Follower): () => void {
    return this.watchOf(key).follow(key, readAt, follower);
  }

  /**
   * The first change of any of `keys` after `readAt` (the first key's own change is named,
   * others are 'other'), an abort ('other'), or a reason to read again ('other', with the
   * feed's error when it is in trouble).
   */
  waitForChange(
    keys: string[],
    readAt: bigint,
    signal: AbortSignal,
  ): Promise<{ change: 'put' | 'delete' | 'other'; error?: Error }> {
    return new Promise((resolve) => {
      const stops: Array<() => void> = [];
      const done = (result: { change: 'put' | 'delete' | 'other'; error?: Error }) => {
        for (const stop of stops.splice(0)) stop();
        signal.removeEventListener('abort', onAbort);
        resolve(result);
      };
      const onAbort = () => done({ change: 'other' });
      if (signal.aborted) return resolve({ change: 'other' });
      signal.addEventListener('abort', onAbort, { once: true });
      keys.forEach((key, i) =>
        stops.push(
          this.follow(key, readAt, {
            change: (c) => done({ change: i === 0 ? c.kind : 'other' }),
            resync: (error) => done({ change: 'other', ...(error ? { error } : {}) }),
          }),
        ),
      );
    });
  }

  /**
   * A read made from the watch: the latest change of each of `keys`, and of every key under
   * `prefixes`, after a read at `readAt`, as of the highest revision the watch delivered
   * (`revision`). All of them must lie under one watched prefix (one log, one revision). Called
   * outside the feed's callbacks, it sees whole revisions: etcd sends a revision's events in
   * one response, and they are recorded in one go. Undefined when the log cannot tell (the read
   * is older than what it covers, or the watch is down): read etcd then.
   */
  changedSince(
    readAt: bigint,
    keys: string[],
    prefixes: string[] = [],
  ): { revision: bigint; changes: Map<string, Change> } | undefined {
    const watch = this.watchOf(keys[0] ?? prefixes[0] ?? '');
    const changes = new Map<string, Change>();
    for (const key of keys) {
      if (this.watchOf(key) !== watch) return undefined;
      const found = watch.log.lookup(key, readAt);
      if (found.verdict === 'unknown') return undefined;
      if (found.verdict === 'changed') changes.set(key, found.change);
    }
    for (const prefix of prefixes) {
      if (this.watchOf(prefix) !== watch) return undefined;
      const under = watch.log.changesUnder(prefix, readAt);
      if (!under) return undefined;
      for (const [key, change] of under) changes.set(key, change);
    }
    const known = watch.log.knownThrough;
    return { revision: known > readAt ? known : readAt, changes };
  }

  /**
   * Start remembering changes of these keys' scopes (an identity, a node) now: a first read
   * made after this can be followed without reading again.
   */
  interest(...keys: string[]): void {
    for (const key of keys) this.watchOf(key).interest(key);
  }

  /** Why the watch that covers `key` does not run, while it does not. */
  troubleFor(key: string): Error | undefined {
    return this.watchOf(key).troubled;
  }

  private watchOf(key: string): PrefixWatch {
    if (key.startsWith(this.identities.prefix)) return this.identities;
    if (key.startsWith(this.nodes.prefix)) return this.nodes;
    throw new Error(
      `${key} is not under ${this.identities.prefix} or ${this.nodes.prefix}: the change feed does not watch it`,
    );
  }

  close(): void {
    this.identities.close();
    this.nodes.close();
  }
}

// The bookkeeping behind the change feed (feed.ts), without I/O: which changes of which keys
// one prefix watch has delivered, so a waiter that read a key at revision R learns at once
// whether the key changed after R, or else waits for the next change.
//
// The rule that keeps it exact: a key's changes are remembered only from the moment its
// *scope* (an identity's or a node's keys) became interesting. A waiter whose read is older
// than that moment, or older than the watch itself, may have missed a change: it is told to
// read again ('unknown'), never that nothing happened.

export type ChangeKind = 'put' | 'delete';

export interface Change {
  kind: ChangeKind;
  revision: bigint;
  /** The value written (puts only). */
  value?: Buffer;
}

/** What a waiter that read `key` at a revision learns right away. */
export type Lookup =
  /** The key changed after the read: this is its latest change. */
  | { verdict: 'changed'; change: Change }
  /** Nothing changed after the read so far: wait for the next change. */
  | { verdict: 'wait' }
  /** The log cannot tell (the read is older than what it covers, or it is resyncing): read again. */
  | { verdict: 'unknown' };

export class ChangeLog {
  /** Changes are known from this revision on (exclusive), once the watch runs; undefined while it does not. */
  private baseline: bigint | undefined;
  /** Highest revision delivered so far (events arrive in revision order). */
  private progress = 0n;
  /** Each key's latest change, by scope (the keys under a prefix of one scope are listed without a scan of all). */
  private readonly latest = new Map<string, Map<string, Change>>();
  /** Per scope: changes after this revision are remembered. */
  private readonly since = new Map<string, bigint>();

  constructor(private readonly scopeOf: (key: string) => string | undefined) {}

  /** The watch (re)started after a read at `revision`: everything before it is forgotten. */
  started(revision: bigint): void {
    this.baseline = revision;
    this.progress = revision;
    this.latest.clear();
    for (const scope of this.since.keys()) this.since.set(scope, revision);
  }

  /** The watch broke: nothing is known until it starts again. */
  stopped(): void {
    this.baseline = undefined;
    this.latest.clear();
  }

  /**
   * The watch's stream broke and the client library resumed it by itself, from the last
   * response header it had seen: events up to that header that it had not delivered are lost
   * for good, and they all lie at or before `revision`, the resumed watch's first header.
   * Reads older than that are no longer covered (their waiters read again).
   */
  resumed(revision: bigint): void {
    if (this.baseline !== undefined && revision > this.baseline) this.baseline = revision;
  }

  get running(): boolean {
    return this.baseline !== undefined;
  }

  /** Remember changes of this scope's keys from now on. */
  interest(scope: string): void {
    if (this.since.has(scope)) return;
    this.since.set(scope, this.progress);
  }

  /** A change delivered by the watch. Returns whether anyone might wait for it. */
  record(key: string, change: Change): boolean {
    if (change.revision > this.progress) this.progress = change.revision;
    const scope = this.scopeOf(key);
    if (scope === undefined || !this.since.has(scope)) return false;
    let inScope = this.latest.get(scope);
    if (!inScope) this.latest.set(scope, (inScope = new Map()));
    inScope.set(key, change);
    return true;
  }

  /** The highest revision the watch delivered: every change up to it is in the log. */
  get knownThrough(): bigint {
    return this.progress;
  }

  lookup(key: string, readAt: bigint): Lookup {
    if (!this.covers(key, readAt)) return { verdict: 'unknown' };
    const change = this.latest.get(this.scopeOf(key)!)?.get(key);
    if (change && change.revision > readAt) return { verdict: 'changed', change };
    return { verdict: 'wait' };
  }

  /**
   * The latest change of each key under `prefix` (within one scope) after `readAt`, keys
   * that did not exist at the read included; undefined when the log cannot tell.
   */
  changesUnder(prefix: string, readAt: bigint): Map<string, Change> | undefined {
    if (!this.covers(prefix, readAt)) return undefined;
    const found = new Map<string, Change>();
    for (const [key, change] of this.latest.get(this.scopeOf(prefix)!) ?? []) {
      if (key.startsWith(prefix) && change.revision > readAt) found.set(key, change);
    }
    return found;
  }

  /** Whether every change of `key`'s scope after `readAt` is in the log. */
  private covers(key: string, readAt: bigint): boolean {
    if (this.baseline === undefined) return false;
    const scope = this.scopeOf(key);
    const since = scope === undefined ? undefined : this.since.get(scope);
    return since !== undefined && readAt >= since && readAt >= this.baseline;
  }
}

// Observing an identity's leader from outside (controller, CLI, standbys' dashboards).
// Every change is reported in order; after a watch error (compaction, cancel) the state is
// read again (ResyncingWatch), so the observer never ends up on a stale view.
import type { Etcd3 } from 'etcd3';
import { TxnBatcher } from './batch.js';
import { ChangeFeed } from './feed.js';
import type { FencingToken } from './errors.js';
import { decode, Keys, LeaderRecord } from './keys.js';
import { backoffMs, type Backoff } from './retry.js';
import { ResyncingWatch } from './watch.js';

export interface LeaderState {
  leader: { record: LeaderRecord; token: FencingToken } | undefined;
  /** etcd revision at which this state was observed. */
  revision: bigint;
}

/**
 * Pauses before reading again while the shared feed is in trouble or a read failed: from
 * 500 ms doubling to 5 s. Every identity of an agent observes its leader, so a fixed pause
 * had 2,000 observers per agent re-reading an etcd too slow to answer them in step (60,000
 * failed reads on one agent in three minutes, 10,000 identities on 10 agents).
 */
const OBSERVER_BACKOFF: Backoff = { firstMs: 500, maxMs: 5_000 };

export class LeaderObserver {
  private watch: { close(): Promise<void> } | undefined;
  private lastToken: FencingToken | undefined | null = null;
  private troubled = false;

  private constructor(
    private readonly key: string,
    private readonly onChange: (state: LeaderState) => void,
  ) {}

  /**
   * Start observing; `onChange` is called with the current state, then with every change.
   * `onTrouble` hears each failed read or watch (it retries by itself, and the view is stale
   * meanwhile), and `undefined` once a fresh read got through again.
   */
  static async start(
    client: Etcd3,
    identity: string,
    onChange: (state: LeaderState) => void,
    keys = new Keys(),
    onTrouble?: (err: Error | undefined) => void,
  ): Promise<LeaderObserver> {
    const observer = new LeaderObserver(keys.leader(identity), onChange);
    observer.watch = await ResyncingWatch.start(
      client,
      { key: observer.key },
      {
        snapshot: (kvs, revision) => {
          if (observer.troubled) onTrouble?.(undefined);
          observer.troubled = false;
          observer.report({
            leader: kvs[0] ? observer.parse(kvs[0].value, kvs[0].mod_revision) : undefined,
            revision,
          });
        },
        trouble: (err) => {
          observer.troubled = true;
          onTrouble?.(err);
        },
        put: (kv) =>
          observer.report({
            leader: observer.parse(kv.value, kv.mod_revision),
            revision: BigInt(kv.mod_revision),
          }),
        delete: (kv) => observer.report({ leader: undefined, revision: BigInt(kv.mod_revision) }),
      },
    );
    return observer;
  }

  /**
   * The same, on this process's shared change feed (feed.ts) instead of a watch of its own:
   * what an agent hosting many identities uses, so its watches do not grow with them.
   */
  static async follow(
    client: Etcd3,
    identity: string,
    onChange: (state: LeaderState) => void,
    keys = new Keys(),
    onTrouble?: (err: Error | undefined) => void,
  ): Promise<LeaderObserver> {
    const observer = new LeaderObserver(keys.leader(identity), onChange);
    const feed = ChangeFeed.for(client, keys);
    let closed = false;
    let unfollow: (() => void) | undefined;
    let reading: Promise<void> | undefined;
    const read = async (pause: boolean): Promise<void> => {
      unfollow?.();
      unfollow = undefined;
      for (let failures = pause ? 1 : 0; !closed; failures++) {
        if (failures > 0) await new Promise((r) => setTimeout(r, backoffMs(failures, OBSERVER_BACKOFF)));
        if (closed) return;
        try {
          // Merged with the other reads and campaign steps of this moment (batch.ts): an agent
          // starting 2,000 observers sends a few transactions, not 2,000 reads.
          const res = await TxnBatcher.for(client).run([client.get(observer.key)], observer.key);
          const revision = BigInt(res.revision);
          if (observer.troubled) onTrouble?.(undefined);
          observer.troubled = false;
          const kv = res.responses[0]?.response_range?.kvs[0];
          observer.report({ leader: kv ? observer.parse(kv.value, kv.mod_revision) : undefined, revision });
          unfollow = feed.follow(observer.key, revision, {
            change: (c) =>
              observer.report({
                leader: c.kind === 'put' ? observer.parse(c.value, String(c.revision)) : undefined,
                revision: c.revision,
              }),
            resync: (error) => {
              if (error) {
                observer.troubled = true;
                onTrouble?.(error);
              }
              reading = read(error !== undefined);
            },
          });
          return;
        } catch (err) {
          observer.troubled = true;
          onTrouble?.(err as Error);
        }
      }
    };
    reading = read(false);
    await reading;
    observer.watch = {
      close: async () => {
        closed = true;
        unfollow?.();
        await reading;
      },
    };
    return observer;
  }

  private report(state: LeaderState): void {
    const token = state.leader?.token;
    if (token === this.lastToken) return;
    this.lastToken = token;
    this.onChange(state);
  }

  private parse(value: Buffer | undefined, modRevision: string) {
    return { record: decode(LeaderRecord, value, this.key)!, token: BigInt(modRevision) };
  }

  async close(): Promise<void> {
    await this.watch?.close();
  }
}

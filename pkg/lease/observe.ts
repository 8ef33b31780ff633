// Observing an identity's leader from outside (controller, CLI, standbys' dashboards).
// Every change is reported in order; after a watch error (compaction, cancel) the state is
// read again (ResyncingWatch), so the observer never ends up on a stale view.
import type { Etcd3, IKeyValue } from 'etcd3';
import type { FencingToken } from './errors.js';
import { decode, Keys, LeaderRecord } from './keys.js';
import { ResyncingWatch } from './watch.js';

export interface LeaderState {
  leader: { record: LeaderRecord; token: FencingToken } | undefined;
  /** etcd revision at which this state was observed. */
  revision: bigint;
}

export class LeaderObserver {
  private watch: ResyncingWatch | undefined;
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
          observer.report({ leader: kvs[0] ? observer.parse(kvs[0]) : undefined, revision });
        },
        trouble: (err) => {
          observer.troubled = true;
          onTrouble?.(err);
        },
        put: (kv) => observer.report({ leader: observer.parse(kv), revision: BigInt(kv.mod_revision) }),
        delete: (kv) => observer.report({ leader: undefined, revision: BigInt(kv.mod_revision) }),
      },
    );
    return observer;
  }

  private report(state: LeaderState): void {
    const token = state.leader?.token;
    if (token === this.lastToken) return;
    this.lastToken = token;
    this.onChange(state);
  }

  private parse(kv: IKeyValue) {
    return { record: decode(LeaderRecord, kv.value, this.key)!, token: BigInt(kv.mod_revision) };
  }

  async close(): Promise<void> {
    await this.watch?.close();
  }
}

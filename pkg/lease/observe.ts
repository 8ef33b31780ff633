// Observing an identity's leader from outside (controller, CLI, standbys' dashboards).
// Every change is reported in order; after a watch error (compaction, cancel) the observer
// re-reads and re-watches from the read's revision, so it never ends up on a stale state.
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import type { FencingToken } from './campaign.js';
import { within } from './etcd.js';
import { decode, Keys, LeaderRecord } from './keys.js';

const CALL_MS = 2_000;
const RETRY_MS = 500;

export interface LeaderState {
  leader: { record: LeaderRecord; token: FencingToken } | undefined;
  /** etcd revision at which this state was observed. */
  revision: bigint;
}

export class LeaderObserver {
  private watcher: Watcher | undefined;
  private closed = false;
  private lastToken: FencingToken | undefined | null = null;

  private constructor(
    private readonly client: Etcd3,
    private readonly key: string,
    private readonly onChange: (state: LeaderState) => void,
  ) {}

  /** Start observing; `onChange` is called with the current state, then with every change. */
  static async start(
    client: Etcd3,
    identity: string,
    onChange: (state: LeaderState) => void,
    keys = new Keys(),
  ): Promise<LeaderObserver> {
    const observer = new LeaderObserver(client, keys.leader(identity), onChange);
    await observer.resync();
    return observer;
  }

  private report(state: LeaderState): void {
    const token = state.leader?.token;
    if (token === this.lastToken) return;
    this.lastToken = token;
    this.onChange(state);
  }

  private async resync(): Promise<void> {
    while (!this.closed) {
      try {
        const res = await this.client.get(this.key).options(within(CALL_MS)).exec();
        const kv = res.kvs[0];
        const revision = BigInt(res.header.revision);
        this.report({ leader: kv ? this.parse(kv) : undefined, revision });
        await this.watchFrom(revision + 1n);
        return;
      } catch {
        await new Promise((resolve) => setTimeout(resolve, RETRY_MS));
      }
    }
  }

  private parse(kv: IKeyValue) {
    return { record: decode(LeaderRecord, kv.value, this.key)!, token: BigInt(kv.mod_revision) };
  }

  private async watchFrom(revision: bigint): Promise<void> {
    const watcher = await this.client.watch().key(this.key).startRevision(String(revision)).create();
    if (this.closed) {
      await watcher.cancel();
      return;
    }
    this.watcher = watcher;
    watcher.on('put', (kv: IKeyValue) =>
      this.report({ leader: this.parse(kv), revision: BigInt(kv.mod_revision) }),
    );
    watcher.on('delete', (kv: IKeyValue) =>
      this.report({ leader: undefined, revision: BigInt(kv.mod_revision) }),
    );
    watcher.on('error', () => {
      void watcher.cancel().catch(() => undefined);
      if (this.watcher === watcher) this.watcher = undefined;
      void this.resync();
    });
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.watcher?.cancel().catch(() => undefined);
  }
}

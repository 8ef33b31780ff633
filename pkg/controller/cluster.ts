// The controller's read side, shared by the loop and every API operation: the cluster
// snapshot (the last one kept for cheap reads such as info()), the view context the pure
// rules read, and the "may I write?" check every change begins with, which hands back the
// election term the change's writes will be guarded by.
import type { Etcd3 } from 'etcd3';
import { ApiError } from '../api/schema.js';
import type { Clock } from '../clock/index.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import type { Authority } from '../lease/admin.js';
import type { SeenAgent } from './agents.js';
import { CATCH_UP_MS, type ClusterMirror } from './mirror.js';
import {
  isTermEnded,
  NotActiveError,
  readSnapshot,
  type ClusterSnapshot,
  type ControllerKeys,
  type GuardedWriter,
} from './store.js';
import { identityKeys, type ViewContext } from './view.js';

const namesBySnapshot = new WeakMap<ClusterSnapshot, string[]>();

/** Rounds in a row the controller waits for a lagging mirror before reading etcd itself. */
const MIRROR_MISSES_BEFORE_READ = 4;

export interface ClusterDeps {
  name: string;
  etcd: Etcd3;
  keys: ControllerKeys;
  writer: GuardedWriter;
  clock: Clock;
  /** This controller is the active one (its election term holds, as far as it knows). */
  isActive(): boolean;
  agents(): ReadonlyMap<string, SeenAgent>;
  heartbeatTimeoutMs: number;
  /** Wall-clock ms this controller started listening for heartbeats. */
  startedAt: number;
  /** The watched copy snapshots are served from when it is caught up (absent: always read etcd). */
  mirror?: ClusterMirror;
  /** Where each snapshot came from (for the metric). */
  onSnapshot?: (source: 'mirror' | 'etcd') => void;
}

export class Cluster {
  /** The newest snapshot read by anyone (undefined until etcd first answered). */
  last: ClusterSnapshot | undefined;

  constructor(private readonly deps: ClusterDeps) {}

  get name(): string {
    return this.deps.name;
  }

  /**
   * The whole cluster at one revision, no older than this call: from the mirror once it has
   * caught up with etcd's current revision, else read from etcd. etcd errors as they come
   * (for retry loops).
   */
  async snapshot(opts: { mirrorOnly?: boolean } = {}): Promise<ClusterSnapshot> {
    const snap = await this.fresh(opts.mirrorOnly === true);
    if (!this.last || snap.revision >= this.last.revision) this.last = snap;
    return snap;
  }

  /**
   * `mirrorOnly`: the controller's round, which runs again in 250 ms, waits for the mirror
   * rather than read every key (at 10,000 identities those reads are what slows the mirror).
   */
  private async fresh(mirrorOnly: boolean): Promise<ClusterSnapshot> {
    const { mirror, etcd, keys, onSnapshot } = this.deps;
    if (mirror) {
      const revision = await this.currentRevision();
      if (await mirror.reach(revision)) {
        const snap = mirror.snapshot();
        if (snap) {
          this.mirrorMisses = 0;
          onSnapshot?.('mirror');
          return snap;
        }
      }
      // A round waits for a mirror that lags a little; one that lost its watch, or keeps
      // lagging, must not stop the rounds: they read etcd until it is back.
      if (mirrorOnly && mirror.isSynced && ++this.mirrorMisses < MIRROR_MISSES_BEFORE_READ) {
        throw new Error(
          `the cluster mirror has not reached etcd's revision ${revision} within ${CATCH_UP_MS} ms (starting, or its watch is behind or reconnecting)`,
        );
      }
    }
    onSnapshot?.('etcd');
    return readSnapshot(etcd, keys);
  }

  /**
   * Resolves at the next change to `identity`'s keys the mirror sees, or after `withinMs`
   * (without a mirror: after `withinMs`).
   */
  async changed(identity: string, withinMs: number): Promise<'changed' | 'timeout'> {
    const { mirror, clock } = this.deps;
    if (mirror) return mirror.changed(identity, withinMs);
    await clock.sleep(withinMs);
    return 'timeout';
  }

  /** Rounds in a row the mirror did not catch up in time. */
  private mirrorMisses = 0;
  private revisionInFlight: Promise<bigint> | undefined;
  private revisionNext: Promise<bigint> | undefined;

  /**
   * etcd's current revision, by a one-key read. Callers arriving while a read is out share the
   * next one (issued after theirs arrived, so it is no older than their call): a thousand
   * workflow steps at once cost two reads, not a thousand.
   */
  private currentRevision(): Promise<bigint> {
    if (!this.revisionInFlight) {
      const { etcd, keys } = this.deps;
      this.revisionInFlight = etcd
        .get(`${keys.prefix}/`)
        .options(within(ETCD_CALL_MS))
        .exec()
        .then((res) => BigInt(res.header.revision))
        .finally(() => (this.revisionInFlight = undefined));
      return this.revisionInFlight;
    }
    this.revisionNext ??= this.revisionInFlight
      .catch(() => undefined)
      .then(() => {
        this.revisionNext = undefined;
        return this.currentRevision();
      });
    return this.revisionNext;
  }

  /** Read the whole cluster for an API call: an etcd failure is answered as `unavailable`. */
  async read(): Promise<ClusterSnapshot> {
    try {
      return await this.snapshot();
    } catch (err) {
      throw new ApiError(
        'unavailable',
        `etcd does not answer (${(err as Error).message}); retry when it is back`,
      );
    }
  }

  view(snap: ClusterSnapshot): ViewContext {
    return {
      snap,
      agents: this.deps.agents(),
      heartbeatTimeoutMs: this.deps.heartbeatTimeoutMs,
      now: this.deps.clock.wallMs(),
      startedAt: this.deps.startedAt,
    };
  }

  /**
   * Identities with a spec or a leader, sorted; computed once per snapshot (a mirrored one is
   * served to every round and every page of a list until something changes).
   */
  identityNames(snap: ClusterSnapshot): readonly string[] {
    let names = namesBySnapshot.get(snap);
    if (!names) {
      names = [
        ...new Set([
          ...snap.specs.keys(),
          ...[...snap.identities].filter(([, k]) => k.leader).map(([id]) => id),
        ]),
      ].sort();
      namesBySnapshot.set(snap, names);
    }
    return names;
  }

  requireIdentity(snap: ClusterSnapshot, identity: string): void {
    if (!snap.specs.has(identity) && !identityKeys(snap, identity).leader) {
      throw new ApiError(
        'not-found',
        `no identity named ${identity}; list them with GET /v1/identities`,
        'path.identity',
      );
    }
  }

  /**
   * Changes are made by the active controller only. Returns its election term, captured now:
   * every write of the change compares it in the same etcd txn, so a controller deposed
   * meanwhile writes nothing. A standby answers `not-active`, naming the active one.
   */
  async requireActive(): Promise<Authority> {
    if (this.deps.isActive()) {
      try {
        return this.deps.writer.authority();
      } catch (err) {
        if (!(err instanceof NotActiveError)) throw err;
      }
    }
    const snap = await this.read();
    const active = snap.activeController;
    const url = active ? snap.controllers.get(active)?.url : undefined;
    throw new ApiError(
      'not-active',
      active
        ? `controller ${this.deps.name} is a standby; send changes to the active controller ${active}${url ? ` at ${url}` : ''}`
        : `controller ${this.deps.name} is a standby and no controller is active right now; retry in a few seconds`,
      undefined,
      active ? { name: active, ...(url ? { url } : {}) } : undefined,
    );
  }

  /**
   * A write refused because this controller's term ended is answered `not-active` (naming the
   * active controller when this one already knows it is a standby); other errors pass as
   * they are.
   */
  async refusal(err: unknown): Promise<never> {
    if (!isTermEnded(err)) throw err;
    await this.requireActive();
    throw new ApiError(
      'not-active',
      `the election term of controller ${this.deps.name} ended during this request (${(err as Error).message}); nothing more was written: retry, the active controller decides`,
    );
  }
}

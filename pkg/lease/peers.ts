// What this process has seen of other agents' sessions: for each lease, when it last saw
// that lease renewed. A successor uses it to bound how long an earlier holder may still be
// logged in, on its own monotonic clock and without trusting anyone's word.
//
// Why this is proof: a holder measures its self-fence deadline from the *send* time of its
// last acknowledged renewal, and every renewal rewrites its session key. We saw that write
// after the holder sent it, so the holder is out by `lastSeenAt + T × (1 − drift)` on any
// clock that runs at about our rate. Keepalives leave no trace other nodes can see; a lease
// that is gone says nothing of when its holder last renewed it.
import type { Etcd3, IKeyValue } from 'etcd3';
import { systemClock, type Clock } from '../clock/index.js';
import { TypedEmitter } from './emitter.js';
import { Keys } from './keys.js';
import { KEEPALIVES_PER_TTL } from './timing.js';
import { ResyncingWatch } from './watch.js';

/** Gone leases remembered at most this long; after that a successor falls back to its read time. */
const FORGET_GONE_AFTER_MS = 10 * 60_000;

/**
 * A leaving leader hands its term only to a standby seen renewing its session within this many
 * of that standby's renewal intervals (T / KEEPALIVES_PER_TTL): one late renewal on a busy host
 * is ordinary, several in a row mean a frozen, cut-off or dead agent, and a term handed to it
 * would sit on its lease, with nobody logged in, until that lease expired. The election the
 * leaving leader falls back to costs a few hundred ms; a wrong hand-over costs up to T.
 * Not caught: an agent renews from a thread of its own, which goes on while its main thread
 * was seen within T (renewal-thread.ts), so a standby whose main thread is wedged still
 * counts as alive, and a term handed to it waits until its session stops (up to about 2T).
 */
export const LIVE_SUCCESSOR_RENEWALS = 3;

/**
 * The view of other sessions if it has started, else undefined at once: a gate or a leaving
 * leader never waits for it to start (its first read may be stuck on the etcd trouble that
 * they are deciding around).
 */
export function startedView(view: Promise<PeerSessions>): Promise<PeerSessions | undefined> {
  return Promise.race([
    view.catch(() => undefined),
    new Promise<undefined>((resolve) => setImmediate(() => resolve(undefined))),
  ]);
}

/** Whether a session with lease TTL `ttlMs` was seen renewed lately (LIVE_SUCCESSOR_RENEWALS), at monotonic `now`. */
export function renewedLately(seen: PeerSighting | undefined, ttlMs: number, now: number): boolean {
  if (!seen || seen.gone) return false;
  return now - seen.lastSeenAt <= (LIVE_SUCCESSOR_RENEWALS * ttlMs) / KEEPALIVES_PER_TTL;
}

export interface PeerSighting {
  /** Monotonic ms (the observer's clock) when this process last saw the lease renewed (or present in a read). */
  lastSeenAt: number;
  /** The session key was deleted (the lease was revoked or expired). */
  gone: boolean;
  /**
   * etcd revision of the latest write of the session key seen: its last renewal once it is
   * gone. 0 when none was seen, or when writes may have been missed (it went while the watch
   * was down).
   */
  modRevision: bigint;
  goneAt?: number;
}

/**
 * Whether the view keeps up with etcd. Its read and watch retry by themselves; this tells
 * whoever relies on the view each failure (`change` with the error) and the recovery
 * (`change` with undefined), so a view stuck on an unreachable etcd is never silent.
 */
export class PeerHealth extends TypedEmitter<{ change: Error | undefined }> {
  private trouble: Error | undefined;
  /** The latest failure, while the view has not recovered from it. */
  get current(): Error | undefined {
    return this.trouble;
  }
  report(err: Error | undefined): void {
    if (!err && !this.trouble) return;
    this.trouble = err;
    this.emit('change', err);
  }
}

/** The shared view of one client, clock and prefix: ready once its first read is in. */
export interface PeerView {
  ready: Promise<PeerSessions>;
  health: PeerHealth;
}

export class PeerSessions {
  /** Per client, clock and key prefix: sightings are only comparable on the clock they were taken on. */
  private static readonly shared = new WeakMap<Etcd3, Map<Clock, Map<string, PeerView>>>();
  private readonly seen = new Map<string, PeerSighting>();
  /** Highest etcd revision whose changes have been applied to `seen`. */
  private progress = 0n;
  private readonly progressWaiters = new Set<() => void>();
  private watch: ResyncingWatch | undefined;

  private constructor(
    private readonly keys: Keys,
    private readonly clock: Clock,
  ) {}

  /** One observer per client, clock and key prefix, started on first use. */
  static for(client: Etcd3, keys: Keys, clock: Clock = systemClock): PeerView {
    let byClock = PeerSessions.shared.get(client);
    if (!byClock) PeerSessions.shared.set(client, (byClock = new Map()));
    let byPrefix = byClock.get(clock);
    if (!byPrefix) byClock.set(clock, (byPrefix = new Map()));
    let peers = byPrefix.get(keys.prefix);
    if (!peers) {
      const health = new PeerHealth();
      const started = PeerSessions.start(client, keys, clock, health);
      peers = { ready: started, health };
      byPrefix.set(keys.prefix, peers);
      // A start that failed is not cached: the next caller tries again.
      started.catch(() => byPrefix.delete(keys.prefix));
      // The library keeps re-creating a watch that is still attached when its client closes
      // (a timer loop that keeps the process alive): cancel ours first, synchronously.
      let instance: PeerSessions | undefined;
      let closed = false;
      void started.then(
        (p) => {
          instance = p;
          if (closed) void p.close();
        },
        () => undefined,
      );
      const closeClient = client.close.bind(client);
      client.close = () => {
        closed = true;
        if (instance) void instance.close();
        closeClient();
      };
    }
    return peers;
  }

  static async start(
    client: Etcd3,
    keys: Keys,
    clock: Clock = systemClock,
    health = new PeerHealth(),
  ): Promise<PeerSessions> {
    const peers = new PeerSessions(keys, clock);
    peers.watch = await ResyncingWatch.start(
      client,
      { prefix: keys.sessions() },
      {
        snapshot: (kvs, revision) => {
          peers.onSnapshot(kvs, revision);
          health.report(undefined);
        },
        put: (kv) => peers.onPut(kv),
        delete: (kv) => peers.onDelete(kv),
        trouble: (err) => health.report(err),
      },
    );
    return peers;
  }

  /** What was seen of `leaseId`, if anything. */
  sighting(leaseId: string): PeerSighting | undefined {
    return this.seen.get(leaseId);
  }

  /**
   * What was seen of the lease, counting every change up to `revision` (a read that found its
   * session key gone). Waits up to `ms` for the watch to deliver those changes; undefined when
   * it did not, or the lease was never seen.
   */
  async sightingUpTo(leaseId: string, revision: bigint, ms: number): Promise<PeerSighting | undefined> {
    const deadline = this.clock.monotonicMs() + ms;
    while (this.progress < revision && !this.seen.get(leaseId)?.gone) {
      const left = deadline - this.clock.monotonicMs();
      if (left <= 0) return undefined;
      await new Promise<void>((resolve) => {
        const done = () => {
          cancel();
          this.progressWaiters.delete(done);
          resolve();
        };
        const cancel = this.clock.after(left, done);
        this.progressWaiters.add(done);
      });
    }
    return this.seen.get(leaseId);
  }

  async close(): Promise<void> {
    await this.watch?.close();
  }

  private leaseOf(kv: IKeyValue): string {
    return kv.key.toString().slice(this.keys.sessions().length);
  }

  private onSnapshot(kvs: IKeyValue[], revision: bigint): void {
    const now = this.clock.monotonicMs();
    const present = new Set(kvs.map((kv) => this.leaseOf(kv)));
    // Leases that went while we were not watching: their last renewal may have been any time
    // up to now, so now is the only safe bound, and which write was the last is unknown (0).
    for (const [lease, s] of this.seen) {
      if (!present.has(lease) && !s.gone)
        this.seen.set(lease, { lastSeenAt: now, gone: true, goneAt: now, modRevision: 0n });
    }
    for (const kv of kvs) {
      this.seen.set(this.leaseOf(kv), { lastSeenAt: now, gone: false, modRevision: BigInt(kv.mod_revision) });
    }
    this.advance(revision);
  }

  private onPut(kv: IKeyValue): void {
    this.seen.set(this.leaseOf(kv), {
      lastSeenAt: this.clock.monotonicMs(),
      gone: false,
      modRevision: BigInt(kv.mod_revision),
    });
    this.advance(BigInt(kv.mod_revision));
  }

  private onDelete(kv: IKeyValue): void {
    const lease = this.leaseOf(kv);
    const now = this.clock.monotonicMs();
    // Never seen renewed: the deletion is the first and only sighting.
    const before = this.seen.get(lease);
    this.seen.set(lease, {
      lastSeenAt: before?.lastSeenAt ?? now,
      gone: true,
      goneAt: now,
      modRevision: before?.modRevision ?? 0n,
    });
    this.advance(BigInt(kv.mod_revision));
    this.forgetOld(now);
  }

  private advance(revision: bigint): void {
    if (revision > this.progress) this.progress = revision;
    for (const wake of [...this.progressWaiters]) wake();
  }

  private forgetOld(now: number): void {
    for (const [lease, s] of this.seen) {
      if (s.gone && s.goneAt !== undefined && now - s.goneAt > FORGET_GONE_AFTER_MS) this.seen.delete(lease);
    }
  }
}

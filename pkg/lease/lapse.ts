// A waiting standby ends a lapsed holder's lease itself, at the instant the holder is
// provably out, instead of leaving it to etcd's expiry.
//
// Why: etcd 3.4 looks for expired leases every 500 ms (the lessor's loop, not configurable),
// so a dead holder's key outlives its lease by 0–500 ms, and every failover pays that before
// anything of ours runs (bench/README.md: it alone put p99 past T + 300 ms).
//
// Why it is safe (the proof of peers.ts): a holder's self-fence clock runs only from the send
// time of its last *acknowledged* session-key write, and we saw that write after it was sent.
// Once T has passed on our clock since the latest write we saw, the holder stopped acting at D
// and was out by T × (1 − drift) on its own. A linearizable read then confirms that no later
// write was acknowledged that our watch has not delivered yet. Revoking then ends only what
// the holder's own rule already ended — etcd's expiry, at most 500 ms sooner — so it never
// moves an identity that was not already moving.
//
// The check and a record of it go in one transaction: "the holder's session key was last
// written at revision R, a renewal this node saw T or more ago" (keys.ts, LapseRecord). The
// revoke proves nothing by itself; the successor's login gate (clearance.ts) accepts the
// record in place of its own sighting, which came later, only when R is also the last
// renewal it saw itself: otherwise a renewal came after the check, and it waits as before.
import type { Etcd3 } from 'etcd3';
import type { Clock } from '../clock/index.js';
import { ETCD_CALL_MS, isLeaseGone, within } from './etcd.js';
import type { Keys, LapseRecord } from './keys.js';
import type { PeerSessions, PeerSighting } from './peers.js';

export interface LapseFacts {
  /** What this process saw of the holder's session (peers.ts). */
  sighting: PeerSighting | undefined;
  /** The holder's T, from its leader record. */
  ttlMs: number;
  /** Monotonic ms of this decision. */
  now: number;
  /** A linearizable read of the holder's session key, once the sighting says it lapsed. */
  read?: { present: boolean; modRevision: bigint };
}

export type LapseVerdict =
  | { action: 'wait'; why: string; checkInMs: number }
  | { action: 'confirm'; why: string }
  | { action: 'revoke'; why: string }
  | { action: 'stop'; why: string };

/** Should this process end the holder's lease now? A pure decision with the sentence to log. */
export function decideLapse(f: LapseFacts): LapseVerdict {
  const s = f.sighting;
  if (!s) {
    return { action: 'stop', why: 'its session was never seen renewed here: etcd’s expiry ends it' };
  }
  if (s.gone) return { action: 'stop', why: 'its session is already gone' };
  const since = f.now - s.lastSeenAt;
  if (since < f.ttlMs) {
    return {
      action: 'wait',
      why: `its session was seen renewed ${Math.round(since)} ms ago, within its TTL of ${f.ttlMs} ms`,
      checkInMs: Math.max(1, Math.ceil(s.lastSeenAt + f.ttlMs - f.now)),
    };
  }
  const lapsed = `not seen renewed for ${Math.round(since)} ms, past its TTL of ${f.ttlMs} ms`;
  if (!f.read) return { action: 'confirm', why: `${lapsed}; reading its session key to confirm` };
  if (!f.read.present) return { action: 'stop', why: 'its session is already gone' };
  if (f.read.modRevision !== s.modRevision) {
    // A write our watch has not delivered yet: the read itself is the newest sighting.
    return {
      action: 'wait',
      why: `its session key was rewritten at revision ${f.read.modRevision}, after the last renewal seen here (${s.modRevision}): it renews`,
      checkInMs: f.ttlMs,
    };
  }
  return {
    action: 'revoke',
    why: `${lapsed}, and etcd has no later renewal: its holder self-fenced, so its lease is revoked now rather than at etcd’s next expiry check`,
  };
}

/**
 * Told once per lease this process revoked (`revoked`), or failed to (etcd's expiry then ends
 * it), with the holder's node and why. Not told when etcd's expiry got there first.
 */
export type LapseReport = (r: { leaseId: string; node: string; revoked: boolean; why: string }) => void;

/** Where the sightings come from (peers.ts; a test may give a view of its own). */
export type SightingSource = Pick<PeerSessions, 'sighting'>;

/** The node watching, and the lease its lapse records are bound to (its own session's). */
export interface LapseRecorder {
  node: string;
  leaseId: string;
}

interface Watched {
  node: string;
  ttlMs: number;
  /** Who records the lapse (the first to watch); without one the check is a plain read. */
  recorder?: LapseRecorder;
  reports: Set<LapseReport>;
  cancel?: () => void;
  /** A confirm-and-revoke is in flight. */
  busy: boolean;
}

/**
 * One per view of other sessions (so per agent process): every identity waiting on the same
 * holder shares one timer and at most one revoke, whatever the number of identities.
 */
export class LapseWatch {
  private static readonly shared = new WeakMap<SightingSource, LapseWatch>();
  private readonly watched = new Map<string, Watched>();

  private constructor(
    private readonly client: Etcd3,
    private readonly keys: Keys,
    private readonly peers: SightingSource,
    private readonly clock: Clock,
  ) {}

  static for(client: Etcd3, keys: Keys, peers: SightingSource, clock: Clock): LapseWatch {
    let watch = LapseWatch.shared.get(peers);
    if (!watch) LapseWatch.shared.set(peers, (watch = new LapseWatch(client, keys, peers, clock)));
    return watch;
  }

  /**
   * Watch `leaseId` (held by `node`, TTL `ttlMs`) while the returned function is not called;
   * `report` hears of a revoke or a failed attempt (one listener per revoke is told).
   */
  watch(
    leaseId: string,
    node: string,
    ttlMs: number,
    report: LapseReport,
    recorder?: LapseRecorder,
  ): () => void {
    let w = this.watched.get(leaseId);
    if (!w) {
      this.watched.set(
        leaseId,
        (w = { node, ttlMs, reports: new Set(), busy: false, ...(recorder ? { recorder } : {}) }),
      );
      this.check(leaseId);
    }
    w.reports.add(report);
    const entry = w;
    return () => {
      entry.reports.delete(report);
      if (entry.reports.size === 0 && this.watched.get(leaseId) === entry) this.forget(leaseId);
    };
  }

  private forget(leaseId: string): void {
    this.watched.get(leaseId)?.cancel?.();
    this.watched.delete(leaseId);
  }

  private check(leaseId: string, read?: LapseFacts['read']): void {
    const w = this.watched.get(leaseId);
    if (!w || w.busy) return;
    const sighting = this.peers.sighting(leaseId);
    const verdict = decideLapse({
      sighting,
      ttlMs: w.ttlMs,
      now: this.clock.monotonicMs(),
      ...(read ? { read } : {}),
    });
    switch (verdict.action) {
      case 'stop':
        return this.forget(leaseId);
      case 'wait':
        w.cancel = this.clock.after(verdict.checkInMs, () => this.check(leaseId));
        return;
      case 'confirm':
        void this.act(leaseId, w, { confirm: sighting! });
        return;
      case 'revoke':
        void this.act(leaseId, w, { revoke: verdict.why });
    }
  }

  /**
   * Check that the holder's session key is still at the renewal last seen, recording the lapse
   * when it is (or only read it, without a recorder); or revoke the holder's lease.
   */
  private async act(
    leaseId: string,
    w: Watched,
    step: { confirm: PeerSighting } | { revoke: string },
  ): Promise<void> {
    w.busy = true;
    let next: LapseFacts['read'] | 'done' = 'done';
    // Told now, before any answer: the key's deletion may reach the waiting candidate, and
    // end its wait (and its listening), before etcd's answer to the revoke reaches us.
    const tell = this.teller(w);
    try {
      if ('confirm' in step) {
        next = await this.confirm(leaseId, w, step.confirm);
      } else {
        try {
          await this.client.leaseClient.leaseRevoke({ ID: leaseId }, within(ETCD_CALL_MS));
          tell({ leaseId, node: w.node, revoked: true, why: step.revoke });
        } catch (err) {
          // etcd's expiry check got there first: nothing to report.
          if (!isLeaseGone(err)) throw err;
        }
      }
    } catch (err) {
      // Nothing is lost by not acting: etcd's own expiry still ends the lease.
      const failed =
        `could not end ${w.node}'s lapsed lease ${leaseId} early (${(err as Error).message}); etcd's expiry ` +
        `ends it within 500 ms instead. Under etcd RBAC a revoke needs write access to every key on that ` +
        `lease (its session, leader and candidate keys) and to ${this.keys.prefix}/lapses/: grant it to this ` +
        `agent's role, or accept the wait`;
      tell({ leaseId, node: w.node, revoked: false, why: failed });
    } finally {
      w.busy = false;
    }
    // Everyone stopped waiting meanwhile (and maybe someone new started, with its own check).
    if (this.watched.get(leaseId) !== w) return;
    if (next === 'done') return this.forget(leaseId);
    this.check(leaseId, next);
  }

  /**
   * Is the holder's session key still at the renewal last seen? With a recorder, one
   * transaction: if so, write the lapse record for the successor's gate; if not, read the key.
   */
  private async confirm(leaseId: string, w: Watched, seen: PeerSighting): Promise<LapseFacts['read']> {
    const sessionKey = this.keys.session(leaseId);
    const sinceMs = Math.max(0, Math.floor(this.clock.monotonicMs() - seen.lastSeenAt));
    if (!w.recorder || seen.modRevision <= 0n) {
      const kv = (await this.client.get(sessionKey).options(within(ETCD_CALL_MS)).exec()).kvs[0];
      return { present: kv !== undefined, modRevision: kv ? BigInt(kv.mod_revision) : 0n };
    }
    const record: LapseRecord = {
      node: w.node,
      by: w.recorder.node,
      sessionRevision: String(seen.modRevision),
      sinceMs,
      at: this.clock.wallMs(),
    };
    const txn = await this.client
      .if(sessionKey, 'Mod', '==', String(seen.modRevision))
      .then(this.client.put(this.keys.lapse(leaseId)).value(JSON.stringify(record)).lease(w.recorder.leaseId))
      .else(this.client.get(sessionKey))
      .options(within(ETCD_CALL_MS))
      .commit();
    if (txn.succeeded) return { present: true, modRevision: seen.modRevision };
    const kv = txn.responses[0]?.response_range?.kvs[0];
    return { present: kv !== undefined, modRevision: kv ? BigInt(kv.mod_revision) : 0n };
  }

  /** The listener to tell of what happens next (the earliest still waiting), or no one. */
  private teller(w: Watched): LapseReport {
    const first = w.reports.values().next();
    return first.done ? () => undefined : first.value;
  }
}

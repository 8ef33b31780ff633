// Drift: does a standby still run what the identity runs — its spec, access lists, service
// version, and state no older than the spec allows? Pure rules over what etcd and the
// standby's heartbeat say, each verdict with the sentences that say why. The reconciler
// (drift-reconciler.ts) turns verdicts into holds the campaign transaction checks.
import type { HeartbeatIdentity } from '../control/protocol.js';
import { newer } from '../snapshot/held.js';
import type { SnapshotRecord } from '../snapshot/record.js';
import type { DriftChecks } from '../spec/schema.js';

/**
 * Time a standby has to apply a new spec before it counts as drifted: its watch delivers the
 * spec within milliseconds and its next heartbeat says so within a period, so only a standby
 * that cannot apply it (or is cut off from etcd) is still behind after this.
 */
export const SPEC_APPLY_GRACE_MS = 10_000;

/** What the identity runs now, as the standbys are measured against. */
export interface DriftReference {
  specRevision: bigint;
  /** Digest of the current spec's access lists (pkg/spec/fingerprint.ts). */
  access: string;
  /** The leader's service version (its heartbeat), or the last one known; undefined: unknown. */
  version: string | undefined;
  /** Snapshots kept, newest first. */
  snapshots: readonly SnapshotRecord[];
  /** How long this controller has seen `specRevision` as the current one. */
  specCurrentForMs: number;
}

export interface DriftPolicy {
  checks: DriftChecks;
  maxLagMs: number;
}

export type DriftVerdict =
  /** No fresh word from the standby: nothing is concluded (an existing hold stays). */
  | { known: false; reason: string }
  /**
   * Nothing found against it; `unsure` lists the checks that could not be made (a spec change
   * still within its grace, no reference version): a hold is lifted only when it is empty.
   */
  | { known: true; drifted: false; reason: string; unsure: string[] }
  | { known: true; drifted: true; reasons: string[] };

type Fingerprint = Pick<HeartbeatIdentity, 'specRevision' | 'access' | 'version' | 'snapshot'>;

/**
 * How long the standby has lacked a snapshot it should hold (0: it holds the newest): since
 * the first snapshot newer than the one it holds was taken. When that one was pruned (it holds
 * a snapshot older than every one kept) nobody knows when it was taken, only that it came
 * after the one held: the lag is counted from the held snapshot itself, the longest it can
 * be, so a standby that stopped syncing long ago is never taken for a fresh one. One holding
 * nothing is counted from the oldest snapshot kept (a standby just started catches up at once).
 */
export function snapshotLagMs(
  held: Fingerprint['snapshot'],
  snapshots: readonly SnapshotRecord[],
  now: number,
): { lagMs: number; newest?: SnapshotRecord } {
  const newest = snapshots[0];
  if (!newest) return { lagMs: 0 };
  if (held && (held.object === newest.object || !newer(newest, held))) return { lagMs: 0, newest };
  const oldest = snapshots.at(-1)!;
  const since =
    held && held.object !== oldest.object && newer(oldest, held)
      ? Date.parse(held.takenAt)
      : Date.parse((snapshots.filter((s) => !held || newer(s, held)).at(-1) ?? newest).takenAt);
  return { lagMs: Math.max(0, now - since), newest };
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

export function judgeDrift(
  node: string,
  standby: Fingerprint | undefined,
  ref: DriftReference,
  policy: DriftPolicy,
  now: number,
): DriftVerdict {
  if (!standby) return { known: false, reason: `no fresh heartbeat from ${node}: its drift is not judged` };
  const reasons: string[] = [];
  const unsure: string[] = [];
  const { checks } = policy;
  const settled = ref.specCurrentForMs >= SPEC_APPLY_GRACE_MS;
  if (checks.spec && standby.specRevision !== String(ref.specRevision)) {
    if (!settled) unsure.push(`spec revision ${ref.specRevision} is still within its grace on ${node}`);
    else {
      reasons.push(
        standby.specRevision === undefined
          ? `${node} has not applied the spec (the identity runs revision ${ref.specRevision})`
          : `${node} runs spec revision ${standby.specRevision}, the identity runs ${ref.specRevision}`,
      );
    }
  }
  if (checks.access && standby.access !== ref.access) {
    if (standby.access === undefined) unsure.push(`${node} reports no access lists digest`);
    else if (!settled) unsure.push(`the access lists changed within their grace on ${node}`);
    else
      reasons.push(
        `${node} enforces other access lists than the identity's (${standby.access} ≠ ${ref.access})`,
      );
  }
  if (checks.version) {
    if (ref.version === undefined)
      unsure.push('no reference service version (no leader heard, none declared)');
    else if (standby.version === undefined) unsure.push(`${node} reports no service version`);
    else if (standby.version !== ref.version) {
      reasons.push(`${node} runs service version ${standby.version}, the leader runs ${ref.version}`);
    }
  }
  if (checks.snapshot) {
    const { lagMs, newest } = snapshotLagMs(standby.snapshot, ref.snapshots, now);
    if (newest && lagMs > policy.maxLagMs) {
      const holds = standby.snapshot ? `holds snapshot ${standby.snapshot.object}` : 'holds no snapshot';
      reasons.push(
        `${node} ${holds}; it has lacked newer state for ${seconds(lagMs)} (the newest is ${newest.object}), over state.maxLagMs ${seconds(policy.maxLagMs)}`,
      );
    }
  }
  if (reasons.length > 0) return { known: true, drifted: true, reasons };
  return {
    known: true,
    drifted: false,
    reason:
      unsure.length > 0
        ? `nothing against ${node} so far (not judged: ${unsure.join('; ')})`
        : `${node} runs what the identity runs`,
    unsure,
  };
}

export type NoneInSync =
  | { action: 'none'; reason: string }
  | { action: 'release'; node: string; reason: string }
  | { action: 'stay-down'; reason: string };

/**
 * The leader is gone and every live candidate is held back as drifted: what the identity's
 * policy says to do. `freshest` lets through the one holding the newest state (then the
 * highest priority, then the name, so every controller picks the same one).
 */
export function decideNoneInSync(
  identity: string,
  policy: 'stay-down' | 'freshest',
  candidates: readonly {
    node: string;
    priority: number;
    snapshot: Fingerprint['snapshot'];
    reasons: string[];
  }[],
): NoneInSync {
  if (candidates.length === 0) return { action: 'none', reason: `${identity} has no live candidate` };
  const list = candidates.map((c) => `${c.node} (${c.reasons.join('; ')})`).join(', ');
  if (policy === 'stay-down') {
    return {
      action: 'stay-down',
      reason: `${identity} stays down: no in-sync standby (state.whenNoneInSync: stay-down); drifted: ${list}. Re-sync one, or set whenNoneInSync: freshest`,
    };
  }
  const freshest = [...candidates].sort((a, b) => {
    if (a.snapshot && b.snapshot && a.snapshot.object !== b.snapshot.object)
      return newer(a.snapshot, b.snapshot) ? -1 : 1;
    if (a.snapshot && !b.snapshot) return -1;
    if (!a.snapshot && b.snapshot) return 1;
    return b.priority - a.priority || a.node.localeCompare(b.node);
  })[0]!;
  return {
    action: 'release',
    node: freshest.node,
    reason: `no in-sync standby of ${identity}: letting the freshest, ${freshest.node}${freshest.snapshot ? ` (holds ${freshest.snapshot.object})` : ''}, take over although it drifted (state.whenNoneInSync: freshest); drifted: ${list}`,
  };
}

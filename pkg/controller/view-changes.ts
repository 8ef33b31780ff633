// Which identity views may have changed since the last round, so the loop rebuilds those and
// not all of them. At 10,000 identities, building every view four times a second was most of
// an idle controller's CPU; at rest almost nothing changes.
//
// A view is made of the identity's records in the snapshot, its spec, pause and workflow, the
// fences, its probe's outcome, and what each agent's heartbeat says of it and whether that
// agent is alive. The mirror parses a key once and keeps the record while the key is
// unchanged, so an unchanged record is the same object in the next snapshot: comparing
// references finds what changed without building anything. A snapshot read from etcd
// instead (the mirror lagging) has all-new records and marks every identity, which is only
// slower. Node-wide inputs (a fence, an agent's liveness) mark every identity: they are rare.
import type { Heartbeat } from '../control/protocol.js';
import type { SeenAgent } from './agents.js';
import type { ClusterSnapshot, IdentityKeys } from './store.js';
import { agentAlive, freshAgent, type ViewContext } from './view.js';

/** Every identity (a node-wide input changed, or nothing is known of the last round). */
export const ALL = 'all' as const;
export type Changed = Set<string> | typeof ALL;

/**
 * Even with every input tracked, every view is rebuilt this often: a change this module fails
 * to see (a new kind of input added to the view and not here) still shows within it.
 */
export const FULL_REBUILD_MS = 30_000;

function sameMap<V>(a: ReadonlyMap<string, V>, b: ReadonlyMap<string, V>): boolean {
  if (a.size !== b.size) return false;
  for (const [k, v] of a) if (b.get(k) !== v) return false;
  return true;
}

const NO_DRIFTS = new Map();

function sameKeys(a: IdentityKeys | undefined, b: IdentityKeys | undefined): boolean {
  if (a === b) return true;
  if (!a || !b) return false;
  return (
    a.leader?.record === b.leader?.record &&
    a.leader?.token === b.leader?.token &&
    a.login === b.login &&
    a.termEnd === b.termEnd &&
    sameMap(a.candidates, b.candidates) &&
    sameMap(a.holdOffs, b.holdOffs) &&
    sameMap(a.drifts ?? NO_DRIFTS, b.drifts ?? NO_DRIFTS) &&
    a.snapshots?.[0] === b.snapshots?.[0]
  );
}

/** Identities whose records differ between two snapshots (ALL when a fence changed). */
export function snapshotChanges(prev: ClusterSnapshot | undefined, next: ClusterSnapshot): Changed {
  if (!prev) return ALL;
  const changed = new Set<string>();
  if (prev === next) return changed;
  if (!sameMap(prev.fences, next.fences)) return ALL;
  const differs = (id: string) =>
    prev.specs.get(id)?.spec !== next.specs.get(id)?.spec ||
    prev.specs.get(id)?.revision !== next.specs.get(id)?.revision ||
    !sameKeys(prev.identities.get(id), next.identities.get(id)) ||
    prev.paused.get(id) !== next.paused.get(id) ||
    prev.workflows.get(id)?.workflow !== next.workflows.get(id)?.workflow;
  for (const snap of [prev, next]) {
    for (const id of snap.specs.keys()) if (!changed.has(id) && differs(id)) changed.add(id);
    for (const id of snap.identities.keys()) if (!changed.has(id) && differs(id)) changed.add(id);
    for (const id of snap.paused.keys()) if (!changed.has(id) && differs(id)) changed.add(id);
    for (const id of snap.workflows.keys()) if (!changed.has(id) && differs(id)) changed.add(id);
  }
  return changed;
}

/** What a heartbeat says of each identity that a view shows. */
function entries(heartbeat: Heartbeat | undefined): Map<string, string> {
  return new Map(
    (heartbeat?.identities ?? []).map((i) => [
      i.identity,
      `${i.state}|${i.token ?? ''}|${i.specRevision ?? ''}|${i.snapshot?.object ?? ''}`,
    ]),
  );
}

/** Identities a new heartbeat says something different of than the node's previous one. */
export function heartbeatChanges(prev: Heartbeat | undefined, next: Heartbeat | undefined): Set<string> {
  const changed = new Set<string>();
  if (prev === next) return changed;
  const before = entries(prev);
  const after = entries(next);
  for (const [id, what] of after) if (before.get(id) !== what) changed.add(id);
  for (const id of before.keys()) if (!after.has(id)) changed.add(id);
  return changed;
}

/**
 * Which agents count as alive and fresh now, as one string: when it changes (an agent fell
 * silent, came back, or the start-up grace ended), every view may show it.
 */
export function livenessOf(ctx: ViewContext, nodes: Iterable<string>): string {
  const parts: string[] = [];
  for (const node of nodes) {
    parts.push(`${node}:${agentAlive(ctx, node) ? 1 : 0}${freshAgent(ctx, node) ? 1 : 0}`);
  }
  return `${ctx.now - ctx.startedAt < ctx.heartbeatTimeoutMs ? 'grace' : ''};${parts.sort().join(',')}`;
}

/** What to rebuild this round: identity views, and node views. */
export interface ViewChanges {
  identities: Changed;
  nodes: Changed;
}

/** The inputs of the last round's views, to tell what changed in this one. */
export class ViewInputs {
  private snap: ClusterSnapshot | undefined;
  private readonly heartbeats = new Map<string, Heartbeat>();
  private liveness = '';
  private fullAt = -Infinity;

  /**
   * What changed since the last call: snapshot records, heartbeats, liveness, and the probes
   * the caller says changed. `now`: monotonic ms, for the periodic full rebuild.
   */
  changes(ctx: ViewContext, probesChanged: Iterable<string>, now: number): ViewChanges {
    const snapChanged = this.snap !== ctx.snap;
    const identities = snapshotChanges(this.snap, ctx.snap);
    this.snap = ctx.snap;
    const liveness = livenessOf(ctx, ctx.agents.keys());
    const livenessChanged = liveness !== this.liveness;
    this.liveness = liveness;
    const { nodes, ids } = this.beats(ctx.agents);
    if (identities === ALL || livenessChanged || now - this.fullAt >= FULL_REBUILD_MS) {
      this.fullAt = now;
      return { identities: ALL, nodes: ALL };
    }
    for (const id of ids) identities.add(id);
    for (const id of probesChanged) identities.add(id);
    // A node's view lists candidates and fences from the snapshot, and its own heartbeat.
    return { identities, nodes: snapChanged ? ALL : nodes };
  }

  /** Nodes whose heartbeat is new, and the identities it says something new of. */
  private beats(agents: ReadonlyMap<string, SeenAgent>): { nodes: Set<string>; ids: Set<string> } {
    const nodes = new Set<string>();
    const ids = new Set<string>();
    for (const [node, seen] of agents) {
      const prev = this.heartbeats.get(node);
      if (prev === seen.heartbeat) continue;
      nodes.add(node);
      for (const id of heartbeatChanges(prev, seen.heartbeat)) ids.add(id);
      this.heartbeats.set(node, seen.heartbeat);
    }
    for (const [node, prev] of this.heartbeats) {
      if (agents.has(node)) continue;
      nodes.add(node);
      for (const id of heartbeatChanges(prev, undefined)) ids.add(id);
      this.heartbeats.delete(node);
    }
    return { nodes, ids };
  }
}

// Pure reading of a cluster snapshot: who may take an identity over, and how the identity
// and the nodes look to an operator. No I/O here, so the rules are unit-testable.
import type { IdentityView, NodeView, StandbyView } from '../api/schema.js';
import { TERMINAL_STATES } from '../api/schema.js';
import type { Heartbeat, HeartbeatIdentity } from '../control/protocol.js';
import type { SeenAgent } from './agents.js';
import type { ClusterSnapshot, IdentityKeys } from './store.js';

export interface ProbeState {
  responders: Array<{ node: string; token: string; error?: string }>;
  at?: number;
  /** Consecutive probes with no responder while the leader claims to be logged in. */
  failures: number;
  /** More than one node answered the last PING. */
  splitBrain?: boolean;
}

export interface ViewContext {
  snap: ClusterSnapshot;
  agents: ReadonlyMap<string, SeenAgent>;
  heartbeatTimeoutMs: number;
  now: number;
  /** When this controller started listening for heartbeats. */
  startedAt: number;
}

const EMPTY: IdentityKeys = { candidates: new Map(), holdOffs: new Map() };

export function identityKeys(snap: ClusterSnapshot, identity: string): IdentityKeys {
  return snap.identities.get(identity) ?? EMPTY;
}

/** Heartbeats indexed by identity on first lookup (an agent lists up to thousands). */
const heartbeatIndexes = new WeakMap<Heartbeat, Map<string, HeartbeatIdentity>>();

/** What the agent's last heartbeat says about one identity, if it lists it. */
export function heartbeatEntry(seen: SeenAgent | undefined, identity: string): HeartbeatIdentity | undefined {
  if (!seen) return undefined;
  let index = heartbeatIndexes.get(seen.heartbeat);
  if (!index) {
    index = new Map(seen.heartbeat.identities.map((i) => [i.identity, i]));
    heartbeatIndexes.set(seen.heartbeat, index);
  }
  return index.get(identity);
}

export function freshAgent(ctx: ViewContext, node: string): SeenAgent | undefined {
  const seen = ctx.agents.get(node);
  return seen && ctx.now - seen.receivedAt <= ctx.heartbeatTimeoutMs ? seen : undefined;
}

/**
 * Is the node's agent alive? Fresh heartbeats say so; a controller that started less than
 * one heartbeat timeout ago has not heard everyone yet and gives the benefit of the doubt
 * (the candidate key, bound to the agent's lease, still has to be there).
 */
export function agentAlive(ctx: ViewContext, node: string): boolean {
  if (freshAgent(ctx, node)) return true;
  return !ctx.agents.has(node) && ctx.now - ctx.startedAt < ctx.heartbeatTimeoutMs;
}

/** Every node that is, or claims to be, a candidate for the identity, with its health. */
export function standbys(ctx: ViewContext, identity: string): StandbyView[] {
  const keys = identityKeys(ctx.snap, identity);
  const spec = ctx.snap.specs.get(identity)?.spec;
  const nodes = new Set<string>([...keys.candidates.keys(), ...Object.keys(spec?.candidates ?? {})]);
  for (const [node, seen] of ctx.agents) {
    if (heartbeatEntry(seen, identity)) nodes.add(node);
  }
  const specRevision = ctx.snap.specs.get(identity)?.revision;
  return [...nodes].sort().map((node) => {
    const candidate = keys.candidates.get(node);
    const agent = freshAgent(ctx, node);
    const own = heartbeatEntry(agent, identity);
    const fenced = ctx.snap.fences.has(node) || keys.holdOffs.has(node);
    const nofailover = spec?.candidates?.[node]?.nofailover ?? false;
    const cloneRevision = own?.specRevision;
    return {
      node,
      ...(own ? { state: own.state } : {}),
      ...(candidate ? { priority: candidate.priority } : {}),
      registered: candidate !== undefined,
      healthy: candidate !== undefined && candidate.healthy && agentAlive(ctx, node),
      fenced,
      nofailover,
      ...(cloneRevision !== undefined && specRevision !== undefined
        ? { cloneLag: cloneLag(ctx.snap, identity, BigInt(cloneRevision)) }
        : {}),
      ...(keys.drifts?.get(node) ? { drift: keys.drifts.get(node)!.reasons } : {}),
      ...(own?.snapshot
        ? {
            snapshot: {
              object: own.snapshot.object,
              token: own.snapshot.token,
              takenAt: own.snapshot.takenAt,
            },
          }
        : {}),
      ...(ctx.agents.get(node)
        ? { lastHeartbeat: new Date(ctx.agents.get(node)!.receivedAt).toISOString() }
        : {}),
    };
  });
}

/** How many spec changes a node's copy is behind (0: it runs the current spec). */
function cloneLag(snap: ClusterSnapshot, identity: string, nodeRevision: bigint): number {
  const current = snap.specs.get(identity)?.revision;
  if (current === undefined) return 0;
  return nodeRevision >= current ? 0 : 1;
}

/** Why `node` cannot take `identity` over now (undefined: it can). */
export function unfitTarget(ctx: ViewContext, identity: string, node: string): string | undefined {
  const s = standbys(ctx, identity).find((v) => v.node === node);
  const leader = identityKeys(ctx.snap, identity).leader;
  if (leader?.record.node === node) return `${node} already leads ${identity}`;
  if (ctx.snap.fences.has(node))
    return `${node} is fenced (${ctx.snap.fences.get(node)!.reason}); unfence it first`;
  if (!s || !s.registered) {
    return `${node} is not a live candidate for ${identity} (no agent campaigning for it there); start its agent or pick another node`;
  }
  if (s.nofailover) return `${node} is tagged nofailover for ${identity}`;
  if (s.fenced) return `${node} is held off ${identity} by another handover`;
  if (s.drift) {
    return `${node} is held back as drifted (${s.drift.join('; ')}); it campaigns again once back in sync`;
  }
  if (!s.healthy)
    return `${node} is not healthy (its service cannot start, or its agent's heartbeats stopped)`;
  return undefined;
}

/** A target for a handover, or none, with the sentence that says why. */
export interface TargetChoice {
  target?: string;
  reason: string;
}

/**
 * Which node should take `identity` over: the fit standby (unfitTarget says nothing against
 * it) with the highest priority, ties broken by name so every controller picks the same one.
 */
export function chooseTarget(ctx: ViewContext, identity: string, exclude: string[] = []): TargetChoice {
  const considered = standbys(ctx, identity).filter((s) => !exclude.includes(s.node));
  const unfit = new Map(considered.map((s) => [s.node, unfitTarget(ctx, identity, s.node)]));
  const best = considered
    .filter((s) => unfit.get(s.node) === undefined)
    .sort((a, b) => (b.priority ?? 0) - (a.priority ?? 0) || a.node.localeCompare(b.node))[0];
  if (best) {
    return {
      target: best.node,
      reason: `${best.node} is the fit standby with the highest priority (${best.priority ?? 0})`,
    };
  }
  if (considered.length === 0) return { reason: `no standby is known for ${identity}` };
  return { reason: `no standby can take ${identity} over: ${[...unfit.values()].join('; ')}` };
}

/** The best node to take `identity` over: healthy, unfenced, highest priority. */
export function bestTarget(ctx: ViewContext, identity: string, exclude: string[] = []): string | undefined {
  return chooseTarget(ctx, identity, exclude).target;
}

/** Is a node known at all (heartbeat, candidate, fence or spec)? */
export function knownNode(ctx: ViewContext, node: string): boolean {
  if (ctx.agents.has(node) || ctx.snap.fences.has(node) || ctx.snap.fenceIntents.has(node)) return true;
  for (const [id, keys] of ctx.snap.identities) {
    if (keys.candidates.has(node)) return true;
    if (ctx.snap.specs.get(id)?.spec.candidates?.[node]) return true;
  }
  for (const { spec } of ctx.snap.specs.values()) if (spec.candidates?.[node]) return true;
  return false;
}

/** Does the leader's own agent say it is serving under the current token? */
export function leaderServing(ctx: ViewContext, identity: string): boolean {
  const leader = identityKeys(ctx.snap, identity).leader;
  if (!leader) return false;
  const own = heartbeatEntry(freshAgent(ctx, leader.record.node), identity);
  return own?.state === 'leader' && own.token === String(leader.token);
}

export function identityView(
  ctx: ViewContext,
  identity: string,
  probe: ProbeState | undefined,
): IdentityView {
  const stored = ctx.snap.specs.get(identity);
  const keys = identityKeys(ctx.snap, identity);
  const leader = keys.leader;
  const loggedIn = keys.login?.loggedIn ?? false;
  const responders = probe?.responders ?? [];
  const paused = ctx.snap.paused.get(identity);
  const wf = ctx.snap.workflows.get(identity)?.workflow;
  const health: IdentityView['health'] =
    responders.length > 1
      ? 'split-brain'
      : !leader
        ? 'down'
        : probe?.at === undefined
          ? 'unknown'
          : responders.length === 1 && !responders[0]!.error && loggedIn
            ? 'ok'
            : 'degraded';
  const all = standbys(ctx, identity);
  return {
    identity,
    ...(stored?.spec.description ? { description: stored.spec.description } : {}),
    specRevision: String(stored?.revision ?? 0n),
    ...(leader ? { leader: leader.record.node, token: String(leader.token) } : {}),
    loggedIn,
    ...(loggedIn && keys.login ? { loggedInSince: new Date(keys.login.at).toISOString() } : {}),
    ...(leader ? { termSince: new Date(leader.record.since).toISOString() } : {}),
    responders,
    ...(probe?.at !== undefined ? { lastProbe: new Date(probe.at).toISOString() } : {}),
    probeFailures: probe?.failures ?? 0,
    health,
    ...(paused
      ? { paused: { reason: paused.reason, actor: paused.actor, at: new Date(paused.at).toISOString() } }
      : {}),
    standbys: all.filter((s) => s.node !== leader?.record.node),
    fencedNodes: all.filter((s) => s.fenced).map((s) => s.node),
    ...(wf ? { workflow: { id: wf.id, kind: wf.kind, state: wf.state } } : {}),
  };
}

/** Every node a node view is shown for: agents heard, fenced or being fenced, and candidates. */
export function nodeNames(ctx: ViewContext): string[] {
  const nodes = new Set<string>([
    ...ctx.agents.keys(),
    ...ctx.snap.fences.keys(),
    ...ctx.snap.fenceIntents.keys(),
  ]);
  for (const keys of ctx.snap.identities.values()) for (const n of keys.candidates.keys()) nodes.add(n);
  return [...nodes].sort();
}

export function nodeView(ctx: ViewContext, node: string): NodeView {
  const seen = ctx.agents.get(node);
  const fence = ctx.snap.fences.get(node);
  const intent = ctx.snap.fenceIntents.get(node)?.intent;
  return {
    node,
    alive: freshAgent(ctx, node) !== undefined,
    ...(seen ? { lastHeartbeat: new Date(seen.receivedAt).toISOString() } : {}),
    ...(fence
      ? { fenced: { reason: fence.reason, actor: fence.actor, at: new Date(fence.at).toISOString() } }
      : {}),
    ...(intent
      ? { fencePending: { reason: intent.reason, actor: intent.actor, workflows: intent.workflows } }
      : {}),
    identities: (seen?.heartbeat.identities ?? []).map((i) => ({
      identity: i.identity,
      state: i.state,
      ...(i.token ? { token: i.token } : {}),
    })),
  };
}

export function nodeViews(ctx: ViewContext): NodeView[] {
  return nodeNames(ctx).map((node) => nodeView(ctx, node));
}

/** A workflow still running for the identity, if any. */
export function runningWorkflow(snap: ClusterSnapshot, identity: string) {
  const entry = snap.workflows.get(identity);
  return entry && !TERMINAL_STATES.has(entry.workflow.state) ? entry : undefined;
}

// API operations on nodes: list them, fence one (its identities are handed over first, then
// the fence is applied by fence-reconciler.ts), unfence one. Every write compares the
// election term requireActive() returned, in the same etcd txn.
import { ApiError, type FenceBody, type FenceResult, type NodeView, type ReasonBody } from '../api/schema.js';
import { readNodeKeys } from '../keys/index.js';
import { fence } from '../lease/index.js';
import type { ApiDeps } from './api-deps.js';
import { NotActiveError, type FenceIntent } from './store.js';
import { bestTarget, knownNode, nodeViews, runningWorkflow } from './view.js';

export class NodeApi {
  constructor(private readonly deps: ApiDeps) {}

  /** Each node with the key it registered for its live session (when it has one). */
  async listNodes(): Promise<NodeView[]> {
    const { cluster, etcd, keys } = this.deps;
    const [snap, nodeKeys] = await Promise.all([cluster.read(), readNodeKeys(etcd, keys.prefix)]);
    return nodeViews(cluster.view(snap)).map((v) => {
      const key = nodeKeys.get(v.node)?.key;
      return key === undefined ? v : { ...v, key };
    });
  }

  async fenceNode(node: string, body: FenceBody, actor: string): Promise<FenceResult> {
    const { cluster, audit, supervisor, keys, etcd, config, clock } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    const view = cluster.view(snap);
    if (!knownNode(view, node))
      throw new ApiError('not-found', `no node named ${node} is known`, 'path.node');
    if (snap.fences.has(node)) return { node, fenced: true, workflows: [] };
    if (snap.fenceIntents.has(node)) {
      throw new ApiError(
        'conflict',
        `a fence of ${node} is already in progress; wait for it (GET /v1/nodes)`,
      );
    }
    const led = [...snap.identities].filter(([, k]) => k.leader?.record.node === node).map(([id]) => id);
    for (const identity of led) {
      const running = runningWorkflow(snap, identity);
      if (running) {
        throw new ApiError(
          'conflict',
          `${identity} (led by ${node}) has a ${running.workflow.kind} in progress; wait for it or cancel it, then fence`,
        );
      }
      if (!bestTarget(view, identity, [node])) {
        throw new ApiError(
          'conflict',
          `${node} leads ${identity} and no healthy standby can take it over; start one first (nothing was fenced)`,
        );
      }
    }
    await audit.action(term, '_nodes', actor, `fence of ${node} requested: ${body.reason}`);
    if (led.length === 0) {
      await fence(etcd, { node, reason: body.reason, actor, keys: keys.lease, authority: term }).catch(
        (err: unknown) => cluster.refusal(err),
      );
      return { node, fenced: true, workflows: [] };
    }
    // The handovers and the intent to fence after them are written together, or none is:
    // a handover started without its intent would hold the node off for nothing, and the
    // fence would never be written.
    const workflows = await supervisor.createAll(
      snap,
      led.map((identity) => ({
        identity,
        req: {
          kind: 'node-fence' as const,
          actor,
          reason: `fence ${node}: ${body.reason}`,
          deadlineMs: config.switchover.deadlineMs,
          fencingNode: node,
        },
      })),
      term,
      {
        key: keys.fenceIntent(node),
        value: (wfs): FenceIntent => ({
          reason: body.reason,
          actor,
          at: clock.wallMs(),
          workflows: wfs.map((w) => w.id),
        }),
      },
    );
    return { node, fenced: false, workflows };
  }

  async unfenceNode(node: string, body: ReasonBody, actor: string): Promise<NodeView> {
    const { cluster, audit, writer, keys, etcd } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    const view = cluster.view(snap);
    if (!knownNode(view, node))
      throw new ApiError('not-found', `no node named ${node} is known`, 'path.node');
    if (!snap.fences.has(node) && !snap.fenceIntents.has(node)) {
      throw new ApiError('conflict', `${node} is not fenced`);
    }
    await audit.action(term, '_nodes', actor, `unfence of ${node}${body.reason ? `: ${body.reason}` : ''}`);
    // The pending intent and the fence go together, in one txn under the term.
    const removed = await writer.write(
      [etcd.delete().key(keys.fenceIntent(node)), etcd.delete().key(keys.lease.fence(node))],
      term,
    );
    if (!removed) await cluster.refusal(new NotActiveError(`unfence of ${node} not done`));
    const after = await cluster.read();
    return (
      nodeViews(cluster.view(after)).find((n) => n.node === node) ?? { node, alive: false, identities: [] }
    );
  }
}

// Node fences an operator asked for while the node still led identities: the handovers away
// from it run first (fence intents in etcd), and each round the active controller applies
// the fences whose handovers have all ended. A fence that cannot be applied yet is retried
// next round and reported once per reason.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { TERMINAL_STATES } from '../api/schema.js';
import type { Clock } from '../clock/index.js';
import type { Authority } from '../lease/admin.js';
import { fence, LeaseOperationError, releaseHoldOff } from '../lease/index.js';
import type { Audit } from './audit.js';
import {
  isTermEnded,
  type ClusterSnapshot,
  type ControllerKeys,
  type FenceIntent,
  type GuardedWriter,
} from './store.js';
import type { LoopTrouble } from './trouble.js';

/** Is the fence of `node` due (every handover it waits for ended)? Pure. */
export function fenceDue(
  snap: ClusterSnapshot,
  node: string,
  intent: FenceIntent,
): { due: boolean; stillLed: string[]; reason: string } {
  const pending = intent.workflows.filter((id) =>
    [...snap.workflows.values()].some((w) => w.workflow.id === id && !TERMINAL_STATES.has(w.workflow.state)),
  );
  const stillLed = [...snap.identities].filter(([, k]) => k.leader?.record.node === node).map(([id]) => id);
  if (pending.length > 0) {
    return { due: false, stillLed, reason: `the fence of ${node} waits for ${pending.join(', ')}` };
  }
  if (stillLed.length > 0) {
    // A handover aborted: the operator asked for the fence, so it goes ahead, and these
    // identities fail over the unplanned way (their leader logs out and resigns now).
    return {
      due: true,
      stillLed,
      reason: `fencing ${node} although it still leads ${stillLed.join(', ')} (their handover aborted): they fail over now; read their workflow outcome`,
    };
  }
  return { due: true, stillLed, reason: `every handover away from ${node} ended: fencing it` };
}

export interface FenceReconcilerDeps {
  etcd: Etcd3;
  keys: ControllerKeys;
  writer: GuardedWriter;
  audit: Audit;
  trouble: LoopTrouble;
  clock: Clock;
  log: Logger;
}

export class FenceReconciler {
  constructor(private readonly deps: FenceReconcilerDeps) {}

  /** Apply the node fences that are due, each under `term` (this controller's election term). */
  async reconcile(snap: ClusterSnapshot, term: Authority): Promise<void> {
    for (const [node, { intent, revision }] of snap.fenceIntents) {
      const verdict = fenceDue(snap, node, intent);
      if (!verdict.due) continue;
      if (verdict.stillLed.length > 0)
        this.deps.log.error({ node, identities: verdict.stillLed }, verdict.reason);
      try {
        await this.apply(snap, node, intent, revision, term);
        this.deps.trouble.recovered('fences', node);
      } catch (err) {
        if (!isTermEnded(err) && !(err instanceof LeaseOperationError)) throw err;
        this.deps.trouble.failed(
          'fences',
          err,
          `pending fence of ${node} not applied; retrying next round`,
          node,
        );
      }
    }
  }

  private async apply(
    snap: ClusterSnapshot,
    node: string,
    intent: FenceIntent,
    revision: bigint,
    term: Authority,
  ): Promise<void> {
    const { deps } = this;
    await fence(deps.etcd, {
      node,
      reason: intent.reason,
      actor: intent.actor,
      keys: deps.keys.lease,
      authority: term,
    });
    // The handovers kept their hold-offs so the node could not take anything back before the
    // fence: now the fence itself keeps it out.
    for (const { workflow } of snap.workflows.values()) {
      if (intent.workflows.includes(workflow.id) && workflow.holdOff) {
        await releaseHoldOff(deps.etcd, workflow.holdOff.lease, term).catch((err: unknown) =>
          deps.trouble.failed(
            'fences',
            err,
            `hold-off lease ${workflow.holdOff!.lease} of ${workflow.id} not released after the fence; it expires by itself`,
            workflow.id,
          ),
        );
      }
    }
    await deps.writer.delete(deps.keys.fenceIntent(node), revision, term);
    deps.log.warn(
      { node, reason: intent.reason, actor: intent.actor },
      `node ${node} fenced for maintenance`,
    );
    deps.audit.bestEffort({
      identity: '_nodes',
      node,
      at: deps.clock.wallMs(),
      kind: 'action',
      reason: `fenced: ${intent.reason}`,
      actor: intent.actor,
    });
  }
}

// Each round, the active controller judges the standbys of every identity that keeps state
// (drift.ts) and keeps their drift holds in etcd in line: a drifted standby gets a hold, which
// its campaign transaction and any transfer to it check; one back in sync has it removed. A
// standby the controller has no fresh word of keeps whatever hold it has: absence of evidence
// moves nothing. When the leader is gone and every live candidate is held, the identity's
// whenNoneInSync policy decides, and the history records which way.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import { historyPut } from '../history/index.js';
import type { Authority } from '../lease/admin.js';
import type { DriftRecord } from '../lease/keys.js';
import { accessFingerprint } from '../spec/fingerprint.js';
import type { Cluster } from './cluster.js';
import { decideNoneInSync, judgeDrift, type DriftVerdict } from './drift.js';
import type { EventStream } from './events.js';
import type { ControllerMetrics } from './metrics.js';
import type { ClusterSnapshot, ControllerKeys, GuardedWriter } from './store.js';
import {
  agentAlive,
  freshAgent,
  heartbeatEntry,
  identityKeys,
  runningWorkflow,
  type ViewContext,
} from './view.js';

export interface DriftReconcilerDeps {
  name: string;
  etcd: Etcd3;
  keys: ControllerKeys;
  writer: GuardedWriter;
  cluster: Cluster;
  metrics: ControllerMetrics;
  events: Pick<EventStream, 'alarm'>;
  clock: Clock;
  log: Logger;
}

export class DriftReconciler {
  /** Since when (monotonic) each identity's spec revision has been the current one. */
  private readonly specSeen = new Map<string, { revision: bigint; since: number }>();
  /** The leader's service version last seen, per identity: the reference once it is gone. */
  private readonly leaderVersion = new Map<string, string>();
  /** A standby let through by `freshest`, per identity, until the identity has a leader again. */
  private readonly released = new Map<string, string>();
  /** The stay-down sentence last recorded, per identity (recorded once per outage). */
  private readonly stayingDown = new Map<string, string>();

  constructor(private readonly deps: DriftReconcilerDeps) {}

  async reconcile(snap: ClusterSnapshot, term: Authority): Promise<void> {
    const ctx = this.deps.cluster.view(snap);
    // Memos of identities that are gone go with them.
    for (const memo of [this.specSeen, this.leaderVersion, this.released, this.stayingDown]) {
      for (const id of memo.keys()) if (!snap.specs.has(id)) memo.delete(id);
    }
    for (const [identity, { spec, revision }] of snap.specs) {
      const state = spec.state;
      const keys = identityKeys(snap, identity);
      if (!state) {
        // Holds left from when the spec had a state section do not outlive it.
        for (const node of keys.drifts?.keys() ?? [])
          await this.release(identity, node, term, 'the spec keeps no state any more');
        continue;
      }
      const seen = this.specSeen.get(identity);
      const now = this.deps.clock.monotonicMs();
      if (seen?.revision !== revision) this.specSeen.set(identity, { revision, since: now });
      const leaderNode = keys.leader?.record.node;
      const leaderBeat = leaderNode ? heartbeatEntry(freshAgent(ctx, leaderNode), identity) : undefined;
      if (leaderBeat?.version) this.leaderVersion.set(identity, leaderBeat.version);
      if (leaderNode) {
        this.released.delete(identity);
        this.stayingDown.delete(identity);
      }
      // A declared version is the reference by definition; else what the leader last reported.
      const declared = spec.service.driver === 'process' ? spec.service.version : undefined;
      const ref = {
        specRevision: revision,
        access: accessFingerprint(spec.access),
        version: declared !== undefined ? `declared:${declared}` : this.leaderVersion.get(identity),
        snapshots: keys.snapshots ?? [],
        specCurrentForMs: now - (this.specSeen.get(identity)?.since ?? now),
      };
      const policy = { checks: state.drift, maxLagMs: state.maxLagMs };
      const nodes = new Set([...keys.candidates.keys(), ...(keys.drifts?.keys() ?? [])]);
      const verdicts = new Map<string, DriftVerdict>();
      for (const node of nodes) {
        if (node === leaderNode) continue;
        const beat = heartbeatEntry(freshAgent(ctx, node), identity);
        const verdict = judgeDrift(node, beat, ref, policy, this.deps.clock.wallMs());
        verdicts.set(node, verdict);
        const held = keys.drifts?.has(node) ?? false;
        if (verdict.known && verdict.drifted && !held && this.released.get(identity) !== node) {
          await this.hold(identity, node, verdict.reasons, term);
        } else if (verdict.known && !verdict.drifted && verdict.unsure.length === 0 && held) {
          // Only on positive evidence of every check: "not judged yet" is not "in sync".
          await this.release(identity, node, term, verdict.reason);
        }
      }
      this.deps.metrics.drifted.set(
        { identity },
        [...verdicts.values()].filter((v) => v.known && v.drifted).length,
      );
      if (!leaderNode && !runningWorkflow(snap, identity)) {
        await this.noneInSync(identity, state.whenNoneInSync, snap, ctx, verdicts, term);
      }
    }
  }

  /** Leaderless: if every live candidate is held back, apply the identity's policy. */
  private async noneInSync(
    identity: string,
    policy: 'stay-down' | 'freshest',
    snap: ClusterSnapshot,
    ctx: ViewContext,
    verdicts: Map<string, DriftVerdict>,
    term: Authority,
  ): Promise<void> {
    const keys = identityKeys(snap, identity);
    const live = [...keys.candidates].filter(([node, c]) => c.healthy && agentAlive(ctx, node));
    const released = this.released.get(identity);
    if (released !== undefined) {
      // The one let through is gone, or another is in sync now: the exception ends (the next
      // round holds it again if it is still drifted).
      const others = live.filter(([node]) => node !== released && !keys.drifts?.has(node));
      if (!live.some(([node]) => node === released) || others.length > 0) this.released.delete(identity);
      return;
    }
    if (live.length === 0) return;
    if (live.some(([node]) => !keys.drifts?.has(node))) return; // someone in sync may campaign
    const candidates = live.map(([node, c]) => {
      const v = verdicts.get(node);
      const record = keys.drifts?.get(node);
      return {
        node,
        priority: c.priority,
        snapshot: heartbeatEntry(freshAgent(ctx, node), identity)?.snapshot,
        reasons: v?.known && v.drifted ? v.reasons : (record?.reasons ?? ['held back as drifted']),
      };
    });
    const decision = decideNoneInSync(identity, policy, candidates);
    if (decision.action === 'release') {
      this.released.set(identity, decision.node);
      this.deps.events.alarm('no-in-sync-standby', decision.reason, identity, decision.node);
      await this.release(identity, decision.node, term, decision.reason, 'freshest');
    } else if (decision.action === 'stay-down' && this.stayingDown.get(identity) === undefined) {
      this.stayingDown.set(identity, decision.reason);
      this.deps.events.alarm('no-in-sync-standby', decision.reason, identity);
      await this.deps.writer.write([this.historyPut(identity, decision.reason, 'stay-down')], term);
    }
  }

  private historyPut(identity: string, reason: string, to: string) {
    return historyPut(this.deps.etcd, {
      identity,
      node: this.deps.name,
      at: this.deps.clock.wallMs(),
      kind: 'action',
      actor: `controller ${this.deps.name}`,
      to,
      reason,
    });
  }

  private async hold(identity: string, node: string, reasons: string[], term: Authority): Promise<void> {
    const record: DriftRecord = {
      reasons,
      actor: `controller ${this.deps.name}`,
      at: this.deps.clock.wallMs(),
    };
    const reason = `${node} held back from elections of ${identity} as drifted: ${reasons.join('; ')}`;
    this.deps.events.alarm(
      'standby-drifted',
      `${reason}; it campaigns again once back in sync`,
      identity,
      node,
    );
    await this.deps.writer.write(
      [
        this.deps.etcd.put(this.deps.keys.lease.drift(identity, node)).value(JSON.stringify(record)),
        this.historyPut(identity, reason, 'drifted'),
      ],
      term,
    );
  }

  private async release(
    identity: string,
    node: string,
    term: Authority,
    why: string,
    to = 'in-sync',
  ): Promise<void> {
    this.deps.log.info({ identity, node, why }, `${node} may campaign for ${identity} again`);
    await this.deps.writer.write(
      [
        this.deps.etcd.delete().key(this.deps.keys.lease.drift(identity, node)),
        this.historyPut(identity, `${node} may campaign again: ${why}`, to),
      ],
      term,
    );
  }
}

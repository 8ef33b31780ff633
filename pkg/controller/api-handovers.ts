// API operations that move an identity or hold it still: switchover, forced failover,
// pause and resume of probe-driven failover, and the workflows they start (read, cancel).
// Every write compares the election term requireActive() returned, in the same etcd txn.
import {
  ApiError,
  scheduledAtProblem,
  TERMINAL_STATES,
  type FailoverBody,
  type IdentityView,
  type PauseBody,
  type ReasonBody,
  type SwitchoverBody,
  type Workflow,
} from '../api/schema.js';
import type { ApiDeps } from './api-deps.js';
import { SpecApi } from './api-specs.js';
import { NotActiveError, type ClusterSnapshot, type PauseRecord } from './store.js';
import {
  bestTarget,
  identityKeys,
  identityView,
  knownNode,
  leaderServing,
  runningWorkflow,
  unfitTarget,
} from './view.js';

export class HandoverApi {
  private readonly specs: SpecApi;

  constructor(private readonly deps: ApiDeps) {
    this.specs = new SpecApi(deps);
  }

  async switchover(identity: string, body: SwitchoverBody, actor: string): Promise<Workflow> {
    const { cluster, clock, supervisor, config } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    cluster.requireIdentity(snap, identity);
    const leader = identityKeys(snap, identity).leader;
    if (!leader) {
      throw new ApiError('conflict', `${identity} has no leader to switch over from; use failover --to NODE`);
    }
    const atProblem = body.at === undefined ? undefined : scheduledAtProblem(body.at, clock.wallMs());
    if (atProblem) throw new ApiError('bad-request', atProblem, 'at');
    if (body.to) this.checkTarget(snap, identity, body.to);
    else if (!bestTarget(cluster.view(snap), identity, [leader.record.node])) {
      throw new ApiError(
        'conflict',
        `no healthy standby can take ${identity} over; start or unfence one first`,
      );
    }
    return supervisor.create(
      snap,
      identity,
      {
        kind: 'switchover',
        actor,
        ...(body.reason ? { reason: body.reason } : {}),
        ...(body.to ? { target: body.to } : {}),
        ...(body.at ? { at: body.at } : {}),
        deadlineMs: body.deadlineMs ?? config.switchover.deadlineMs,
      },
      term,
    );
  }

  async failover(identity: string, body: FailoverBody, actor: string): Promise<Workflow> {
    const { cluster, prober, supervisor, config } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    cluster.requireIdentity(snap, identity);
    const view = cluster.view(snap);
    const keys = identityKeys(snap, identity);
    const v = identityView(view, identity, prober.state(identity));
    if (keys.leader && v.health === 'ok' && leaderServing(view, identity)) {
      throw new ApiError(
        'conflict',
        `${identity}'s leader ${keys.leader.record.node} is healthy; a forced failover is for a leader that is gone or unhealthy: use switchover`,
      );
    }
    this.checkTarget(snap, identity, body.to);
    return supervisor.create(
      snap,
      identity,
      {
        kind: 'failover',
        actor,
        target: body.to,
        ...(body.reason ? { reason: body.reason } : {}),
        deadlineMs: body.deadlineMs ?? config.switchover.deadlineMs,
      },
      term,
    );
  }

  async pause(identity: string, body: PauseBody, actor: string): Promise<IdentityView> {
    const { cluster, audit, writer, etcd, keys, clock } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    cluster.requireIdentity(snap, identity);
    const record: PauseRecord = { reason: body.reason ?? 'maintenance', actor, at: clock.wallMs() };
    await audit.action(term, identity, actor, `paused: ${record.reason}`);
    const put = etcd.put(keys.paused(identity)).value(JSON.stringify(record));
    if (!(await writer.write([put], term)))
      await cluster.refusal(new NotActiveError(`pause of ${identity} not done`));
    return this.specs.getIdentity(identity);
  }

  async resume(identity: string, body: ReasonBody, actor: string): Promise<IdentityView> {
    const { cluster, audit, writer, etcd, keys, prober } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    cluster.requireIdentity(snap, identity);
    await audit.action(
      term,
      identity,
      actor,
      `resumed${body.reason ? `: ${body.reason}` : ''} (probe-driven failover on again)`,
    );
    const del = etcd.delete().key(keys.paused(identity));
    if (!(await writer.write([del], term)))
      await cluster.refusal(new NotActiveError(`resume of ${identity} not done`));
    prober.rearm(identity);
    return this.specs.getIdentity(identity);
  }

  async getWorkflow(identity: string): Promise<Workflow> {
    const snap = await this.deps.cluster.read();
    const entry = snap.workflows.get(identity);
    if (!entry) throw new ApiError('not-found', `${identity} never had a workflow`, 'path.identity');
    return entry.workflow;
  }

  async cancelWorkflow(identity: string, actor: string): Promise<Workflow> {
    const { cluster, audit, writer, keys, clock } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    const entry = runningWorkflow(snap, identity);
    if (!entry) throw new ApiError('conflict', `${identity} has no workflow in progress`);
    const wf = entry.workflow;
    if (wf.state === 'transferred' || wf.state === 'logged-in') {
      throw new ApiError(
        'conflict',
        `${wf.id} is past the transfer (${wf.state}): it can no longer be rolled back, let it finish`,
      );
    }
    await audit.action(term, identity, actor, `cancel of ${wf.id} requested`);
    const now = new Date(clock.wallMs()).toISOString();
    const next: Workflow = { ...wf, cancelRequested: { actor, at: now }, updatedAt: now };
    if ((await writer.put(keys.workflow(identity), next, entry.revision, [], term)) === undefined) {
      if (!(await writer.holds(term)))
        await cluster.refusal(new NotActiveError(`cancel of ${wf.id} not done`));
      throw new ApiError('conflict', `${wf.id} moved on meanwhile; read it again`);
    }
    return next;
  }

  async listWorkflows(): Promise<Workflow[]> {
    const snap = await this.deps.cluster.read();
    return [...snap.workflows.values()].map((w) => w.workflow).filter((w) => !TERMINAL_STATES.has(w.state));
  }

  private checkTarget(snap: ClusterSnapshot, identity: string, target: string): void {
    const view = this.deps.cluster.view(snap);
    if (!knownNode(view, target)) {
      throw new ApiError(
        'not-found',
        `no node named ${target} is known (no agent heartbeat, candidate or fence)`,
        'to',
      );
    }
    const unfit = unfitTarget(view, identity, target);
    if (unfit) throw new ApiError('conflict', unfit, 'to');
  }
}

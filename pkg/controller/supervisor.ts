// Workflow supervision: creating a workflow record, and running one WorkflowDriver per
// identity with an unfinished workflow while this controller is active (its own workflows,
// and those a deposed controller left behind). The drivers themselves live in workflow.ts.
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { ApiError, TERMINAL_STATES, type Workflow, type WorkflowKind } from '../api/schema.js';
import type { Clock } from '../clock/index.js';
import type { ControllerConfig } from '../config/controller.js';
import { collectResponders } from '../identity/client.js';
import { etcdNodeKeys } from './probes.js';
import type { Authority } from '../lease/admin.js';
import type { AgentLink } from './agents.js';
import type { Audit } from './audit.js';
import type { Cluster } from './cluster.js';
import type { EventStream } from './events.js';
import { fenceActions } from './fencing.js';
import type { ControllerMetrics } from './metrics.js';
import { NotActiveError, type ClusterSnapshot, type ControllerKeys, type GuardedWriter } from './store.js';
import { identityKeys } from './view.js';
import { WorkflowDriver } from './workflow.js';

export interface WorkflowRequest {
  kind: WorkflowKind;
  actor: string;
  reason?: string;
  target?: string;
  /** ISO time a scheduled switchover starts at. */
  at?: string;
  deadlineMs: number;
  fencingNode?: string;
}

/** A new workflow record, as the controller `controller` persists it at `nowMs` (pure). */
export function newWorkflow(
  snap: ClusterSnapshot,
  identity: string,
  req: WorkflowRequest,
  controller: string,
  nowMs: number,
): Workflow {
  const leader = identityKeys(snap, identity).leader;
  const now = new Date(nowMs).toISOString();
  const start = req.at ? Date.parse(req.at) : nowMs;
  const state = req.at ? 'scheduled' : 'requested';
  return {
    id: `${req.kind}-${identity}-${nowMs.toString(36)}`,
    identity,
    kind: req.kind,
    state,
    actor: req.actor,
    ...(req.reason ? { reason: req.reason } : {}),
    ...(leader ? { from: { node: leader.record.node, token: String(leader.token) } } : {}),
    ...(req.target ? { target: req.target } : {}),
    createdAt: now,
    ...(req.at ? { at: new Date(start).toISOString() } : {}),
    deadline: new Date(start + req.deadlineMs).toISOString(),
    escalation: [],
    ...(req.fencingNode ? { fencingNode: req.fencingNode } : {}),
    steps: [{ state, at: now, ...(req.reason ? { note: req.reason } : {}) }],
    updatedAt: now,
    controller,
  };
}

export interface SupervisorDeps {
  name: string;
  etcd: Etcd3;
  nc: NatsConnection;
  keys: ControllerKeys;
  writer: GuardedWriter;
  agents: AgentLink;
  cluster: Cluster;
  audit: Audit;
  events: EventStream;
  metrics: ControllerMetrics;
  config: ControllerConfig;
  clock: Clock;
  log: Logger;
  isActive(): boolean;
}

export class WorkflowSupervisor {
  private readonly drivers = new Map<string, WorkflowDriver>();

  constructor(private readonly deps: SupervisorDeps) {}

  /** The active controller drives every unfinished workflow (its own, or one it inherited). */
  resume(snap: ClusterSnapshot): void {
    for (const [identity, { workflow }] of snap.workflows) {
      if (TERMINAL_STATES.has(workflow.state) || this.drivers.has(identity)) continue;
      if (workflow.controller !== this.deps.name) {
        this.deps.log.warn(
          { identity, workflow: workflow.id, state: workflow.state, from: workflow.controller },
          'resuming a workflow left by another controller',
        );
      }
      this.drive(identity);
    }
  }

  /** Stop every driver (this controller stood down or stops). */
  stopAll(): void {
    for (const d of this.drivers.values()) d.stop();
    this.drivers.clear();
  }

  /**
   * Persist a new workflow for `identity` (written only under `term`, and only if no other
   * workflow was started meanwhile), then drive it.
   */
  async create(
    snap: ClusterSnapshot,
    identity: string,
    req: WorkflowRequest,
    term: Authority,
  ): Promise<Workflow> {
    return (await this.createAll(snap, [{ identity, req }], term))[0]!;
  }

  /**
   * Persist new workflows for several identities, and `with` (a record that must not exist
   * yet), in one etcd transaction under `term`: all of them or none. A fence that hands over
   * three identities must not leave one handover running when the second is refused (the
   * node held off, its fence never written, and the operator told nothing was started).
   */
  async createAll(
    snap: ClusterSnapshot,
    items: ReadonlyArray<{ identity: string; req: WorkflowRequest }>,
    term: Authority,
    with_?: { key: string; value: (workflows: Workflow[]) => unknown },
  ): Promise<Workflow[]> {
    for (const { identity } of items) {
      const existing = snap.workflows.get(identity);
      if (existing && !TERMINAL_STATES.has(existing.workflow.state)) {
        throw new ApiError(
          'conflict',
          `${identity} already has a ${existing.workflow.kind} in progress (${existing.workflow.id}, ${existing.workflow.state}); wait for it or cancel it`,
        );
      }
    }
    const now = this.deps.clock.wallMs();
    const wfs = items.map(({ identity, req }) => newWorkflow(snap, identity, req, this.deps.name, now));
    for (const [i, wf] of wfs.entries()) {
      const { req } = items[i]!;
      await this.deps.audit.action(
        term,
        wf.identity,
        req.actor,
        `${req.kind} ${wf.id} requested${req.target ? ` to ${req.target}` : ''}${req.reason ? `: ${req.reason}` : ''}`,
        wf.from?.token,
      );
    }
    const entries = wfs.map((wf) => ({
      key: this.deps.keys.workflow(wf.identity),
      value: wf as unknown,
      expectRevision: snap.workflows.get(wf.identity)?.revision ?? 0n,
    }));
    if (with_) entries.push({ key: with_.key, value: with_.value(wfs), expectRevision: 0n });
    let written: bigint | undefined;
    try {
      written = await this.deps.writer.putAll(entries, term);
      if (written === undefined && !(await this.deps.writer.holds(term))) {
        throw new NotActiveError(`start of ${wfs.map((w) => w.id).join(', ')} not done`);
      }
    } catch (err) {
      return this.deps.cluster.refusal(err);
    }
    if (written === undefined) {
      const names = items.map((i) => i.identity).join(', ');
      throw new ApiError(
        'conflict',
        with_
          ? `another workflow for ${names}, or the same request, was started at the same time; nothing was started or recorded: look at their status (GET /v1/identities) and try again`
          : `another workflow for ${names} was started at the same time; nothing was started, look at its status`,
      );
    }
    for (const [i, wf] of wfs.entries()) {
      const { req } = items[i]!;
      this.deps.log.info(
        { identity: wf.identity, workflow: wf.id, kind: req.kind, target: req.target, actor: req.actor },
        `${req.kind} of ${wf.identity} requested`,
      );
      this.deps.events.workflowChanged(wf);
      this.drive(wf.identity);
    }
    return wfs;
  }

  private drive(identity: string): void {
    if (this.drivers.has(identity)) return;
    const { deps } = this;
    const driver = new WorkflowDriver(
      {
        name: deps.name,
        etcd: deps.etcd,
        keys: deps.keys,
        writer: deps.writer,
        agents: deps.agents,
        logger: deps.log,
        drainTimeoutMs: deps.config.switchover.drainTimeoutMs,
        loginTimeoutMs: deps.config.switchover.loginTimeoutMs,
        handOver: deps.config.switchover.handOver,
        fence: fenceActions(deps.config.fencing),
        viewContext: (snap) => deps.cluster.view(snap),
        responders: async (id, windowMs) =>
          // Only verified answers count (forged PONGs must not stand in for the target's).
          (
            await collectResponders(deps.nc, id, windowMs, {
              keys: etcdNodeKeys(deps.etcd, deps.keys.prefix),
            })
          )
            .filter((r) => !r.error)
            .map((r) => ({ node: r.node, token: String(r.token) })),
        history: (entry) => deps.audit.bestEffort(entry),
        changed: (wf) => deps.events.workflowChanged(wf),
        alarm: (alarm, id, node, message) => deps.events.alarm(alarm, message, id, node),
        finished: (wf) => {
          const seconds = (deps.clock.wallMs() - Date.parse(wf.createdAt)) / 1000;
          deps.metrics.workflows.inc({ kind: wf.kind, outcome: wf.state });
          deps.metrics.workflowSeconds.observe({ kind: wf.kind, outcome: wf.state }, seconds);
        },
        isActive: deps.isActive,
        clock: deps.clock,
        // The mirror when caught up (cluster.ts): a thousand workflows stepping at once do not
        // each read the whole cluster.
        operations: {
          readSnapshot: () => deps.cluster.snapshot(),
          changed: (withinMs) => deps.cluster.changed(identity, withinMs),
        },
      },
      identity,
    );
    this.drivers.set(identity, driver);
    void driver
      .run()
      .catch((err: Error) =>
        deps.log.error({ identity, err: err.message }, 'workflow driver stopped on an error'),
      )
      .finally(() => {
        if (this.drivers.get(identity) === driver) this.drivers.delete(identity);
      });
  }
}

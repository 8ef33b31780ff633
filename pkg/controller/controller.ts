// The controller: sees what agents cannot see about themselves (is the identity actually
// answering? is there a second responder?), runs planned handovers as workflows persisted in
// etcd, and serves the API. Automatic failover never depends on it: agents fail over on
// their own when a lease expires. Several controllers may run; one is active (election.ts),
// the others serve reads and refuse writes, naming the active one.
import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import {
  ApiError,
  scheduledAtProblem,
  TERMINAL_STATES,
  type AclChangeBody,
  type AclView,
  type ApiEvent,
  type ApplyBody,
  type ApplyResult,
  type ControllerApi,
  type ControllerInfo,
  type DenyBody,
  type FailoverBody,
  type FenceBody,
  type FenceResult,
  type HistoryQuery,
  type HistoryView,
  type IdentityView,
  type NodeView,
  type PauseBody,
  type SwitchoverBody,
  type Workflow,
  type WorkflowKind,
} from '../api/schema.js';
import type { ControllerConfig } from '../config/controller.js';
import { readHistory, recordHistory, type HistoryEntry } from '../history/index.js';
import { collectResponders } from '../identity/client.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { fence, LeaseOperationError, releaseHoldOff, unfence } from '../lease/index.js';
import {
  AccessListError,
  approvePending,
  deleteSpec,
  denyPending,
  listPending,
  parseSpec,
  putSpec,
  SpecError,
} from '../spec/store.js';
import { AgentLink } from './agents.js';
import { ControllerElection } from './election.js';
import { fenceActions } from './fencing.js';
import { ControllerMetrics } from './metrics.js';
import {
  ControllerKeys,
  GuardedWriter,
  NotActiveError,
  readSnapshot,
  type ClusterSnapshot,
  type FenceIntent,
  type PauseRecord,
} from './store.js';
import {
  agentAlive,
  bestTarget,
  identityKeys,
  identityView,
  knownNode,
  leaderServing,
  nodeViews,
  runningWorkflow,
  unfitTarget,
  type ProbeState,
  type ViewContext,
} from './view.js';
import { WorkflowDriver } from './workflow.js';

export const CONTROLLER_VERSION = '0.1.0';
/** How often the controller re-reads the cluster, publishes changes and checks its duties. */
const TICK_MS = 250;
/** Attempts at a compare-and-swap update of a spec before reporting a conflict. */
const CAS_ATTEMPTS = 5;

export interface ControllerDeps {
  config: ControllerConfig;
  etcd: Etcd3;
  nc: NatsConnection;
  logger: Logger;
  /** URL clients reach this controller at (published for standbys to point writes at). */
  url?: string;
}

interface ProbeEntry extends ProbeState {
  inFlight: boolean;
  startedAt: number;
  splitBrain: boolean;
  alarmed: boolean;
}

export class Controller implements ControllerApi {
  private readonly keys = new ControllerKeys();
  private readonly events = new EventEmitter();
  readonly metrics_ = new ControllerMetrics();
  private readonly agents: AgentLink;
  private readonly election: ControllerElection;
  private readonly writer: GuardedWriter;
  private readonly probes = new Map<string, ProbeEntry>();
  private readonly drivers = new Map<string, WorkflowDriver>();
  private readonly lastSent = new Map<string, string>();
  private snap: ClusterSnapshot | undefined;
  private tickTimer: NodeJS.Timeout | undefined;
  private ticking = false;
  private lastTickError: string | undefined;
  private readonly log: Logger;
  private readonly name: string;
  private readonly startedAt = Date.now();
  /** Bumped at every NATS disconnect and reconnect: a probe that spans one proves nothing. */
  private natsEpoch = 0;
  private natsUp = true;
  private blind = false;

  constructor(private readonly deps: ControllerDeps) {
    this.name = deps.config.name;
    this.log = deps.logger;
    this.events.setMaxListeners(0);
    this.agents = new AgentLink(deps.nc, deps.logger);
    this.election = new ControllerElection(
      deps.etcd,
      this.keys,
      { name: this.name, ...(deps.url ? { url: deps.url } : {}), startedAt: Date.now() },
      deps.config.lease.ttlSeconds,
      deps.logger,
    );
    this.writer = new GuardedWriter(deps.etcd, this.keys, () => this.election.token, this.name);
    this.election.on('active', () => this.metrics_.active.set(1));
    this.election.on('standby', () => {
      this.metrics_.active.set(0);
      for (const d of this.drivers.values()) d.stop();
      this.drivers.clear();
    });
  }

  /** Start probing and campaigning; `url` is where clients reach this controller. */
  start(url?: string): void {
    void (async () => {
      for await (const s of this.deps.nc.status()) {
        if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'staleConnection') {
          this.natsEpoch++;
          this.natsUp = s.type === 'reconnect';
        }
      }
    })();
    this.agents.start();
    this.election.start(url ?? this.deps.url);
    this.tickTimer = setInterval(() => void this.tick(), TICK_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.tickTimer);
    for (const d of this.drivers.values()) d.stop();
    this.agents.stop();
    await this.election.stop();
  }

  get isActive(): boolean {
    return this.election.active;
  }

  // --- the loop -----------------------------------------------------------------------------

  private viewContext(snap: ClusterSnapshot): ViewContext {
    return {
      snap,
      agents: this.agents.agents(),
      heartbeatTimeoutMs: this.deps.config.probes.heartbeatTimeoutMs,
      now: Date.now(),
      startedAt: this.startedAt,
    };
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      const snap = await readSnapshot(this.deps.etcd, this.keys);
      this.snap = snap;
      this.lastTickError = undefined;
      this.startProbes(snap);
      this.publishChanges(snap);
      if (this.election.active) {
        this.resumeWorkflows(snap);
        await this.reconcileFences(snap).catch((err: Error) => {
          if (!(err instanceof NotActiveError) && !(err instanceof LeaseOperationError)) throw err;
          this.log.warn({ err: err.message }, 'pending node fence not applied; retrying next round');
        });
      }
    } catch (err) {
      const message = (err as Error).message;
      if (this.lastTickError !== message)
        this.log.warn({ err: message }, 'controller cannot read etcd; retrying');
      this.lastTickError = message;
    } finally {
      this.ticking = false;
    }
  }

  /** Every identity is PINGed at its spec's interval; results feed health, alarms and failover. */
  private startProbes(snap: ClusterSnapshot): void {
    const now = Date.now();
    for (const [identity, { spec }] of snap.specs) {
      let p = this.probes.get(identity);
      if (!p) {
        p = { responders: [], failures: 0, inFlight: false, startedAt: 0, splitBrain: false, alarmed: false };
        this.probes.set(identity, p);
      }
      if (p.inFlight || now - p.startedAt < spec.probe.intervalMs) continue;
      p.inFlight = true;
      p.startedAt = now;
      const entry = p;
      const epoch = this.natsEpoch;
      collectResponders(this.deps.nc, identity, spec.probe.timeoutMs)
        .then((found) =>
          this.probed(
            identity,
            entry,
            epoch,
            found.map((r) => ({
              node: r.node,
              token: String(r.token),
              ...(r.error ? { error: r.error } : {}),
            })),
          ),
        )
        .catch((err: Error) => this.log.debug({ identity, err: err.message }, 'probe failed to run'))
        .finally(() => (entry.inFlight = false));
    }
    for (const identity of this.probes.keys()) if (!snap.specs.has(identity)) this.probes.delete(identity);
  }

  private probed(
    identity: string,
    p: ProbeEntry,
    epoch: number,
    responders: Array<{ node: string; token: string; error?: string }>,
  ): void {
    const snap = this.snap;
    if (!snap) return;
    const view = this.viewContext(snap);
    const keys = identityKeys(snap, identity);
    const spec = snap.specs.get(identity)?.spec;
    p.responders = responders;
    p.at = Date.now();
    this.metrics_.responders.set({ identity }, responders.length);

    if (responders.length > 1 && !p.splitBrain) {
      p.splitBrain = true;
      this.alarm(
        'split-brain',
        `${identity}: ${responders.length} nodes answer PING (${responders.map((r) => `${r.node}@${r.token}`).join(', ')})`,
        identity,
      );
    } else if (responders.length <= 1 && p.splitBrain) {
      p.splitBrain = false;
      this.log.warn({ identity }, 'split brain over: one responder or none');
    }
    this.metrics_.splitBrain.set({ identity }, p.splitBrain ? 1 : 0);

    // Count a failure only when the leader should be answering: it holds the key, says it
    // is logged in, and its agent either reports it serving or is silent itself (cut from
    // NATS). A leader still logging in is not a failure.
    const leader = keys.leader;
    const leaderAnswers =
      leader &&
      responders.some((r) => !r.error && r.node === leader.record.node && r.token === String(leader.token));
    const agentSilent = leader !== undefined && !agentAlive(view, leader.record.node);
    const expected =
      leader !== undefined && keys.login?.loggedIn === true && (leaderServing(view, identity) || agentSilent);
    // A controller cut from NATS sees every leader silent: it must not take that for the
    // leaders' fault and revoke them all. Its own link must be up across the whole probe,
    // and it must hear at least one agent.
    if (expected && !leaderAnswers && this.isBlind(view, epoch)) return;
    p.failures = expected && !leaderAnswers ? p.failures + 1 : 0;
    this.metrics_.probeFailures.set({ identity }, p.failures);
    if (p.failures === 0) p.alarmed = false;
    if (!spec || !leader || p.failures < spec.probe.failures || p.alarmed) return;

    p.alarmed = true;
    const budget = `${p.failures} probes × ${spec.probe.intervalMs} ms`;
    const paused = snap.paused.get(identity);
    if (paused) {
      this.alarm(
        'probe-failover-paused',
        `${identity}: ${leader.record.node} holds the lease but does not answer (${budget}); paused by ${paused.actor}, so nothing moves`,
        identity,
        leader.record.node,
      );
      return;
    }
    this.alarm(
      'leader-unresponsive',
      `${identity}: ${leader.record.node} holds the lease but does not answer (${budget})`,
      identity,
      leader.record.node,
    );
    if (!this.election.active || !this.deps.config.probes.failover || runningWorkflow(snap, identity)) return;
    const target = bestTarget(view, identity, [leader.record.node]);
    if (!target) {
      this.log.error({ identity }, 'no healthy standby to take over from the unresponsive leader');
      return;
    }
    void this.createWorkflow(snap, identity, {
      kind: 'probe-failover',
      actor: `controller:${this.name}`,
      reason: `${leader.record.node} stopped answering (${budget})`,
      target,
      deadlineMs: this.deps.config.switchover.deadlineMs,
    }).catch((err: Error) =>
      this.log.error({ identity, err: err.message }, 'could not start the probe-driven failover'),
    );
  }

  /** True while this controller cannot trust an empty probe (its own NATS link is in doubt). */
  private isBlind(view: ViewContext, probeEpoch: number): boolean {
    const seesAgents =
      view.agents.size === 0 || [...view.agents.keys()].some((node) => agentAlive(view, node));
    const blind = !this.natsUp || probeEpoch !== this.natsEpoch || !seesAgents;
    if (blind !== this.blind) {
      this.blind = blind;
      if (blind) {
        this.log.warn(
          { natsUp: this.natsUp, agentsHeard: seesAgents },
          'this controller cannot see the agents on NATS: probe-driven failover is suspended until it can; check its NATS link',
        );
      } else {
        this.log.info('this controller sees the agents again: probe-driven failover resumed');
      }
    }
    return blind;
  }

  private alarm(
    alarm: Extract<ApiEvent, { type: 'alarm' }>['alarm'],
    message: string,
    identity?: string,
    node?: string,
  ): void {
    this.metrics_.alarms.inc({ alarm });
    this.log.error({ alarm, identity, node }, message);
    this.emit({
      type: 'alarm',
      at: new Date().toISOString(),
      alarm,
      ...(identity ? { identity } : {}),
      ...(node ? { node } : {}),
      message,
    });
  }

  private emit(event: ApiEvent): void {
    this.events.emit('event', event);
  }

  /** Publish identity and node views that changed since last published (volatile times aside). */
  private publishChanges(snap: ClusterSnapshot): void {
    const view = this.viewContext(snap);
    const at = new Date().toISOString();
    for (const identity of this.identityNames(snap)) {
      const v = identityView(view, identity, this.probes.get(identity));
      const key = JSON.stringify({
        ...v,
        lastProbe: undefined,
        standbys: v.standbys.map((s) => ({ ...s, lastHeartbeat: undefined })),
      });
      this.metrics_.paused.set({ identity }, v.paused ? 1 : 0);
      if (this.lastSent.get(`identity:${identity}`) === key) continue;
      this.lastSent.set(`identity:${identity}`, key);
      this.emit({ type: 'identity', at, identity: v });
    }
    for (const n of nodeViews(view)) {
      this.metrics_.nodeAlive.set({ node: n.node }, n.alive ? 1 : 0);
      const key = JSON.stringify({ ...n, lastHeartbeat: undefined });
      if (this.lastSent.get(`node:${n.node}`) === key) continue;
      this.lastSent.set(`node:${n.node}`, key);
      this.emit({ type: 'node', at, node: n });
    }
    for (const { workflow } of snap.workflows.values()) {
      const key = `${workflow.id}:${workflow.updatedAt}`;
      if (this.lastSent.get(`workflow:${workflow.identity}`) === key) continue;
      this.lastSent.set(`workflow:${workflow.identity}`, key);
      this.emit({ type: 'workflow', at, workflow });
    }
  }

  private identityNames(snap: ClusterSnapshot): string[] {
    return [
      ...new Set([
        ...snap.specs.keys(),
        ...[...snap.identities].filter(([, k]) => k.leader).map(([id]) => id),
      ]),
    ].sort();
  }

  /** The active controller drives every unfinished workflow (its own, or one it inherited). */
  private resumeWorkflows(snap: ClusterSnapshot): void {
    for (const [identity, { workflow }] of snap.workflows) {
      if (TERMINAL_STATES.has(workflow.state) || this.drivers.has(identity)) continue;
      if (workflow.controller !== this.name) {
        this.log.warn(
          { identity, workflow: workflow.id, state: workflow.state, from: workflow.controller },
          'resuming a workflow left by another controller',
        );
      }
      this.drive(identity);
    }
  }

  private drive(identity: string): void {
    if (this.drivers.has(identity)) return;
    const driver = new WorkflowDriver(
      {
        name: this.name,
        etcd: this.deps.etcd,
        keys: this.keys,
        writer: this.writer,
        agents: this.agents,
        logger: this.log,
        drainTimeoutMs: this.deps.config.switchover.drainTimeoutMs,
        loginTimeoutMs: this.deps.config.switchover.loginTimeoutMs,
        fence: fenceActions(this.deps.config.fencing),
        viewContext: (snap) => this.viewContext(snap),
        responders: async (id, windowMs) =>
          (await collectResponders(this.deps.nc, id, windowMs))
            .filter((r) => !r.error)
            .map((r) => ({ node: r.node, token: String(r.token) })),
        history: (entry) => void this.audit(entry).catch(() => undefined),
        changed: (wf) => this.emit({ type: 'workflow', at: new Date().toISOString(), workflow: wf }),
        alarm: (alarm, id, node, message) => this.alarm(alarm, message, id, node),
        finished: (wf) => {
          const seconds = (Date.now() - Date.parse(wf.createdAt)) / 1000;
          this.metrics_.workflows.inc({ kind: wf.kind, outcome: wf.state });
          this.metrics_.workflowSeconds.observe({ kind: wf.kind, outcome: wf.state }, seconds);
        },
        isActive: () => this.election.active,
      },
      identity,
    );
    this.drivers.set(identity, driver);
    void driver
      .run()
      .catch((err: Error) =>
        this.log.error({ identity, err: err.message }, 'workflow driver stopped on an error'),
      )
      .finally(() => {
        if (this.drivers.get(identity) === driver) this.drivers.delete(identity);
      });
  }

  /** Apply node fences whose identities have all moved away (only under this controller's term). */
  private async reconcileFences(snap: ClusterSnapshot): Promise<void> {
    for (const [node, { intent, revision }] of snap.fenceIntents) {
      const authority = this.writer.authority();
      const pending = intent.workflows.filter((id) =>
        [...snap.workflows.values()].some(
          (w) => w.workflow.id === id && !TERMINAL_STATES.has(w.workflow.state),
        ),
      );
      if (pending.length > 0) continue;
      const stillLed = [...snap.identities]
        .filter(([, k]) => k.leader?.record.node === node)
        .map(([id]) => id);
      if (stillLed.length > 0) {
        // A handover aborted: the operator asked for the fence, so it goes ahead, and these
        // identities fail over the unplanned way (their leader logs out and resigns now).
        this.log.error(
          { node, identities: stillLed },
          `fencing ${node} although it still leads ${stillLed.join(', ')} (their handover aborted): they fail over now; read their workflow outcome`,
        );
      }
      await fence(this.deps.etcd, {
        node,
        reason: intent.reason,
        actor: intent.actor,
        keys: this.keys.lease,
        authority,
      });
      // The handovers kept their hold-offs so the node could not take anything back before
      // the fence: now the fence itself keeps it out.
      for (const { workflow } of snap.workflows.values()) {
        if (intent.workflows.includes(workflow.id) && workflow.holdOff) {
          await releaseHoldOff(this.deps.etcd, workflow.holdOff.lease, authority).catch(() => undefined);
        }
      }
      await this.writer.delete(this.keys.fenceIntent(node), revision);
      this.log.warn(
        { node, reason: intent.reason, actor: intent.actor },
        `node ${node} fenced for maintenance`,
      );
      await this.audit({
        identity: '_nodes',
        node,
        at: Date.now(),
        kind: 'action',
        reason: `fenced: ${intent.reason}`,
        actor: intent.actor,
      }).catch(() => undefined);
    }
  }

  // --- API helpers ----------------------------------------------------------------------------

  private async requireActive(): Promise<void> {
    if (this.election.active) return;
    const snap = await this.read();
    const active = snap.activeController;
    const url = active ? snap.controllers.get(active)?.url : undefined;
    throw new ApiError(
      'not-active',
      active
        ? `controller ${this.name} is a standby; send changes to the active controller ${active}${url ? ` at ${url}` : ''}`
        : `controller ${this.name} is a standby and no controller is active right now; retry in a few seconds`,
      undefined,
      active ? { name: active, ...(url ? { url } : {}) } : undefined,
    );
  }

  private async read(): Promise<ClusterSnapshot> {
    try {
      const snap = await readSnapshot(this.deps.etcd, this.keys);
      this.snap = snap;
      return snap;
    } catch (err) {
      throw new ApiError(
        'unavailable',
        `etcd does not answer (${(err as Error).message}); retry when it is back`,
      );
    }
  }

  private requireIdentity(snap: ClusterSnapshot, identity: string): void {
    if (!snap.specs.has(identity) && !identityKeys(snap, identity).leader) {
      throw new ApiError(
        'not-found',
        `no identity named ${identity}; list them with GET /v1/identities`,
        'path.identity',
      );
    }
  }

  /** Record an operator action before it takes effect: an action that cannot be audited is not taken. */
  private async audit(entry: HistoryEntry): Promise<void> {
    try {
      await recordHistory(this.deps.etcd, entry);
    } catch (err) {
      throw new ApiError(
        'unavailable',
        `cannot write the audit record to etcd (${(err as Error).message}); nothing was changed`,
      );
    }
  }

  private async action(identity: string, actor: string, reason: string, token?: string): Promise<void> {
    await this.audit({
      identity,
      node: this.name,
      at: Date.now(),
      kind: 'action',
      actor,
      reason,
      ...(token ? { token } : {}),
    });
  }

  private async createWorkflow(
    snap: ClusterSnapshot,
    identity: string,
    opts: {
      kind: WorkflowKind;
      actor: string;
      reason?: string;
      target?: string;
      at?: string;
      deadlineMs: number;
      fencingNode?: string;
    },
  ): Promise<Workflow> {
    const existing = snap.workflows.get(identity);
    if (existing && !TERMINAL_STATES.has(existing.workflow.state)) {
      throw new ApiError(
        'conflict',
        `${identity} already has a ${existing.workflow.kind} in progress (${existing.workflow.id}, ${existing.workflow.state}); wait for it or cancel it`,
      );
    }
    const leader = identityKeys(snap, identity).leader;
    const now = new Date();
    const start = opts.at ? Date.parse(opts.at) : now.getTime();
    const id = `${opts.kind}-${identity}-${now.getTime().toString(36)}`;
    const wf: Workflow = {
      id,
      identity,
      kind: opts.kind,
      state: opts.at ? 'scheduled' : 'requested',
      actor: opts.actor,
      ...(opts.reason ? { reason: opts.reason } : {}),
      ...(leader ? { from: { node: leader.record.node, token: String(leader.token) } } : {}),
      ...(opts.target ? { target: opts.target } : {}),
      createdAt: now.toISOString(),
      ...(opts.at ? { at: new Date(start).toISOString() } : {}),
      deadline: new Date(start + opts.deadlineMs).toISOString(),
      escalation: [],
      ...(opts.fencingNode ? { fencingNode: opts.fencingNode } : {}),
      steps: [
        {
          state: opts.at ? 'scheduled' : 'requested',
          at: now.toISOString(),
          ...(opts.reason ? { note: opts.reason } : {}),
        },
      ],
      updatedAt: now.toISOString(),
      controller: this.name,
    };
    await this.action(
      identity,
      opts.actor,
      `${opts.kind} ${id} requested${opts.target ? ` to ${opts.target}` : ''}${opts.reason ? `: ${opts.reason}` : ''}`,
      wf.from?.token,
    );
    let written: bigint | undefined;
    try {
      written = await this.writer.put(this.keys.workflow(identity), wf, existing?.revision ?? 0n);
    } catch (err) {
      if (err instanceof NotActiveError) await this.requireActive();
      throw err;
    }
    if (written === undefined) {
      throw new ApiError(
        'conflict',
        `another workflow for ${identity} was started at the same time; nothing was started, look at its status`,
      );
    }
    this.log.info(
      { identity, workflow: id, kind: opts.kind, target: opts.target, actor: opts.actor },
      `${opts.kind} of ${identity} requested`,
    );
    this.emit({ type: 'workflow', at: now.toISOString(), workflow: wf });
    this.drive(identity);
    return wf;
  }

  private checkTarget(snap: ClusterSnapshot, identity: string, target: string): void {
    const view = this.viewContext(snap);
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

  // --- ControllerApi ------------------------------------------------------------------------

  info(): ControllerInfo {
    const active = this.election.active ? this.name : this.snap?.activeController;
    const url = active ? this.snap?.controllers.get(active)?.url : undefined;
    return {
      name: this.name,
      active: this.election.active,
      ...(active ? { activeController: { name: active, ...(url ? { url } : {}) } } : {}),
      version: CONTROLLER_VERSION,
    };
  }

  async readiness(): Promise<{ ready: boolean; problems: string[] }> {
    const problems: string[] = [];
    await readSnapshot(this.deps.etcd, this.keys).catch((err: Error) =>
      problems.push(`etcd: ${err.message}`),
    );
    if (this.deps.nc.isClosed()) problems.push('NATS connection closed');
    if (!this.election.active && !this.snap?.activeController)
      problems.push('no active controller elected yet');
    return { ready: problems.length === 0, problems };
  }

  async listIdentities(): Promise<IdentityView[]> {
    const snap = await this.read();
    const view = this.viewContext(snap);
    return this.identityNames(snap).map((id) => identityView(view, id, this.probes.get(id)));
  }

  async getIdentity(identity: string): Promise<IdentityView> {
    const snap = await this.read();
    this.requireIdentity(snap, identity);
    return identityView(this.viewContext(snap), identity, this.probes.get(identity));
  }

  async getSpec(identity: string): Promise<{ spec: unknown; revision: string }> {
    const snap = await this.read();
    const stored = snap.specs.get(identity);
    if (!stored) throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
    return { spec: stored.spec, revision: String(stored.revision) };
  }

  async apply(body: ApplyBody, actor: string): Promise<ApplyResult[]> {
    // Validate everything before writing anything: a bad document changes nothing.
    const specs = body.specs.map((doc, i) => {
      try {
        return parseSpec(doc, `specs.${i}`);
      } catch (err) {
        if (err instanceof SpecError) {
          throw new ApiError(
            'bad-request',
            err.message,
            `specs.${i}${err.field && err.field !== '(root)' ? `.${err.field}` : ''}`,
          );
        }
        throw err;
      }
    });
    const names = specs.map((s) => s.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup)
      throw new ApiError(
        'bad-request',
        `identity ${dup} appears twice in one apply`,
        `specs.${names.lastIndexOf(dup)}.name`,
      );
    await this.requireActive();
    const snap = await this.read();
    const results: ApplyResult[] = [];
    for (const spec of specs) {
      const stored = snap.specs.get(spec.name);
      if (stored && JSON.stringify(stored.spec) === JSON.stringify(spec)) {
        results.push({ identity: spec.name, action: 'unchanged', revision: String(stored.revision) });
        continue;
      }
      if (body.dryRun) {
        results.push({
          identity: spec.name,
          action: stored ? 'updated' : 'created',
          revision: String(stored?.revision ?? 0n),
        });
        continue;
      }
      await this.action(spec.name, actor, stored ? 'spec updated' : 'spec created');
      const revision = await putSpec(this.deps.etcd, spec, { expectRevision: stored?.revision ?? 0n });
      if (revision === undefined) {
        throw new ApiError(
          'conflict',
          `${spec.name} changed while applying; read it again and re-apply (earlier identities in this apply were written)`,
          `specs.${specs.indexOf(spec)}`,
        );
      }
      results.push({
        identity: spec.name,
        action: stored ? 'updated' : 'created',
        revision: String(revision),
      });
    }
    return results;
  }

  async deleteIdentity(identity: string, actor: string): Promise<void> {
    await this.requireActive();
    const snap = await this.read();
    if (!snap.specs.has(identity))
      throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
    if (runningWorkflow(snap, identity)) {
      throw new ApiError(
        'conflict',
        `${identity} has a workflow in progress; wait for it or cancel it first`,
      );
    }
    await this.action(identity, actor, 'spec deleted: its leader logs out');
    await deleteSpec(this.deps.etcd, identity);
  }

  async switchover(identity: string, body: SwitchoverBody, actor: string): Promise<Workflow> {
    await this.requireActive();
    const snap = await this.read();
    this.requireIdentity(snap, identity);
    const leader = identityKeys(snap, identity).leader;
    if (!leader) {
      throw new ApiError('conflict', `${identity} has no leader to switch over from; use failover --to NODE`);
    }
    const atProblem = body.at === undefined ? undefined : scheduledAtProblem(body.at, Date.now());
    if (atProblem) throw new ApiError('bad-request', atProblem, 'at');
    if (body.to) this.checkTarget(snap, identity, body.to);
    else if (!bestTarget(this.viewContext(snap), identity, [leader.record.node])) {
      throw new ApiError(
        'conflict',
        `no healthy standby can take ${identity} over; start or unfence one first`,
      );
    }
    return this.createWorkflow(snap, identity, {
      kind: 'switchover',
      actor,
      ...(body.reason ? { reason: body.reason } : {}),
      ...(body.to ? { target: body.to } : {}),
      ...(body.at ? { at: body.at } : {}),
      deadlineMs: body.deadlineMs ?? this.deps.config.switchover.deadlineMs,
    });
  }

  async failover(identity: string, body: FailoverBody, actor: string): Promise<Workflow> {
    await this.requireActive();
    const snap = await this.read();
    this.requireIdentity(snap, identity);
    const view = this.viewContext(snap);
    const keys = identityKeys(snap, identity);
    const probe = this.probes.get(identity);
    const v = identityView(view, identity, probe);
    if (keys.leader && v.health === 'ok' && leaderServing(view, identity)) {
      throw new ApiError(
        'conflict',
        `${identity}'s leader ${keys.leader.record.node} is healthy; a forced failover is for a leader that is gone or unhealthy: use switchover`,
      );
    }
    this.checkTarget(snap, identity, body.to);
    return this.createWorkflow(snap, identity, {
      kind: 'failover',
      actor,
      target: body.to,
      ...(body.reason ? { reason: body.reason } : {}),
      deadlineMs: body.deadlineMs ?? this.deps.config.switchover.deadlineMs,
    });
  }

  async pause(identity: string, body: PauseBody, actor: string): Promise<IdentityView> {
    await this.requireActive();
    const snap = await this.read();
    this.requireIdentity(snap, identity);
    const record: PauseRecord = { reason: body.reason ?? 'maintenance', actor, at: Date.now() };
    await this.action(identity, actor, `paused: ${record.reason}`);
    await this.deps.etcd
      .put(this.keys.paused(identity))
      .value(JSON.stringify(record))
      .options(within(ETCD_CALL_MS))
      .exec();
    return this.getIdentity(identity);
  }

  async resume(identity: string, actor: string): Promise<IdentityView> {
    await this.requireActive();
    const snap = await this.read();
    this.requireIdentity(snap, identity);
    await this.action(identity, actor, 'resumed: probe-driven failover on again');
    await this.deps.etcd.delete().key(this.keys.paused(identity)).options(within(ETCD_CALL_MS)).exec();
    const p = this.probes.get(identity);
    if (p) p.alarmed = false;
    return this.getIdentity(identity);
  }

  async getWorkflow(identity: string): Promise<Workflow> {
    const snap = await this.read();
    const entry = snap.workflows.get(identity);
    if (!entry) throw new ApiError('not-found', `${identity} never had a workflow`, 'path.identity');
    return entry.workflow;
  }

  async cancelWorkflow(identity: string, actor: string): Promise<Workflow> {
    await this.requireActive();
    const snap = await this.read();
    const entry = runningWorkflow(snap, identity);
    if (!entry) throw new ApiError('conflict', `${identity} has no workflow in progress`);
    const wf = entry.workflow;
    if (wf.state === 'transferred' || wf.state === 'logged-in') {
      throw new ApiError(
        'conflict',
        `${wf.id} is past the transfer (${wf.state}): it can no longer be rolled back, let it finish`,
      );
    }
    await this.action(identity, actor, `cancel of ${wf.id} requested`);
    const next: Workflow = {
      ...wf,
      cancelRequested: { actor, at: new Date().toISOString() },
      updatedAt: new Date().toISOString(),
    };
    if ((await this.writer.put(this.keys.workflow(identity), next, entry.revision)) === undefined) {
      throw new ApiError('conflict', `${wf.id} moved on meanwhile; read it again`);
    }
    return next;
  }

  async listWorkflows(): Promise<Workflow[]> {
    const snap = await this.read();
    return [...snap.workflows.values()].map((w) => w.workflow).filter((w) => !TERMINAL_STATES.has(w.state));
  }

  async listNodes(): Promise<NodeView[]> {
    return nodeViews(this.viewContext(await this.read()));
  }

  private nodeView(snap: ClusterSnapshot, node: string): NodeView {
    return (
      nodeViews(this.viewContext(snap)).find((n) => n.node === node) ?? { node, alive: false, identities: [] }
    );
  }

  async fenceNode(node: string, body: FenceBody, actor: string): Promise<FenceResult> {
    await this.requireActive();
    const snap = await this.read();
    const view = this.viewContext(snap);
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
    await this.action('_nodes', actor, `fence of ${node} requested: ${body.reason}`);
    const workflows: Workflow[] = [];
    for (const identity of led) {
      workflows.push(
        await this.createWorkflow(snap, identity, {
          kind: 'node-fence',
          actor,
          reason: `fence ${node}: ${body.reason}`,
          deadlineMs: this.deps.config.switchover.deadlineMs,
          fencingNode: node,
        }),
      );
    }
    if (workflows.length === 0) {
      await fence(this.deps.etcd, {
        node,
        reason: body.reason,
        actor,
        keys: this.keys.lease,
        authority: this.writer.authority(),
      }).catch(async (err: Error) => {
        // This controller's term ended meanwhile: answer not-active, naming the active one.
        if (
          err instanceof NotActiveError ||
          (err instanceof LeaseOperationError && err.code === 'no-authority')
        )
          await this.requireActive();
        throw err;
      });
      return { node, fenced: true, workflows };
    }
    const intent: FenceIntent = {
      reason: body.reason,
      actor,
      at: Date.now(),
      workflows: workflows.map((w) => w.id),
    };
    if ((await this.writer.put(this.keys.fenceIntent(node), intent, 0n)) === undefined) {
      // The handovers run regardless; without the intent nobody writes the fence after them.
      this.log.error({ node, workflows: intent.workflows }, 'could not record the fence intent');
      throw new ApiError(
        'conflict',
        `the handovers away from ${node} started, but the fence intent could not be recorded (another fence of ${node} raced this one); read GET /v1/nodes and fence again once they end`,
      );
    }
    return { node, fenced: false, workflows };
  }

  async unfenceNode(node: string, actor: string): Promise<NodeView> {
    await this.requireActive();
    const snap = await this.read();
    if (!knownNode(this.viewContext(snap), node))
      throw new ApiError('not-found', `no node named ${node} is known`, 'path.node');
    if (!snap.fences.has(node) && !snap.fenceIntents.has(node)) {
      throw new ApiError('conflict', `${node} is not fenced`);
    }
    await this.action('_nodes', actor, `unfence of ${node}`);
    await this.writer.delete(this.keys.fenceIntent(node));
    await unfence(this.deps.etcd, { node, keys: this.keys.lease });
    return this.nodeView(await this.read(), node);
  }

  async getAcl(identity: string): Promise<AclView> {
    const snap = await this.read();
    const stored = snap.specs.get(identity);
    if (!stored) throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
    return { identity, access: stored.spec.access, pending: await listPending(this.deps.etcd, identity) };
  }

  async changeAcl(identity: string, change: AclChangeBody, actor: string): Promise<AclView> {
    await this.requireActive();
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const snap = await this.read();
      const stored = snap.specs.get(identity);
      if (!stored) throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
      const access = structuredClone(stored.spec.access);
      if (change.op === 'open') access.open = change.open;
      else if (change.op === 'remove') {
        const before = access[change.list].length;
        access[change.list] = access[change.list].filter(
          (c: { name?: string; nkey?: string }) => c.name !== change.name && c.nkey !== change.name,
        ) as never;
        if (access[change.list].length === before) {
          throw new ApiError(
            'not-found',
            `${change.name} is not on ${identity}'s ${change.list} list`,
            'name',
          );
        }
      } else if (change.op === 'block') access.blocked = [...access.blocked, change.caller];
      else
        access[change.list] = [
          ...access[change.list].filter((c) => c.name !== change.caller.name),
          change.caller,
        ];
      if (attempt === 0) await this.action(identity, actor, `access list change: ${JSON.stringify(change)}`);
      const revision = await putSpec(
        this.deps.etcd,
        { ...stored.spec, access },
        { expectRevision: stored.revision },
      );
      if (revision !== undefined) return this.getAcl(identity);
    }
    throw new ApiError('conflict', `${identity}'s spec kept changing; try again`);
  }

  private async decide(identity: string, caller: string, fn: () => Promise<unknown>): Promise<AclView> {
    try {
      await fn();
    } catch (err) {
      if (err instanceof AccessListError) {
        throw new ApiError(
          err.code === 'conflict' ? 'conflict' : 'not-found',
          err.message,
          err.code === 'no-pending' ? 'path.caller' : err.code === 'no-spec' ? 'path.identity' : undefined,
        );
      }
      throw err;
    }
    return this.getAcl(identity);
  }

  /**
   * Audit an access decision around the change: "requested" before (an action that cannot be
   * audited is not taken), the decision itself only once it took effect, and a failure as a
   * failure, so history never shows as done what did not happen.
   */
  private async audited(
    identity: string,
    actor: string,
    what: string,
    done: string,
    change: () => Promise<AclView>,
  ): Promise<AclView> {
    await this.action(identity, actor, `${what} requested`);
    let view: AclView;
    try {
      view = await change();
    } catch (err) {
      await this.action(identity, actor, `${what} failed: ${(err as Error).message}`).catch(() => undefined);
      throw err;
    }
    await this.action(identity, actor, done).catch((err: Error) =>
      this.log.error(
        { identity, err: err.message },
        `${done}, but the history record of it could not be written`,
      ),
    );
    return view;
  }

  async approve(identity: string, caller: string, actor: string): Promise<AclView> {
    await this.requireActive();
    return this.audited(identity, actor, `approval of ${caller}`, `authorization of ${caller} approved`, () =>
      this.decide(identity, caller, () => approvePending(this.deps.etcd, identity, caller)),
    );
  }

  async deny(identity: string, caller: string, body: DenyBody, actor: string): Promise<AclView> {
    await this.requireActive();
    return this.audited(
      identity,
      actor,
      `denial of ${caller}${body.block ? ' with its key blocked' : ''}`,
      `authorization of ${caller} denied${body.block ? ' and its key blocked' : ''}`,
      () =>
        this.decide(identity, caller, () =>
          denyPending(this.deps.etcd, identity, caller, { block: body.block }),
        ),
    );
  }

  async history(identity: string | undefined, query: HistoryQuery): Promise<HistoryView> {
    try {
      if (identity) return { entries: await readHistory(this.deps.etcd, identity, { limit: query.limit }) };
      const snap = await this.read();
      const all = await Promise.all(
        [...this.identityNames(snap), '_nodes'].map((id) =>
          readHistory(this.deps.etcd, id, { limit: query.limit }),
        ),
      );
      return {
        entries: all
          .flat()
          .sort((a, b) => a.at - b.at)
          .slice(-query.limit),
      };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw new ApiError('unavailable', `cannot read history from etcd (${(err as Error).message})`);
    }
  }

  subscribe(listener: (event: ApiEvent) => void): () => void {
    this.events.on('event', listener);
    return () => this.events.off('event', listener);
  }

  async metrics(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.metrics_.registry.contentType, body: await this.metrics_.registry.metrics() };
  }
}

// The controller: sees what agents cannot see about themselves (is the identity actually
// answering? is there a second responder?), runs planned handovers as workflows persisted in
// etcd, and serves the API. Automatic failover never depends on it: agents fail over on
// their own when a lease expires. Several controllers may run; one is active (election.ts),
// the others serve reads and refuse writes, naming the active one.
//
// This file only wires the parts together:
//   loop.ts              the round every TICK_MS: read, probe, publish, drive, fence
//   probes.ts            PINGs and what they mean (pure rules: probe-rules.ts, view.ts)
//   events.ts            the event stream (changed views, alarms)
//   supervisor.ts        workflow records and their drivers (workflow.ts)
//   fence-reconciler.ts  node fences applied once their handovers ended
//   api-*.ts             API operations by subject; access-lists.ts for ACLs
//   cluster.ts           reads, and the active check that yields the term writes compare
//   store.ts             etcd layout and the one writer guarded by the election term
//   audit.ts, trouble.ts the audit trail; loop failures logged once per reason
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { ControllerApi } from '../api/schema.js';
import { systemClock, type Clock } from '../clock/index.js';
import type { ControllerConfig } from '../config/controller.js';
import { generateCallerKey, userSigner, type UserSigner } from '../keys/index.js';
import { AccessListApi } from './access-lists.js';
import { AgentStatusApi } from './api-agent-status.js';
import { SnapshotApi } from './api-snapshots.js';
import { CloneApi } from './api-clones.js';
import { DriftReconciler } from './drift-reconciler.js';
import { AgentLink } from './agents.js';
import { CredentialApi } from './api-credentials.js';
import { CredentialServer, loadCredentialKey } from './credentials.js';
import type { ApiDeps } from './api-deps.js';
import { HandoverApi } from './api-handovers.js';
import { NodeApi } from './api-nodes.js';
import { SpecApi } from './api-specs.js';
import { StatusApi } from './api-status.js';
import { Audit } from './audit.js';
import { Cluster } from './cluster.js';
import { ControllerElection } from './election.js';
import { EventStream } from './events.js';
import { FenceReconciler } from './fence-reconciler.js';
import { ControlLoop } from './loop.js';
import { ClusterMirror } from './mirror.js';
import { ReasonLog } from '../identity/reason-log.js';
import { ControllerMetrics } from './metrics.js';
import { Prober } from './probes.js';
import { ControllerKeys, GuardedWriter } from './store.js';
import { WorkflowSupervisor } from './supervisor.js';
import { LoopTrouble } from './trouble.js';

export { CONTROLLER_VERSION } from './api-status.js';

export interface ControllerDeps {
  config: ControllerConfig;
  etcd: Etcd3;
  nc: NatsConnection;
  logger: Logger;
  /** URL clients reach this controller at (published for standbys to point writes at). */
  url?: string;
  /** Time for the loop, probes, heartbeats and records (default: the system clock). */
  clock?: Clock;
  /**
   * The key this controller signs control requests with, published in its member record
   * (default: a fresh key; cmd/controller loads config.keyFile).
   */
  signer?: UserSigner;
}

export class Controller implements ControllerApi {
  readonly metrics_: ControllerMetrics;
  private readonly agents: AgentLink;
  private readonly election: ControllerElection;
  private readonly events: EventStream;
  private readonly supervisor: WorkflowSupervisor;
  private readonly prober: Prober;
  private readonly loop: ControlLoop;
  private readonly mirror: ClusterMirror;
  private readonly specs: SpecApi;
  private readonly handovers: HandoverApi;
  private readonly nodes: NodeApi;
  private readonly access: AccessListApi;
  private readonly status: StatusApi;
  private readonly agentStatusApi: AgentStatusApi;
  private readonly snapshots: SnapshotApi;
  private readonly clones: CloneApi;
  private readonly credentials: CredentialApi;
  /** Answers agents' credential requests; only with credentials.keyFile (credentials.ts). */
  private readonly credentialServer: CredentialServer | undefined;

  constructor(private readonly deps: ControllerDeps) {
    const { config, etcd, nc, logger: log } = deps;
    const clock = deps.clock ?? systemClock;
    const name = config.name;
    const keys = new ControllerKeys();
    const metrics = (this.metrics_ = new ControllerMetrics(config.http.metricsIdentityLimit));
    const trouble = new LoopTrouble(log, metrics.loopFailures);
    const isActive = () => this.election.active;
    const signer = deps.signer ?? userSigner(generateCallerKey().seed);
    const member = {
      name,
      ...(deps.url ? { url: deps.url } : {}),
      startedAt: clock.wallMs(),
      key: signer.publicKey,
    };
    this.election = new ControllerElection(etcd, keys, member, config.lease.ttlSeconds, log, clock);
    this.agents = new AgentLink(nc, log, signer, undefined, clock);
    const writer = new GuardedWriter(etcd, keys, () => this.election.token, name);
    // Said once per reason and once when it follows etcd again; meanwhile every snapshot is
    // read from etcd (understudy_controller_snapshots_total{source="etcd"} counts them).
    const mirrorTrouble = new ReasonLog(
      log,
      "following the cluster through the mirror's watch (snapshots are read from etcd meanwhile)",
    );
    this.mirror = ClusterMirror.start(etcd, keys, {
      trouble: (err) => mirrorTrouble.fail(err.message.replace(/\d+/g, '#'), { err: err.message }),
      synced: () => mirrorTrouble.ok(),
    });
    const cluster = new Cluster({
      ...{ name, etcd, keys, writer, clock, isActive },
      mirror: this.mirror,
      onSnapshot: (source) => metrics.snapshots.inc({ source }),
      agents: () => this.agents.agents(),
      heartbeatTimeoutMs: config.probes.heartbeatTimeoutMs,
      startedAt: clock.wallMs(),
    });
    const audit = new Audit(etcd, name, clock, trouble, writer, cluster);
    this.events = new EventStream(clock, log, metrics);
    const shared = { name, etcd, nc, keys, writer, cluster, audit, metrics, config, clock, log };
    const parts = { ...shared, events: this.events, agents: this.agents, trouble, isActive };
    this.supervisor = new WorkflowSupervisor(parts);
    this.prober = new Prober({ ...parts, supervisor: this.supervisor });
    const fences = new FenceReconciler(parts);
    const drift = new DriftReconciler(parts);
    this.loop = new ControlLoop({
      ...parts,
      prober: this.prober,
      supervisor: this.supervisor,
      fences,
      drift,
    });
    const api: ApiDeps = { ...parts, supervisor: this.supervisor, prober: this.prober };
    this.specs = new SpecApi(api);
    this.handovers = new HandoverApi(api);
    this.nodes = new NodeApi(api);
    this.agentStatusApi = new AgentStatusApi({ agents: this.agents });
    this.snapshots = new SnapshotApi({ etcd, keys, cluster, agents: this.agents });
    this.clones = new CloneApi(api);
    this.access = new AccessListApi(api);
    const credentialKey = config.credentials.keyFile
      ? loadCredentialKey(config.credentials.keyFile)
      : undefined;
    this.credentials = new CredentialApi(api, credentialKey);
    this.credentialServer = credentialKey
      ? new CredentialServer({ nc, etcd, keys, key: credentialKey, signer, name, log, clock, metrics })
      : undefined;
    this.status = new StatusApi({ ...api, nc, isActive, lastRoundError: () => this.loop.lastError });
    this.election.on('active', () => metrics.active.set(1));
    this.election.on('standby', () => {
      metrics.active.set(0);
      this.supervisor.stopAll();
    });
  }

  /** Start probing and campaigning; `url` is where clients reach this controller. */
  start(url?: string): void {
    this.prober.watchLink();
    this.agents.start();
    this.election.start(url ?? this.deps.url);
    this.loop.start();
    this.credentialServer?.start();
  }

  async stop(): Promise<void> {
    this.credentialServer?.stop();
    this.loop.stop();
    this.supervisor.stopAll();
    this.agents.stop();
    this.mirror.close();
    await this.election.stop();
  }

  get isActive(): boolean {
    return this.election.active;
  }

  // --- ControllerApi: each call goes to the module for its subject -------------------------
  info: ControllerApi['info'] = () => this.status.info();
  readiness: ControllerApi['readiness'] = () => this.status.readiness();
  history: ControllerApi['history'] = (...a) => this.status.history(...a);
  metrics: ControllerApi['metrics'] = () => this.status.metrics();
  subscribe: ControllerApi['subscribe'] = (listener) => this.events.subscribe(listener);

  listIdentities: ControllerApi['listIdentities'] = (...a) => this.specs.listIdentities(...a);
  getIdentity: ControllerApi['getIdentity'] = (...a) => this.specs.getIdentity(...a);
  getSpec: ControllerApi['getSpec'] = (...a) => this.specs.getSpec(...a);
  apply: ControllerApi['apply'] = (...a) => this.specs.apply(...a);
  deleteIdentity: ControllerApi['deleteIdentity'] = (...a) => this.specs.deleteIdentity(...a);
  setCredential: ControllerApi['setCredential'] = (...a) => this.credentials.setCredential(...a);
  deleteCredential: ControllerApi['deleteCredential'] = (...a) => this.credentials.deleteCredential(...a);

  switchover: ControllerApi['switchover'] = (...a) => this.handovers.switchover(...a);
  failover: ControllerApi['failover'] = (...a) => this.handovers.failover(...a);
  pause: ControllerApi['pause'] = (...a) => this.handovers.pause(...a);
  resume: ControllerApi['resume'] = (...a) => this.handovers.resume(...a);
  getWorkflow: ControllerApi['getWorkflow'] = (...a) => this.handovers.getWorkflow(...a);
  cancelWorkflow: ControllerApi['cancelWorkflow'] = (...a) => this.handovers.cancelWorkflow(...a);
  listWorkflows: ControllerApi['listWorkflows'] = () => this.handovers.listWorkflows();

  listNodes: ControllerApi['listNodes'] = () => this.nodes.listNodes();
  agentStatus: ControllerApi['agentStatus'] = (node) => this.agentStatusApi.agentStatus(node);
  fenceNode: ControllerApi['fenceNode'] = (...a) => this.nodes.fenceNode(...a);
  unfenceNode: ControllerApi['unfenceNode'] = (...a) => this.nodes.unfenceNode(...a);

  snapshot: ControllerApi['snapshot'] = (...a) => this.snapshots.snapshot(...a);
  listSnapshots: ControllerApi['listSnapshots'] = (identity) => this.snapshots.listSnapshots(identity);
  clone: ControllerApi['clone'] = (...a) => this.clones.clone(...a);
  listClones: ControllerApi['listClones'] = (identity) => this.clones.listClones(identity);
  deleteClone: ControllerApi['deleteClone'] = (...a) => this.clones.deleteClone(...a);

  getAcl: ControllerApi['getAcl'] = (...a) => this.access.getAcl(...a);
  changeAcl: ControllerApi['changeAcl'] = (...a) => this.access.changeAcl(...a);
  approve: ControllerApi['approve'] = (...a) => this.access.approve(...a);
  deny: ControllerApi['deny'] = (...a) => this.access.deny(...a);
}

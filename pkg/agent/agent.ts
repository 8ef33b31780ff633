// One agent per host: one etcd session shared by every identity it hosts, one NATS
// connection, one lifeline for service processes, and an IdentityRunner per identity.
// It opens no inbound port except the optional local /healthz and /metrics.
import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import { defaultRunDir, hostedIdentities, type AgentConfig } from '../config/agent.js';
import {
  AgentStatus,
  ControlError,
  HEARTBEAT_VERSION,
  PROTOCOL_VERSION,
  type ControlRequest,
  type Heartbeat,
} from '../control/protocol.js';
import { HistoryWriter } from '../history/index.js';
import type { IdentityDriver } from '../identity/driver.js';
import { Lifeline } from '../identity/lifeline.js';
import { SpawnTurns } from '../identity/spawn-turns.js';
import {
  NatsServiceDriver,
  type NatsServiceHandlers,
  type ServiceHandler,
} from '../identity/nats-service.js';
import { ProcessDriver } from '../identity/process.js';
import { execPolicy } from '../identity/exec-policy.js';
import { subjects } from '../identity/wire.js';
import { etcdCalls, fence, leaseTiming, unfence, type LeaseTiming } from '../lease/index.js';
import { systemClock, type Clock } from '../clock/index.js';
import { createLogger } from '../log/index.js';
import { connectNats, etcdConnectOptions, etcdFromSettings } from '../transport/connect.js';
import type { IdentitySpec } from '../spec/schema.js';
import { bootstrapSpecs, readSpecFile, SpecWatcher } from '../spec/store.js';
import { FenceWatch } from './fence-watch.js';
import { startHealthServer } from './health.js';
import { loginIo } from './login-io.js';
import { AgentMetrics } from './metrics.js';
import { LIVENESS_CHECK_TIMEOUT_MS, ServiceLiveness } from './liveness.js';
import { Admission } from './admission.js';
import { IdentityRunner, RunnerError, type LeaderAnswer } from './runner.js';
import { SnapshotStore } from '../snapshot/store.js';
import { stateDirFor } from '../spec/schema.js';
import { bootstrapClone } from './clone-bootstrap.js';
import { lifelineDeadline, lifelineSlackMs } from './term.js';
import { SessionKeeper } from './sessions.js';
import { SharedRetryLog } from './retries.js';
import { ControlServer } from './control-server.js';
import { loadSigner, registerNodeKey, type UserSigner } from '../keys/index.js';

/** Extra time on top of the logout budget that a graceful shutdown may take (resign, revoke, flush). */
const SHUTDOWN_SLACK_MS = 3_000;
/** A drain that does not come back within this is reported as failed to the controller. */
const DRAIN_REPLY_SLACK_MS = 1_000;

export interface AgentOptions {
  config: AgentConfig;
  logger?: Logger;
  /** In-process handlers for identities whose spec uses the nats-service driver. */
  handlers?: Record<string, NatsServiceHandlers | ServiceHandler>;
  /** Loads handlers named by a spec's `service.module` (cmd/agent imports the module). */
  loadHandlers?: (module: string) => Promise<Record<string, NatsServiceHandlers | ServiceHandler>>;
  /** Time for the identities' decisions and waits; the system clock unless a test moves it. */
  clock?: Clock;
}

export class Agent {
  private readonly runners = new Map<string, IdentityRunner>();
  /** Logins of all identities take turns (admission.ts). */
  private readonly admission: Admission;
  /** Every process service's spawn takes its own pass of the loop (spawn-turns.ts). */
  private readonly spawnTurns = new SpawnTurns();
  private readonly retryLog = new SharedRetryLog(() => Date.now());
  private readonly startedAt = new Date();
  private controlServer: ControlServer | undefined;
  /** This start of the agent: control requests are signed for it (pkg/control/signing.ts). */
  private readonly instance = randomBytes(9).toString('base64url');
  private heartbeatTimer: NodeJS.Timeout | undefined;
  private specWatcher: SpecWatcher | undefined;
  private health: { port: number; close(): Promise<void> } | undefined;
  private shuttingDown: Promise<void> | undefined;
  private readonly handlers: Record<string, NatsServiceHandlers | ServiceHandler>;
  private readonly liveness: ServiceLiveness;
  /** Snapshots of identities' state directories (spec.state): one store for all of them. */
  private readonly snapshots: SnapshotStore;

  private constructor(
    readonly config: AgentConfig,
    readonly logger: Logger,
    readonly etcd: Etcd3,
    readonly nc: NatsConnection,
    readonly timing: LeaseTiming,
    private readonly sessions: SessionKeeper,
    /** This node's signing key, registered in etcd bound to each session (pkg/keys). */
    readonly signer: UserSigner,
    private readonly fenceWatch: FenceWatch,
    private readonly history: HistoryWriter,
    private readonly lifeline: Lifeline,
    readonly metrics: AgentMetrics,
    private readonly runDir: string,
    private readonly opts: AgentOptions,
  ) {
    this.handlers = { ...opts.handlers };
    this.snapshots = new SnapshotStore(etcd, nc);
    this.admission = new Admission(this.clock, () => metrics.loopDelay.currentMs);
    // One late beat is tolerated; a result older than two periods says nothing about now.
    this.liveness = new ServiceLiveness(() => this.clock.monotonicMs(), 2 * config.heartbeatIntervalMs);
  }

  get node(): string {
    return this.config.node;
  }

  private get clock(): Clock {
    return this.opts.clock ?? systemClock;
  }

  /** Port of the health server, when configured (0 in config picks a free one). */
  get healthPort(): number | undefined {
    return this.health?.port;
  }

  static async start(opts: AgentOptions): Promise<Agent> {
    const config = opts.config;
    const logger =
      opts.logger ??
      createLogger({ name: 'understudy-agent', level: config.logLevel, base: { node: config.node } });
    const timing = leaseTiming(config.lease, 'lease');
    const runDir = config.runDir ?? defaultRunDir(config.node);
    await mkdir(runDir, { recursive: true, mode: 0o700 });

    const etcd = etcdFromSettings(config.etcd);
    const nc = await connectNats(config.nats, `understudy-agent-${config.node}`, logger);
    const metrics = new AgentMetrics(config.metrics.identityLimit);
    metrics.watchEtcdCalls(() => etcdCalls(etcd));
    const lifeline = await Lifeline.start(logger, { expired: () => metrics.lifelineKills.inc() });
    const history = new HistoryWriter(
      etcd,
      (err) => logger.debug({ err: err.message }, 'history write failed; retrying'),
      undefined,
      undefined,
      config.history.keepPerIdentity,
    );

    if (config.bootstrapSpecs) {
      const specs = await readSpecFile(config.bootstrapSpecs);
      const { created, present } = await bootstrapSpecs(etcd, specs);
      logger.info({ file: config.bootstrapSpecs, created, present }, 'bootstrap specs applied where absent');
    }

    const fenceWatch = await FenceWatch.start(
      etcd,
      config.node,
      etcdTrouble(logger, "reading this node's fence"),
    );
    const signer = await loadSigner(config.keyFile);
    const sessions = new SessionKeeper(
      etcd,
      config.node,
      timing,
      logger,
      {
        opened: () => metrics.sessionsOpened.inc(),
        renewed: (session) => {
          metrics.sessionRenewals.inc();
          // One push of the session's lifeline deadline covers every service logged in on it.
          const left = session.msUntilSelfFence();
          if (left > 0) lifeline.extend(lifelineDeadline(session), left + lifelineSlackMs(session));
        },
        stopped: (reason) => metrics.sessionStops.inc({ reason }),
        register: (session) => registerNodeKey(etcd, config.node, signer.publicKey, session.leaseId),
      },
      opts.clock ?? systemClock,
      etcdConnectOptions(config.etcd),
    );
    const agent = new Agent(
      config,
      logger,
      etcd,
      nc,
      timing,
      sessions,
      signer,
      fenceWatch,
      history,
      lifeline,
      metrics,
      runDir,
      opts,
    );
    await agent.run();
    return agent;
  }

  private async run(): Promise<void> {
    const { config, logger } = this;
    if (config.clone !== undefined) {
      const said = await bootstrapClone({
        identity: config.clone,
        node: this.node,
        etcd: this.etcd,
        store: this.snapshots,
        policy: execPolicy(config),
        owner: () => this.stateOwner(),
        log: logger.child({ identity: config.clone }),
      });
      logger.info({ identity: config.clone, steps: said }, 'bootstrapped from the clone: standing by');
    }
    for (const identity of Object.keys(hostedIdentities(config))) {
      const runner = this.makeRunner(identity);
      this.runners.set(identity, runner);
    }
    this.fenceWatch.on('change', (record) => {
      logger.warn({ fenced: record ?? null }, record ? 'this node was fenced' : 'this node was unfenced');
      for (const r of this.runners.values()) r.fenceChanged();
    });
    if (this.fenceWatch.fenced) logger.warn({ fenced: this.fenceWatch.fenced }, 'this node is fenced');

    this.specWatcher = await SpecWatcher.start(this.etcd, {
      put: (spec, revision) => {
        const runner = this.runners.get(spec.name);
        if (!runner) return;
        logger.info({ identity: spec.name }, 'identity spec loaded');
        runner.updateSpec(spec, revision);
      },
      delete: (identity) => {
        const runner = this.runners.get(identity);
        if (!runner) return;
        logger.warn({ identity }, 'identity spec deleted: logging out and standing by');
        runner.removeSpec();
      },
      invalid: (identity, err) =>
        logger.error(
          { identity, err: err.message },
          'identity spec in etcd is invalid; keeping the last good one',
        ),
      trouble: etcdTrouble(logger, 'watching identity specs'),
      wants: (identity) => this.runners.has(identity),
    });
    for (const runner of this.runners.values()) runner.start();

    this.controlServer = new ControlServer({
      node: this.node,
      instance: this.instance,
      nc: this.nc,
      etcd: this.etcd,
      logger: this.logger,
      clock: this.clock,
      pinnedKeys: this.config.controllerKeys,
      handle: (request) => this.control(request),
    });
    this.controlServer.start();
    this.heartbeatTimer = setInterval(() => this.heartbeat(), this.config.heartbeatIntervalMs);
    this.heartbeat();
    if (config.health) {
      this.health = await startHealthServer(
        config.health.listen,
        {
          problems: () => this.problems(),
          status: () => this.status(),
          leader: (identity) => this.leaderAnswer(identity),
        },
        this.metrics,
      );
      logger.info({ port: this.health.port }, 'health and metrics listening');
    }
    logger.info(
      {
        identities: [...this.runners.keys()],
        ttlSeconds: this.timing.ttlSeconds,
        protocol: PROTOCOL_VERSION,
      },
      'agent started',
    );
  }

  private makeRunner(identity: string): IdentityRunner {
    const overrides = hostedIdentities(this.config)[identity] ?? {};
    const runner = new IdentityRunner(identity, {
      node: this.node,
      sessions: this.sessions,
      fence: this.fenceWatch,
      history: this.history,
      logger: this.logger,
      port: loginIo({
        ...{ identity, node: this.node, etcd: this.etcd, nc: this.nc, runDir: this.runDir },
        signer: this.signer,
      }),
      settings: {
        priority: overrides.priority ?? this.config.priority,
        nofailover: overrides.nofailover ?? this.config.tags.nofailover,
      },
      makeDriver: (spec) => this.makeDriver(spec),
      admission: this.admission,
      spawnTurns: this.spawnTurns,
      retryLog: this.retryLog,
      policy: execPolicy(this.config),
      clock: this.clock,
      onTransition: (t) => this.metrics.transition(t),
      onRequest: (id, outcome) => this.metrics.request(id, outcome),
      onRetry: (r) => this.metrics.retryChanged(r),
      onRefused: (r) => this.metrics.refusedChanged(r),
      snapshots: this.snapshots,
      stateOwner: () => this.stateOwner(),
    });
    this.metrics.added(identity, runner.state);
    return runner;
  }

  /** The user services run as, when it is not the agent's own: restored state goes to it. */
  private async stateOwner(): Promise<{ uid: number; gid: number } | undefined> {
    const decision = await execPolicy(this.config).runAs();
    return decision.ok && decision.switchTo
      ? { uid: decision.switchTo.uid, gid: decision.switchTo.gid }
      : undefined;
  }

  private makeDriver(spec: IdentitySpec): IdentityDriver {
    const service = spec.service;
    if (service.driver === 'process') {
      // The service finds its state directory (restored before each login) here.
      const env = spec.state
        ? { ...service.env, UNDERSTUDY_STATE_DIR: stateDirFor(spec.state, this.node) }
        : service.env;
      return new ProcessDriver(
        { ...service, env },
        {
          identity: spec.name,
          node: this.node,
          logger: this.logger,
          runDir: this.runDir,
          lifeline: this.lifeline,
          spawnTurns: this.spawnTurns,
          clock: this.clock,
          policy: execPolicy(this.config),
        },
      );
    }
    const handler = this.handlers[service.handler];
    const driverOptions = { logger: this.logger.child({ identity: spec.name }), clock: this.clock };
    if (handler) return new NatsServiceDriver(handler, driverOptions);
    if (service.module && this.opts.loadHandlers) {
      // Loaded on first use; until then requests get "unavailable".
      const loading = this.opts.loadHandlers(service.module).then((loaded) => {
        Object.assign(this.handlers, loaded);
        const h = loaded[service.handler];
        if (!h) throw new Error(`module ${service.module} exports no handler '${service.handler}'`);
        return h;
      });
      return new NatsServiceDriver(
        {
          handle: async (req) => {
            const h = await loading;
            return typeof h === 'function' ? h(req) : h.handle(req);
          },
          login: async (ctx) => {
            const h = await loading;
            if (typeof h !== 'function') await h.login?.(ctx);
          },
          logout: async () => {
            const h = await loading;
            if (typeof h !== 'function') await h.logout?.();
          },
        },
        driverOptions,
      );
    }
    throw new Error(
      `identity ${spec.name}: no handler '${service.handler}' registered with this agent; ` +
        `register it (Agent.start({ handlers })) or set service.module in the spec`,
    );
  }

  // --- control plane ------------------------------------------------------------------------

  private runner(identity: string): IdentityRunner {
    const r = this.runners.get(identity);
    if (!r) {
      throw new ControlError(
        'unknown-identity',
        `${this.node} does not host ${identity}; it hosts ${[...this.runners.keys()].join(', ')}`,
        'identity',
      );
    }
    return r;
  }

  /** Do what a proven control request asks (ControlServer checked signature and term). */
  private async control(request: ControlRequest): Promise<unknown> {
    try {
      return await this.act(request);
    } catch (err) {
      if (err instanceof RunnerError) {
        throw new ControlError(err.code === 'not-leader' ? 'not-leader' : 'failed', err.message);
      }
      throw err;
    }
  }

  private async act(request: ControlRequest): Promise<unknown> {
    switch (request.op) {
      case 'status': {
        const status = this.status();
        if (!request.identity) return status;
        this.runner(request.identity);
        return { ...status, identities: status.identities.filter((i) => i.identity === request.identity) };
      }
      case 'drain': {
        const runner = this.runner(request.identity);
        this.logger.info(
          { identity: request.identity, actor: request.actor, holdMs: request.holdMs, to: request.to },
          'drain requested',
        );
        const budget = this.timing.logoutBudgetMs + DRAIN_REPLY_SLACK_MS;
        let cancel: (() => void) | undefined;
        const token = await Promise.race([
          runner.drain(
            request.holdMs,
            request.actor,
            // `term` is there: a drain without one was refused before it got here.
            request.to && request.workflow && request.term
              ? { to: request.to, term: request.term, workflow: request.workflow }
              : undefined,
          ),
          new Promise<never>(
            (_, reject) =>
              (cancel = this.clock.after(budget, () =>
                reject(
                  new ControlError(
                    'failed',
                    `drain of ${request.identity} not confirmed within ${budget} ms`,
                  ),
                ),
              )),
          ),
        ]).finally(() => cancel?.());
        return { identity: request.identity, node: this.node, token: String(token), loggedOut: true };
      }
      case 'undrain':
        this.runner(request.identity).undrain();
        return { identity: request.identity, node: this.node };
      case 'snapshot': {
        this.logger.info({ identity: request.identity, actor: request.actor }, 'snapshot requested');
        return this.runner(request.identity).snapshot(request.actor);
      }
      case 'fence':
        await fence(this.etcd, { node: this.node, reason: request.reason, actor: request.actor });
        return { node: this.node, fenced: true };
      case 'unfence':
        await unfence(this.etcd, { node: this.node });
        return { node: this.node, fenced: false };
    }
  }

  status(): AgentStatus {
    return {
      node: this.node,
      protocol: PROTOCOL_VERSION,
      startedAt: this.startedAt.toISOString(),
      fenced: this.fenceWatch.fenced !== undefined,
      session: this.sessions.describe(),
      identities: [...this.runners.values()].map((r) => r.status()),
    };
  }

  /** GET /identities/<id>/leader on the health listener: does this node answer for it now? */
  async leaderAnswer(identity: string): Promise<LeaderAnswer> {
    const runner = this.runners.get(identity);
    if (runner) return runner.leaderAnswer();
    return {
      leader: false,
      state: 'not-hosted',
      reason: `${this.node} does not host ${identity} (not in its identities); check the name`,
    };
  }

  runnerState(identity: string): IdentityRunner | undefined {
    return this.runners.get(identity);
  }

  private problems(): string[] {
    const problems: string[] = [];
    if (!this.sessions.alive) problems.push(`no live etcd session (${this.sessions.describe()})`);
    if (this.nc.isClosed()) problems.push('NATS connection closed');
    return problems;
  }

  /**
   * Publish this node's state, with the last liveness check of each service it leads, then
   * check them again for the next beat.
   */
  private heartbeat(): void {
    const runners = [...this.runners.values()];
    const beat: Heartbeat = {
      v: HEARTBEAT_VERSION,
      node: this.node,
      instance: this.instance,
      at: this.clock.wallMs(),
      everyMs: this.config.heartbeatIntervalMs,
      handsOver: true,
      fenced: this.fenceWatch.fenced !== undefined,
      identities: runners.map((r) => {
        const alive = r.state === 'leader' ? this.liveness.report(r.identity, r.token) : undefined;
        const held = r.stateKeeper?.holding;
        // Drift is judged only for identities that keep state: the fingerprint travels only
        // for them (10,000 identities on one agent must stay well under NATS's 1 MB payload).
        const judged = r.keepsState;
        return {
          identity: r.identity,
          state: r.state,
          ...(r.token !== undefined ? { token: String(r.token) } : {}),
          ...(r.specRevision !== undefined ? { specRevision: String(r.specRevision) } : {}),
          ...(judged && r.accessDigest !== undefined ? { access: r.accessDigest } : {}),
          ...(judged && r.serviceVersion !== undefined ? { version: r.serviceVersion } : {}),
          ...(held
            ? { snapshot: { object: held.object, token: held.token, takenAt: held.takenAt, how: held.how } }
            : {}),
          ...(alive !== undefined ? { alive } : {}),
        };
      }),
    };
    if (this.nc.isClosed()) return;
    for (const r of runners) void r.refreshVersion();
    this.publishHeartbeat(beat);
    const leading = runners.flatMap((r) => {
      const token = r.token;
      return r.state === 'leader' && token !== undefined
        ? [{ identity: r.identity, token, check: () => r.serviceAlive(LIVENESS_CHECK_TIMEOUT_MS) }]
        : [];
    });
    void this.liveness.refresh(leading);
  }

  /** Why the last heartbeat had to go without fingerprints (logged once per change). */
  private heartbeatTrouble: string | undefined;

  /**
   * Publish a heartbeat. One over NATS's payload limit (thousands of identities keeping state,
   * each with its fingerprint) goes without the fingerprints: the controller then judges no
   * drift for this node (its holds stay as they are), but still hears that the node lives.
   */
  private publishHeartbeat(beat: Heartbeat): void {
    const subject = subjects.heartbeat(this.node);
    const encode = (b: Heartbeat) => new TextEncoder().encode(JSON.stringify(b));
    try {
      this.nc.publish(subject, encode(beat));
      if (this.heartbeatTrouble !== undefined) this.logger.info('heartbeats carry fingerprints again');
      this.heartbeatTrouble = undefined;
      return;
    } catch (err) {
      const why = (err as Error).message;
      if (why !== this.heartbeatTrouble) {
        this.logger.error(
          { err: why, identities: beat.identities.length },
          'heartbeat too large for NATS: sending it without drift fingerprints (drift is not judged for this node); raise max_payload or spread identities over more agents',
        );
      }
      this.heartbeatTrouble = why;
    }
    const slim: Heartbeat = {
      ...beat,
      identities: beat.identities.map(({ access: _a, version: _v, snapshot: _s, ...rest }) => rest),
    };
    try {
      this.nc.publish(subject, encode(slim));
    } catch (err) {
      this.logger.error({ err: (err as Error).message }, 'heartbeat not sent');
    }
  }

  /**
   * Graceful shutdown: every identity logs out and is handed to its best live standby, or
   * resigned (a standby takes over at once instead of waiting for the TTL), then the session
   * is revoked and connections close.
   */
  shutdown(reason = 'shutdown requested'): Promise<void> {
    this.shuttingDown ??= this.doShutdown(reason);
    return this.shuttingDown;
  }

  private async doShutdown(reason: string): Promise<void> {
    this.logger.info(
      { reason },
      'agent stopping: logging out every identity and handing each to its best live standby (or resigning it)',
    );
    clearInterval(this.heartbeatTimer);
    this.controlServer?.stop();
    const budget = this.timing.logoutBudgetMs;
    await Promise.all([...this.runners.values()].map((r) => r.stop(budget)));
    await this.specWatcher?.close();
    await this.fenceWatch.close();
    await this.sessions.close();
    await this.history.close();
    await this.health?.close();
    await this.lifeline.close();
    this.metrics.close();
    await this.nc.drain().catch(() => undefined);
    this.etcd.close();
    this.logger.info('agent stopped');
  }

  /** Upper bound for shutdown(), for the caller's own watchdog. */
  get shutdownBudgetMs(): number {
    return this.timing.logoutBudgetMs + SHUTDOWN_SLACK_MS;
  }
}

/** Log etcd trouble of a self-retrying watch: the first failure and every tenth after. */
function etcdTrouble(logger: Logger, what: string) {
  return (err: Error, attempt: number) => {
    if (attempt === 1 || attempt % 10 === 0) {
      logger.error(
        { err: err.message, attempt },
        `${what}: etcd does not answer; retrying. Check the etcd endpoints in the config and etcd's health`,
      );
    }
  };
}

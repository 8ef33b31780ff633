// One identity on one node: campaigns for it, runs the term when this node wins (term.ts),
// and stands by otherwise. The states and the moves allowed between them are in states.ts;
// every choice of the next state is a pure function in decide.ts; machine.ts refuses moves
// outside the table. This file gathers the facts, calls the decisions, logs their reasons
// and does the I/O they ask for.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import type { IdentityStatus } from '../control/protocol.js';
import type { HistoryWriter } from '../history/index.js';
import type { IdentityDriver } from '../identity/driver.js';
import type { SpawnTurns } from '../identity/spawn-turns.js';
import {
  CampaignAbandonedError,
  Candidate,
  NotEligibleError,
  type FenceRecord,
  type Leadership,
} from '../lease/index.js';
import type { IdentitySpec } from '../spec/schema.js';
import {
  decideCampaignEnd,
  decideCampaignStart,
  decideCampaignView,
  decideIdle,
  ineligibility,
  nodeSettings,
  serviceKey,
  type CampaignOutcome,
  type Decision,
  type NodeSettings,
  type OutsideFacts,
} from './decide.js';
import type { Admission } from './admission.js';
import { RunnerError } from './errors.js';
import { IdentityStateMachine } from './machine.js';
import type { LoginPort } from './port.js';
import { Serving } from './serving.js';
import { ServiceSlot } from './service-slot.js';
import { logRetryChange, RetryBoard, RetryStreak, type RetryChange, type SharedRetryLog } from './retries.js';
import type { SessionKeeper } from './sessions.js';
import { LOGGED_IN_STATES, type IdentityState } from './states.js';
import { Term, type Handover, type TermHost } from './term.js';
import { Wakeup } from './wakeup.js';
import { REFUSED_RECHECK_MS, SpecGate, type SpecPolicy } from './spec-policy.js';
import { LIVENESS_CHECK_TIMEOUT_MS } from './liveness.js';
import { StateKeeper, type SnapshotPort } from './state-keeper.js';
import { serviceVersion } from '../identity/version.js';
import { accessFingerprint } from '../spec/fingerprint.js';
import type { SnapshotRecord } from '../snapshot/store.js';

export { RunnerError } from './errors.js';
export type { NodeSettings } from './decide.js';

/** A node whose service kept crashing ranks last for this long, so a standby takes over. */
const FAILED_COOLDOWN_MS = 10_000;
/** Pause after an unexpected error in the loop, doubling while it persists, so a fault does not spin. */
const LOOP_ERROR_PAUSE_MS = 1_000;
const LOOP_ERROR_MAX_PAUSE_MS = 30_000;
/**
 * How often a node looks again at the executable its service would run, for drift checks: a
 * replaced binary is reported within this long. A stat per identity that keeps state, and a
 * read only when the file changed.
 */
const VERSION_RECHECK_MS = 10_000;
/** A campaign ranked last for a cooldown re-registers this long after it ends, so its rank is current. */
const COOLDOWN_REFRESH_SLACK_MS = 10;

/** The leader endpoint's answer for one identity on this node (health.ts). */
export type LeaderAnswer =
  | { leader: true; token: string; since: string }
  | { leader: false; state: IdentityState | 'not-hosted'; reason: string };

export interface RunnerDeps {
  node: string;
  sessions: Pick<SessionKeeper, 'current' | 'alive'>;
  fence: { readonly fenced: FenceRecord | undefined };
  history: Pick<HistoryWriter, 'record'>;
  logger: Logger;
  /** Credentials, the responder, pending records and the leader observer (login-io.ts). */
  port: LoginPort;
  /** This node's settings from the agent config (the spec's candidates may override them). */
  settings: NodeSettings;
  /** What this node lets specs run and read, and as whom (the agent config's allow, service). */
  policy: SpecPolicy;
  makeDriver(spec: IdentitySpec): IdentityDriver;
  /** Retry changes of every identity of the agent, so a shared fault is not logged once per identity. */
  retryLog?: Pick<SharedRetryLog, 'log'>;
  /** Logins take turns through this, shared by every identity of the agent (admission.ts). */
  admission?: Pick<Admission, 'acquire'>;
  /** The agent's spawns, which wait for the warm logins under way (spawn-turns.ts). */
  spawnTurns?: Pick<SpawnTurns, 'warmLogin'>;
  clock?: Clock;
  onTransition?(t: { identity: string; from: IdentityState; to: IdentityState; token?: bigint }): void;
  onRequest?(identity: string, outcome: string): void;
  /** A retry began, changed reason or cleared (once per change); `retrying`: any still in force. */
  onRetry?(r: { identity: string; retrying: boolean } & RetryChange): void;
  /** This node refuses the identity's spec or its durable inbox (true), or no longer (false). */
  onRefused?(r: { identity: string; what: 'spec' | 'inbox'; refused: boolean }): void;
  /** The snapshot store, for identities whose spec has a state directory (state-keeper.ts). */
  snapshots?: SnapshotPort;
  /** Who restored state directories belong to: the service user, when services run as one. */
  stateOwner?: () => Promise<{ uid: number; gid: number } | undefined>;
}

export class IdentityRunner extends EventEmitter {
  private readonly machine: IdentityStateMachine;
  private readonly clock: Clock;
  private readonly retries: RetryBoard;
  private readonly loopStreak: RetryStreak;
  private spec: IdentitySpec | undefined;
  /** etcd revision of the spec this node runs: the controller compares it to report clone lag. */
  specRevision: bigint | undefined;
  /** Digest of the access lists this node enforces (drift: the controller compares it). */
  accessDigest: string | undefined;
  /** The version of the service this node would run (version.ts), once the spec is accepted. */
  serviceVersion: string | undefined;
  private readonly service: ServiceSlot;
  private readonly changed: Wakeup;
  private readonly stopController = new AbortController();
  private campaignAbort: AbortController | undefined;
  /** The term this node won, while it runs. */
  private term: Term | undefined;
  /** Monotonic ms until which this node ranks last after a failed term. */
  private cooldownUntil = Number.NEGATIVE_INFINITY;
  private observer: { close(): Promise<void> } | undefined;
  private leaderNode: string | undefined;
  private inCampaign = false;
  private readonly serving: Serving;
  private loopDone: Promise<void> | undefined;
  private readonly log: Logger;
  private readonly host: TermHost;
  /** What this node refuses to run (spec-policy.ts), and the login port it guards. */
  private readonly gate: SpecGate;
  private readonly port: LoginPort;
  /** The identity's state directory on this node (configured once the spec is accepted). */
  readonly stateKeeper: StateKeeper | undefined;

  constructor(
    readonly identity: string,
    private readonly deps: RunnerDeps,
  ) {
    super();
    this.log = deps.logger.child({ identity });
    this.clock = deps.clock ?? systemClock;
    this.gate = new SpecGate(deps.policy, this.log, { identity, node: deps.node }, deps.onRefused, () =>
      this.clock.monotonicMs(),
    );
    this.port = this.gate.guard(deps.port);
    this.changed = new Wakeup(this.clock);
    this.machine = new IdentityStateMachine(this.clock, 'waiting for the identity spec in etcd');
    this.retries = new RetryBoard((c) => this.retryChanged(c));
    const wall = () => this.clock.wallMs();
    this.loopStreak = new RetryStreak('the identity loop', wall);
    this.service = new ServiceSlot({
      makeDriver: (spec) => deps.makeDriver(spec),
      logoutBudgetMs: () => deps.sessions.alive?.timing.logoutBudgetMs,
      failed: (reason) => this.term?.end({ kind: 'failed', reason }),
      report: (retry) => this.retries.report('warm-service', retry),
      wallMs: wall,
      stopFailed: (err) =>
        this.log.error(
          { err: err.message },
          'the previous service did not stop cleanly; check for a leftover process of this identity',
        ),
    });
    this.serving = new Serving({
      identity,
      node: deps.node,
      clock: this.clock,
      port: this.port,
      log: this.log,
      ...(deps.onRequest ? { onRequest: deps.onRequest } : {}),
    });
    this.stateKeeper = deps.snapshots
      ? new StateKeeper({
          identity,
          node: deps.node,
          store: deps.snapshots,
          log: this.log,
          clock: this.clock,
          ...(deps.stateOwner ? { owner: deps.stateOwner } : {}),
        })
      : undefined;
    this.host = this.termHost();
  }

  get state(): IdentityState {
    return this.machine.state;
  }

  get token(): bigint | undefined {
    return this.term?.token;
  }

  /** The identity's spec has a state section: its standbys are judged for drift. */
  get keepsState(): boolean {
    return this.spec?.state !== undefined;
  }

  /** The liveness check the leader endpoint's requests are waiting on, if one runs. */
  private leaderCheck: Promise<boolean> | undefined;

  get pid(): number | undefined {
    return this.service.driver?.pid;
  }

  /**
   * Does this node answer for the identity right now (a load balancer's question)? Only as
   * leader with a term that may still act and a service that passes the check PING answers
   * are gated on: logging in, logging out, drained, past the session's self-fence deadline, or
   * a service stopped, restarting or not answering all say no, so traffic never goes where
   * the service is not logged in and serving.
   */
  async leaderAnswer(): Promise<LeaderAnswer> {
    const term = this.term;
    const no = (why: string): LeaderAnswer => ({
      leader: false,
      state: this.state,
      reason: `${this.deps.node} does not answer for ${this.identity}: ${why}`,
    });
    if (this.state !== 'leader' || !term) {
      return no(
        LOGGED_IN_STATES.has(this.state) ? `it is ${this.state}` : `it is ${this.state}, not logged in`,
      );
    }
    // One check in flight per identity, shared: a flood of requests on the (unauthenticated)
    // listener costs one liveness check at a time, and no answer comes from a check that had
    // ended before its request came.
    this.leaderCheck ??= this.serviceAlive(LIVENESS_CHECK_TIMEOUT_MS).finally(() => {
      this.leaderCheck = undefined;
    });
    if (!(await this.leaderCheck)) {
      return no('its service is not serving (stopped, restarting, or not answering its status check)');
    }
    // Asked again after the check: the term may have ended while it ran.
    if (this.state !== 'leader' || this.term !== term || !term.leadership.mayAct()) {
      return no(
        'its term may no longer act (the etcd session is past its self-fence deadline, or the key moved)',
      );
    }
    return {
      leader: true,
      token: String(term.leadership.token),
      since: new Date(this.machine.since).toISOString(),
    };
  }

  /**
   * The check a PING answer is gated on, for the logged-in service: false unless leader; true
   * for a driver without a separate process (the agent itself serves).
   */
  async serviceAlive(timeoutMs: number): Promise<boolean> {
    const driver = this.service.driver;
    if (this.state !== 'leader' || !driver) return false;
    return driver.alive ? driver.alive(timeoutMs) : true;
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  start(): void {
    this.loopDone ??= this.loop();
    const observing = new RetryStreak(
      'watching who leads this identity (the leader shown may be stale)',
      () => this.clock.wallMs(),
    );
    void this.deps.port
      .observeLeader(
        (s) => {
          this.leaderNode = s.leader?.record.node;
          this.reflectCampaign();
        },
        (err) => {
          if (!err) observing.reset();
          this.retries.report('leader-observer', err ? observing.failed(err) : undefined);
        },
      )
      .then(
        (o) => (this.stopping ? void o.close() : (this.observer = o)),
        (err: Error) => this.log.warn({ err: err.message }, 'cannot observe the leader key'),
      );
  }

  // --- inputs -------------------------------------------------------------------------------

  /** A new or changed spec from etcd. Access lists apply at once; a service change hands over. */
  updateSpec(spec: IdentitySpec, revision?: bigint): void {
    const previous = this.spec;
    this.spec = spec;
    this.specRevision = revision;
    this.accessDigest = accessFingerprint(spec.access);
    if (spec.inbox.durable) {
      // Every host makes sure the inbox exists, so requests are stored even while no one leads.
      this.deps.port
        .ensureInbox(spec)
        .catch((err: Error) =>
          this.log.warn({ err: err.message }, 'cannot create the durable inbox stream; retried at login'),
        );
    }
    const why = this.ineligible();
    if (why) this.term?.end({ kind: 'ineligible', reason: why });
    else if (previous && serviceKey(previous) !== serviceKey(spec)) {
      this.term?.end({ kind: 'respec', reason: 'the service definition changed' });
    }
    this.campaignAbort?.abort();
    this.changed.notify();
  }

  removeSpec(): void {
    this.spec = undefined;
    this.stateKeeper?.configure(undefined);
    this.term?.end({ kind: 'ineligible', reason: 'the identity spec was deleted' });
    this.campaignAbort?.abort();
    this.changed.notify();
  }

  /** The node was fenced or unfenced (FenceWatch). */
  fenceChanged(): void {
    if (this.deps.fence.fenced) this.term?.end({ kind: 'fenced' });
    this.campaignAbort?.abort();
    this.changed.notify();
  }

  /**
   * Log out but keep the key for a transfer (controller switchover). Resolves with the token
   * once the service is confirmed out and login=false is recorded, or the key handed to
   * `handover.to` in that same step; rejects when not leader.
   */
  drain(holdMs: number, actor: string, handover?: Handover): Promise<bigint> {
    const term = this.term;
    if (this.state === 'drained' && term) return Promise.resolve(term.leadership.token);
    if (this.state !== 'leader' || !term?.leading) {
      return Promise.reject(
        new RunnerError(
          `${this.deps.node} is not the logged-in leader of ${this.identity} (state ${this.state})`,
          'not-leader',
        ),
      );
    }
    return term.drain(holdMs, actor, handover);
  }

  /**
   * Work out again which version of the service this node would run (for drift checks): at
   * once with `force`, else at most every VERSION_RECHECK_MS, and only for an identity that
   * keeps state (drift is judged only there). A binary replaced on disk counts from then on.
   */
  async refreshVersion(force = false): Promise<void> {
    const spec = this.spec;
    if (!spec || (!force && !spec.state)) return;
    const now = this.clock.monotonicMs();
    if (!force && spec === this.versionOf && now - this.versionCheckedAt < VERSION_RECHECK_MS) return;
    this.versionOf = spec;
    this.versionCheckedAt = now;
    const version = await serviceVersion(spec, { identity: this.identity, node: this.deps.node }).catch(
      () => undefined,
    );
    if (spec === this.spec) this.serviceVersion = version;
  }
  private versionOf: IdentitySpec | undefined;
  private versionCheckedAt = Number.NEGATIVE_INFINITY;

  /** Snapshot the state directory now, as the logged-in leader (`understudy snapshot`). */
  snapshot(actor: string): Promise<SnapshotRecord> {
    const term = this.term;
    const token = term?.token;
    if (this.state !== 'leader' || token === undefined) {
      return Promise.reject(
        new RunnerError(
          `${this.deps.node} is not the logged-in leader of ${this.identity} (state ${this.state}); only the leader snapshots`,
          'not-leader',
        ),
      );
    }
    if (!this.stateKeeper || !this.spec?.state) {
      return Promise.reject(
        new RunnerError(
          `${this.identity} has no state directory: set spec.state.dir (and allow it in the agents' allow.stateDirs) to take snapshots`,
          'failed',
        ),
      );
    }
    return this.stateKeeper.snapshot(token, `requested by ${actor}`);
  }

  /** Abort a drain: log back in if this node still holds the key. */
  undrain(): void {
    if (this.state !== 'drained' || !this.term) {
      throw new RunnerError(
        `${this.identity} is not drained on ${this.deps.node} (state ${this.state})`,
        'not-leader',
      );
    }
    this.term.undrain();
  }

  /** Graceful stop: log out, resign so a standby takes over at once, stop the driver. */
  async stop(budgetMs: number): Promise<void> {
    this.stopController.abort();
    this.term?.end({ kind: 'stop' });
    this.campaignAbort?.abort();
    this.changed.notify();
    await this.loopDone;
    this.stateKeeper?.close();
    await this.observer?.close();
    await this.service.close(budgetMs);
  }

  status(): IdentityStatus {
    const detail = [this.machine.detail, this.retries.describe()].filter(Boolean).join('; ');
    return {
      identity: this.identity,
      state: this.state,
      ...(this.token !== undefined ? { token: String(this.token) } : {}),
      loggedIn: LOGGED_IN_STATES.has(this.state),
      since: new Date(this.machine.since).toISOString(),
      ...(this.leaderNode ? { leader: this.leaderNode } : {}),
      ...(this.pid !== undefined ? { pid: this.pid } : {}),
      healthy: this.healthy(),
      ...(detail ? { detail } : {}),
    };
  }

  // --- facts and moves ------------------------------------------------------------------------

  private healthy(): boolean {
    return this.service.healthy && this.clock.monotonicMs() >= this.cooldownUntil;
  }

  private ineligible(): string | undefined {
    return ineligibility(this.spec, this.deps.node, this.deps.settings);
  }

  private outside(): OutsideFacts {
    const fenced = this.deps.fence.fenced;
    return { stopping: this.stopping, ...(fenced ? { fenceReason: fenced.reason } : {}) };
  }

  /**
   * Apply a decision: move (logged with its reason, recorded in history and metrics), or stay
   * (the reason logged at debug). Throws TransitionRefusedError for a move outside the table.
   */
  private move(d: Decision, token?: bigint): void {
    const from = this.machine.state;
    const m = this.machine.move(d);
    if (!m) {
      this.log.debug({ state: from, reason: d.reason }, `${this.identity}: stays ${from}`);
      return;
    }
    const tokenText = token !== undefined ? String(token) : undefined;
    this.log.info(
      { node: this.deps.node, token: tokenText, from, to: m.to, reason: m.reason, durationMs: m.durationMs },
      `${this.identity}: ${from} → ${m.to}`,
    );
    this.deps.history.record({
      identity: this.identity,
      node: this.deps.node,
      at: m.at,
      kind: 'transition',
      from,
      to: m.to,
      ...(tokenText !== undefined ? { token: tokenText } : {}),
      reason: m.reason,
      durationMs: m.durationMs,
    });
    this.deps.onTransition?.({
      identity: this.identity,
      from,
      to: m.to,
      ...(token !== undefined ? { token } : {}),
    });
    this.emit('state', m.to);
  }

  private retryChanged(c: RetryChange): void {
    if (this.deps.retryLog) this.deps.retryLog.log(this.log, c, this.identity);
    else logRetryChange(this.log, c);
    this.deps.onRetry?.({ identity: this.identity, retrying: this.retries.retrying, ...c });
  }

  /** While campaigning, show whether another node leads (standby) or the key is free. */
  private reflectCampaign(): void {
    const d = decideCampaignView({
      state: this.state,
      inCampaign: this.inCampaign,
      node: this.deps.node,
      ...(this.leaderNode !== undefined ? { leaderNode: this.leaderNode } : {}),
    });
    try {
      this.move(d);
    } catch (err) {
      // Only what is shown changes here: a refused move leaves the state and the campaign be.
      this.log.error({ err: (err as Error).message }, 'leader observer: move refused');
    }
  }

  // --- the loop -----------------------------------------------------------------------------

  private async loop(): Promise<void> {
    while (!this.stopping) {
      try {
        await this.step();
        this.loopStreak.reset();
        this.retries.report('loop', undefined);
      } catch (err) {
        // A persistent fault (a handler that is not registered) must not flood the log: the
        // retry board logs it once per change of reason, and the detail shows it meanwhile.
        const retry = this.loopStreak.failed(err);
        const pauseMs = Math.min(LOOP_ERROR_PAUSE_MS * 2 ** (retry.attempts - 1), LOOP_ERROR_MAX_PAUSE_MS);
        this.retries.report('loop', retry);
        this.log.debug(
          { err: retry.error, retryInMs: pauseMs, attempts: retry.attempts },
          'identity loop error; retrying',
        );
        await this.changed.wait(pauseMs, this.stopController.signal);
      }
    }
    try {
      this.move({ next: 'stopped', reason: 'agent stopping' });
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'could not record the stop');
    }
  }

  /** One pass: wait until eligible and unfenced, campaign, and run the term if won. */
  private async step(): Promise<void> {
    const spec = this.spec;
    // Before anything runs or is read for this spec: would this node run it at all?
    const refused = spec && !this.ineligible() ? await this.gate.refusal(spec) : undefined;
    if (spec !== this.spec) return; // changed while it was looked at: decide on the new one
    // Snapshots are restored only into a state directory this node's allow-list accepts.
    this.stateKeeper?.configure(spec && !refused ? spec.state : undefined);
    if (spec && !refused) {
      await this.refreshVersion(true);
      if (spec !== this.spec) return;
    }
    const { fenceReason } = this.outside();
    const ineligible = this.ineligible();
    const idle = decideIdle({ state: this.state, ineligible, fenceReason, refused });
    this.move(idle);
    if (idle.then !== 'campaign' || !spec) {
      const recheckMs = idle.then === 'recheck' ? REFUSED_RECHECK_MS : undefined;
      await this.changed.wait(recheckMs, this.stopController.signal);
      return;
    }
    await this.service.ensure(spec);
    const session = await this.deps.sessions.current(this.stopController.signal);
    if (this.stopping) return;
    const settings = nodeSettings(spec, this.deps.node, this.deps.settings);
    let reporting = true;
    const campaignOver = () => {
      reporting = false;
      this.retries.report('campaign', undefined);
    };
    const candidate = new Candidate(session, {
      identity: this.identity,
      priority: settings.priority,
      tags: { nofailover: settings.nofailover },
      healthy: () => this.healthy(),
      // The lease reports the campaign's retries and those of the term it wins (its key's
      // watch, the login gate), until that term is over here.
      onRetry: (r) => reporting && this.retries.report('campaign', r),
      onLapse: (r) =>
        r.revoked
          ? this.log.info({ holder: r.node, leaseId: r.leaseId }, `ended ${r.node}'s lapsed lease: ${r.why}`)
          : this.log.warn({ holder: r.node, leaseId: r.leaseId }, r.why),
      onGaveBack: (g) =>
        this.log.info(
          { token: g.token, from: g.from },
          `gave back the term ${g.from} handed over as it left: this node had stopped campaigning for ${this.identity}; the other standbys elect one`,
        ),
    });

    const abort = new AbortController();
    this.campaignAbort = abort;
    // An unhealthy node re-registers when its cooldown ends, so its rank is current.
    const cooldownLeft = this.cooldownUntil - this.clock.monotonicMs();
    const cancelRefresh =
      cooldownLeft > 0
        ? this.clock.after(cooldownLeft + COOLDOWN_REFRESH_SLACK_MS, () => abort.abort())
        : undefined;
    this.inCampaign = true;
    // The loop got this far: whatever it was retrying is past.
    this.retries.report('loop', undefined);
    let outcome: CampaignOutcome;
    let leadership: Leadership | undefined;
    try {
      this.move(decideCampaignStart({ healthy: this.healthy() }));
      this.reflectCampaign();
      leadership = await candidate.campaign(abort.signal);
      const p = leadership.previous;
      outcome = {
        kind: 'won',
        ...(p ? { previous: { node: p.record.node, token: p.token, transferred: p.transferred } } : {}),
      };
    } catch (err) {
      if (err instanceof NotEligibleError) outcome = { kind: 'not-eligible', message: err.message };
      else if (err instanceof CampaignAbandonedError) outcome = { kind: 'abandoned', message: err.message };
      else {
        campaignOver();
        throw err;
      }
    } finally {
      this.inCampaign = false;
      cancelRefresh?.();
      this.campaignAbort = undefined;
    }
    const end = decideCampaignEnd(outcome);
    if (end.then === 'term' && leadership) {
      try {
        return await this.runTerm(leadership, end);
      } finally {
        campaignOver();
      }
    }
    campaignOver();
    this.move(end);
    if (end.then === 'wait') await this.changed.wait(undefined, this.stopController.signal);
  }

  private async runTerm(leadership: Leadership, won: Decision): Promise<void> {
    const term = new Term(leadership, this.host);
    this.term = term;
    try {
      try {
        this.move(won, leadership.token);
      } catch (err) {
        // Not logged in: give the key back before the loop hears of the bug.
        await leadership.resign({ loggedOut: true });
        throw err;
      }
      await term.run();
    } finally {
      this.term = undefined;
      this.stateKeeper?.endTerm();
    }
  }

  // --- what a term uses ---------------------------------------------------------------------

  private termHost(): TermHost {
    return {
      identity: this.identity,
      node: this.deps.node,
      log: this.log,
      clock: this.clock,
      port: this.port,
      changed: this.changed,
      stopSignal: this.stopController.signal,
      state: () => this.state,
      outside: () => this.outside(),
      ineligible: () => this.ineligible(),
      spec: () => this.spec,
      ensureDriver: (spec) => this.service.ensure(spec),
      driver: () => this.service.driver,
      move: (d, token) => this.move(d, token),
      failed: () => (this.cooldownUntil = this.clock.monotonicMs() + FAILED_COOLDOWN_MS),
      responderContext: (leadership, driver, upSince) =>
        this.serving.context(leadership, driver, () => this.spec!, upSince),
      requestsServed: () => this.serving.requestsServed,
      setRequestsServed: (n) => (this.serving.requestsServed = n),
      tookOver: (p) => this.serving.tookOver(p),
      inboxRefused: (refused) => this.deps.onRefused?.({ identity: this.identity, what: 'inbox', refused }),
      ...(this.stateKeeper ? { stateKeeper: this.stateKeeper } : {}),
      warmLogin: (until) => void this.deps.spawnTurns?.warmLogin(until),
      admit: (signal) => {
        const admission = this.deps.admission;
        if (!admission) return Promise.resolve(() => undefined);
        const spec = this.spec;
        const priority = spec ? nodeSettings(spec, this.deps.node, this.deps.settings).priority : 0;
        return admission.acquire(priority, signal);
      },
    };
  }
}

// One identity on one node: campaigns for it, logs the service in when this node wins, and
// logs it out before the lease could let anyone else in. The states and the moves between
// them are in states.ts; this file is the loop that drives them.
//
// The order of a term, and why:
//   1. win the key (Candidate.campaign)                  — at most one holder at a time
//   2. wait out the previous term (Leadership.clearance) — S3: it is provably out
//   3. write login=true, then start the service          — the record covers logging in
//   4. start answering on NATS (subscription confirmed)  — responders ⊆ logged-in nodes
//   ... leader ...
//   5. stop answering (unsubscribe confirmed) → stop the service within the budget
//   6. login=false (drain) or resign: only now may a successor log in without waiting
import { EventEmitter } from 'node:events';
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { HistoryWriter } from '../history/index.js';
import { removeCredentialFile, writeCredentialFile } from '../identity/credential.js';
import type { IdentityDriver } from '../identity/driver.js';
import { ensureInbox, Responder } from '../identity/responder.js';
import {
  CampaignAbandonedError,
  Candidate,
  FencedNodeError,
  LeaderObserver,
  NotEligibleError,
  type Leadership,
} from '../lease/index.js';
import { readCredential, recordPending } from '../spec/store.js';
import type { IdentitySpec } from '../spec/schema.js';
import type { IdentityStatus } from '../control/protocol.js';
import type { FenceWatch } from './fence-watch.js';
import type { SessionKeeper } from './sessions.js';
import { canMove, LOGGED_IN_STATES, type IdentityState } from './states.js';
import { Wakeup } from './wakeup.js';

/** A node whose service kept crashing ranks last for this long, so a standby takes over. */
const FAILED_COOLDOWN_MS = 10_000;
/** Pause before campaigning again after a failed term, so a lone node does not spin on a broken service. */
const FAILED_RETRY_PAUSE_MS = 2_000;
/** Pause after an unexpected error in the loop, doubling while it persists, so a fault does not spin. */
const LOOP_ERROR_PAUSE_MS = 1_000;
const LOOP_ERROR_MAX_PAUSE_MS = 30_000;
/** Share of the logout budget given to in-flight requests before the service is stopped. */
const RESPONDER_GRACE_SHARE = 0.25;
/** Pending-authorization records written per caller at most this often (a flood writes once). */
const PENDING_RECORD_INTERVAL_MS = 60_000;

/** Why a term's leadership phase ended. */
type EndOfLead =
  | { kind: 'lost'; reason: string }
  | { kind: 'failed'; reason: string }
  | { kind: 'drain'; holdMs: number; actor: string }
  | { kind: 'fenced' }
  | { kind: 'ineligible'; reason: string }
  | { kind: 'respec'; reason: string }
  | { kind: 'stop' };

/** Settings of this node for the identity, from the agent's config and the spec. */
export interface NodeSettings {
  priority: number;
  nofailover: boolean;
}

export interface RunnerDeps {
  node: string;
  etcd: Etcd3;
  nc: NatsConnection;
  sessions: SessionKeeper;
  fence: FenceWatch;
  history: HistoryWriter;
  logger: Logger;
  runDir: string;
  /** This node's settings from the agent config (the spec's candidates may override them). */
  settings: NodeSettings;
  makeDriver(spec: IdentitySpec): IdentityDriver;
  onTransition?(t: { identity: string; from: IdentityState; to: IdentityState; token?: bigint }): void;
  onRequest?(identity: string, outcome: string): void;
}

export class RunnerError extends Error {
  constructor(
    message: string,
    readonly code: 'not-leader' | 'stopped',
  ) {
    super(message);
    this.name = 'RunnerError';
  }
}

export class IdentityRunner extends EventEmitter {
  private stateValue: IdentityState = 'standby';
  private stateSince = Date.now();
  private detail: string | undefined = 'waiting for the identity spec in etcd';
  private spec: IdentitySpec | undefined;
  /** etcd revision of the spec this node runs: the controller compares it to report clone lag. */
  specRevision: bigint | undefined;
  private driver: IdentityDriver | undefined;
  private driverKey: string | undefined;
  private readonly changed = new Wakeup();
  private readonly stopController = new AbortController();
  private campaignAbort: AbortController | undefined;
  private term: Leadership | undefined;
  private endLead: ((why: EndOfLead) => void) | undefined;
  private drainRequest:
    { holdMs: number; actor: string; done: (token: bigint) => void; fail: (e: Error) => void } | undefined;
  private undrainRequested = false;
  private cooldownUntil = 0;
  private driverHealthy = true;
  private observer: LeaderObserver | undefined;
  private leaderNode: string | undefined;
  private inCampaign = false;
  private requestsServed = 0;
  private upSince: number | undefined;
  private lastFailover: { at: string; fromNode?: string; fromToken?: string } | null = null;
  private readonly pendingRecorded = new Map<string, number>();
  private loopDone: Promise<void> | undefined;
  /** The current term's service-side state, kept for logout. */
  private credentialFile: string | undefined;
  private responder: Responder | undefined;
  private stopArming: (() => void) | undefined;
  /** Aborted when the current login's logout begins: the driver cancels pending restarts. */
  private loginAbort: AbortController | undefined;
  private readonly log: Logger;

  constructor(
    readonly identity: string,
    private readonly deps: RunnerDeps,
  ) {
    super();
    this.log = deps.logger.child({ identity });
  }

  get state(): IdentityState {
    return this.stateValue;
  }

  get token(): bigint | undefined {
    return this.term && !this.term.isEnded ? this.term.token : undefined;
  }

  get pid(): number | undefined {
    return this.driver?.pid;
  }

  private get stopping(): boolean {
    return this.stopController.signal.aborted;
  }

  start(): void {
    this.loopDone ??= this.loop();
    void LeaderObserver.start(this.deps.etcd, this.identity, (s) => {
      this.leaderNode = s.leader?.record.node;
      this.reflectCampaign();
    }).then(
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
    if (spec.inbox.durable) {
      // Every host makes sure the inbox exists, so requests are stored even while no one leads.
      ensureInbox(this.deps.nc, this.identity, spec.inbox).catch((err: Error) =>
        this.log.warn({ err: err.message }, 'cannot create the durable inbox stream; retried at login'),
      );
    }
    const why = this.ineligibility(spec);
    if (why) this.endLead?.({ kind: 'ineligible', reason: why });
    else if (previous && serviceKey(previous) !== serviceKey(spec)) {
      this.endLead?.({ kind: 'respec', reason: 'the service definition changed' });
    }
    this.campaignAbort?.abort();
    this.changed.notify();
  }

  removeSpec(): void {
    this.spec = undefined;
    this.endLead?.({ kind: 'ineligible', reason: 'the identity spec was deleted' });
    this.campaignAbort?.abort();
    this.changed.notify();
  }

  /** The node was fenced or unfenced (FenceWatch). */
  fenceChanged(): void {
    if (this.deps.fence.fenced) this.endLead?.({ kind: 'fenced' });
    this.campaignAbort?.abort();
    this.changed.notify();
  }

  /**
   * Log out but keep the key for a transfer (controller switchover). Resolves with the token
   * once the service is confirmed out and login=false is recorded; rejects when not leader.
   */
  drain(holdMs: number, actor: string): Promise<bigint> {
    if (this.stateValue === 'drained' && this.term) return Promise.resolve(this.term.token);
    if (this.stateValue !== 'leader' || !this.endLead) {
      return Promise.reject(
        new RunnerError(
          `${this.deps.node} is not the logged-in leader of ${this.identity} (state ${this.stateValue})`,
          'not-leader',
        ),
      );
    }
    return new Promise((done, fail) => {
      this.drainRequest = { holdMs, actor, done, fail };
      this.endLead!({ kind: 'drain', holdMs, actor });
    });
  }

  /** Abort a drain: log back in if this node still holds the key. */
  undrain(): void {
    if (this.stateValue !== 'drained') {
      throw new RunnerError(
        `${this.identity} is not drained on ${this.deps.node} (state ${this.stateValue})`,
        'not-leader',
      );
    }
    this.undrainRequested = true;
    this.changed.notify();
  }

  /** Graceful stop: log out, resign so a standby takes over at once, stop the driver. */
  async stop(budgetMs: number): Promise<void> {
    this.stopController.abort();
    this.endLead?.({ kind: 'stop' });
    this.campaignAbort?.abort();
    this.changed.notify();
    await this.loopDone;
    await this.observer?.close();
    await this.driver?.close(budgetMs).catch(() => undefined);
  }

  status(): IdentityStatus {
    return {
      identity: this.identity,
      state: this.stateValue,
      ...(this.token !== undefined ? { token: String(this.token) } : {}),
      loggedIn: LOGGED_IN_STATES.has(this.stateValue),
      since: new Date(this.stateSince).toISOString(),
      ...(this.leaderNode ? { leader: this.leaderNode } : {}),
      ...(this.driver?.pid !== undefined ? { pid: this.driver.pid } : {}),
      healthy: this.healthy(),
      ...(this.detail ? { detail: this.detail } : {}),
    };
  }

  // --- the loop -----------------------------------------------------------------------------

  private healthy(): boolean {
    return this.driverHealthy && Date.now() >= this.cooldownUntil;
  }

  /** Why this node may not lead the identity under `spec` (undefined: it may). */
  private ineligibility(spec: IdentitySpec | undefined): string | undefined {
    if (!spec) return 'no spec for the identity in etcd';
    if (spec.candidates && !spec.candidates[this.deps.node])
      return `the spec's candidates do not include ${this.deps.node}`;
    if (this.settings(spec).nofailover) return 'tagged nofailover: this node never leads the identity';
    return undefined;
  }

  private settings(spec: IdentitySpec): NodeSettings {
    const fromSpec = spec.candidates?.[this.deps.node];
    return {
      priority: fromSpec?.priority ?? this.deps.settings.priority,
      nofailover: (fromSpec?.nofailover ?? false) || this.deps.settings.nofailover,
    };
  }

  private to(next: IdentityState, info: { reason?: string; token?: bigint } = {}): void {
    const from = this.stateValue;
    if (from === next) return;
    if (!canMove(from, next)) {
      // A bug, not an operational condition: say so loudly, but keep the safer new state.
      this.log.error({ from, to: next }, 'state machine: transition not in the table');
    }
    const now = Date.now();
    const token = info.token ?? this.term?.token;
    const durationMs = now - this.stateSince;
    this.stateValue = next;
    this.stateSince = now;
    this.detail = info.reason;
    this.log.info(
      {
        node: this.deps.node,
        token: token !== undefined ? String(token) : undefined,
        from,
        to: next,
        reason: info.reason,
        durationMs,
      },
      `${this.identity}: ${from} → ${next}`,
    );
    this.deps.history.record({
      identity: this.identity,
      node: this.deps.node,
      at: now,
      kind: 'transition',
      from,
      to: next,
      ...(token !== undefined ? { token: String(token) } : {}),
      ...(info.reason ? { reason: info.reason } : {}),
      durationMs,
    });
    this.deps.onTransition?.({
      identity: this.identity,
      from,
      to: next,
      ...(token !== undefined ? { token } : {}),
    });
    this.emit('state', next);
  }

  /** While campaigning, show whether another node leads (standby) or the key is free. */
  private reflectCampaign(): void {
    if (!this.inCampaign) return;
    const other = this.leaderNode !== undefined && this.leaderNode !== this.deps.node;
    if (other && this.stateValue === 'campaigning')
      this.to('standby', { reason: `${this.leaderNode} leads` });
    else if (!other && this.stateValue === 'standby') this.to('campaigning', { reason: 'no leader' });
  }

  private async loop(): Promise<void> {
    let failures = 0;
    while (!this.stopping) {
      try {
        await this.step();
        failures = 0;
      } catch (err) {
        // A persistent fault (a handler that is not registered) must not flood the log.
        const pauseMs = Math.min(LOOP_ERROR_PAUSE_MS * 2 ** failures++, LOOP_ERROR_MAX_PAUSE_MS);
        this.detail = `error: ${(err as Error).message}`;
        this.log.error({ err: (err as Error).message, retryInMs: pauseMs }, 'identity loop error; retrying');
        await this.changed.wait(pauseMs, this.stopController.signal);
      }
    }
    this.to('stopped', { reason: 'agent stopping' });
  }

  /** One pass: wait until eligible and unfenced, campaign, and run the term if won. */
  private async step(): Promise<void> {
    const spec = this.spec;
    const why = this.ineligibility(spec);
    if (why || !spec) {
      if (this.stateValue !== 'standby') this.to('standby', { reason: why });
      this.detail = why;
      await this.changed.wait(undefined, this.stopController.signal);
      return;
    }
    if (this.deps.fence.fenced) {
      this.to('fenced', { reason: this.deps.fence.fenced.reason });
      await this.changed.wait(undefined, this.stopController.signal);
      return;
    }
    if (this.stateValue === 'fenced') this.to('standby', { reason: 'unfenced' });

    await this.ensureDriver(spec);
    const session = await this.deps.sessions.current(this.stopController.signal);
    if (this.stopping) return;
    const settings = this.settings(spec);
    const candidate = new Candidate(session, {
      identity: this.identity,
      priority: settings.priority,
      tags: { nofailover: settings.nofailover },
      healthy: () => this.healthy(),
    });
    const abort = new AbortController();
    this.campaignAbort = abort;
    // An unhealthy node re-registers when its cooldown ends, so its rank is current.
    const cooldownLeft = this.cooldownUntil - Date.now();
    const refresh = cooldownLeft > 0 ? setTimeout(() => abort.abort(), cooldownLeft + 10) : undefined;
    this.inCampaign = true;
    this.to('campaigning', { reason: this.healthy() ? undefined : 'ranked last: recently failed' });
    this.reflectCampaign();
    let leadership: Leadership;
    try {
      leadership = await candidate.campaign(abort.signal);
    } catch (err) {
      if (err instanceof NotEligibleError) {
        this.to('standby', { reason: err.message });
        await this.changed.wait(undefined, this.stopController.signal);
      } else if (!(err instanceof CampaignAbandonedError)) {
        throw err;
      }
      return;
    } finally {
      this.inCampaign = false;
      clearTimeout(refresh);
      this.campaignAbort = undefined;
    }
    await this.runTerm(leadership);
  }

  private async ensureDriver(spec: IdentitySpec): Promise<IdentityDriver> {
    const key = serviceKey(spec);
    if (this.driver && this.driverKey === key) {
      // A warm service that failed to start is tried again before each campaign.
      if (!this.driverHealthy) {
        this.driverHealthy = await this.driver.prepare().then(
          () => true,
          () => false,
        );
      }
      return this.driver;
    }
    if (this.driver) {
      await this.driver
        .close(this.deps.sessions.alive?.timing.logoutBudgetMs ?? 1_000)
        .catch(() => undefined);
    }
    const driver = this.deps.makeDriver(spec);
    this.driver = driver;
    this.driverKey = key;
    // Crashes and restarts are logged by the driver; only giving up concerns the term.
    driver.on('failed', (e: { reason: string }) => this.endLead?.({ kind: 'failed', reason: e.reason }));
    try {
      await driver.prepare();
      this.driverHealthy = true;
    } catch (err) {
      // A warm service that cannot start ranks last; it is tried again at login.
      this.driverHealthy = false;
      this.log.error(
        { err: (err as Error).message },
        'warm service did not start; this node ranks last until it does',
      );
    }
    return driver;
  }

  /** Wait out, log in, lead, log out; ends with the key given back or moved away. */
  private async runTerm(leadership: Leadership): Promise<void> {
    this.term = leadership;
    const token = leadership.token;
    const prev = leadership.previous;
    this.to('waiting-out', {
      token,
      reason: prev
        ? `previous term ${prev.token} on ${prev.record.node}${prev.transferred ? ' (transferred)' : ''}`
        : 'no previous term seen',
    });
    // The login gate says why it holds this node back, and why it let it in (S3).
    const onWaiting = (e: { reason: string }) =>
      this.log.info(
        { token: String(token), reason: e.reason },
        'not logging in yet: an earlier term is not proven over',
      );
    leadership.on('waiting', onWaiting);
    try {
      const cleared = await leadership.clearance();
      this.log.info({ token: String(token), reason: cleared }, 'login gate open');
    } catch {
      // Not logged in: give back whatever is left of the term (a no-op if the key is gone).
      await leadership.resign({ loggedOut: true });
      this.term = undefined;
      this.to('standby', { reason: 'term ended while waiting out the previous one' });
      return;
    } finally {
      leadership.off('waiting', onWaiting);
    }
    const ineligible = this.ineligibility(this.spec);
    if (this.stopping || this.deps.fence.fenced || ineligible) {
      await leadership.resign({ loggedOut: true });
      this.term = undefined;
      this.to(this.stopping ? 'stopped' : this.deps.fence.fenced ? 'fenced' : 'standby', {
        reason: `not logged in: giving the term back (${ineligible ?? (this.stopping ? 'stopping' : 'fenced')})`,
      });
      return;
    }
    try {
      for (;;) {
        const why = await this.lead(leadership);
        const outcome = await this.logout(leadership, why);
        if (outcome === 'relogin') continue;
        if (why.kind === 'failed') await this.changed.wait(FAILED_RETRY_PAUSE_MS, this.stopController.signal);
        return;
      }
    } catch (err) {
      // A bug or an unexpected failure with the service possibly running: stop it within the
      // budget; if that is not confirmed, give up the whole session, so the lease (and the
      // lifeline deadline, still armed) bounds the service and every successor waits it out.
      this.log.error(
        { err: (err as Error).stack ?? String(err), token: String(leadership.token) },
        'unexpected error during the term: stopping the service and giving the term up',
      );
      this.endLead = undefined;
      this.loginAbort?.abort();
      this.loginAbort = undefined;
      this.stopArming?.();
      this.stopArming = undefined;
      if (this.stateValue === 'logging-in' || this.stateValue === 'leader') {
        this.to('logging-out', { reason: `unexpected error: ${(err as Error).message}` });
      }
      await this.responder?.stop(0).catch(() => undefined);
      this.responder = undefined;
      const confirmed = await (
        this.driver?.logout(leadership.session.timing.logoutBudgetMs) ?? Promise.resolve(true)
      ).catch(() => false);
      if (confirmed) this.driver?.armDeadline?.(undefined);
      if (this.credentialFile) await removeCredentialFile(this.credentialFile).catch(() => undefined);
      this.credentialFile = undefined;
      await leadership.resign({ loggedOut: confirmed });
      this.term = undefined;
      this.to('standby', { reason: 'term abandoned after an unexpected error (see the error above)' });
      throw err;
    }
  }

  /** logging-in → leader → (returns why leading ended; the service may still be running). */
  private async lead(leadership: Leadership): Promise<EndOfLead> {
    const token = leadership.token;
    const spec = this.spec;
    // Removed while waiting out or drained: never log in without a spec.
    if (!spec) return { kind: 'ineligible', reason: 'the identity spec was deleted' };
    const driver = await this.ensureDriver(spec);
    const ended = new Promise<EndOfLead>((resolve) => (this.endLead = resolve));
    void leadership.whenLost().then((e) => this.endLead?.({ kind: 'lost', reason: e.reason }));
    this.to('logging-in', { token });
    let credentialFile: string | undefined;
    let responder: Responder | undefined;
    try {
      credentialFile = await this.fetchCredential(spec);
      await leadership.setLoggedIn(true);
      if (!leadership.mayAct()) throw new Error('the term ended while logging in');
      // Armed before the service starts: from its first instant it dies with the lease.
      this.armDeadline(leadership, driver);
      // The driver asks this right before any (re)start under the term: a crash restart whose
      // timer fires after the term ended (a freeze, a lost key) must start nothing.
      const loginAbort = new AbortController();
      this.loginAbort = loginAbort;
      const login = driver.login({
        identity: this.identity,
        node: this.deps.node,
        token,
        ...(credentialFile ? { credentialFile } : {}),
        mayAct: () => !loginAbort.signal.aborted && leadership.mayAct(),
        signal: loginAbort.signal,
      });
      const first = await Promise.race([login.then(() => 'in' as const), ended]);
      if (first !== 'in') {
        void login.catch(() => undefined);
        this.credentialFile = credentialFile;
        return first;
      }
      // Starting the responder waits on NATS, which may be slow or away: the term's end must
      // still reach the logout at once, not after NATS answers.
      const starting = Responder.start(
        this.deps.nc,
        this.responderContext(leadership, driver),
        this.requestsServed,
      );
      const started = await Promise.race([starting.then((r) => ({ r })), ended]);
      if (!('r' in started)) {
        void starting.then((r) => r.stop(0)).catch(() => undefined);
        this.credentialFile = credentialFile;
        return started;
      }
      responder = started.r;
      if (!leadership.mayAct()) throw new Error('the term ended while logging in');
    } catch (err) {
      this.credentialFile = credentialFile;
      this.responder = responder;
      if (err instanceof FencedNodeError) return { kind: 'fenced' };
      this.cooldownUntil = Date.now() + FAILED_COOLDOWN_MS;
      return { kind: 'failed', reason: `login failed: ${(err as Error).message}` };
    }
    this.credentialFile = credentialFile;
    this.responder = responder;
    this.upSince = Date.now();
    if (leadership.previous && leadership.previous.record.node !== this.deps.node) {
      this.lastFailover = {
        at: new Date().toISOString(),
        fromNode: leadership.previous.record.node,
        fromToken: String(leadership.previous.token),
      };
    }
    this.to('leader', {
      token,
      reason: leadership.previous
        ? `took over from ${leadership.previous.record.node} (term ${leadership.previous.token})`
        : 'elected',
    });
    // Conditions that arrived while logging in.
    if (this.deps.fence.fenced) this.endLead?.({ kind: 'fenced' });
    if (this.stopping) this.endLead?.({ kind: 'stop' });
    return ended;
  }

  /**
   * While logged in, every lease renewal re-arms the lifeline's dead-man's switch at the
   * session's must-be-out instant: if this agent freezes, the service is killed from outside
   * before etcd can let a standby in. Stopped at logout.
   */
  private armDeadline(leadership: Leadership, driver: IdentityDriver): void {
    const { session } = leadership;
    const slack = session.timing.mustBeOutByMs - session.timing.selfFenceMs;
    const arm = () => {
      const left = session.msUntilSelfFence();
      if (left > 0) driver.armDeadline?.(left + slack);
    };
    session.on('renewed', arm);
    this.stopArming = () => session.off('renewed', arm);
    arm();
  }

  /**
   * logging-out → standby | drained | fenced | stopped. Returns 'relogin' when a drain was
   * aborted and this node still holds the key, 'done' otherwise.
   */
  private async logout(leadership: Leadership, why: EndOfLead): Promise<'relogin' | 'done'> {
    this.endLead = undefined;
    // First, before any await: no restart of the service may start from here on.
    this.loginAbort?.abort();
    this.loginAbort = undefined;
    this.stopArming?.();
    this.stopArming = undefined;
    const reason = describe(why);
    this.to('logging-out', { reason });
    const timing = leadership.session.timing;
    // Out by the session's must-be-out deadline when it is stopping; the budget otherwise.
    const mustStop = leadership.session.state !== 'alive' ? await leadership.session.stopped() : undefined;
    const deadline = mustStop ? mustStop.mustBeOutBy : performance.now() + timing.logoutBudgetMs;
    const left = () => Math.max(0, deadline - performance.now());
    if (this.responder) {
      this.requestsServed = this.responder.requestsServed;
      await this.responder.stop(left() * RESPONDER_GRACE_SHARE);
      this.responder = undefined;
    }
    const confirmed = (await this.driver?.logout(left())) ?? true;
    // Out for sure: a warm process stays up as a standby and must not be killed. Unconfirmed,
    // the armed deadline stays as the last line of defence.
    if (confirmed) this.driver?.armDeadline?.(undefined);
    if (this.credentialFile) {
      await removeCredentialFile(this.credentialFile).catch((err: Error) =>
        this.log.error({ err: err.message }, 'could not remove the credential file; remove it by hand'),
      );
      this.credentialFile = undefined;
    }
    this.upSince = undefined;
    if (!confirmed) {
      this.log.error(
        { token: String(leadership.token) },
        'service not confirmed logged out within the budget: giving up the session so the lease bounds it',
      );
    }
    if (why.kind === 'failed') this.cooldownUntil = Date.now() + FAILED_COOLDOWN_MS;

    if (why.kind === 'drain' && confirmed && leadership.mayAct()) {
      const request = this.drainRequest;
      this.drainRequest = undefined;
      try {
        await leadership.setLoggedIn(false);
      } catch (err) {
        request?.fail(err as Error);
        await leadership.resign({ loggedOut: true });
        this.to('standby', { reason: `drain could not be recorded: ${(err as Error).message}` });
        return 'done';
      }
      this.to('drained', {
        reason: `for ${why.actor}; logging back in after ${why.holdMs} ms unless transferred`,
      });
      request?.done(leadership.token);
      return this.holdDrained(leadership, why.holdMs);
    }
    this.drainRequest?.fail(
      new RunnerError(`drain of ${this.identity} interrupted: ${reason}`, 'not-leader'),
    );
    this.drainRequest = undefined;
    // Guarded by the token: a no-op when the key is already gone or moved. Unconfirmed, it
    // also closes the session, so the lease's end bounds the service.
    await leadership.resign({ loggedOut: confirmed });
    this.term = undefined;
    if (this.stopping) this.to('stopped', { reason });
    else if (this.deps.fence.fenced) this.to('fenced', { reason: this.deps.fence.fenced.reason });
    else this.to('standby', { reason });
    return 'done';
  }

  /** Drained: wait for the transfer, an abort, the hold to expire, a fence or a stop. */
  private async holdDrained(leadership: Leadership, holdMs: number): Promise<'relogin' | 'done'> {
    const until = Date.now() + holdMs;
    this.undrainRequested = false;
    for (;;) {
      if (leadership.isEnded) {
        this.term = undefined;
        this.to('standby', { reason: 'leadership transferred' });
        return 'done';
      }
      if (this.stopping || this.deps.fence.fenced || !this.spec || this.ineligibility(this.spec)) {
        const fenced = this.deps.fence.fenced;
        await leadership.resign({ loggedOut: true });
        this.term = undefined;
        this.to(this.stopping ? 'stopped' : fenced ? 'fenced' : 'standby', {
          reason: 'drained term given back',
        });
        return 'done';
      }
      if (this.undrainRequested || Date.now() >= until) {
        this.log.info(
          { token: String(leadership.token) },
          this.undrainRequested
            ? 'drain aborted: logging back in'
            : 'drain hold expired without a transfer: logging back in',
        );
        return 'relogin';
      }
      await Promise.race([
        this.changed.wait(until - Date.now(), this.stopController.signal),
        leadership.whenLost(),
      ]);
    }
  }

  private async fetchCredential(spec: IdentitySpec): Promise<string | undefined> {
    const source = spec.credential;
    if (source.source === 'none') return undefined;
    let secret: Buffer | undefined;
    if (source.source === 'file') {
      secret = await readFile(source.path).catch((err: NodeJS.ErrnoException) => {
        throw new Error(
          `credential file ${source.path} (spec credential.path) cannot be read on ${this.deps.node} (${err.code}); provision it on every node that may host ${this.identity}`,
        );
      });
    } else {
      secret = await readCredential(this.deps.etcd, this.identity);
      if (!secret) {
        throw new Error(
          `no credential stored in etcd for ${this.identity} (key understudy/secrets/${this.identity}/credential); store one with putCredential from pkg/spec`,
        );
      }
    }
    const dir = join(this.deps.runDir, this.identity);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    return writeCredentialFile(dir, this.identity, secret);
  }

  private responderContext(leadership: Leadership, driver: IdentityDriver) {
    return {
      identity: this.identity,
      node: this.deps.node,
      token: leadership.token,
      mayAct: () => leadership.mayAct(),
      spec: () => this.spec!,
      driver,
      status: () => ({
        identity: this.identity,
        node: this.deps.node,
        token: String(leadership.token),
        upSince: new Date(this.upSince ?? Date.now()).toISOString(),
        lastFailover: this.lastFailover,
      }),
      onPending: (p: { name: string; nkey: string; request: string }) => this.recordPending(p),
      onRequest: (outcome: string) => this.deps.onRequest?.(this.identity, outcome),
      logger: this.log,
    };
  }

  private recordPending(p: { name: string; nkey: string; request: string }): void {
    const last = this.pendingRecorded.get(p.name) ?? 0;
    if (Date.now() - last < PENDING_RECORD_INTERVAL_MS) return;
    this.pendingRecorded.set(p.name, Date.now());
    recordPending(this.deps.etcd, this.identity, { ...p, node: this.deps.node, at: Date.now() })
      .then(
        (created) =>
          created && this.log.info({ caller: p.name }, 'authorization request recorded as pending'),
      )
      .catch((err: Error) =>
        this.log.warn(
          { err: err.message, caller: p.name },
          'could not record a pending authorization request',
        ),
      );
  }
}

/** What, in a spec, needs a new driver when it changes. */
function serviceKey(spec: IdentitySpec): string {
  return JSON.stringify({ service: spec.service, credential: spec.credential, inbox: spec.inbox });
}

function describe(why: EndOfLead): string {
  switch (why.kind) {
    case 'lost':
      return `leadership lost (${why.reason})`;
    case 'failed':
      return `service failed: ${why.reason}`;
    case 'drain':
      return `drain requested by ${why.actor}`;
    case 'fenced':
      return 'node fenced';
    case 'ineligible':
      return why.reason;
    case 'respec':
      return `${why.reason}: handing over so it takes effect`;
    case 'stop':
      return 'agent stopping';
  }
}

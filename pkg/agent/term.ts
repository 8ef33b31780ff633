// One won term of one identity: wait out the previous term, log in, lead, log out, and hold
// the key while drained. Which state comes next is decided in decide.ts; this file does the
// I/O around those decisions in the order safety needs:
//   1. wait out the previous term (Leadership.clearance)   — S3: it is provably out
//   2. write login=true, then start the service            — the record covers logging in
//   3. start answering on NATS (subscribed while logging in,
//      opened once the service is in)                       — responders ⊆ logged-in nodes
//   ... leader ...
//   4. stop answering (unsubscribe confirmed) → stop the service within the budget
//   5. login=false (drain) or resign: only now may a successor log in without waiting
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { IdentityDriver } from '../identity/driver.js';
import type { ResponderContext } from '../identity/responder.js';
import { controllerElectionKey } from '../control/term.js';
import { FencedNodeError, type HandOverPlan, type Leadership, type Session } from '../lease/index.js';
import type { IdentitySpec } from '../spec/schema.js';
import {
  decideAbandonTerm,
  decideAfterLogout,
  decideDrained,
  decideEndOfLead,
  decideGiveBack,
  decideLogin,
  type Decision,
  type EndOfLead,
  type OutsideFacts,
} from './decide.js';
import { RunnerError } from './errors.js';
import type { LoginPort, ResponderHandle } from './port.js';
import type { IdentityState } from './states.js';
import type { StateKeeper } from './state-keeper.js';
import type { Wakeup } from './wakeup.js';

/** Pause before campaigning again after a failed term, so a lone node does not spin on a broken service. */
const FAILED_RETRY_PAUSE_MS = 2_000;
/** Share of the logout budget given to in-flight requests before the service is stopped. */
const RESPONDER_GRACE_SHARE = 0.25;
/**
 * Ends of a term after which the stopped service's state is the newest there is, and worth a
 * snapshot before the key goes: a switchover, an agent stop, a spec change. Not after a crash
 * (the state may be what crashed it), a lost key or a fence (no longer ours to publish).
 */
const CLEAN_LOGOUTS: ReadonlySet<EndOfLead['kind']> = new Set(['drain', 'stop', 'respec', 'ineligible']);

/** What a term uses of its identity's runner. */
export interface TermHost {
  readonly identity: string;
  readonly node: string;
  readonly log: Logger;
  readonly clock: Clock;
  readonly port: LoginPort;
  /** Notified on any input that may change a decision (spec, fence, operator request). */
  readonly changed: Wakeup;
  readonly stopSignal: AbortSignal;
  state(): IdentityState;
  outside(): OutsideFacts;
  /** Why this node may not lead under the current spec (undefined: it may). */
  ineligible(): string | undefined;
  spec(): IdentitySpec | undefined;
  ensureDriver(spec: IdentitySpec): Promise<IdentityDriver>;
  driver(): IdentityDriver | undefined;
  /** Apply a decision (logs its reason, records the move); throws if the table refuses it. */
  move(d: Decision, token?: bigint): void;
  /** The service failed under this node: rank last for a while. */
  failed(): void;
  /** The durable inbox was refused at login (true) or accepted (false): an alarm while true. */
  inboxRefused?(refused: boolean): void;
  /** The responder's context for this term (status, pending records, request metrics). */
  responderContext(leadership: Leadership, driver: IdentityDriver, upSince: () => number): ResponderContext;
  /** Requests served by earlier terms, carried into the next responder's count. */
  requestsServed(): number;
  setRequestsServed(n: number): void;
  /** A login that took over from another node (for STATUS replies). */
  tookOver(previous: { node: string; token: bigint }): void;
  /**
   * Wait for this login's turn (admission.ts: a few at a time, by priority, while the event
   * loop keeps up); rejects if `signal` aborts first. Call the returned function once logged in.
   */
  admit(signal: AbortSignal): Promise<() => void>;
  /**
   * A login that starts no process of its own (a warm service, a handler in the agent) is
   * under way until `until` settles: the agent's spawns wait for it (spawn-turns.ts).
   */
  warmLogin?(until: Promise<void>): void;
  /** The identity's state directory on this node, when its spec has one (state-keeper.ts). */
  readonly stateKeeper?: StateKeeper;
}

/** Where a drain asks the key to go once the service is out, under whose controller term. */
export interface Handover {
  to: string;
  /** The controller's election term the drain was sent under (the move compares it). */
  term: string;
  /** The workflow that sent it: this node's hold-off must be that workflow's. */
  workflow: string;
}

interface PendingHandover extends Handover {
  /** The target's registration and this node's hold-off, read when the drain came in. */
  plan: Promise<HandOverPlan>;
}

export class Term {
  private endLead: ((why: EndOfLead) => void) | undefined;
  private drainRequest:
    | {
        holdMs: number;
        actor: string;
        handover?: PendingHandover;
        done: (token: bigint) => void;
        fail: (e: Error) => void;
      }
    | undefined;
  private undrainRequested = false;
  /** The login's service-side state, kept for logout. */
  private credentialFile: string | undefined;
  private responder: ResponderHandle | undefined;
  /** Aborted when the login's logout begins: the driver cancels pending restarts. */
  private loginAbort: AbortController | undefined;
  private upSince: number | undefined;
  /** The key is still ours to give back (moves until then carry the token). */
  private held = true;

  constructor(
    readonly leadership: Leadership,
    private readonly host: TermHost,
  ) {}

  /** The token while this node holds the term. */
  get token(): bigint | undefined {
    return this.held && !this.leadership.isEnded ? this.leadership.token : undefined;
  }

  /** Logged in and leading: an end (drain, fence, failure) goes straight to logout. */
  get leading(): boolean {
    return this.endLead !== undefined;
  }

  /** Ask the leading phase to end; ignored outside it (the decisions see the cause anyway). */
  end(why: EndOfLead): void {
    this.endLead?.(why);
  }

  /**
   * Log out, keep the key; resolves with the token once drained (see IdentityRunner.drain).
   * With `handover`, the key goes to its target in the transaction that confirms the logout
   * (Leadership.handOver); the target's registration is read now, while the service stops.
   */
  drain(holdMs: number, actor: string, handover?: Handover): Promise<bigint> {
    const pending = handover && {
      ...handover,
      plan: this.leadership.readHandOver(handover.to, handover.workflow, {
        key: controllerElectionKey(),
        revision: handover.term,
      }),
    };
    pending?.plan.catch(() => undefined); // awaited, or dropped, at the logout
    return new Promise((done, fail) => {
      this.drainRequest = { holdMs, actor, ...(pending ? { handover: pending } : {}), done, fail };
      this.endLead!({ kind: 'drain', holdMs, actor });
    });
  }

  undrain(): void {
    this.undrainRequested = true;
    this.host.changed.notify();
  }

  private move(d: Decision): void {
    this.host.move(d, this.token);
  }

  /** Resign (a no-op if the key is gone) and move where a given-back term goes. */
  private async giveBack(d: Decision, loggedOut: boolean): Promise<void> {
    await this.leadership.resign({ loggedOut });
    this.held = false;
    this.move(d);
  }

  /** Wait out, log in, lead, log out; ends with the key given back or moved away. */
  async run(): Promise<void> {
    const { host, leadership } = this;
    const token = leadership.token;
    // The login gate says why it holds this node back, and why it let it in (S3).
    const onWaiting = (e: { reason: string }) =>
      host.log.info(
        { token: String(token), reason: e.reason },
        'not logging in yet: an earlier term is not proven over',
      );
    leadership.on('waiting', onWaiting);
    let cleared: string | undefined;
    try {
      cleared = await leadership.clearance();
      host.log.info({ token: String(token), reason: cleared }, 'login gate open');
    } catch {
      cleared = undefined; // the term ended first
    } finally {
      leadership.off('waiting', onWaiting);
    }
    const login = decideLogin({ ...host.outside(), cleared, ineligible: host.ineligible() });
    if (login.next !== 'logging-in') return this.giveBack(login, true);
    let reason = login.reason;
    try {
      for (;;) {
        const why = await this.lead(reason);
        const after = await this.logout(why);
        if (after.relogin) {
          reason = after.reason;
          continue;
        }
        if (why.kind === 'failed') await host.changed.wait(FAILED_RETRY_PAUSE_MS, host.stopSignal);
        return;
      }
    } catch (err) {
      await this.abandon(err as Error);
      throw err;
    }
  }

  /** The credential file is on disk only while logged in: remove it, or say it is left. */
  private async dropCredential(): Promise<void> {
    const file = this.credentialFile;
    if (!file) return;
    this.credentialFile = undefined;
    await this.host.port
      .removeCredential(file)
      .catch((err: Error) =>
        this.host.log.error(
          { err: err.message, file },
          'could not remove the credential file; remove it by hand',
        ),
      );
  }

  /**
   * A bug or an unexpected failure with the service possibly running: stop it within the
   * budget; if that is not confirmed, give up the whole session, so the lease (and the
   * lifeline deadline, still armed) bounds the service and every successor waits it out.
   */
  private async abandon(err: Error): Promise<void> {
    const { host, leadership } = this;
    host.log.error(
      { err: err.stack ?? String(err), token: String(leadership.token) },
      'unexpected error during the term: stopping the service and giving the term up',
    );
    this.stopLogin();
    const decision = decideAbandonTerm({ ...host.outside(), state: host.state(), error: err.message });
    try {
      if (decision.logout) this.move(decision.logout);
    } catch (refused) {
      // Whatever the state says, the service is stopped below.
      host.log.error({ err: (refused as Error).message }, 'could not record the logout');
    }
    await this.responder?.stop(0).catch(() => undefined);
    this.responder = undefined;
    const driver = host.driver();
    const confirmed = await (
      driver?.logout(leadership.session.timing.logoutBudgetMs) ?? Promise.resolve(true)
    ).catch((err: Error) => {
      host.log.error(
        { err: err.message },
        'the service did not log out cleanly; its kill deadline stays armed',
      );
      return false;
    });
    if (confirmed) driver?.armDeadline?.(undefined);
    await this.dropCredential();
    this.failDrain(`term abandoned: ${err.message}`);
    await this.giveBack(decision.giveBack, confirmed);
  }

  /** From here on no restart of the service may start, and renewals no longer re-arm its deadline. */
  private stopLogin(): void {
    this.endLead = undefined;
    this.loginAbort?.abort();
    this.loginAbort = undefined;
  }

  /** logging-in → leader → (returns why leading ended; the service may still be running). */
  private async lead(reason: string): Promise<EndOfLead> {
    const { host, leadership } = this;
    const token = leadership.token;
    const spec = host.spec();
    // Never log in without a spec (the decisions checked; this guards a bug, not a race).
    if (!spec) throw new Error('no spec for the identity at login');
    const driver = await host.ensureDriver(spec);
    const ended = new Promise<EndOfLead>((resolve) => (this.endLead = resolve));
    void leadership.whenLost().then((e) => this.endLead?.({ kind: 'lost', reason: e.reason }));
    this.move({ next: 'logging-in', reason });
    // The newest state another node left comes in before the service sees its directory, and
    // outside the login slots: a big restore must not hold other identities' logins back.
    try {
      await host.stateKeeper?.beginTerm(token, () => host.driver());
    } catch (err) {
      host.failed();
      return { kind: 'failed', reason: `login failed: ${(err as Error).message}` };
    }
    // Logins take turns: many at once would hold the event loop (admission.ts).
    const gaveUp = new AbortController();
    void ended.then((why) => gaveUp.abort(why));
    let done: (() => void) | undefined;
    try {
      done = await host.admit(gaveUp.signal);
    } catch {
      return ended;
    }
    // Under way until the responder is open (or the login failed): a fork for another
    // identity's cold service would take the loop and the cores this login needs.
    let loginUnderWay: (() => void) | undefined;
    if (!startsItsProcess(spec)) host.warmLogin?.(new Promise<void>((resolve) => (loginUnderWay = resolve)));
    let credentialFile: string | undefined;
    let responder: ResponderHandle | undefined;
    // Subscribed while the service logs in, opened once it is in (responder.ts): the server's
    // confirmation no longer follows the login. Until it is opened it answers nothing, so a
    // login that fails or is cut short has no responder to take back but this one.
    let subscribing: Promise<ResponderHandle> | undefined;
    const dropSubscription = () => void subscribing?.then((r) => r.stop(0)).catch(() => undefined);
    try {
      // A durable inbox that is not what the spec says (made by someone else, with a short
      // duplicate window or an extra consumer) refuses the login before the service starts.
      if (spec.inbox.durable) {
        await host.port.ensureInbox(spec).catch((err: Error) => {
          host.log.error({ identity: host.identity, err: err.message }, 'durable inbox refused');
          host.inboxRefused?.(true);
          throw err;
        });
        host.inboxRefused?.(false);
      }
      const context = host.responderContext(leadership, driver, () => this.upSince ?? host.clock.wallMs());
      subscribing = host.port.subscribeResponder(context, host.requestsServed());
      subscribing.catch(() => undefined); // awaited once the service is in
      credentialFile = await host.port.fetchCredential(spec, token);
      await leadership.setLoggedIn(true);
      if (!leadership.mayAct()) throw new Error('the term ended while logging in');
      // Armed before the service starts: from its first instant it dies with the lease.
      this.armDeadline(driver);
      // The driver asks this right before any (re)start under the term: a crash restart whose
      // timer fires after the term ended (a freeze, a lost key) must start nothing.
      const loginAbort = new AbortController();
      this.loginAbort = loginAbort;
      const login = driver.login({
        identity: host.identity,
        node: host.node,
        token,
        ...(credentialFile ? { credentialFile } : {}),
        mayAct: () => !loginAbort.signal.aborted && leadership.mayAct(),
        signal: loginAbort.signal,
      });
      const first = await Promise.race([login.then(() => 'in' as const), ended]);
      if (first !== 'in') {
        void login.catch(() => undefined);
        dropSubscription();
        this.credentialFile = credentialFile;
        return first;
      }
      // The subscription waits on NATS, which may be slow or away: the term's end must still
      // reach the logout at once, not after NATS answers.
      const started = await Promise.race([subscribing.then((r) => ({ r })), ended]);
      if (!('r' in started)) {
        dropSubscription();
        this.credentialFile = credentialFile;
        return started;
      }
      responder = started.r;
      if (!leadership.mayAct()) throw new Error('the term ended while logging in');
      responder.open();
    } catch (err) {
      this.credentialFile = credentialFile;
      this.responder = responder;
      if (!responder) dropSubscription();
      if (err instanceof FencedNodeError) return { kind: 'fenced' };
      host.failed();
      return { kind: 'failed', reason: `login failed: ${(err as Error).message}` };
    } finally {
      done();
      loginUnderWay?.();
    }
    this.credentialFile = credentialFile;
    this.responder = responder;
    this.upSince = host.clock.wallMs();
    const prev = leadership.previous;
    if (prev && prev.record.node !== host.node) host.tookOver({ node: prev.record.node, token: prev.token });
    this.move({
      next: 'leader',
      reason: prev ? `took over from ${prev.record.node} (term ${prev.token})` : 'elected',
    });
    // Conditions that arrived while logging in.
    const outside = host.outside();
    if (outside.fenceReason !== undefined) this.endLead?.({ kind: 'fenced' });
    if (outside.stopping) this.endLead?.({ kind: 'stop' });
    return ended;
  }

  /**
   * From its first instant the service is covered by its session's lifeline deadline, at the
   * must-be-out instant: if this agent freezes, the service is killed from outside before
   * etcd can let a standby in. The agent pushes the deadline back once per renewal for every
   * service of the session (lifelineDeadline). Lifted at a confirmed logout.
   */
  private armDeadline(driver: IdentityDriver): void {
    const { session } = this.leadership;
    const left = session.msUntilSelfFence();
    if (left > 0) driver.armDeadline?.(left + lifelineSlackMs(session), lifelineDeadline(session));
  }

  /** logging-out → standby | drained | fenced | stopped, or back to logging in after a drain. */
  private async logout(why: EndOfLead): Promise<{ relogin: false } | { relogin: true; reason: string }> {
    const { host, leadership } = this;
    // First, before any await: no restart of the service may start from here on.
    this.stopLogin();
    this.move(decideEndOfLead(why));
    // A leader that leaves finds its successor while its service stops.
    const successor = why.kind === 'stop' ? leadership.readSuccessor() : undefined;
    successor?.catch(() => undefined); // awaited, or dropped, below
    const { clock } = host;
    const timing = leadership.session.timing;
    // Out by the session's must-be-out deadline when it is stopping; the budget otherwise.
    // Both are on the monotonic clock (performance.now() under the system clock).
    const mustStop = leadership.session.state !== 'alive' ? await leadership.session.stopped() : undefined;
    const deadline = mustStop ? mustStop.mustBeOutBy : clock.monotonicMs() + timing.logoutBudgetMs;
    const left = () => Math.max(0, deadline - clock.monotonicMs());
    if (this.responder) {
      host.setRequestsServed(this.responder.requestsServed);
      await this.responder.stop(left() * RESPONDER_GRACE_SHARE);
      this.responder = undefined;
    }
    const driver = host.driver();
    const confirmed = (await driver?.logout(left())) ?? true;
    // Out for sure: a warm process stays up as a standby and must not be killed. Unconfirmed,
    // the armed deadline stays as the last line of defence.
    if (confirmed) driver?.armDeadline?.(undefined);
    await this.dropCredential();
    this.upSince = undefined;
    if (!confirmed) {
      host.log.error(
        { token: String(leadership.token) },
        'service not confirmed logged out within the budget: giving up the session so the lease bounds it',
      );
    }
    if (why.kind === 'failed') host.failed();
    // The service is out and the key still ours: its state now is the newest there is, so a
    // successor (which restores before it logs in) carries it on.
    if (confirmed && CLEAN_LOGOUTS.has(why.kind) && leadership.mayAct()) {
      await host.stateKeeper?.atLogout(leadership.token, left());
    }

    const next = decideAfterLogout({ ...host.outside(), why, confirmed, mayAct: leadership.mayAct() });
    if (next.then === 'hold' && why.kind === 'drain') {
      const request = this.drainRequest;
      this.drainRequest = undefined;
      try {
        const moved = request?.handover ? await this.handOver(request.handover, why.actor) : false;
        if (!moved) await leadership.setLoggedIn(false);
      } catch (err) {
        request?.fail(err as Error);
        await this.giveBack(
          decideGiveBack(host.outside(), `drain could not be recorded: ${(err as Error).message}`),
          true,
        );
        return { relogin: false };
      }
      this.move(next);
      request?.done(leadership.token);
      return this.holdDrained(why.holdMs);
    }
    this.failDrain(next.reason);
    if (successor && confirmed && leadership.mayAct() && (await this.handOverAsLeaving(successor))) {
      this.held = false;
      this.move(next);
      return { relogin: false };
    }
    // Guarded by the token: a no-op when the key is already gone or moved. Unconfirmed, it
    // also closes the session, so the lease's end bounds the service.
    await this.giveBack(next, confirmed);
    return { relogin: false };
  }

  /**
   * This agent stops and its service is confirmed out: give the term to the standby a free
   * election would let try first, in the transaction that says the service is out, instead
   * of deleting the key and letting the standbys notice, rank and race for it. False (nothing
   * changed) when there is no healthy standby, a guard did not hold (it left, was fenced or
   * held off meanwhile) or etcd cannot say: the term is then resigned as before.
   */
  private async handOverAsLeaving(successor: Promise<HandOverPlan | undefined>): Promise<boolean> {
    const { host, leadership } = this;
    try {
      const plan = await successor;
      if (!plan) {
        host.log.info(
          { token: String(leadership.token) },
          `no live healthy standby to hand ${host.identity} to as this agent stops; resigning it for the standbys to elect one`,
        );
        return false;
      }
      const to = plan.target.node;
      const moved = await leadership.handOver(plan, { actor: `${leadership.node} (leaving)` });
      if (moved) {
        host.log.info(
          { token: String(leadership.token), to },
          `logged out and handed ${host.identity} to ${to}, its best standby, as this agent stops`,
        );
      } else {
        host.log.info(
          { token: String(leadership.token), to },
          `not handed to ${to} (no longer seen renewing, or its registration, fence, drift or hold-off, this term's key or login record changed, or this term never logged in); resigning ${host.identity} for the standbys to elect one`,
        );
      }
      return moved;
    } catch (err) {
      host.log.warn(
        { token: String(leadership.token), err: (err as Error).message },
        `could not hand ${host.identity} to a standby as this agent stops; resigning it for the standbys to elect one`,
      );
      return false;
    }
  }

  /**
   * The service is confirmed out: move the key to the drain's target in the same transaction
   * that says so. False (nothing changed) when the move's guards do not hold — the target left
   * or is fenced, the controller's term or the workflow's hold-off ended — or etcd cannot say:
   * the logout is then recorded as for any drain, and the controller moves the key or rolls back.
   */
  private async handOver(handover: PendingHandover, actor: string): Promise<boolean> {
    const { host, leadership } = this;
    try {
      const plan = await handover.plan;
      const moved = await leadership.handOver(plan, { actor });
      if (moved) {
        host.log.info(
          { token: String(leadership.token), to: handover.to, actor },
          `logged out and handed ${host.identity} to ${handover.to} in one step`,
        );
      } else {
        host.log.info(
          { token: String(leadership.token), to: handover.to },
          `not handed to ${handover.to} (its registration, fence or drift hold, the controller's term or the hold-off changed); recording the logout for the controller to move the key`,
        );
      }
      return moved;
    } catch (err) {
      host.log.warn(
        { token: String(leadership.token), to: handover.to, err: (err as Error).message },
        `could not hand ${host.identity} to ${handover.to}; recording the logout for the controller to move the key`,
      );
      return false;
    }
  }

  private failDrain(reason: string): void {
    this.drainRequest?.fail(
      new RunnerError(`drain of ${this.host.identity} interrupted: ${reason}`, 'not-leader'),
    );
    this.drainRequest = undefined;
  }

  /** Drained: wait for the transfer, an abort, the hold to expire, a fence or a stop. */
  private async holdDrained(holdMs: number): Promise<{ relogin: false } | { relogin: true; reason: string }> {
    const { host, leadership } = this;
    const { clock } = host;
    const until = clock.monotonicMs() + holdMs;
    this.undrainRequested = false;
    for (;;) {
      const d = decideDrained({
        ...host.outside(),
        ended: leadership.isEnded,
        ineligible: host.ineligible(),
        undrainRequested: this.undrainRequested,
        holdLeftMs: until - clock.monotonicMs(),
      });
      switch (d.then) {
        case 'done':
          this.held = false;
          this.move(d);
          return { relogin: false };
        case 'give-back':
          await this.giveBack(d, true);
          return { relogin: false };
        case 'relogin':
          host.log.info({ token: String(leadership.token) }, d.reason);
          return { relogin: true, reason: d.reason };
        case 'wait':
          await Promise.race([
            host.changed.wait(until - clock.monotonicMs(), host.stopSignal),
            leadership.whenLost(),
          ]);
      }
    }
  }
}

/** The lifeline deadline every service logged in under `session` shares. */
export function lifelineDeadline(session: Pick<Session, 'leaseId'>): string {
  return `s${session.leaseId}`;
}

/** From the self-fence deadline to the must-be-out instant: how far the lifeline deadline lies past D. */
export function lifelineSlackMs(session: Pick<Session, 'timing'>): number {
  return session.timing.mustBeOutByMs - session.timing.selfFenceMs;
}

/** A cold process service starts its process at login; any other login tells a running one. */
function startsItsProcess(spec: IdentitySpec): boolean {
  const service = spec.service as IdentitySpec['service'] | undefined;
  return service?.driver === 'process' && service.mode === 'cold';
}

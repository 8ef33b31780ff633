// A term of leadership: what a candidate holds once elected, until the term ends.
//
// The term is fenced by its token (the revision of the write that made it leader). It ends
// when its key is deleted or moved (watched; a broken watch is replaced after a re-read), when
// its session must stop, or when it resigns. Before logging in, a new leader passes the login
// gate (gate.ts, S3); its login state is a record guarded by the token (setLoggedIn).
import {
  LeaseOperationError,
  readBestStandby,
  transferTargetOf,
  transferWrites,
  type TransferTarget,
} from './admin.js';
import type { Guard, TxnBatcher } from './batch.js';
import type { Clock } from '../clock/index.js';
import { decideClearance, type ClearanceFacts, type ClearanceVerdict } from './clearance.js';
import { TypedEmitter } from './emitter.js';
import { CampaignAbandonedError, FencedNodeError, StaleTokenError, type FencingToken } from './errors.js';
import type { ChangeFeed } from './feed.js';
import {
  readClearanceFacts,
  transferredFacts,
  waitForClearance,
  type GateChange,
  type GateRead,
} from './gate.js';
import {
  assertName,
  decode,
  HoldOffRecord,
  type Keys,
  type LeaderRecord,
  type LoginRecord,
  type TermEnd,
} from './keys.js';
import { renewedLately, startedView, type PeerSessions } from './peers.js';
import { backoffMs, RETRY_MS, type RetryReport } from './retry.js';
import type { Release, Session } from './session.js';

export type { FencingToken };

/**
 * A hand-over as planned while the service stops: what the move compares besides the term,
 * its own login record and the target's registration, fence and drift hold.
 */
export type HandOverPlan =
  /** A drain that names its target (Leadership.readHandOver). */
  | {
      kind: 'drain';
      target: TransferTarget;
      /** Mod revision of this node's hold-off key when the drain came in: the move requires it unchanged. */
      heldOffAt: string;
      /** The term of the controller that asked: its election key and that key's mod revision. */
      authority: { key: string; revision: string };
    }
  /** This node's agent stops: its best live standby (Leadership.readSuccessor). */
  | { kind: 'leave'; target: TransferTarget };

/** What a new leader knows about the term before its own. */
export interface PreviousTerm {
  record: LeaderRecord;
  token: FencingToken;
  /** Monotonic ms (the session's clock) when this candidate saw that term end (undefined: it did not). */
  observedEndAt?: number;
  /** The key was moved to us by a transfer, which requires the holder's confirmed logout. */
  transferred: boolean;
}

export interface LeadershipEvents extends Record<string, unknown> {
  /** Leadership ended (key deleted, moved, or the session must stop). Terminal. */
  lost: { reason: 'session' | 'key-deleted' | 'key-moved' | 'resigned'; at: number };
  /** The login gate holds this new leader back, and why (emitted when the reason changes). */
  waiting: { reason: string };
}

/** What a term needs from the campaign that won it. */
/**
 * The latest term each session started, per identity: a campaign that finds it still holding
 * the key (its resign did not reach etcd) asks it whether its service may still be logged in.
 * Per session, not per candidate: a runner makes a new candidate for every campaign.
 */
const termsBySession = new WeakMap<Session, Map<string, Leadership>>();

export function sessionTerms(session: Session): Map<string, Leadership> {
  let terms = termsBySession.get(session);
  if (!terms) termsBySession.set(session, (terms = new Map()));
  return terms;
}

export interface TermContext {
  readonly identity: string;
  readonly session: Session;
  readonly keys: Keys;
  readonly peers: Promise<PeerSessions>;
  readonly clock: Clock;
  readonly retries: RetryReport;
  /** The shared watch the term follows its own key on. */
  readonly feed: ChangeFeed;
  /** Set as a term starts, so the campaign never re-adopts a term of its own that ended. */
  lastOwnToken: FencingToken | undefined;
  /** Report trouble of the view of other sessions until the returned function is called. */
  reportPeerTrouble(): () => void;
  /** Merges the process's etcd steps of one moment into one transaction (batch.ts). */
  readonly batcher: TxnBatcher;
}

/**
 * A term of leadership. Act only while `mayAct()` is true; before logging in, await
 * `clearance()` (S3: the previous term is confirmed out or its self-fence deadline passed).
 */
export class Leadership extends TypedEmitter<LeadershipEvents> {
  private ended: LeadershipEvents['lost'] | undefined;
  /** Stops following our key on the feed. */
  private unfollow: (() => void) | undefined;
  private loggedInValue = false;
  /** Held on the session from the first `setLoggedIn(true)` until the logout is confirmed. */
  private releaseHold: Release | undefined;
  /** Mod revision of this term's last login record write: it guards a late confirmation. */
  private loginRevision: string | undefined;
  private readonly endWaiters: Array<(e: LeadershipEvents['lost']) => void> = [];
  /** The login gate's memory of when it first found each earlier holder's session gone. */
  private readonly goneSince = new Map<string, number>();
  /** The revision of the login gate's last read: it follows changes after it. */
  private gateReadAt: bigint | undefined;
  /** The gate's first read, done in the transaction that made the term (used once). */
  private gateReadAhead: GateRead | undefined;
  /** Revision of the read that adopted this term as transferred (primeTransfer; used once). */
  private transferProvenAt: bigint | undefined;

  constructor(
    private readonly ctx: TermContext,
    readonly token: FencingToken,
    readonly record: LeaderRecord,
    readonly previous: PreviousTerm | undefined,
  ) {
    super();
  }

  get identity(): string {
    return this.ctx.identity;
  }
  get node(): string {
    return this.ctx.session.node;
  }
  get session(): Session {
    return this.ctx.session;
  }
  get key(): string {
    return this.ctx.keys.leader(this.identity);
  }
  get loggedIn(): boolean {
    return this.loggedInValue;
  }

  /**
   * Follow our own key on the shared feed: a deletion or a move ends the term even if the
   * session lives. A feed that cannot tell what happened since our read makes us read again.
   */
  async start(revision: string, _signal?: AbortSignal): Promise<Leadership> {
    this.ctx.lastOwnToken = this.token;
    sessionTerms(this.session).set(this.identity, this);
    const onStop = () => this.end('session');
    this.session.on('must-stop', onStop);
    void this.whenLost().then(() => {
      this.session.off('must-stop', onStop);
      this.unfollow?.();
    });
    if (!this.session.mayAct()) this.end('session');
    this.followOwnKey(BigInt(revision));
    return this;
  }

  private followOwnKey(readAt: bigint): void {
    if (this.ended) return;
    this.unfollow?.();
    this.unfollow = this.ctx.feed.follow(this.key, readAt, {
      // The key is written once per term: any later write is a new term (a transfer).
      change: (c) => this.end(c.kind === 'delete' ? 'key-deleted' : 'key-moved'),
      resync: (error) => void this.reread(error),
    });
  }

  /**
   * The feed could not tell what happened to our key: read it, and follow it again if still
   * ours. A feed in trouble (`error`) is read again after a pause, not in a tight loop.
   */
  private async reread(error?: Error): Promise<void> {
    this.unfollow?.();
    this.unfollow = undefined;
    const retries = this.ctx.retries;
    if (error) {
      retries.failed('own-key watch', `watching ${this.key} (term ${this.token})`, error);
      await this.ctx.clock.sleep(RETRY_MS);
    }
    try {
      while (!this.ended) {
        try {
          const res = await this.ctx.batcher.run([this.session.client.get(this.key)], this.key);
          const current = res.responses[0]?.response_range?.kvs[0];
          if (!current || BigInt(current.mod_revision) !== this.token) {
            this.end(current ? 'key-moved' : 'key-deleted');
            return;
          }
          this.followOwnKey(BigInt(res.revision));
          // While the feed cannot watch, the key is read again every RETRY_MS: still in trouble.
          const trouble = this.ctx.feed.troubleFor(this.key);
          if (trouble) retries.failed('own-key watch', `watching ${this.key} (term ${this.token})`, trouble);
          else retries.succeeded('own-key watch');
          return;
        } catch (err) {
          // etcd unreachable: retry; the session's self-fence clock ends the term if it lasts.
          const failures = retries.failed(
            'own-key watch',
            `reading ${this.key} again (term ${this.token})`,
            err,
          );
          await this.ctx.clock.sleep(backoffMs(failures));
        }
      }
    } finally {
      if (this.ended) retries.succeeded('own-key watch');
    }
  }

  /** True while this term may act: session within its self-fence deadline and key still ours. */
  mayAct(): boolean {
    return this.ended === undefined && this.session.mayAct();
  }

  get isEnded(): boolean {
    return this.ended !== undefined;
  }

  /** Resolves when the term ends, with why. */
  whenLost(): Promise<LeadershipEvents['lost']> {
    if (this.ended) return Promise.resolve(this.ended);
    return new Promise((resolve) => this.endWaiters.push(resolve));
  }

  private end(reason: LeadershipEvents['lost']['reason']): void {
    if (this.ended) return;
    this.ended = { reason, at: this.ctx.clock.wallMs() };
    this.unfollow?.();
    this.emit('lost', this.ended);
    for (const resolve of this.endWaiters.splice(0)) resolve(this.ended);
  }

  /**
   * The login gate (S3): resolves with the sentence that let this leader log in, once every
   * earlier term is proven over (clearance.ts); emits `waiting` with why while it is not.
   * Rejects if this term ends meanwhile.
   */
  async clearance(): Promise<string> {
    // The gate leans on the view of other sessions: its trouble is shown while the gate waits.
    const stopPeerReports = this.ctx.reportPeerTrouble();
    return waitForClearance(
      {
        identity: this.identity,
        token: this.token,
        verdict: () => this.clearanceVerdict(),
        nextChange: () => this.gateChange(),
        mayAct: () => this.mayAct(),
        lost: this.whenLost(),
        waiting: (reason) => this.emit('waiting', { reason }),
        retries: this.ctx.retries,
        clock: this.ctx.clock,
      },
      () =>
        new CampaignAbandonedError(
          `term ${this.token} of ${this.identity} ended while waiting out the previous term`,
        ),
    ).finally(stopPeerReports);
  }

  /** What the login gate would decide now (for status displays and tests). */
  async clearanceVerdict(): Promise<ClearanceVerdict> {
    return decideClearance(await this.clearanceFacts());
  }

  /**
   * The gate's first read, made in the transaction that created this term's key: the first
   * decision then costs no round trip. Only the first: a wait reads afresh each time.
   */
  primeGate(read: GateRead): void {
    this.gateReadAhead = read;
  }

  /**
   * The read that adopted this term proved it was transferred (the term-end record at the
   * key's revision) and found no login record: the gate's first decision is made on it, with
   * no read of its own. Only the first, as primeGate.
   */
  primeTransfer(revision: string): void {
    this.transferProvenAt = BigInt(revision);
  }

  /** What the login gate decides on: one read at one revision, plus this node's sightings. */
  async clearanceFacts(): Promise<ClearanceFacts> {
    const proven = this.transferProvenAt;
    this.transferProvenAt = undefined;
    if (proven !== undefined && this.previous?.transferred) {
      this.gateReadAt = proven;
      return transferredFacts(this.previous, this.ctx.clock.monotonicMs());
    }
    const ahead = this.gateReadAhead;
    this.gateReadAhead = undefined;
    return readClearanceFacts(
      {
        client: this.session.client,
        batcher: this.ctx.batcher,
        identity: this.identity,
        keys: this.ctx.keys,
        sessionKeys: this.session.keys,
        token: this.token,
        previous: this.previous,
        peers: this.ctx.peers,
        clock: this.ctx.clock,
        goneSince: this.goneSince,
        readAt: (revision) => (this.gateReadAt = revision),
      },
      ahead,
    );
  }

  /**
   * The next change of the login or term-end record after the gate's last read: a holder
   * confirming its logout lets this term in at once. A feed in trouble wakes nobody (the
   * gate's own recheck reads again); a read older than the feed's log is simply read again.
   */
  private gateChange(): GateChange {
    const readAt = this.gateReadAt;
    let wake!: () => void;
    const changed = new Promise<void>((resolve) => (wake = resolve));
    if (readAt === undefined) return { changed, cancel: () => undefined };
    const follower = {
      change: () => wake(),
      resync: (error?: Error) => {
        if (!error) wake();
      },
    };
    const keys = this.ctx.keys;
    const unfollow = [keys.login(this.identity), keys.termEnd(this.identity)].map((key) =>
      this.ctx.feed.follow(key, readAt, follower),
    );
    return { changed, cancel: () => unfollow.forEach((u) => u()) };
  }

  /**
   * Record the login state, fenced by this term's token. The convention that makes the
   * record safe to act on: write `true` *before* starting the service (it covers logging in),
   * and `false` only once the service is confirmed stopped. A transfer, a revocation and a
   * successor's login gate treat `false` as the holder's confirmed logout. The record is not
   * bound to the lease: it outlives the term, so a term that logged in and never confirmed
   * its logout stays visible to every successor.
   *
   * `true` takes a hold on the session (it is not revoked while the service may run) and is
   * refused (FencedNodeError) while the node is fenced (S4) or held off this identity: a
   * fence written after this node won still keeps it from logging in. `false` releases the
   * hold; it is accepted even after the key is gone, as long as no later term wrote the
   * record, so a holder cut off by a revocation can still confirm it is out.
   */
  async setLoggedIn(loggedIn: boolean): Promise<void> {
    const client = this.session.client;
    const loginKey = this.ctx.keys.login(this.identity);
    const value = JSON.stringify(this.loginRecord(loggedIn));
    if (loggedIn) this.releaseHold ??= this.session.hold();
    const fenceKey = this.ctx.keys.fence(this.node);
    const holdOffKey = this.ctx.keys.holdOff(this.identity, this.node);
    const guards: Guard[] = [[this.key, 'Mod', '==', String(this.token)]];
    if (loggedIn) guards.push([fenceKey, 'Create', '==', 0], [holdOffKey, 'Create', '==', 0]);
    const batcher = this.ctx.batcher;
    let result;
    try {
      // Merged with the other identities' writes of this moment (batch.ts), guarded alone.
      result = await batcher.runIf(guards, [client.put(loginKey).value(value)]);
    } catch (err) {
      if (loggedIn && !this.loggedInValue) this.release();
      throw err;
    }
    if (!result.succeeded && !loggedIn && this.loginRevision !== undefined) {
      result = await batcher.runIf(
        [[loginKey, 'Mod', '==', this.loginRevision]],
        [client.put(loginKey).value(value)],
      );
    }
    if (!result.succeeded) {
      if (loggedIn && !this.loggedInValue) this.release();
      const still = (await batcher.run([client.get(this.key)], this.key)).responses[0]?.response_range
        ?.kvs[0];
      if (still && BigInt(still.mod_revision) === this.token) {
        throw new FencedNodeError(this.node, this.identity);
      }
      this.end('key-moved');
      throw new StaleTokenError(this.identity, this.token);
    }
    this.loginRevision = result.revision;
    this.loggedInValue = loggedIn;
    if (!loggedIn) this.release();
  }

  /**
   * Hand this term to the plan's target in the transaction that confirms its logout, sparing
   * the successor a round of its own: a drain that names its target needs no controller round
   * between the logout and the target's login; a leader that leaves gives its best standby the
   * term without an election. Call it only once the service is confirmed stopped, as
   * setLoggedIn(false). The move is what a controller's transfer writes (admin.ts), guarded by
   * this term, by this term's own last login write and by the target's registration as read,
   * its fence and drift hold; a drain's move also by this node's hold-off as read with the
   * drain (the same workflow still runs) and by the term of the controller that asked; a
   * leaving node's by the target not being held off the identity. Resolves true once moved
   * (the term is over); false when a guard did not hold and nothing changed: record the
   * logout, or resign, the usual way.
   */
  async handOver(plan: HandOverPlan, opts: { actor: string }): Promise<boolean> {
    const { target } = plan;
    // A term that never wrote its login record may not have passed its own gate: the record
    // of an earlier term it holds may be the only word that the earlier one is still in, and
    // the move clears it. Such a term is drained the usual way (the controller's transfer
    // refuses it too).
    if (this.loginRevision === undefined) return false;
    const keys = this.ctx.keys;
    const move = transferWrites(this.session.client, {
      identity: this.identity,
      from: { token: this.token, record: this.record },
      target,
      actor: opts.actor,
      at: this.ctx.clock.wallMs(),
      keys,
    });
    const guards: Guard[] = [
      ...move.guards,
      // The login record is still the one this term last wrote: nobody else's word is cleared.
      [keys.login(this.identity), 'Mod', '==', this.loginRevision],
    ];
    if (plan.kind === 'leave') {
      // Still alive now, after the service's stop: one that died meanwhile would hold the
      // term, with nobody logged in, until its lease ran out; an election would pass it over.
      if (!(await this.renewedLately(target.candidate))) return false;
      // A standby held off the identity would refuse the term (its campaign waits the hold out).
      guards.push([keys.holdOff(this.identity, target.node), 'Create', '==', 0]);
      // Until it campaigns again this node is no candidate, as after a resign: a second
      // leader leaving at the same time must not hand it back here.
      move.ops.push(this.session.client.delete().key(keys.candidate(this.identity, this.node)));
    } else {
      guards.push(
        // Only under the hold-off read with the drain: its workflow still runs. Aborting one
        // releases its hold-off before anything else, so a cancelled or expired switchover
        // cannot move the key after the fact, even once a later one holds this node off again.
        [keys.holdOff(this.identity, this.node), 'Mod', '==', plan.heldOffAt],
        [plan.authority.key, 'Mod', '==', plan.authority.revision],
      );
    }
    const result = await this.ctx.batcher.runIf(guards, move.ops);
    if (!result.succeeded) return false;
    this.loggedInValue = false;
    this.release();
    this.end('key-moved');
    return true;
  }

  /**
   * What a drain that names `node` needs for handOver, read while the service stops: the
   * target's registration and this node's hold-off as they are now, which must be `workflow`'s
   * (the drain's own). The move compares both, so it happens only to that registration and
   * only under that hold-off: one released (the workflow aborted) and written again by a later
   * workflow is another.
   */
  async readHandOver(
    node: string,
    workflow: string,
    authority: { key: string; revision: string },
  ): Promise<Extract<HandOverPlan, { kind: 'drain' }>> {
    assertName('node', node);
    const { client } = this.session;
    const keys = this.ctx.keys;
    const candidateKey = keys.candidate(this.identity, node);
    const step = await this.ctx.batcher.run(
      [client.get(candidateKey), client.get(keys.holdOff(this.identity, this.node))],
      candidateKey,
    );
    const target = transferTargetOf(
      this.identity,
      node,
      step.responses[0]?.response_range?.kvs[0],
      candidateKey,
    );
    const heldOff = step.responses[1]?.response_range?.kvs[0];
    if (!heldOff) {
      throw new LeaseOperationError(
        `${this.node} is not held off ${this.identity}: no handover of it is under way`,
        'changed',
      );
    }
    // A drain that arrives late (a thawed agent) must not act under a later workflow's hold-off.
    const holder = decode(HoldOffRecord, heldOff.value, keys.holdOff(this.identity, this.node))?.workflow;
    if (holder !== workflow) {
      throw new LeaseOperationError(
        `${this.node} is held off ${this.identity} by ${holder ? `workflow ${holder}` : 'an operator'}, not by ${workflow} that asked for the handover`,
        'changed',
      );
    }
    return { kind: 'drain', target, heldOffAt: heldOff.mod_revision, authority };
  }

  /**
   * Whom to hand this term to as this node's agent stops: the candidate a free election would
   * let try first (rank.ts successorOf) among those this process saw renew their session
   * lately (LIVE_SUCCESSOR_RENEWALS); undefined when there is none, and the term is resigned.
   */
  async readSuccessor(): Promise<HandOverPlan | undefined> {
    // Without the view of other sessions no standby is known to be alive: resigned instead.
    const peers = await startedView(this.ctx.peers);
    if (!peers) return undefined;
    const now = this.ctx.clock.monotonicMs();
    const target = await readBestStandby(this.ctx.batcher, this.session.client, {
      identity: this.identity,
      me: this.node,
      keys: this.ctx.keys,
      live: (candidate) => renewedLately(peers.sighting(candidate.leaseId), candidate.ttlMs, now),
    });
    return target && { kind: 'leave', target };
  }

  private async renewedLately(candidate: { leaseId: string; ttlMs: number }): Promise<boolean> {
    const peers = await startedView(this.ctx.peers);
    const seen = peers?.sighting(candidate.leaseId);
    return renewedLately(seen, candidate.ttlMs, this.ctx.clock.monotonicMs());
  }

  private loginRecord(loggedIn: boolean): LoginRecord {
    return {
      node: this.node,
      token: String(this.token),
      loggedIn,
      at: this.ctx.clock.wallMs(),
      leaseId: this.session.leaseId,
      ttlMs: this.session.timing.ttlMs,
    };
  }

  private release(): void {
    this.releaseHold?.();
    this.releaseHold = undefined;
  }

  /**
   * End the term: record how it ended and delete the key in one txn guarded by this term.
   * `loggedOut: true` only once the service is confirmed stopped; a successor then logs in
   * without waiting. With `loggedOut: false` (the service could not be confirmed stopped)
   * the login record keeps saying "logged in", and the whole session is closed too: it is
   * revoked only at the must-be-out instant (the lifeline has killed the service by then),
   * and successors wait that out. Never throws; resolves false if the key was no longer ours.
   */
  async resign(opts: { loggedOut: boolean }): Promise<boolean> {
    const client = this.session.client;
    const loginKey = this.ctx.keys.login(this.identity);
    const end: TermEnd = {
      token: String(this.token),
      node: this.node,
      leaseId: this.session.leaseId,
      how: 'resigned',
      loggedOut: opts.loggedOut,
      holderTtlMs: this.session.timing.ttlMs,
      at: this.ctx.clock.wallMs(),
    };
    // A term that logged in and is now confirmed out says so where successors look first.
    const confirm = opts.loggedOut && this.loginRevision !== undefined;
    const confirmation = JSON.stringify(this.loginRecord(false));
    let ok = false;
    try {
      const batcher = this.ctx.batcher;
      const result = await batcher.runIf(
        [[this.key, 'Mod', '==', String(this.token)]],
        [
          client.put(this.ctx.keys.termEnd(this.identity)).value(JSON.stringify(end)),
          client.delete().key(this.key),
          ...(confirm ? [client.put(loginKey).value(confirmation)] : []),
          // Until it campaigns again, the resigned node is no candidate: nobody waits for it.
          client.delete().key(this.ctx.keys.candidate(this.identity, this.node)),
        ],
      );
      ok = result.succeeded;
      if (!ok && confirm) {
        // The key went first (revoked, moved, deleted): confirm on the login record alone.
        await batcher.runIf(
          [[loginKey, 'Mod', '==', this.loginRevision!]],
          [client.put(loginKey).value(confirmation)],
        );
      }
    } catch {
      ok = false;
    }
    this.end('resigned');
    if (opts.loggedOut) {
      this.loggedInValue = false;
      this.release();
    } else {
      // Stops the session now; its lease goes once the hold lapses at the must-be-out instant.
      void this.session.close();
    }
    return ok;
  }
}

// Campaigning for an identity: the state machine of a candidate.
//
// A candidate registers itself (priority, health) under the identity, then loops:
//   read the leader key and its own fence →
//     fenced or held off: wait for that to change;
//     led by another:     watch until the key goes (or is transferred to us);
//     led by our lease:   adopt it if a transfer moved it to us, else end that stale term;
//     free:               wait its stagger (rank.ts), then create the key if absent and
//                         not fenced (one txn).
// After a change it watched (the key gone, or moved to us), the next step decides on the
// watch — the last read with the changes since applied — instead of reading again, when that
// step is taking the moved term or creating the free key (decideOnFeed).
// The fencing token is the revision of the write that made us leader (leadership.ts). Every
// failure the loop retries after is reported through `onRetry` (retry.ts).
import type { Etcd3, IOperation } from 'etcd3';
import type { Clock } from '../clock/index.js';
import { CampaignAbandonedError, NotEligibleError, type FencingToken } from './errors.js';
import { TxnBatcher, type Guard, type StepResult } from './batch.js';
import { ChangeFeed, type Change } from './feed.js';
import {
  assertName,
  type CandidateRecord,
  decode,
  Keys,
  LeaderRecord,
  LoginRecord,
  TermEnd,
} from './keys.js';
import { gateReadOps } from './gate.js';
import { LapseWatch, type LapseReport } from './lapse.js';
import { Leadership, sessionTerms, type PreviousTerm, type TermContext } from './leadership.js';
import { PeerSessions, type PeerHealth } from './peers.js';
import {
  candidatesOf as rankable,
  decideRank,
  readCandidateValues,
  readCandidates,
  type CandidateValues,
  type CandidatesRead,
  type RankDecision,
} from './rank.js';
import { backoffMs, RetryReport, type CampaignRetry } from './retry.js';
import type { Session } from './session.js';

/** A login record as the campaign read it; an unreadable one is as good as none here. */
function loginOf(
  kv: { value: Buffer; mod_revision: string } | undefined,
  key: string,
): { record: LoginRecord; modRevision: string } | undefined {
  const record = kv && decodeOrUndefined(LoginRecord, kv.value, key);
  return record && { record, modRevision: kv.mod_revision };
}

/** A key after a change the watch delivered, as a read at its revision would find it. */
function keyAfter(change: Change): { value: Buffer; modRevision: string } | undefined {
  return change.kind === 'put' && change.value
    ? { value: change.value, modRevision: String(change.revision) }
    : undefined;
}

/** Per session, per identity: the token of the latest term the session started. */
const lastTokens = new WeakMap<Session, Map<string, FencingToken>>();

/** Per session, per identity: the candidate that campaigned last (a retried withdrawal stops once it is not). */
const latestCandidates = new WeakMap<Session, Map<string, Candidate>>();
function candidatesOf(session: Session): Map<string, Candidate> {
  let byIdentity = latestCandidates.get(session);
  if (!byIdentity) latestCandidates.set(session, (byIdentity = new Map()));
  return byIdentity;
}

/** A record as read, or undefined when it is missing or does not parse (the campaign reports those elsewhere). */
function decodeOrUndefined<T>(
  schema: Parameters<typeof decode<T>>[0],
  raw: Buffer,
  where: string,
): T | undefined {
  try {
    return decode(schema, raw, where);
  } catch {
    return undefined;
  }
}

// The campaign's public names, kept where callers have always imported them from.
export { CampaignAbandonedError, FencedNodeError, NotEligibleError, StaleTokenError } from './errors.js';
export type { FencingToken } from './errors.js';
export { Leadership, type LeadershipEvents, type PreviousTerm } from './leadership.js';
export { STAGGER_STEP_MS } from './rank.js';
export type { CampaignRetry } from './retry.js';
export { FenceRecord } from './keys.js';

export interface CandidateOptions {
  identity: string;
  priority?: number;
  /** `nofailover`: this node never becomes leader of the identity. */
  tags?: { nofailover?: boolean };
  /** Asked before each attempt; an unhealthy candidate ranks last. */
  healthy?: () => boolean;
  keys?: Keys;
  /**
   * Told when the campaign starts retrying after a failure (etcd unreachable, RBAC denying a
   * read, a malformed record), when the reason changes, and with `undefined` once an attempt
   * gets through again. A persistent fault must never look like plain "campaigning".
   */
  onRetry?: (retry: CampaignRetry | undefined) => void;
  /**
   * Told when this process ended a lapsed holder's lease ahead of etcd's expiry check, or
   * could not (lapse.ts): once per holder, through one of the candidates waiting on it.
   */
  onLapse?: LapseReport;
  /**
   * Told when this candidate, stopping, gave back a term a leaving leader (`from`) had moved
   * to it meanwhile: nobody here ran it, and the other candidates elect one.
   */
  onGaveBack?: (given: { token: string; from: string }) => void;
}

/** One read of everything a campaign step decides on, at one revision. */
interface CampaignState {
  revision: string;
  leader: { record: LeaderRecord; token: FencingToken } | undefined;
  /** The leader key was moved by a transfer (term-end record written at the key's revision). */
  transferred: boolean;
  fenced: boolean;
  heldOff: boolean;
  /** The controller holds this node back as drifted from what the identity runs. */
  drifted: boolean;
  /** The identity's login record and its mod revision, if readable. */
  login: { record: LoginRecord; modRevision: string } | undefined;
  /** A login record is there, readable or not. */
  loginPresent: boolean;
}

/** A key as a read found it (undefined: absent). */
type KeyRead = { value: Buffer; modRevision: string } | undefined;

/**
 * A campaign read, raw: what a later step applies the watch's changes to, to decide without
 * reading again (decideOnFeed). Brought up to date that way, its revision covers the
 * identity's keys only (one watched prefix): the fence stays as read, so a state decided on
 * the watch is never waited on, only acted on through a transaction that compares the fence.
 */
interface CampaignRead {
  revision: bigint;
  /** The identity's keys the step decides on: leader, term end, hold-off, login, drift. */
  keys: Map<string, KeyRead>;
  /** The node's fence (under another watched prefix: never updated from the identity's changes). */
  fenced: boolean;
  /**
   * The identity's registered candidates, read in a step of their own beside this read (at
   * its own revision); undefined until that step answers, or when it could not read them.
   */
  candidates?: { revision: bigint; values: Map<string, string> };
}

export class Candidate implements TermContext {
  readonly keys: Keys;
  readonly clock: Clock;
  readonly retries: RetryReport;
  /** This process's one watch of every identity's keys and every node's fence (feed.ts). */
  readonly feed: ChangeFeed;
  private readonly client: Etcd3;
  /** Merges this process's etcd steps of one moment into one transaction (batch.ts). */
  readonly batcher: TxnBatcher;
  /**
   * This process's view of every agent's renewals, started at once: a successor can only
   * bound an earlier holder by renewals it saw before that holder's term ended.
   */
  readonly peers: Promise<PeerSessions>;
  private readonly peerHealth: PeerHealth;
  /**
   * Token of this session's latest term of the identity, so a stale leader key of ours is not
   * re-adopted as a transfer: kept per session, since a runner makes a candidate per campaign.
   */
  get lastOwnToken(): FencingToken | undefined {
    return lastTokens.get(this.session)?.get(this.identity);
  }

  set lastOwnToken(token: FencingToken | undefined) {
    let tokens = lastTokens.get(this.session);
    if (!tokens) lastTokens.set(this.session, (tokens = new Map()));
    if (token === undefined) tokens.delete(this.identity);
    else tokens.set(this.identity, token);
  }
  /** The registration this campaign last wrote and saw through (undefined: unknown). */
  private registered: string | undefined;
  /** This campaign's last read of etcd (registerAndRead), raw. */
  private lastRead: CampaignRead | undefined;
  /** The latest free-election rank and why (for status displays). */
  lastRank: RankDecision | undefined;

  constructor(
    readonly session: Session,
    readonly opts: CandidateOptions,
  ) {
    assertName('identity', opts.identity);
    assertName('node', session.node);
    this.keys = opts.keys ?? new Keys();
    this.client = session.client;
    this.batcher = TxnBatcher.for(this.client);
    // One clock for the whole lease core: sightings, deadlines and waits must be comparable.
    this.clock = session.clock;
    this.retries = new RetryReport(this.clock, opts.onRetry);
    this.feed = ChangeFeed.for(this.client, this.keys);
    this.feed.interest(this.keys.leader(opts.identity), this.keys.fence(session.node));
    // Sessions live under the session's prefix, whatever prefix this identity's keys use.
    const view = PeerSessions.for(this.client, session.keys, this.clock);
    this.peers = view.ready;
    this.peers.catch(() => undefined);
    this.peerHealth = view.health;
  }

  get identity(): string {
    return this.opts.identity;
  }

  /** The failure the campaign (or its term) is retrying after now; undefined while attempts get through. */
  get lastError(): CampaignRetry | undefined {
    return this.retries.current;
  }

  /**
   * Report the trouble of this process's view of other sessions through this candidate's
   * retries, until the returned function is called (the view is shared: it outlives us).
   */
  reportPeerTrouble(): () => void {
    const what =
      "watching other nodes' sessions (a successor bounds an earlier holder by the renewals it saw)";
    const on = (err: Error | undefined) =>
      err ? this.retries.failed('peer view', what, err) : this.retries.succeeded('peer view');
    on(this.peerHealth.current);
    this.peerHealth.on('change', on);
    return () => {
      this.peerHealth.off('change', on);
      this.retries.succeeded('peer view');
    };
  }

  /**
   * Campaign until elected. Rejects with NotEligibleError for a `nofailover` candidate and
   * with CampaignAbandonedError the moment the session must stop or `signal` aborts: a
   * campaign never reports leadership after its session ended.
   */
  async campaign(signal?: AbortSignal): Promise<Leadership> {
    if (this.opts.tags?.nofailover) {
      throw new NotEligibleError(
        `node ${this.session.node} is tagged nofailover for ${this.identity}: it never campaigns`,
      );
    }
    candidatesOf(this.session).set(this.identity, this);
    const abort = new AbortController();
    const onStop = () => abort.abort();
    signal?.addEventListener('abort', onStop, { once: true });
    this.session.on('must-stop', onStop);
    const stopPeerReports = this.reportPeerTrouble();
    let won = false;
    try {
      const leadership = await this.loop(abort.signal, signal);
      won = true;
      return leadership;
    } finally {
      signal?.removeEventListener('abort', onStop);
      this.session.off('must-stop', onStop);
      abort.abort();
      // The campaign is over: nothing is being retried any more.
      stopPeerReports();
      this.retries.succeeded('campaign');
      // A candidate that stopped campaigning must not hold a rank others wait for.
      if (!won) await this.unregister();
    }
  }

  private checkActive(signal: AbortSignal, userSignal?: AbortSignal): void {
    if (userSignal?.aborted) throw new CampaignAbandonedError(`campaign for ${this.identity} cancelled`);
    if (signal.aborted || !this.session.mayAct()) {
      throw new CampaignAbandonedError(
        `campaign for ${this.identity} abandoned: session of ${this.session.node} must stop (${this.session.state})`,
      );
    }
  }

  /**
   * A login record of this session saying "logged in" for a term this session does not know
   * logged in, while no term of this identity is live on this session. The last condition
   * does not rely on one campaign per session and identity (agents keep to it; library users
   * need not): a live term of another Candidate may have a login write still in flight, and
   * its record must not be confirmed out under it. An ended term cannot start its service
   * (it asks mayAct() right before the spawn).
   */
  private staleOwnLogin(record: LoginRecord): boolean {
    if (!record.loggedIn || record.node !== this.session.node || record.leaseId !== this.session.leaseId) {
      return false;
    }
    const ours = sessionTerms(this.session).get(this.identity);
    return ours === undefined || (ours.isEnded && !(String(ours.token) === record.token && ours.loggedIn));
  }

  /** A step failed: say what, and pause before the loop reads again (longer at each failure in a row). */
  private async retryAfter(what: string, err: unknown, signal: AbortSignal): Promise<void> {
    const failures = this.retries.failed('campaign', what, err);
    await this.clock.sleep(backoffMs(failures), signal);
  }

  private async loop(signal: AbortSignal, userSignal?: AbortSignal): Promise<Leadership> {
    const node = this.session.node;
    const leaderKey = this.keys.leader(this.identity);
    const fenceKey = this.keys.fence(node);
    const holdOffKey = this.keys.holdOff(this.identity, node);
    const driftKey = this.keys.drift(this.identity, node);
    let lastSeen: { record: LeaderRecord; token: FencingToken } | undefined;
    // A term of ours that just ended (resigned) must not be adopted again as if transferred.
    const lastOwnToken = this.lastOwnToken;
    let observedEndAt: number | undefined;
    // The leader key was just seen deleted: the next step will most likely find it free, and
    // decides on the watch (decideOnFeed) or, failing that, ranks on the candidates read beside
    // its read (one round trip, not two, before the create). Any other free election reads
    // the candidates afresh after its read: if etcd refused the merged step, the candidates
    // may have been read alone before this node's registration, which would rank it last.
    let likelyFree = false;
    // A key the wait follows was just written (a new term, a term moved to us, a fence or a
    // hold): nothing about this candidate changed, so its registration is not written again
    // either, and a target's step from the move to its term is decided on the watch.
    let keyWritten = false;

    for (;;) {
      this.checkActive(signal, userSignal);
      let state: CampaignState;
      let ranking: Promise<CandidatesRead> | undefined;
      const afterWatchedChange = likelyFree || keyWritten;
      const rankNow = likelyFree;
      likelyFree = false;
      keyWritten = false;
      try {
        const fed = afterWatchedChange ? this.decideOnFeed(lastOwnToken) : undefined;
        if (fed) {
          state = fed.state;
          if (fed.ranking) ranking = Promise.resolve(fed.ranking);
        } else {
          const reading = this.registerAndRead(leaderKey, fenceKey, holdOffKey, driftKey, {
            keepUnchanged: afterWatchedChange,
          });
          if (rankNow) ranking = reading.candidates.then(rankable);
          state = await reading.state;
        }
      } catch (err) {
        await this.retryAfter(
          `reading ${this.identity}'s leader key and ${node}'s fence (registering ${node} as its candidate)`,
          err,
          signal,
        );
        continue;
      }
      this.checkActive(signal, userSignal);

      if (
        state.leader &&
        state.leader.record.leaseId === this.session.leaseId &&
        state.leader.token !== lastOwnToken &&
        state.transferred
      ) {
        // The key was moved to our lease by a transfer, which required the holder's
        // confirmed logout: we lead from its revision on, without waiting.
        const leadership = new Leadership(this, state.leader.token, state.leader.record, {
          record: lastSeen?.record ?? state.leader.record,
          token: lastSeen?.token ?? 0n,
          observedEndAt,
          transferred: true,
        });
        // The read that proved the transfer is the gate's when it found no login record at
        // all, as the move leaves it. Any record written since (even an unreadable one, which
        // the gate's own read holds shut on), and the gate reads for itself.
        if (!state.loginPresent) leadership.primeTransfer(state.revision);
        return this.begin(leadership, state.revision, signal, userSignal);
      }
      if (state.leader && state.leader.record.leaseId === this.session.leaseId) {
        // Our own earlier term whose resign did not reach etcd (or one not proven to be a
        // transfer): end it now, guarded by its token, and compete afresh, saying where
        // successors look whether it is logged out. A term of this session that is not known
        // to be logged in is out: an unconfirmed logout closes the session (so no campaign
        // runs on it), and a key moved to us we never adopted had no service of ours. Without
        // the record a successor would find the term's login record still saying "logged in",
        // on a session that lives on, and wait for ever (seen at 1,000 identities, when the
        // resign timed out under load).
        const token = String(state.leader.token);
        const ours = sessionTerms(this.session).get(this.identity);
        const loggedOut = !(ours && String(ours.token) === token && ours.loggedIn);
        const end: TermEnd = {
          token,
          node,
          leaseId: this.session.leaseId,
          how: 'resigned',
          loggedOut,
          holderTtlMs: this.session.timing.ttlMs,
          at: this.clock.wallMs(),
        };
        const login = state.login;
        // Our own login record of that term still saying "logged in": confirm it out too.
        const confirm =
          loggedOut && login?.record.token === token && login.record.node === node && login.record.loggedIn;
        try {
          await this.batcher.runIf(
            [
              [leaderKey, 'Mod', '==', token],
              ...(confirm ? [[this.keys.login(this.identity), 'Mod', '==', login.modRevision] as Guard] : []),
            ],
            [
              this.client.put(this.keys.termEnd(this.identity)).value(JSON.stringify(end)),
              this.client.delete().key(leaderKey),
              ...(confirm
                ? [
                    this.client
                      .put(this.keys.login(this.identity))
                      .value(JSON.stringify({ ...login.record, loggedIn: false, at: this.clock.wallMs() })),
                  ]
                : []),
            ],
          );
          this.retries.succeeded('campaign');
        } catch (err) {
          // Paused, not re-read at once: a refusal (RBAC) would otherwise spin on etcd.
          await this.retryAfter(
            `ending ${node}'s own stale term ${state.leader.token} of ${this.identity}`,
            err,
            signal,
          );
        }
        continue;
      }
      if (state.login && this.staleOwnLogin(state.login.record)) {
        // This session's login record says "logged in" for a term this session does not know
        // to be logged in: the write reached etcd but its answer did not (a timeout under
        // load), so the term went on as if the login had failed and started no service. No
        // service of this identity runs under this session while it campaigns (an unconfirmed
        // logout closes the session), so say it is out, guarded by the record's revision.
        // Left as it is, every successor — this node's next term too — waits for this session
        // to end, which a healthy agent's never does (one identity of 10,000 stuck for good).
        const { record, modRevision } = state.login;
        const loginKey = this.keys.login(this.identity);
        try {
          await this.batcher.runIf(
            [[loginKey, 'Mod', '==', modRevision]],
            [
              this.client
                .put(loginKey)
                .value(JSON.stringify({ ...record, loggedIn: false, at: this.clock.wallMs() })),
            ],
          );
          this.retries.succeeded('campaign');
        } catch (err) {
          await this.retryAfter(
            `confirming ${node}'s earlier term ${record.token} of ${this.identity} logged out (its login write timed out)`,
            err,
            signal,
          );
        }
        continue;
      }
      // Waiting on a watch counts as getting through once the watch is in place.
      const watching = () => this.retries.succeeded('campaign');
      if (state.fenced || state.heldOff || state.drifted) {
        const { error } = await this.waitForChange(
          [fenceKey, holdOffKey, driftKey],
          state.revision,
          signal,
          watching,
        );
        if (error)
          await this.retryAfter(
            `watching ${node}'s fence, hold-off and drift hold for ${this.identity}`,
            error,
            signal,
          );
        continue;
      }
      if (state.leader) {
        lastSeen = state.leader;
        observedEndAt = undefined;
        const keys = [leaderKey, fenceKey, holdOffKey, driftKey];
        const stopLapse = this.watchLapse(state.leader.record);
        const { change, error } = await this.waitForChange(keys, state.revision, signal, watching).finally(
          stopLapse,
        );
        if (change === 'delete' && lastSeen) {
          observedEndAt = this.clock.monotonicMs();
          likelyFree = true;
        }
        if (change === 'put') keyWritten = true;
        if (error)
          await this.retryAfter(
            `watching ${this.identity}'s leader key (held by ${lastSeen.record.node})`,
            error,
            signal,
          );
        continue;
      }

      // Free: stagger by rank, then try to create the key.
      const rank = decideRank(
        node,
        await (ranking ?? readCandidates(this.batcher, this.client, this.keys, this.identity)),
      );
      this.lastRank = rank;
      if (rank.problem) this.retries.failed('campaign', rank.problem.what, rank.problem.error);
      await this.clock.sleep(rank.waitMs, signal);
      this.checkActive(signal, userSignal);
      const record: LeaderRecord = {
        node,
        leaseId: this.session.leaseId,
        ttlMs: this.session.timing.ttlMs,
        mustBeOutByMs: this.session.timing.mustBeOutByMs,
        since: this.clock.wallMs(),
      };
      let result;
      try {
        // Merged with the other identities' writes of this moment (batch.ts), each guarded alone.
        result = await this.batcher.runIf(
          [
            [leaderKey, 'Create', '==', 0],
            [fenceKey, 'Create', '==', 0],
            [holdOffKey, 'Create', '==', 0],
            // Drift is checked here, in the transaction that makes the leader, not only advised.
            [driftKey, 'Create', '==', 0],
          ],
          [
            this.client.put(leaderKey).value(JSON.stringify(record)).lease(this.session.leaseId),
            // The login gate's first read, after the write: no round trip of its own (gate.ts).
            ...gateReadOps(
              this.client,
              this.keys,
              this.session.keys,
              this.identity,
              lastSeen?.record.leaseId,
            ),
          ],
        );
      } catch (err) {
        await this.retryAfter(`creating ${this.identity}'s leader key (it was free)`, err, signal);
        continue;
      }
      // A rank fault stays on show until a step gets through without one.
      if (!rank.problem) this.retries.succeeded('campaign');
      if (!result.succeeded) continue;
      // The leader key was written at the transaction's revision: that is our token.
      const token = BigInt(result.revision);
      const previous: PreviousTerm | undefined = lastSeen
        ? { ...lastSeen, observedEndAt, transferred: false }
        : undefined;
      const leadership = new Leadership(this, token, record, previous);
      leadership.primeGate({
        result: { revision: result.revision, responses: result.responses.slice(1) },
        receivedAt: this.clock.monotonicMs(),
      });
      return this.begin(leadership, result.revision, signal, userSignal);
    }
  }

  /**
   * Start a won term, or give it back: a campaign that must stop after winning resigns the
   * key at once, so other candidates are not left waiting for a leader that never acts.
   */
  private async begin(
    leadership: Leadership,
    revision: string,
    signal: AbortSignal,
    userSignal?: AbortSignal,
  ): Promise<Leadership> {
    try {
      await leadership.start(revision, signal);
      this.checkActive(signal, userSignal);
      if (!leadership.mayAct())
        throw new CampaignAbandonedError(`term ${leadership.token} of ${this.identity} ended at once`);
      return leadership;
    } catch (err) {
      // Not logged in yet: the term is confirmed out.
      await leadership.resign({ loggedOut: true });
      throw err;
    }
  }

  /**
   * While waiting on another holder, end its lease the moment it has provably lapsed, not
   * 0–500 ms later at etcd's expiry check (lapse.ts). Never this session's own lease.
   */
  private watchLapse(holder: LeaderRecord): () => void {
    if (holder.leaseId === this.session.leaseId) return () => undefined;
    let stop: (() => void) | undefined;
    let stopped = false;
    void this.peers.then(
      (peers) => {
        if (stopped) return;
        const lapses = LapseWatch.for(this.client, this.session.keys, peers, this.clock);
        stop = lapses.watch(holder.leaseId, holder.node, holder.ttlMs, (r) => this.opts.onLapse?.(r), {
          node: this.session.node,
          leaseId: this.session.leaseId,
        });
      },
      () => undefined,
    );
    return () => {
      stopped = true;
      stop?.();
    };
  }

  /** This node's candidate registration (on the session's lease), to write with the read. */
  private registration(): { put: IOperation; record: string } {
    const candidate: CandidateRecord = {
      node: this.session.node,
      leaseId: this.session.leaseId,
      ttlMs: this.session.timing.ttlMs,
      mustBeOutByMs: this.session.timing.mustBeOutByMs,
      priority: this.opts.priority ?? 0,
      healthy: this.opts.healthy?.() ?? true,
    };
    const record = JSON.stringify(candidate);
    const put = this.client
      .put(this.keys.candidate(this.identity, this.session.node))
      .value(record)
      .lease(this.session.leaseId);
    return { put, record };
  }

  /**
   * Stop being a candidate: remove this node's registration and, in the same step, read
   * whether a leaving leader handed this node a term meanwhile (giveBackHandedTerm). If etcd
   * cannot be reached the removal is retried in the background while the session may act (the
   * registration goes with the lease otherwise): a registration left on a live session would
   * draw hand-overs nobody here takes.
   */
  async unregister(): Promise<void> {
    this.registered = undefined;
    const key = this.keys.candidate(this.identity, this.session.node);
    try {
      // Unguarded, as always: an agent runs one campaign per identity at a time, so the
      // registration is this one's.
      const step = await this.batcher.run([this.client.delete().key(key), ...this.handedTermReads()], key);
      await this.giveBackHandedTerm(step.responses.slice(1));
    } catch {
      void this.withdrawLater(key);
    }
  }

  /**
   * The retry of a removal that failed, in the background: until it gets through, the session
   * ends, or a later campaign of this node registers again (then the registration is that
   * one's, and so is any term moved to it). Each removal compares the revision it just read,
   * so a registration written in between is never removed.
   */
  private async withdrawLater(key: string): Promise<void> {
    const stop = new AbortController();
    const onStop = () => stop.abort();
    this.session.once('must-stop', onStop);
    const current = () => candidatesOf(this.session).get(this.identity) === this && this.session.mayAct();
    try {
      for (let failures = 1; current(); failures++) {
        await this.clock.sleep(backoffMs(failures), stop.signal, { background: true });
        if (!current()) return;
        try {
          const kv = (await this.batcher.run([this.client.get(key)], key)).responses[0]?.response_range
            ?.kvs[0];
          if (!current()) return;
          if (kv)
            await this.batcher.runIf([[key, 'Mod', '==', kv.mod_revision]], [this.client.delete().key(key)]);
          const leaderKey = this.keys.leader(this.identity);
          await this.giveBackHandedTerm(
            (await this.batcher.run(this.handedTermReads(), leaderKey)).responses,
          );
          return;
        } catch {
          // Still unreachable: the next round tries again, as long as the session lives.
        }
      }
    } finally {
      this.session.off('must-stop', onStop);
    }
  }

  /**
   * A leaving leader may have handed this node a term just before its registration went: the
   * move compares the registration, so none lands after, and this read sees any that did.
   * Nobody here will run that term, and on this session's lease it would keep the identity
   * with nobody logged in until the session ends. It is given back the way a term that never
   * logged in resigns, so the standbys elect one now. Only a term moved here (the term-end
   * record says "transferred" at the key's revision) that no term of this session adopted,
   * with no login record since and no later registration of this node (whose campaign takes
   * it): the transaction compares all of it.
   */
  private async giveBackHandedTerm(responses: StepResult['responses']): Promise<void> {
    const { keys, client, session } = this;
    const candidateKey = keys.candidate(this.identity, session.node);
    const leaderKey = keys.leader(this.identity);
    const termEndKey = keys.termEnd(this.identity);
    const loginKey = keys.login(this.identity);
    const [leader, termEndKv, login] = responses.map((r) => r.response_range?.kvs[0]);
    if (!leader || !termEndKv || login) return;
    // A record that does not parse is no term moved here: the campaigns report it.
    const record = decodeOrUndefined(LeaderRecord, leader.value, leaderKey);
    const end = decodeOrUndefined(TermEnd, termEndKv.value, termEndKey);
    if (record?.leaseId !== session.leaseId || end?.how !== 'transferred') return;
    if (termEndKv.mod_revision !== leader.mod_revision) return;
    const adopted = sessionTerms(session).get(this.identity);
    if (adopted && String(adopted.token) === leader.mod_revision) return;
    const resigned: TermEnd = {
      token: leader.mod_revision,
      node: session.node,
      leaseId: session.leaseId,
      how: 'resigned',
      // No process of this node ran under the term: it was never adopted.
      loggedOut: true,
      holderTtlMs: session.timing.ttlMs,
      at: this.clock.wallMs(),
      actor: `${session.node} (no longer a candidate)`,
    };
    const { succeeded } = await this.batcher.runIf(
      [
        [candidateKey, 'Create', '==', 0],
        [leaderKey, 'Mod', '==', leader.mod_revision],
        [termEndKey, 'Mod', '==', termEndKv.mod_revision],
        [loginKey, 'Create', '==', 0],
      ],
      [client.put(termEndKey).value(JSON.stringify(resigned)), client.delete().key(leaderKey)],
    );
    if (succeeded) this.opts.onGaveBack?.({ token: leader.mod_revision, from: end.node });
  }

  /** What giveBackHandedTerm decides on: the leader key, the end-of-term record, the login record. */
  private handedTermReads(): IOperation[] {
    return [
      this.client.get(this.keys.leader(this.identity)),
      this.client.get(this.keys.termEnd(this.identity)),
      this.client.get(this.keys.login(this.identity)),
    ];
  }

  /**
   * Register (or refresh) this candidate and read, at the same revision, the leader key, this
   * node's fence, the end-of-term record, the hold-off, the login record and the drift hold: one step, merged
   * with other identities' steps into one transaction (batch.ts).
   */
  private registerAndRead(
    leaderKey: string,
    fenceKey: string,
    holdOffKey: string,
    driftKey: string,
    opts: { keepUnchanged?: boolean } = {},
  ): { state: Promise<CampaignState>; candidates: Promise<CandidateValues> } {
    const termEndKey = this.keys.termEnd(this.identity);
    const loginKey = this.keys.login(this.identity);
    const { put, record } = this.registration();
    // Right after the leader key went, an unchanged registration is not written again: the
    // step is then a read, which etcd answers without a raft commit (tens of ms on a loaded
    // cluster), on the path of every failover. Any other step refreshes it.
    const write = !(opts.keepUnchanged && record === this.registered);
    this.registered = undefined;
    const stepping = this.batcher.run(
      [
        ...(write ? [put] : []),
        this.client.get(leaderKey),
        this.client.get(fenceKey),
        this.client.get(termEndKey),
        this.client.get(holdOffKey),
        this.client.get(loginKey),
        this.client.get(driftKey),
      ],
      leaderKey,
    );
    // Asked in the same turn, so sent in the same transaction after the registration (unless
    // etcd refuses one of the steps: then each alone). A free election ranks on it; a later
    // step brings it up to date from the watch (decideOnFeed).
    const candidates = readCandidateValues(this.batcher, this.client, this.keys, this.identity);
    const state = stepping.then((step) => {
      this.registered = record;
      const responses = step.responses.slice(write ? 1 : 0);
      const kv = (i: number): KeyRead => {
        const found = responses[i]?.response_range?.kvs[0];
        return found && { value: found.value, modRevision: found.mod_revision };
      };
      const read: CampaignRead = {
        revision: BigInt(step.revision),
        keys: new Map([
          [leaderKey, kv(0)],
          [termEndKey, kv(2)],
          [holdOffKey, kv(3)],
          [loginKey, kv(4)],
          [driftKey, kv(5)],
        ]),
        fenced: kv(1) !== undefined,
      };
      const decided = this.stateOf(read);
      this.lastRead = read;
      void candidates.then((c) => {
        if (this.lastRead === read && !('unreadable' in c)) read.candidates = c;
      });
      return decided;
    });
    return { state, candidates };
  }

  /** What a campaign step decides on, from a read (or a read brought up to date by the watch). */
  private stateOf(read: CampaignRead): CampaignState {
    const node = this.session.node;
    const leaderKey = this.keys.leader(this.identity);
    const termEndKey = this.keys.termEnd(this.identity);
    const loginKey = this.keys.login(this.identity);
    const leaderKv = read.keys.get(leaderKey);
    const termEndKv = read.keys.get(termEndKey);
    const loginKv = read.keys.get(loginKey);
    const termEnd = decode(TermEnd, termEndKv?.value, termEndKey);
    return {
      /**
       * A transfer writes the leader key and the term-end record in one txn: the leader key
       * was transferred iff the record says so and was written at the key's revision.
       */
      transferred:
        leaderKv !== undefined &&
        termEndKv !== undefined &&
        termEnd?.how === 'transferred' &&
        termEndKv.modRevision === leaderKv.modRevision,
      revision: String(read.revision),
      leader: leaderKv
        ? {
            record: decode(LeaderRecord, leaderKv.value, leaderKey)!,
            // The leader key is written once per term: its mod revision is the token.
            token: BigInt(leaderKv.modRevision),
          }
        : undefined,
      fenced: read.fenced,
      heldOff: read.keys.get(this.keys.holdOff(this.identity, node)) !== undefined,
      login: loginOf(loginKv && { value: loginKv.value, mod_revision: loginKv.modRevision }, loginKey),
      loginPresent: loginKv !== undefined,
      drifted: read.keys.get(this.keys.drift(this.identity, node)) !== undefined,
    };
  }

  /**
   * The step after a change the campaign watched, decided on the watch instead of a read of
   * etcd: the last read with every change since applied is a read at the revision the watch
   * has delivered (feed.ts). One round trip fewer between a leader key's end and the create,
   * or between a term moved here and taking it. Only for those two steps — a term moved to
   * this node, a free key to create (whose transaction compares the key, the fence, the
   * hold-off and the drift hold again) — and only when a read would do nothing else: no
   * registration to write, no stale login of ours to confirm out. Anything else reads etcd.
   */
  private decideOnFeed(
    lastOwnToken: FencingToken | undefined,
  ): { state: CampaignState; ranking?: CandidatesRead } | undefined {
    const read = this.lastRead;
    if (!read || this.registration().record !== this.registered) return undefined;
    const seen = this.feed.changedSince(read.revision, [...read.keys.keys()]);
    if (!seen) return undefined;
    const now: CampaignRead = { revision: seen.revision, keys: new Map(read.keys), fenced: read.fenced };
    for (const [key, change] of seen.changes) now.keys.set(key, keyAfter(change));
    // The candidates from their own read, with the changes after it (their own revision).
    const prefix = this.keys.candidates(this.identity);
    const since = read.candidates;
    const candidatesSeen = since && this.feed.changedSince(since.revision, [], [prefix]);
    let ranking: CandidatesRead | undefined;
    if (since && candidatesSeen) {
      const values = new Map(since.values);
      for (const [key, change] of candidatesSeen.changes) {
        const after = keyAfter(change);
        if (after) values.set(key, after.value.toString());
        else values.delete(key);
      }
      ranking = rankable({ revision: candidatesSeen.revision, values });
    }
    let state: CampaignState;
    try {
      state = this.stateOf(now);
    } catch {
      return undefined; // a malformed record: the read reports it
    }
    const leader = state.leader;
    const movedHere =
      leader?.record.leaseId === this.session.leaseId && leader.token !== lastOwnToken && state.transferred;
    const free =
      ranking !== undefined &&
      !leader &&
      !state.fenced &&
      !state.heldOff &&
      !state.drifted &&
      !(state.login && this.staleOwnLogin(state.login.record));
    if (!movedHere && !free) return undefined;
    return { state, ...(ranking ? { ranking } : {}) };
  }

  /**
   * Wait for the first change of `keys` after `revision` on the shared feed, an abort, or a
   * reason to read again (with the feed's error when it is in trouble). `onWatching` is told
   * once the wait is in place.
   */
  private async waitForChange(
    keys: string[],
    revision: string,
    signal: AbortSignal,
    onWatching: () => void,
  ): Promise<{ change: 'put' | 'delete' | 'other'; error?: unknown }> {
    const waiting = this.feed.waitForChange(keys, BigInt(revision), signal);
    onWatching();
    return waiting;
  }
}

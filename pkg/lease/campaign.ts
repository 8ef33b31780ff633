// Campaigning for an identity and holding its leadership.
//
// A candidate registers itself (priority, health) under the identity, then loops:
//   read the leader key and its own fence →
//     fenced: wait for the fence to change;
//     led by another: watch until the key goes (or is transferred to us);
//     free: wait its stagger, then create the key if absent and not fenced (one txn).
// The fencing token is the revision of the write that made us leader.
//
// Free elections are staggered by rank, not by raw priority: each candidate reads the
// registered candidates, ranks the healthy ones (priority desc, then name) and waits
// rank × STAGGER_STEP_MS. The best live candidate tries first and wins unless it is slow by
// more than a step; a dead best candidate has no registration (its lease went with it), so
// no one waits for it. Unhealthy candidates rank after all healthy ones.
import type { Etcd3, IKeyValue, Watcher } from 'etcd3';
import {
  CLEARANCE_RECHECK_MS,
  decideClearance,
  type ClearanceFacts,
  type ClearanceVerdict,
  type EarlierTerm,
} from './clearance.js';
import { TypedEmitter } from './emitter.js';
import { ETCD_CALL_MS, within } from './etcd.js';
import {
  assertName,
  CandidateRecord,
  decode,
  FenceRecord,
  Keys,
  LeaderRecord,
  LoginRecord,
  TermEnd,
} from './keys.js';
import { PeerSessions } from './peers.js';
import type { Release, Session } from './session.js';

/** Gap between ranks in a free election: well above a txn round trip on a LAN. */
export const STAGGER_STEP_MS = 250;
/** Pause after a failed etcd call before the campaign loop reads again. */
const RETRY_MS = 200;
/**
 * How long a successor waits for its view of other sessions to catch up with a read that
 * found a holder's session gone. Past it, the read's own time is the (later, safe) bound.
 */
const PEER_CATCHUP_MS = 1_000;

export type FencingToken = bigint;

export class NotEligibleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotEligibleError';
  }
}

export class CampaignAbandonedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CampaignAbandonedError';
  }
}

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
}

/** Why a candidate is retrying instead of campaigning normally. */
export interface CampaignRetry {
  /** What failed, for the operator: "reading the candidates to rank this node", … */
  what: string;
  /** The error's message. */
  error: string;
  /** Wall-clock ms of the first failure of this streak. */
  since: number;
  /** Failed attempts in this streak. */
  attempts: number;
}

/** What a new leader knows about the term before its own. */
export interface PreviousTerm {
  record: LeaderRecord;
  token: FencingToken;
  /** performance.now() when this candidate saw that term end (undefined: it did not see it). */
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

/** Sleep that ends early on abort, leaving no listener behind (campaigns run for days). */
const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal?.addEventListener('abort', done, { once: true });
  });

export class Candidate {
  readonly keys: Keys;
  private readonly client: Etcd3;
  /**
   * This process's view of every agent's renewals, started at once: a successor can only
   * bound an earlier holder by renewals it saw before that holder's term ended.
   */
  readonly peers: Promise<PeerSessions>;
  /** Token of this candidate's latest term, so a stale leader key of ours is not re-adopted. */
  lastOwnToken: FencingToken | undefined;

  constructor(
    readonly session: Session,
    readonly opts: CandidateOptions,
  ) {
    assertName('identity', opts.identity);
    assertName('node', session.node);
    this.keys = opts.keys ?? new Keys();
    this.client = session.client;
    // Sessions live under the session's prefix, whatever prefix this identity's keys use.
    this.peers = PeerSessions.for(this.client, session.keys);
    this.peers.catch(() => undefined);
  }

  get identity(): string {
    return this.opts.identity;
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
    const abort = new AbortController();
    const onStop = () => abort.abort();
    signal?.addEventListener('abort', onStop, { once: true });
    this.session.on('must-stop', onStop);
    let won = false;
    try {
      const leadership = await this.loop(abort.signal, signal);
      won = true;
      return leadership;
    } finally {
      signal?.removeEventListener('abort', onStop);
      this.session.off('must-stop', onStop);
      abort.abort();
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

  private async loop(signal: AbortSignal, userSignal?: AbortSignal): Promise<Leadership> {
    const node = this.session.node;
    const leaderKey = this.keys.leader(this.identity);
    const fenceKey = this.keys.fence(node);
    const holdOffKey = this.keys.holdOff(this.identity, node);
    let lastSeen: { record: LeaderRecord; token: FencingToken } | undefined;
    // A term of ours that just ended (resigned) must not be adopted again as if transferred.
    const lastOwnToken = this.lastOwnToken;
    let observedEndAt: number | undefined;

    for (;;) {
      this.checkActive(signal, userSignal);
      let state;
      try {
        await this.register();
        state = await this.read(leaderKey, fenceKey, holdOffKey);
      } catch {
        await sleep(RETRY_MS, signal);
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
        return this.begin(leadership, state.revision, signal, userSignal);
      }
      if (state.leader && state.leader.record.leaseId === this.session.leaseId) {
        // Our own earlier term whose resign did not reach etcd (or one not proven to be a
        // transfer): end it now, guarded by its token, and compete afresh.
        await this.client
          .if(leaderKey, 'Mod', '==', String(state.leader.token))
          .then(this.client.delete().key(leaderKey))
          .options(within(ETCD_CALL_MS))
          .commit()
          .catch(() => undefined);
        continue;
      }
      if (state.fenced || state.heldOff) {
        await this.waitForChange([fenceKey, holdOffKey], state.revision, signal);
        continue;
      }
      if (state.leader) {
        lastSeen = state.leader;
        observedEndAt = undefined;
        const change = await this.waitForChange([leaderKey, fenceKey, holdOffKey], state.revision, signal);
        if (change === 'delete' && lastSeen) observedEndAt = performance.now();
        continue;
      }

      // Free: stagger by rank, then try to create the key.
      await sleep((await this.rank()) * STAGGER_STEP_MS, signal);
      this.checkActive(signal, userSignal);
      const record: LeaderRecord = {
        node,
        leaseId: this.session.leaseId,
        ttlMs: this.session.timing.ttlMs,
        mustBeOutByMs: this.session.timing.mustBeOutByMs,
        since: Date.now(),
      };
      let result;
      try {
        result = await this.client
          .if(leaderKey, 'Create', '==', 0)
          .and(fenceKey, 'Create', '==', 0)
          .and(holdOffKey, 'Create', '==', 0)
          .then(this.client.put(leaderKey).value(JSON.stringify(record)).lease(this.session.leaseId))
          .options(within(ETCD_CALL_MS))
          .commit();
      } catch {
        await sleep(RETRY_MS, signal);
        continue;
      }
      if (!result.succeeded) continue;
      // The txn is the only write in its revision: that revision is our token.
      const token = BigInt(result.header.revision);
      const previous: PreviousTerm | undefined = lastSeen
        ? { ...lastSeen, observedEndAt, transferred: false }
        : undefined;
      return this.begin(
        new Leadership(this, token, record, previous),
        result.header.revision,
        signal,
        userSignal,
      );
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

  private async register(): Promise<void> {
    const record: CandidateRecord = {
      node: this.session.node,
      leaseId: this.session.leaseId,
      ttlMs: this.session.timing.ttlMs,
      mustBeOutByMs: this.session.timing.mustBeOutByMs,
      priority: this.opts.priority ?? 0,
      healthy: this.opts.healthy?.() ?? true,
    };
    await this.client
      .put(this.keys.candidate(this.identity, this.session.node))
      .value(JSON.stringify(record))
      .lease(this.session.leaseId)
      .options(within(ETCD_CALL_MS));
  }

  /** Remove this candidate's registration (best effort: it also goes with the lease). */
  async unregister(): Promise<void> {
    await this.client
      .delete()
      .key(this.keys.candidate(this.identity, this.session.node))
      .options(within(ETCD_CALL_MS))
      .exec()
      .catch(() => undefined);
  }

  private async read(leaderKey: string, fenceKey: string, holdOffKey: string) {
    const termEndKey = this.keys.termEnd(this.identity);
    const result = await this.client
      .if(leaderKey, 'Create', '>', -1) // always true: a multi-get at one revision
      .then(
        this.client.get(leaderKey),
        this.client.get(fenceKey),
        this.client.get(termEndKey),
        this.client.get(holdOffKey),
      )
      .options(within(ETCD_CALL_MS))
      .commit();
    const leaderKv = result.responses[0]?.response_range?.kvs[0];
    const fenceKv = result.responses[1]?.response_range?.kvs[0];
    const termEndKv = result.responses[2]?.response_range?.kvs[0];
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
        termEndKv.mod_revision === leaderKv.mod_revision,
      revision: result.header.revision,
      leader: leaderKv
        ? {
            record: decode(LeaderRecord, leaderKv.value, leaderKey)!,
            // The leader key is written once per term: its mod revision is the token.
            token: BigInt(leaderKv.mod_revision),
          }
        : undefined,
      fenced: fenceKv !== undefined,
      heldOff: result.responses[3]?.response_range?.kvs[0] !== undefined,
    };
  }

  /** 0 for the best healthy candidate; unhealthy ones rank after every healthy one. */
  private async rank(): Promise<number> {
    const me = this.session.node;
    let all: CandidateRecord[];
    try {
      const raw = await this.client
        .getAll()
        .prefix(this.keys.candidates(this.identity))
        .options(within(ETCD_CALL_MS))
        .strings();
      all = Object.values(raw).flatMap((v) => {
        try {
          return [CandidateRecord.parse(JSON.parse(v))];
        } catch {
          return [];
        }
      });
    } catch {
      return 0;
    }
    const score = (c: CandidateRecord) => (c.healthy ? 0 : 1_000_000) - c.priority;
    all.sort((a, b) => score(a) - score(b) || a.node.localeCompare(b.node));
    const index = all.findIndex((c) => c.node === me);
    return index < 0 ? all.length : index;
  }

  /** Watch `keys` from `revision`+1; resolve on the first change (or watch error / abort). */
  async waitForChange(
    keys: string[],
    revision: string,
    signal: AbortSignal,
  ): Promise<'put' | 'delete' | 'other'> {
    const watchers: Watcher[] = [];
    let settled = false;
    let onAbort = () => undefined as void;
    try {
      return await new Promise<'put' | 'delete' | 'other'>((resolve) => {
        onAbort = () => resolve('other');
        if (signal.aborted) return resolve('other');
        signal.addEventListener('abort', onAbort, { once: true });
        for (const key of keys) {
          this.client
            .watch()
            .key(key)
            .startRevision(String(BigInt(revision) + 1n))
            .create()
            .then((watcher) => {
              // Created after the wait ended: cancel it at once, or it leaks for good.
              if (settled) return void watcher.cancel().catch(() => undefined);
              watchers.push(watcher);
              // A watch error (compaction, cancel) means: read again.
              watcher.on('error', () => resolve('other'));
              watcher.on('put', () => resolve(key === keys[0] ? 'put' : 'other'));
              watcher.on('delete', () => resolve(key === keys[0] ? 'delete' : 'other'));
            })
            .catch(() => resolve('other'));
        }
      });
    } finally {
      settled = true;
      signal.removeEventListener('abort', onAbort);
      for (const watcher of watchers) void watcher.cancel().catch(() => undefined);
    }
  }
}

/**
 * A term of leadership. Act only while `mayAct()` is true; before logging in, await
 * `clearance()` (S3: the previous term is confirmed out or its self-fence deadline passed).
 */
export class Leadership extends TypedEmitter<LeadershipEvents> {
  private ended: LeadershipEvents['lost'] | undefined;
  private watcher: Watcher | undefined;
  private loggedInValue = false;
  /** Held on the session from the first `setLoggedIn(true)` until the logout is confirmed. */
  private releaseHold: Release | undefined;
  /** Mod revision of this term's last login record write: it guards a late confirmation. */
  private loginRevision: string | undefined;
  private readonly endWaiters: Array<(e: LeadershipEvents['lost']) => void> = [];

  constructor(
    private readonly candidate: Candidate,
    readonly token: FencingToken,
    readonly record: LeaderRecord,
    readonly previous: PreviousTerm | undefined,
  ) {
    super();
  }

  get identity(): string {
    return this.candidate.identity;
  }
  get node(): string {
    return this.candidate.session.node;
  }
  get session(): Session {
    return this.candidate.session;
  }
  get key(): string {
    return this.candidate.keys.leader(this.identity);
  }
  get loggedIn(): boolean {
    return this.loggedInValue;
  }

  /**
   * Watch our own key: a deletion or a move ends the term even if the session lives. The
   * watch is created within ETCD_CALL_MS (or the campaign's abort): a leader that cannot watch
   * its key refuses the term rather than act blind.
   */
  async start(revision: string, signal?: AbortSignal): Promise<Leadership> {
    this.candidate.lastOwnToken = this.token;
    const onStop = () => this.end('session');
    this.session.on('must-stop', onStop);
    void this.whenLost().then(() => this.session.off('must-stop', onStop));
    if (!this.session.mayAct()) this.end('session');
    await this.watchOwnKey(BigInt(revision) + 1n, signal);
    return this;
  }

  private async watchOwnKey(fromRevision: bigint, signal?: AbortSignal): Promise<void> {
    if (this.ended) return;
    const pending = this.session.client.watch().key(this.key).startRevision(String(fromRevision)).create();
    let timer: NodeJS.Timeout | undefined;
    const gaveUp = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), ETCD_CALL_MS);
      signal?.addEventListener('abort', () => resolve(undefined), { once: true });
      void this.whenLost().then(() => resolve(undefined));
    });
    const watcher = await Promise.race([pending.catch(() => undefined), gaveUp]);
    clearTimeout(timer);
    if (!watcher || this.ended) {
      // Created late (or never): cancel whatever arrives, so no watch leaks.
      void pending.then((w) => w.cancel()).catch(() => undefined);
      if (!this.ended) this.end('session');
      throw new CampaignAbandonedError(
        `could not watch ${this.key} within ${ETCD_CALL_MS} ms after winning term ${this.token}; giving the term back`,
      );
    }
    this.watcher = watcher;
    watcher.on('delete', () => this.end('key-deleted'));
    // The key is written once per term: any later write is a new term (a transfer).
    watcher.on('put', (kv: IKeyValue) => {
      if (BigInt(kv.mod_revision) !== this.token) this.end('key-moved');
    });
    // A cancelled watch (compaction, server cancel) is gone for good: re-read, and if the key
    // is still ours watch again from that read; never carry on without a watch.
    watcher.on('error', () => void this.rewatch(watcher));
  }

  private async rewatch(broken: Watcher): Promise<void> {
    if (this.watcher !== broken || this.ended) return;
    this.watcher = undefined;
    void broken.cancel().catch(() => undefined);
    while (!this.ended) {
      try {
        const res = await this.session.client.get(this.key).options(within(ETCD_CALL_MS)).exec();
        const current = res.kvs[0];
        if (!current || BigInt(current.mod_revision) !== this.token) {
          this.end(current ? 'key-moved' : 'key-deleted');
          return;
        }
        await this.watchOwnKey(BigInt(res.header.revision) + 1n);
        return;
      } catch {
        // etcd unreachable: retry; the session's self-fence clock ends the term if it lasts.
        await sleep(RETRY_MS);
      }
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
    this.ended = { reason, at: Date.now() };
    void this.watcher?.cancel().catch(() => undefined);
    this.emit('lost', this.ended);
    for (const resolve of this.endWaiters.splice(0)) resolve(this.ended);
  }

  /**
   * The login gate (S3): resolves with the sentence that let this leader log in, once every
   * earlier term is proven over (clearance.ts); emits `waiting` with why while it is not.
   * Rejects if this term ends meanwhile.
   */
  async clearance(): Promise<string> {
    let shown: string | undefined;
    for (;;) {
      if (!this.mayAct()) {
        throw new CampaignAbandonedError(
          `term ${this.token} of ${this.identity} ended while waiting out the previous term`,
        );
      }
      let verdict;
      try {
        verdict = decideClearance(await this.clearanceFacts());
      } catch (err) {
        verdict = {
          proceed: false as const,
          reason: `cannot read the earlier term's state from etcd (${(err as Error).message}); not logging in until it can be read`,
          recheckInMs: CLEARANCE_RECHECK_MS,
        };
      }
      if (verdict.proceed) {
        if (!this.mayAct()) continue;
        return verdict.reason;
      }
      // Say it once per kind of wait, not at every re-read (the figures change each time).
      const gist = verdict.reason.replace(/\d+/g, '#');
      if (gist !== shown) {
        shown = gist;
        this.emit('waiting', { reason: verdict.reason });
      }
      await Promise.race([sleep(verdict.recheckInMs), this.whenLost()]);
    }
  }

  /** What the login gate would decide now (for status displays and tests). */
  async clearanceVerdict(): Promise<ClearanceVerdict> {
    return decideClearance(await this.clearanceFacts());
  }

  /** What the login gate decides on: one read at one revision, plus this node's sightings. */
  async clearanceFacts(): Promise<ClearanceFacts> {
    const client = this.session.client;
    const keys = this.candidate.keys;
    const sessionKeys = this.session.keys;
    const result = await client
      .if(this.key, 'Create', '>', -1) // always true: a multi-get at one revision
      .then(
        client.get(keys.termEnd(this.identity)),
        client.get(keys.login(this.identity)),
        client.getAll().prefix(sessionKeys.sessions()),
      )
      .options(within(ETCD_CALL_MS))
      .commit();
    const readAt = performance.now();
    const revision = BigInt(result.header.revision);
    const termEndKey = keys.termEnd(this.identity);
    const termEnd = decode(TermEnd, result.responses[0]?.response_range?.kvs[0]?.value, termEndKey);
    const login = decode(
      LoginRecord,
      result.responses[1]?.response_range?.kvs[0]?.value,
      keys.login(this.identity),
    );
    const present = new Set(
      (result.responses[2]?.response_range?.kvs ?? []).map((kv) =>
        kv.key.toString().slice(sessionKeys.sessions().length),
      ),
    );

    const terms: EarlierTerm[] = [];
    const prev = this.previous;
    if (prev) {
      terms.push({
        token: prev.token,
        node: prev.record.node,
        leaseId: prev.record.leaseId,
        ttlMs: prev.record.ttlMs,
        transferred: prev.transferred,
      });
    }
    // A term this node never saw (it started later, or missed a short term) that logged in.
    if (
      login?.loggedIn &&
      BigInt(login.token) !== this.token &&
      !terms.some((t) => String(t.token) === login.token)
    ) {
      terms.push({
        token: BigInt(login.token),
        node: login.node,
        leaseId: login.leaseId,
        ttlMs: login.ttlMs,
      });
    }

    const peers = await Promise.race([
      this.candidate.peers.catch(() => undefined),
      sleep(0).then(() => undefined),
    ]);
    const sessions = new Map<string, { present: boolean; lastSeenAt: number }>();
    for (const term of terms) {
      if (term.transferred || sessions.has(term.leaseId)) continue;
      if (present.has(term.leaseId)) {
        sessions.set(term.leaseId, { present: true, lastSeenAt: readAt });
        continue;
      }
      // Gone: every renewal came before this read, so its time bounds the last one; a
      // renewal we saw earlier bounds it tighter.
      const seen = await peers?.lastSeenUpTo(term.leaseId, revision, PEER_CATCHUP_MS);
      sessions.set(term.leaseId, { present: false, lastSeenAt: Math.min(readAt, seen ?? readAt) });
    }
    return {
      terms,
      ...(termEnd ? { termEnd: { token: termEnd.token, loggedOut: termEnd.loggedOut } } : {}),
      ...(login ? { login: { token: login.token, loggedIn: login.loggedIn } } : {}),
      sessions,
      now: performance.now(),
    };
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
    const loginKey = this.candidate.keys.login(this.identity);
    const value = JSON.stringify(this.loginRecord(loggedIn));
    if (loggedIn) this.releaseHold ??= this.session.hold();
    const fenceKey = this.candidate.keys.fence(this.node);
    const holdOffKey = this.candidate.keys.holdOff(this.identity, this.node);
    let txn = client.if(this.key, 'Mod', '==', String(this.token));
    if (loggedIn) txn = txn.and(fenceKey, 'Create', '==', 0).and(holdOffKey, 'Create', '==', 0);
    let result;
    try {
      result = await txn.then(client.put(loginKey).value(value)).options(within(ETCD_CALL_MS)).commit();
    } catch (err) {
      if (loggedIn && !this.loggedInValue) this.release();
      throw err;
    }
    if (!result.succeeded && !loggedIn && this.loginRevision !== undefined) {
      result = await client
        .if(loginKey, 'Mod', '==', this.loginRevision)
        .then(client.put(loginKey).value(value))
        .options(within(ETCD_CALL_MS))
        .commit();
    }
    if (!result.succeeded) {
      if (loggedIn && !this.loggedInValue) this.release();
      const still = await client.get(this.key).options(within(ETCD_CALL_MS)).exec();
      if (still.kvs[0] && BigInt(still.kvs[0].mod_revision) === this.token) {
        throw new FencedNodeError(this.node, this.identity);
      }
      this.end('key-moved');
      throw new StaleTokenError(this.identity, this.token);
    }
    this.loginRevision = result.header.revision;
    this.loggedInValue = loggedIn;
    if (!loggedIn) this.release();
  }

  private loginRecord(loggedIn: boolean): LoginRecord {
    return {
      node: this.node,
      token: String(this.token),
      loggedIn,
      at: Date.now(),
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
    const loginKey = this.candidate.keys.login(this.identity);
    const end: TermEnd = {
      token: String(this.token),
      node: this.node,
      leaseId: this.session.leaseId,
      how: 'resigned',
      loggedOut: opts.loggedOut,
      holderTtlMs: this.session.timing.ttlMs,
      at: Date.now(),
    };
    // A term that logged in and is now confirmed out says so where successors look first.
    const confirm = opts.loggedOut && this.loginRevision !== undefined;
    const confirmation = JSON.stringify(this.loginRecord(false));
    let ok = false;
    try {
      const result = await client
        .if(this.key, 'Mod', '==', String(this.token))
        .then(
          client.put(this.candidate.keys.termEnd(this.identity)).value(JSON.stringify(end)),
          client.delete().key(this.key),
          ...(confirm ? [client.put(loginKey).value(confirmation)] : []),
          // Until it campaigns again, the resigned node is no candidate: nobody waits for it.
          client.delete().key(this.candidate.keys.candidate(this.identity, this.node)),
        )
        .options(within(ETCD_CALL_MS))
        .commit();
      ok = result.succeeded;
      if (!ok && confirm) {
        // The key went first (revoked, moved, deleted): confirm on the login record alone.
        await client
          .if(loginKey, 'Mod', '==', this.loginRevision!)
          .then(client.put(loginKey).value(confirmation))
          .options(within(ETCD_CALL_MS))
          .commit();
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

export class FencedNodeError extends Error {
  constructor(
    readonly node: string,
    readonly identity: string,
  ) {
    super(
      `node ${node} is fenced, or held off ${identity} by a handover in progress: it may not log in as ${identity} ` +
        `until an operator unfences it or the handover ends`,
    );
    this.name = 'FencedNodeError';
  }
}

export class StaleTokenError extends Error {
  constructor(
    readonly identity: string,
    readonly token: FencingToken,
  ) {
    super(`fencing token ${token} of ${identity} is stale: a newer term holds the identity; stop acting`);
    this.name = 'StaleTokenError';
  }
}

export { FenceRecord };

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
import { TypedEmitter } from './emitter.js';
import { within } from './etcd.js';
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
import type { Session } from './session.js';

/** Gap between ranks in a free election: well above a txn round trip on a LAN. */
export const STAGGER_STEP_MS = 250;
/** Bound on each etcd call a campaign makes. */
const CALL_MS = 2_000;
/** Pause after a failed etcd call before the campaign loop reads again. */
const RETRY_MS = 200;

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
          .options(within(CALL_MS))
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
          .options(within(CALL_MS))
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
      .options(within(CALL_MS));
  }

  /** Remove this candidate's registration (best effort: it also goes with the lease). */
  async unregister(): Promise<void> {
    await this.client
      .delete()
      .key(this.keys.candidate(this.identity, this.session.node))
      .options(within(CALL_MS))
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
      .options(within(CALL_MS))
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
        .options(within(CALL_MS))
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
   * watch is created within CALL_MS (or the campaign's abort): a leader that cannot watch
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
      timer = setTimeout(() => resolve(undefined), CALL_MS);
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
        `could not watch ${this.key} within ${CALL_MS} ms after winning term ${this.token}; giving the term back`,
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
        const res = await this.session.client.get(this.key).options(within(CALL_MS)).exec();
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
   * How long (ms) this leader must wait before logging in, per S3. 0 when the previous term
   * confirmed its logout, was transferred, or ended by lease expiry with no recorded end (the
   * holder self-fenced before etcd could expire it); otherwise the previous holder's TTL from
   * when we saw the term end (revoked, resigned unconfirmed, or deleted under a live lease).
   */
  async clearanceWaitMs(): Promise<number> {
    const prev = this.previous;
    const client = this.session.client;
    let termEnd: TermEnd | undefined;
    try {
      termEnd = decode(
        TermEnd,
        await client.get(this.candidate.keys.termEnd(this.identity)).options(within(CALL_MS)).buffer(),
        'term-end',
      );
    } catch {
      termEnd = undefined;
    }
    if (!prev) {
      // We did not see the previous term end. Only a recent end without confirmed logout
      // (a revocation) can leave someone in: wait from the recorded time, on the writer's
      // clock, with an allowance for skew.
      if (termEnd && !termEnd.loggedOut) {
        return Math.max(0, termEnd.at + termEnd.holderTtlMs + CLOCK_SKEW_ALLOWANCE_MS - Date.now());
      }
      return 0;
    }
    if (prev.transferred) return 0;
    const observed = prev.observedEndAt ?? performance.now();
    const waitFrom = (ms: number) => Math.max(0, observed + ms - performance.now());
    if (termEnd && termEnd.token === String(prev.token)) {
      // The term's end was recorded (resigned, revoked): its word on the logout decides.
      return termEnd.loggedOut ? 0 : waitFrom(prev.record.ttlMs);
    }
    try {
      const ttl = await client.leaseClient.leaseTimeToLive(
        { ID: prev.record.leaseId, keys: false },
        within(CALL_MS),
      );
      // -1 with no recorded end: the lease expired, so its holder self-fenced before etcd
      // could expire it. Alive: the key was deleted under a live holder: wait it out.
      if (Number(ttl.TTL) < 0) return 0;
    } catch {
      // Unknown: assume the worst.
    }
    return waitFrom(prev.record.ttlMs);
  }

  /** Wait out the previous term (S3), abandoning if this term ends meanwhile. */
  async clearance(): Promise<void> {
    const ms = await this.clearanceWaitMs();
    if (ms > 0) await Promise.race([sleep(ms), this.whenLost()]);
    if (!this.mayAct())
      throw new CampaignAbandonedError(
        `term ${this.token} of ${this.identity} ended while waiting out the previous term`,
      );
  }

  /**
   * Record the login state, fenced by this term's token. The convention that makes the
   * record safe to act on: write `true` *before* starting the service (it covers logging in),
   * and `false` only once the service is confirmed stopped. A transfer and a revocation treat
   * `false` as the holder's confirmed logout.
   *
   * `true` is refused (FencedNodeError) while the node is fenced (S4) or held off this
   * identity: a fence written after this node won still keeps it from logging in.
   */
  async setLoggedIn(loggedIn: boolean): Promise<void> {
    const record: LoginRecord = { node: this.node, token: String(this.token), loggedIn, at: Date.now() };
    const client = this.session.client;
    const fenceKey = this.candidate.keys.fence(this.node);
    const holdOffKey = this.candidate.keys.holdOff(this.identity, this.node);
    let txn = client.if(this.key, 'Mod', '==', String(this.token));
    if (loggedIn) txn = txn.and(fenceKey, 'Create', '==', 0).and(holdOffKey, 'Create', '==', 0);
    const result = await txn
      .then(
        client
          .put(this.candidate.keys.login(this.identity))
          .value(JSON.stringify(record))
          .lease(this.session.leaseId),
      )
      .options(within(CALL_MS))
      .commit();
    if (!result.succeeded) {
      const still = await client.get(this.key).options(within(CALL_MS)).exec();
      if (still.kvs[0] && BigInt(still.kvs[0].mod_revision) === this.token) {
        throw new FencedNodeError(this.node, this.identity);
      }
      this.end('key-moved');
      throw new StaleTokenError(this.identity, this.token);
    }
    this.loggedInValue = loggedIn;
  }

  /**
   * End the term: record how it ended and delete the key in one txn guarded by this term.
   * `loggedOut: true` only once the service is confirmed stopped; a successor then logs in
   * without waiting. With `loggedOut: false` (the service could not be confirmed stopped)
   * the whole session is closed too: only the end of the lease bounds how long the service
   * may still run, and successors wait that out. Never throws; resolves false if the key was
   * no longer ours.
   */
  async resign(opts: { loggedOut: boolean }): Promise<boolean> {
    const client = this.session.client;
    const end: TermEnd = {
      token: String(this.token),
      node: this.node,
      leaseId: this.session.leaseId,
      how: 'resigned',
      loggedOut: opts.loggedOut,
      holderTtlMs: this.session.timing.ttlMs,
      at: Date.now(),
    };
    let ok = false;
    try {
      const result = await client
        .if(this.key, 'Mod', '==', String(this.token))
        .then(
          client.put(this.candidate.keys.termEnd(this.identity)).value(JSON.stringify(end)),
          client.delete().key(this.key),
          client.delete().key(this.candidate.keys.login(this.identity)),
          // Until it campaigns again, the resigned node is no candidate: nobody waits for it.
          client.delete().key(this.candidate.keys.candidate(this.identity, this.node)),
        )
        .options(within(CALL_MS))
        .commit();
      ok = result.succeeded;
    } catch {
      ok = false;
    }
    this.end('resigned');
    if (!opts.loggedOut) await this.session.close();
    return ok;
  }
}

/**
 * A successor that missed a revocation can only use the revoker's wall clock: allow for the
 * skew between two NTP-synchronised hosts (normally milliseconds) with a wide margin.
 */
const CLOCK_SKEW_ALLOWANCE_MS = 1_000;

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

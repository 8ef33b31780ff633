// The caller's side of an identity: send a request (signed when the caller has an nkey), read
// which term answered, and refuse answers from a stale term (S5): a resumed old leader's reply
// carries its old, lower token and is rejected rather than shown as current.
//
// Every request carries a fresh Understudy-Request-Id, and every reply is signed by the
// answering node over it (presence.ts). With a key source (`keys`), a reply whose signature
// does not verify is ignored: it is not returned, it never raises the stale-reply gate, and a
// core request keeps waiting for a verified answer. Without a key source nothing can be
// verified: replies are returned marked `verified: false`, and none of them raises the gate
// (so the gate protects nothing then; give the client a key source wherever it matters).
import {
  createInbox,
  headers as natsHeaders,
  ErrorCode as NatsErrorCode,
  NatsError,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from 'nats';
import { TokenGate } from '../lease/fenced.js';
import type { HeaderLookup } from './authenticator.js';
import {
  ClientClosedError,
  IdentityRequestError,
  IdentityTimeoutError,
  NoDurableInboxError,
  NoResponderError,
  StaleReplyError,
  TooManyOutstandingError,
  UnverifiedReplyError,
} from './client-errors.js';
import {
  memoKeys,
  msgHeaders,
  newRequestId,
  parseReplyHeaders,
  REQUEST_ID_PATTERN,
  verifyReply,
  type Expected,
  type NodeKeySource,
  type PresenceReply,
} from './presence.js';
import { signRequest } from './request-signing.js';
import { type ErrorCode, headers as H, MAX_REQUEST_BYTES, subjects } from './wire.js';

export { msgHeaders, type NodeKeySource, type TrustedNodeKey } from './presence.js';
// Every error the client throws is part of its API: callers catch them from here.
export * from './client-errors.js';
export { collectResponders, ResponderCollector, type PresenceAnswer } from './presence-probe.js';

/**
 * Default wait for a core reply. A little longer than the spec's default requestTimeoutMs
 * (5 s), so a slow service surfaces as the agent's `unavailable` reply, not as a timeout here.
 */
export const DEFAULT_TIMEOUT_MS = 6_000;
/**
 * Durable requests awaiting an answer, at most. Past it send() refuses (backpressure) rather
 * than forgetting one: a forgotten id would make its answer undeliverable.
 */
export const MAX_OUTSTANDING = 10_000;
/** An unanswered durable request is forgotten after this: the inbox's default maxAge, after which the server has discarded it. */
export const OUTSTANDING_TTL_MS = 24 * 3_600_000;

/** The NATS status code of "no one subscribes to the subject" (no-responders). */
const NO_RESPONDERS = 503;
const utf8 = new TextEncoder();

export interface IdentityReply {
  body: string;
  /** Fencing token of the term that answered. */
  token: bigint;
  node: string;
  /** Set when the identity refused or failed the request; `body` says why. */
  error?: ErrorCode;
  /** The node's signature over this reply was checked against a trusted key and holds. */
  verified: boolean;
}

export interface DurableReply extends IdentityReply {
  requestId: string;
}

/**
 * Read an identity's reply, unverified: the token and node headers are required (a reply that
 * cannot be fenced cannot be trusted); an error code this version does not know reads as
 * 'internal'. verifyReply (presence.ts) also checks the signature.
 */
export function parseReply(
  get: HeaderLookup,
  data: Uint8Array | string,
): { ok: true; reply: IdentityReply } | { ok: false; problem: string } {
  const parsed = parseReplyHeaders(get, data);
  return parsed.ok ? { ok: true, reply: toReply(parsed.reply) } : parsed;
}

const toReply = (r: PresenceReply): IdentityReply => ({
  body: r.body,
  token: r.token,
  node: r.node,
  ...(r.error !== undefined && { error: r.error }),
  verified: r.verified,
});

/**
 * Delivers each durable answer at most once: an id leaves the outstanding set when its first
 * fresh answer is delivered, so a re-sent answer finds nothing and is dropped. Pure, so its
 * rules are testable without NATS.
 */
export class DurableReplies {
  private readonly outstanding = new Map<string, number>();
  staleDropped = 0;
  duplicatesDropped = 0;
  malformedDropped = 0;
  /** Answers whose signature did not verify (a key source was given). */
  unverifiedDropped = 0;

  constructor(
    private readonly gate: TokenGate,
    private readonly limit = MAX_OUTSTANDING,
    private readonly ttlMs = OUTSTANDING_TTL_MS,
  ) {}

  get size(): number {
    return this.outstanding.size;
  }

  /** Record a request about to be sent; false when too many await answers. */
  expect(requestId: string, now = Date.now()): boolean {
    for (const [id, sentAt] of this.outstanding) {
      if (sentAt > now - this.ttlMs) break;
      this.outstanding.delete(id);
    }
    if (this.outstanding.has(requestId)) return true;
    if (this.outstanding.size >= this.limit) return false;
    this.outstanding.set(requestId, now);
    return true;
  }

  forget(requestId: string): void {
    this.outstanding.delete(requestId);
  }

  /**
   * Verify an answer (with `keys`; without, it is returned unverified) and accept it: the
   * answer to deliver, or undefined if it is malformed, forged, stale or already delivered.
   */
  async verify(
    identity: string,
    get: HeaderLookup,
    data: Uint8Array | string,
    keys: NodeKeySource | undefined,
  ): Promise<DurableReply | undefined> {
    const requestId = get(H.requestId);
    if (requestId === undefined || !REQUEST_ID_PATTERN.test(requestId) || !this.outstanding.has(requestId)) {
      // Not one of ours (or answered already): no key lookup for it.
      if (requestId !== undefined && REQUEST_ID_PATTERN.test(requestId)) this.duplicatesDropped++;
      else this.malformedDropped++;
      return undefined;
    }
    const parsed = await verifyReply(get, data, { identity, requestId, mode: 'durable' }, keys).catch(
      (err: Error) => ({ ok: false as const, problem: `no key to check it: ${err.message}`, lookup: true }),
    );
    if (!parsed.ok) {
      if (keys !== undefined && parseReplyHeaders(get, data).ok) this.unverifiedDropped++;
      else this.malformedDropped++;
      return undefined;
    }
    return this.accept(requestId, toReply(parsed.reply));
  }

  /** Accept a parsed answer to `requestId`: undefined if stale or already delivered. */
  accept(requestId: string, reply: IdentityReply): DurableReply | undefined {
    // Only a verified answer may raise the gate; an unverified one is only checked against it.
    const fresh = reply.verified ? this.gate.admit(reply.token) : reply.token >= this.gate.current;
    if (!fresh) {
      this.staleDropped++;
      return undefined;
    }
    if (!this.outstanding.delete(requestId)) {
      this.duplicatesDropped++;
      return undefined;
    }
    return { requestId, ...reply };
  }
}

export interface IdentityClientOptions {
  identity: string;
  /** Sign requests as this caller (its NATS user nkey seed, 'SU...'). Unsigned otherwise. */
  caller?: { name: string; seed: Uint8Array | string };
  timeoutMs?: number;
  /**
   * Where the nodes' public keys come from, to verify replies (e.g. the controller's
   * GET /v1/nodes, or a fixed map). Absent: replies are returned with verified: false and
   * never raise the stale-reply gate (see the top of this file).
   */
  keys?: NodeKeySource;
}

interface Waiter {
  resolve(reply: DurableReply): void;
  reject(err: Error): void;
}

export class IdentityClient {
  readonly identity: string;
  /** Where answers to this client's durable requests arrive. */
  readonly replySubject = createInbox();
  private readonly gate = new TokenGate();
  private readonly durable = new DurableReplies(this.gate);
  private readonly waiters = new Map<string, Waiter>();
  private readonly listeners = new Set<(reply: DurableReply) => void>();
  private readonly timeoutMs: number;
  private replySub: Subscription | undefined;
  private closed = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly opts: IdentityClientOptions,
  ) {
    this.identity = opts.identity;
    this.timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  }

  /** Durable answers dropped because a newer term had already answered. */
  get staleDropped(): number {
    return this.durable.staleDropped;
  }
  /** Durable answers dropped because their request was already answered (re-sent by the server). */
  get duplicatesDropped(): number {
    return this.durable.duplicatesDropped;
  }
  /** Durable answers ignored because their signature did not verify. */
  get unverifiedDropped(): number {
    return this.durable.unverifiedDropped;
  }
  /** Highest fencing token seen from this identity in a verified reply. */
  get highestToken(): bigint {
    return this.gate.current;
  }

  /**
   * Core request/reply. An error reply is returned, not thrown (see requestOk). With a key
   * source, answers that do not verify are ignored and the wait goes on for a verified one.
   */
  async request(command: string, opts: { timeoutMs?: number } = {}): Promise<IdentityReply> {
    const data = this.encode(command);
    const timeout = opts.timeoutMs ?? this.timeoutMs;
    const requestId = newRequestId();
    const hdrs = this.signedHeaders(data, requestId);
    hdrs.set(H.requestId, requestId);
    const expected: Expected = { identity: this.identity, requestId, mode: 'core' };
    const keys = this.opts.keys && memoKeys(this.opts.keys);
    const reply = await new Promise<IdentityReply>((resolve, reject) => {
      let problem: string | undefined;
      let settled = false;
      const inbox = createInbox();
      const finish = (fn: () => void) => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sub.unsubscribe();
        fn();
      };
      const timer = setTimeout(
        () =>
          finish(() =>
            reject(
              problem !== undefined
                ? new UnverifiedReplyError(this.identity, problem)
                : new IdentityTimeoutError(this.identity, timeout),
            ),
          ),
        timeout,
      );
      // Its own reply subject (not nc.request): a forged answer arriving first must not take
      // the place of the real one.
      const sub = this.nc.subscribe(inbox, {
        callback: (err, msg) => {
          if (err !== null || settled) return;
          if (msg.headers?.code === NO_RESPONDERS) {
            if (problem === undefined) finish(() => reject(new NoResponderError(this.identity)));
            return;
          }
          void verifyReply(msgHeaders(msg.headers), msg.data, expected, keys).then(
            (checked) => {
              if (checked.ok) finish(() => resolve(toReply(checked.reply)));
              else problem = checked.problem;
            },
            (e: Error) => (problem = `cannot look up the node's key: ${e.message}`),
          );
        },
      });
      this.nc.publish(subjects.identity(this.identity), data, { reply: inbox, headers: hdrs });
    });
    const fresh = reply.verified ? this.gate.admit(reply.token) : reply.token >= this.gate.current;
    if (!fresh) throw new StaleReplyError(this.identity, reply.token, this.gate.current);
    return reply;
  }

  /** Like request(), but an error reply throws IdentityRequestError. */
  async requestOk(command: string, opts: { timeoutMs?: number } = {}): Promise<IdentityReply> {
    const reply = await this.request(command, opts);
    if (reply.error !== undefined) throw new IdentityRequestError(reply.error, reply.body);
    return reply;
  }

  async ping(opts: { timeoutMs?: number } = {}): Promise<{ node: string; token: bigint }> {
    const { node, token } = await this.requestOk('PING', opts);
    return { node, token };
  }

  /**
   * Store a request in the identity's durable inbox. Resolves once JetStream acknowledged
   * storing it: from then on it is answered (onReply) or, at worst, expires from the inbox.
   * Re-sending with the same requestId stores it once (Nats-Msg-Id), so resend on a timeout.
   */
  async send(
    command: string,
    opts: { requestId?: string; timeoutMs?: number } = {},
  ): Promise<{ requestId: string }> {
    const requestId = opts.requestId ?? newRequestId();
    if (!REQUEST_ID_PATTERN.test(requestId)) {
      throw new Error(`requestId '${requestId}' must be 8-64 characters of [A-Za-z0-9_-]`);
    }
    const data = this.encode(command);
    this.subscribeReplies();
    // Expected before publishing: the answer may arrive before the store acknowledgement.
    if (!this.durable.expect(requestId)) throw new TooManyOutstandingError(this.identity, MAX_OUTSTANDING);
    // The nonce is the request id: the inbox's duplicate window then guards against replays,
    // which an in-memory cache could not do for a request that waits through a handover. The
    // reply-to is signed: a copy re-sent elsewhere cannot have its answer redirected.
    const hdrs = this.signedHeaders(data, requestId, this.replySubject);
    hdrs.set(H.requestId, requestId);
    hdrs.set(H.replyTo, this.replySubject);
    const timeout = opts.timeoutMs ?? this.timeoutMs;
    try {
      await this.nc
        .jetstream()
        .publish(subjects.inbox(this.identity), data, { msgID: requestId, headers: hdrs, timeout });
    } catch (err) {
      if (isNatsError(err, NatsErrorCode.NoResponders)) {
        this.durable.forget(requestId);
        throw new NoDurableInboxError(this.identity);
      }
      // Other failures leave the request expected: it may have been stored.
      if (isNatsError(err, NatsErrorCode.Timeout)) {
        throw new IdentityTimeoutError(
          this.identity,
          timeout,
          `the durable inbox of ${this.identity} did not confirm request ${requestId} within ${timeout} ms; ` +
            `it may be stored: send it again with the same requestId (it is stored once)`,
        );
      }
      throw err;
    }
    return { requestId };
  }

  /** Listen to every durable answer (each delivered once). Returns a function that stops listening. */
  onReply(listener: (reply: DurableReply) => void): () => void {
    this.assertOpen();
    this.subscribeReplies();
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** send(), then wait up to `timeoutMs` for the answer. */
  async requestDurable(
    command: string,
    timeoutMs: number,
    opts: { requestId?: string } = {},
  ): Promise<DurableReply> {
    const requestId = opts.requestId ?? newRequestId();
    let waiter!: Waiter;
    const answered = new Promise<DurableReply>((resolve, reject) => (waiter = { resolve, reject }));
    // close() may reject it while send() is still pending; the race below reports it.
    answered.catch(() => undefined);
    this.waiters.set(requestId, waiter);
    let timer: NodeJS.Timeout | undefined;
    try {
      await this.send(command, { requestId });
      const timedOut = new Promise<never>((_, reject) => {
        timer = setTimeout(
          () =>
            reject(
              new IdentityTimeoutError(
                this.identity,
                timeoutMs,
                `no answer to durable request ${requestId} from ${this.identity} within ${timeoutMs} ms; ` +
                  `it stays in the inbox and its answer will still reach onReply() listeners`,
              ),
            ),
          timeoutMs,
        );
      });
      return await Promise.race([answered, timedOut]);
    } finally {
      clearTimeout(timer);
      this.waiters.delete(requestId);
    }
  }

  /** Stop receiving durable answers; pending requestDurable calls reject. Idempotent. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.replySub?.unsubscribe();
    this.replySub = undefined;
    for (const w of this.waiters.values()) w.reject(new ClientClosedError(this.identity));
    this.waiters.clear();
    this.listeners.clear();
  }

  private subscribeReplies(): void {
    this.assertOpen();
    if (this.replySub !== undefined) return;
    // Subscribed on the connection that publishes the requests: the server sees the SUB before
    // any request, so no answer can arrive before we listen.
    this.replySub = this.nc.subscribe(this.replySubject, {
      callback: (err, msg) => {
        if (err === null) this.deliver(msg);
      },
    });
  }

  private deliver(msg: Msg): void {
    void this.durable
      .verify(this.identity, msgHeaders(msg.headers), msg.data, this.opts.keys)
      .then((reply) => reply !== undefined && this.hand(reply));
  }

  private hand(reply: DurableReply): void {
    this.waiters.get(reply.requestId)?.resolve(reply);
    for (const listener of this.listeners) {
      try {
        listener(reply);
      } catch {
        // A throwing listener must not stop the others or the subscription.
      }
    }
  }

  private encode(command: string): Uint8Array {
    this.assertOpen();
    const data = utf8.encode(command);
    if (data.length > MAX_REQUEST_BYTES) {
      throw new Error(
        `request is ${data.length} bytes; the limit is ${MAX_REQUEST_BYTES} — send less per request`,
      );
    }
    return data;
  }

  /** Signature headers (when the client has a caller key); the nonce is the request id. */
  private signedHeaders(data: Uint8Array, nonce: string, durableReplyTo?: string): MsgHdrs {
    const hdrs = natsHeaders();
    const caller = this.opts.caller;
    if (caller !== undefined) {
      const signed = signRequest({
        identity: this.identity,
        caller: caller.name,
        seed: caller.seed,
        body: data,
        nonce,
        delivery:
          durableReplyTo === undefined ? { mode: 'core' } : { mode: 'durable', replyTo: durableReplyTo },
      });
      for (const [name, value] of Object.entries(signed)) hdrs.set(name, value);
    }
    return hdrs;
  }

  private assertOpen(): void {
    if (this.closed) throw new ClientClosedError(this.identity);
  }
}

const isNatsError = (err: unknown, code: string) => err instanceof NatsError && err.code === code;

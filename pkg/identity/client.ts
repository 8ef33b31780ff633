// The caller's side of an identity: send a request (signed when the caller has an nkey), read
// which term answered, and refuse answers from a stale term (S5): a resumed old leader's reply
// carries its old, lower token and is rejected rather than shown as current.
import { setTimeout as sleep } from 'node:timers/promises';
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
import { NAME_PATTERN } from '../lease/keys.js';
import type { HeaderLookup } from './authenticator.js';
import { newNonce, signRequest } from './request-signing.js';
import { ErrorCode, headers as H, MAX_REQUEST_BYTES, subjects } from './wire.js';

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

const TOKEN_PATTERN = /^[0-9]{1,20}$/;
const REQUEST_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
const utf8 = new TextEncoder();
const text = new TextDecoder();

export interface IdentityReply {
  body: string;
  /** Fencing token of the term that answered. */
  token: bigint;
  node: string;
  /** Set when the identity refused or failed the request; `body` says why. */
  error?: ErrorCode;
}

export interface DurableReply extends IdentityReply {
  requestId: string;
}

export class NoResponderError extends Error {
  constructor(readonly identity: string) {
    super(
      `no one is logged in as ${identity} (nothing answers on ${subjects.identity(identity)}); ` +
        `check its leader with the controller, or retry after the failover completes`,
    );
    this.name = 'NoResponderError';
  }
}

export class IdentityTimeoutError extends Error {
  constructor(
    readonly identity: string,
    readonly timeoutMs: number,
    what = `no reply from ${identity} within ${timeoutMs} ms; the request may or may not have been handled — ` +
      `retry, or use a durable request (send/requestDurable) if the identity has a durable inbox`,
  ) {
    super(what);
    this.name = 'IdentityTimeoutError';
  }
}

export class StaleReplyError extends Error {
  constructor(
    readonly identity: string,
    readonly token: bigint,
    readonly highest: bigint,
  ) {
    super(
      `reply from ${identity} carries token ${token}, but a newer term (token ${highest}) already answered: ` +
        `it came from a stale leader and was rejected; retry the request`,
    );
    this.name = 'StaleReplyError';
  }
}

/** The identity answered with an error header (thrown by requestOk). */
export class IdentityRequestError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'IdentityRequestError';
  }
}

/** A reply lacked the headers every understudy reply carries. */
export class IdentityProtocolError extends Error {
  constructor(identity: string, problem: string) {
    super(
      `malformed reply from ${identity}: ${problem}; is an understudy agent of a compatible version answering?`,
    );
    this.name = 'IdentityProtocolError';
  }
}

export class NoDurableInboxError extends Error {
  constructor(readonly identity: string) {
    super(
      `${identity} has no durable inbox (no JetStream stream stores ${subjects.inbox(identity)}); ` +
        `set inbox.durable in its spec, or use request() instead`,
    );
    this.name = 'NoDurableInboxError';
  }
}

export class TooManyOutstandingError extends Error {
  constructor(identity: string, limit: number) {
    super(`${limit} durable requests to ${identity} still await answers; wait for some before sending more`);
    this.name = 'TooManyOutstandingError';
  }
}

export class ClientClosedError extends Error {
  constructor(identity: string) {
    super(`the client for ${identity} is closed; create a new IdentityClient`);
    this.name = 'ClientClosedError';
  }
}

/** Header lookup over a NATS message (missing headers read as undefined). */
export const msgHeaders =
  (hdrs: MsgHdrs | undefined): HeaderLookup =>
  (name) => {
    const v = hdrs?.get(name);
    return v === undefined || v === '' ? undefined : v;
  };

/**
 * Read an identity's reply: the token and node headers are required (a reply that cannot be
 * fenced cannot be trusted); an error code this version does not know reads as 'internal'.
 */
export function parseReply(
  get: HeaderLookup,
  data: Uint8Array | string,
): { ok: true; reply: IdentityReply } | { ok: false; problem: string } {
  const token = get(H.token);
  if (token === undefined || !TOKEN_PATTERN.test(token)) {
    return { ok: false, problem: `${H.token} header missing or not a decimal number` };
  }
  const node = get(H.node);
  if (node === undefined || !NAME_PATTERN.test(node)) {
    return { ok: false, problem: `${H.node} header missing or not a node name` };
  }
  const body = typeof data === 'string' ? data : text.decode(data);
  const reply: IdentityReply = { body, token: BigInt(token), node };
  const error = get(H.error);
  if (error !== undefined) {
    const code = ErrorCode.safeParse(error);
    reply.error = code.success ? code.data : 'internal';
  }
  return { ok: true, reply };
}

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

  /** The answer to deliver, or undefined if it is malformed, stale or already delivered. */
  accept(get: HeaderLookup, data: Uint8Array | string): DurableReply | undefined {
    const requestId = get(H.requestId);
    const parsed = parseReply(get, data);
    if (requestId === undefined || !parsed.ok) {
      this.malformedDropped++;
      return undefined;
    }
    if (!this.gate.admit(parsed.reply.token)) {
      this.staleDropped++;
      return undefined;
    }
    if (!this.outstanding.delete(requestId)) {
      this.duplicatesDropped++;
      return undefined;
    }
    return { requestId, ...parsed.reply };
  }
}

export interface IdentityClientOptions {
  identity: string;
  /** Sign requests as this caller (its NATS user nkey seed, 'SU...'). Unsigned otherwise. */
  caller?: { name: string; seed: Uint8Array | string };
  timeoutMs?: number;
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
  /** Highest fencing token seen from this identity. */
  get highestToken(): bigint {
    return this.gate.current;
  }

  /** Core request/reply. An error reply is returned, not thrown (see requestOk). */
  async request(command: string, opts: { timeoutMs?: number } = {}): Promise<IdentityReply> {
    const data = this.encode(command);
    const timeout = opts.timeoutMs ?? this.timeoutMs;
    let msg: Msg;
    try {
      msg = await this.nc.request(subjects.identity(this.identity), data, {
        timeout,
        headers: this.signedHeaders(data),
      });
    } catch (err) {
      if (isNatsError(err, NatsErrorCode.NoResponders)) throw new NoResponderError(this.identity);
      if (isNatsError(err, NatsErrorCode.Timeout)) throw new IdentityTimeoutError(this.identity, timeout);
      throw err;
    }
    const parsed = parseReply(msgHeaders(msg.headers), msg.data);
    if (!parsed.ok) throw new IdentityProtocolError(this.identity, parsed.problem);
    if (!this.gate.admit(parsed.reply.token)) {
      throw new StaleReplyError(this.identity, parsed.reply.token, this.gate.current);
    }
    return parsed.reply;
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
    const requestId = opts.requestId ?? newNonce();
    if (!REQUEST_ID_PATTERN.test(requestId)) {
      throw new Error(`requestId '${requestId}' must be 8-64 characters of [A-Za-z0-9_-]`);
    }
    const data = this.encode(command);
    this.subscribeReplies();
    // Expected before publishing: the answer may arrive before the store acknowledgement.
    if (!this.durable.expect(requestId)) throw new TooManyOutstandingError(this.identity, MAX_OUTSTANDING);
    // The nonce is the request id: the inbox's duplicate window then guards against replays,
    // which an in-memory cache could not do for a request that waits through a handover.
    const hdrs = this.signedHeaders(data, requestId);
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
    const requestId = opts.requestId ?? newNonce();
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
    const reply = this.durable.accept(msgHeaders(msg.headers), msg.data);
    if (reply === undefined) return;
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

  private signedHeaders(data: Uint8Array, nonce?: string): MsgHdrs {
    const hdrs = natsHeaders();
    const caller = this.opts.caller;
    if (caller !== undefined) {
      const signed = signRequest({
        identity: this.identity,
        caller: caller.name,
        seed: caller.seed,
        body: data,
        ...(nonce !== undefined && { nonce }),
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

/**
 * Every instance answering PING for `identity` within `windowMs`: more than one is a split
 * brain. Publishes one PING with its own reply subject (a core request would keep only the
 * first answer). Answers without valid token and node headers are not counted.
 */
export async function collectResponders(
  nc: NatsConnection,
  identity: string,
  windowMs: number,
): Promise<Array<{ node: string; token: bigint; error?: ErrorCode }>> {
  const inbox = createInbox();
  const found: Array<{ node: string; token: bigint; error?: ErrorCode }> = [];
  const sub = nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err !== null) return;
      const parsed = parseReply(msgHeaders(msg.headers), msg.data);
      // An instance answering with an error (its service does not respond) is still logged
      // in under the name: it counts as a responder, with its error.
      if (parsed.ok) {
        const { node, token, error } = parsed.reply;
        found.push({ node, token, ...(error ? { error } : {}) });
      }
    },
  });
  try {
    nc.publish(subjects.identity(identity), utf8.encode('PING'), { reply: inbox });
    await sleep(windowMs);
  } finally {
    sub.unsubscribe();
  }
  return found;
}

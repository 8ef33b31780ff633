// The logged-in instance on NATS: answers for the identity on its subject (and, when the
// spec opts in, consumes its durable inbox). Answers only between login and logout: the agent
// subscribes while its service logs in (the server's confirmation and the interest spreading
// over a NATS cluster overlap the login instead of following it), opens the responder once
// the service is in, and stops it (confirmed by the server) before it logs the service out,
// so the set of answering instances is always a subset of the logged-in nodes.
//
// Every message passes the access lists before any handler sees it; every reply carries the
// term's token, and nothing is answered once the term may no longer act (a resumed old
// leader stays silent; its clients would reject its stale token anyway).
import { randomUUID } from 'node:crypto';
import {
  headers as natsHeaders,
  type JsMsg,
  type Msg,
  type MsgHdrs,
  type NatsConnection,
  type Subscription,
} from 'nats';
import type { Logger } from 'pino';
import type { IdentitySpec } from '../spec/schema.js';
import type { UserSigner } from '../keys/index.js';
import { AnsweredRequests, storedRequest, type Answered } from './answered.js';
import { decide, needsReplayCheck } from './access.js';
import { RequestAuthenticator, type AuthenticateInput } from './authenticator.js';
import type { IdentityDriver, ServiceReply } from './driver.js';
import { ensureInbox } from './inbox.js';
import { REQUEST_ID_PATTERN, signReply, type DeliveryMode } from './presence.js';
import { natsReplayStore, ReplayGuard, type ReplayStore } from './replay.js';
import { ReasonLog } from './reason-log.js';
import {
  BUILTIN_VERBS,
  formatPong,
  headers as H,
  INBOX_CONSUMER,
  inboxStream,
  MAX_REQUEST_BYTES,
  parseCommand,
  subjects,
  type ErrorCode,
  type StatusReply,
} from './wire.js';

/** Messages pulled from the inbox per fetch: small, so a logout leaves few in flight. */
const INBOX_BATCH = 32;
/** How long one pull waits for messages; bounds how long a stop waits for the fetch loop. */
export const INBOX_FETCH_EXPIRES_MS = 1_000;
/** Budget for STATUS's question to the service. */
const STATUS_TIMEOUT_MS = 500;
/**
 * How long PING waits for the service to prove it is alive. Below the controller's smallest
 * probe timeout worth configuring, so a slow-but-working service still answers in time.
 */
const LIVENESS_TIMEOUT_MS = 250;
/** How long a login waits for NATS to confirm the identity's subscription. */
const START_CONFIRM_MS = 2_000;
/**
 * Requests held while the service logs in, answered once it is in. A login takes at most a
 * few seconds and callers PING a few times a second; beyond this a flood is dropped (no
 * answer, as when nobody leads) instead of growing memory.
 */
const MAX_HELD_REQUESTS = 256;

/**
 * Flush (a server round trip) within `ms`: true when confirmed. nats.js waits for a frozen
 * server until its ping timeout (seconds), longer than any logout budget.
 */
async function flushWithin(nc: NatsConnection, ms: number): Promise<boolean> {
  if (nc.isClosed()) return false;
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([
      nc.flush().then(
        () => true,
        () => false,
      ),
      new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), Math.max(0, ms)))),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * How long a durable request waits before it is offered again when it could not be checked
 * against the shared replay cache (NATS slow or away): long enough not to spin on it.
 */
const REPLAY_UNAVAILABLE_RETRY_MS = 2_000;

export { ensureInbox, InboxMismatchError } from './inbox.js';
export { AnsweredRequests } from './answered.js';

export interface ResponderContext {
  identity: string;
  node: string;
  token: bigint;
  /** Synchronous "may this term still act?"; checked before every reply. */
  mayAct(): boolean;
  /** The identity's current spec (access lists change live). */
  spec(): IdentitySpec;
  driver: IdentityDriver;
  /** Base STATUS fields the runner knows (up since, last failover). */
  status(): Omit<StatusReply, 'service' | 'now' | 'requestsServed'>;
  /** A verified caller on no list asked for something: record a pending authorization request. */
  onPending(pending: { name: string; nkey: string; request: string }): void;
  onRequest(outcome: 'served' | 'refused' | 'dropped' | 'failed'): void;
  logger: Logger;
}

interface Answer {
  body: string;
  error?: ErrorCode;
}

/** What a responder needs besides the term: the node's key and where nonces are recorded. */
export interface ResponderOptions {
  /** The node key registered in etcd for this agent's session: every reply is signed with it. */
  signer: UserSigner;
  /** The replay cache shared by every leader (default: the JetStream KV bucket on `nc`). */
  replayStore?: ReplayStore;
  /** The identity's answers on this node, shared by a term's responders (default: this one's own). */
  answered?: AnsweredRequests;
}

/** How a request arrived: core (reply subject of the message) or durable (from the inbox). */
type Arrival =
  | { mode: 'core' }
  | {
      mode: 'durable';
      storedAtMs: number;
      messageId: string | undefined;
      replyTo: string | undefined;
      seq: number;
    };

export class Responder {
  private sub: Subscription | undefined;
  private active = true;
  /** Opened once the service is in; requests that came earlier wait on `opening`. */
  private opened = false;
  private held = 0;
  private letIn!: () => void;
  private readonly opening = new Promise<void>((resolve) => (this.letIn = resolve));
  private served = 0;
  /** The durable requests this term answered, and their replies (answered.ts). */
  private readonly answered: AnsweredRequests;
  private copiesAnswered = 0;
  private inboxLoop: Promise<void> | undefined;
  private stopFetch: (() => void) | undefined;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly authenticator = new RequestAuthenticator();
  private readonly replay: ReplayGuard;

  private constructor(
    private readonly nc: NatsConnection,
    private readonly ctx: ResponderContext,
    private readonly servedBefore: number,
    private readonly opts: ResponderOptions,
  ) {
    this.replay = new ReplayGuard(opts.replayStore ?? natsReplayStore(nc));
    this.answered = (opts.answered ?? new AnsweredRequests()).forTerm(ctx.token);
  }

  /**
   * Check the durable inbox (when the spec has one: a stream that cannot be trusted refuses
   * the login, InboxMismatchError) and subscribe (confirmed by the server), answering nothing
   * until `open()`: called while the service logs in, so its login is not followed by a round
   * trip to NATS before the first answer.
   */
  static async subscribe(
    nc: NatsConnection,
    ctx: ResponderContext,
    servedBefore: number,
    opts: ResponderOptions,
  ): Promise<Responder> {
    // Checked before subscribing: a refused inbox means this term serves nothing at all.
    if (ctx.spec().inbox.durable) {
      try {
        await ensureInbox(nc, ctx.identity, ctx.spec().inbox);
      } catch (err) {
        ctx.logger.error({ identity: ctx.identity, err: (err as Error).message }, 'durable inbox refused');
        throw err;
      }
    }
    const r = new Responder(nc, ctx, servedBefore, opts);
    // No queue group: if two instances ever answered, a prober would count two replies.
    r.sub = nc.subscribe(subjects.identity(ctx.identity), {
      callback: (err, msg) => {
        if (!err) r.track(r.onCore(msg));
      },
    });
    // Not answering until the server has the subscription is only a delay; a server that does
    // not confirm it is a failed login (the caller logs the service out again).
    if (!(await flushWithin(nc, START_CONFIRM_MS))) {
      r.active = false;
      r.sub.unsubscribe();
      r.letIn();
      throw new Error(
        `NATS did not confirm the subscription to ${subjects.identity(ctx.identity)} within ${START_CONFIRM_MS} ms`,
      );
    }
    return r;
  }

  /** The service is in: answer what waited and what comes, and start consuming the inbox. */
  open(): void {
    if (!this.active || this.opened) return;
    this.opened = true;
    this.letIn();
    if (this.ctx.spec().inbox.durable) this.inboxLoop = this.consumeInbox();
  }

  /** Requests waiting for `open()` (a login in progress); they are answered, or dropped at stop. */
  get heldRequests(): number {
    return this.held;
  }

  /** Second deliveries of durable requests this term had answered: given the same reply, not served again. */
  get redeliveriesAnswered(): number {
    return this.copiesAnswered;
  }

  get requestsServed(): number {
    return this.servedBefore + this.served;
  }

  /**
   * Stop answering: unsubscribe (confirmed by a server round trip), stop pulling, let
   * requests in flight finish within `graceMs`. After this resolves the server sends this
   * instance nothing more for the identity.
   */
  async stop(graceMs: number): Promise<void> {
    if (!this.active) return;
    this.active = false;
    this.sub?.unsubscribe();
    // Held requests go on to find the responder inactive, and are left unanswered.
    this.letIn();
    this.stopFetch?.();
    const graceEnds = performance.now() + graceMs;
    const settled = Promise.all([flushWithin(this.nc, graceMs), this.inboxLoop, ...this.inFlight]);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([settled, new Promise((resolve) => (timer = setTimeout(resolve, graceMs)))]);
    clearTimeout(timer);
    // Acks written by handlers that just finished must reach the server before a successor
    // starts pulling, or it would be offered the same requests. Bounded by the same grace: a
    // frozen NATS must never hold up stopping the service (the request is then re-offered).
    await flushWithin(this.nc, Math.max(0, graceEnds - performance.now()));
  }

  private track(p: Promise<void>): void {
    this.inFlight.add(p);
    void p.finally(() => this.inFlight.delete(p));
  }

  /** Headers of a reply, signed with the node key (presence.ts). */
  private replyHeaders(body: Uint8Array, mode: DeliveryMode, requestId: string, error?: ErrorCode): MsgHdrs {
    const { identity, node, token } = this.ctx;
    const h = natsHeaders();
    h.set(H.identity, identity);
    h.set(H.token, String(token));
    h.set(H.node, node);
    if (error) h.set(H.error, error);
    if (requestId) h.set(H.requestId, requestId);
    const fields = { identity, node, token, requestId, mode, error: error ?? '' };
    h.set(H.replySignature, signReply(this.opts.signer, fields, body));
    return h;
  }

  private async onCore(msg: Msg): Promise<void> {
    if (!this.opened) {
      if (this.held >= MAX_HELD_REQUESTS) return this.ctx.onRequest('dropped');
      this.held++;
      await this.opening;
      this.held--;
    }
    const answer = await this.answer(msg.data, msg.headers, { mode: 'core' });
    // Re-checked after the handler: the term may have ended while it ran.
    if (typeof answer === 'string' || !msg.reply || !this.active || !this.ctx.mayAct()) return;
    const body = new TextEncoder().encode(answer.body);
    msg.respond(body, { headers: this.replyHeaders(body, 'core', requestIdOf(msg.headers), answer.error) });
  }

  /**
   * Decide and answer one request. 'drop': the access lists say answer nothing; 'inactive':
   * this instance may no longer answer, leave the request to the next leader; 'later': the
   * replay cache could not be asked, offer the durable request again later.
   */
  private async answer(
    data: Uint8Array,
    hdrs: MsgHdrs | undefined,
    arrival: Arrival,
  ): Promise<Answer | 'drop' | 'inactive' | 'later'> {
    if (!this.active || !this.ctx.mayAct()) return 'inactive';
    if (data.length > MAX_REQUEST_BYTES) {
      this.ctx.onRequest('refused');
      return { body: `request larger than ${MAX_REQUEST_BYTES} bytes`, error: 'bad-request' };
    }
    const body = new TextDecoder().decode(data);
    const { verb } = parseCommand(body);
    const header = (name: string) => hdrs?.get(name) || undefined;
    const spec = this.ctx.spec();
    // A durable request may wait in the inbox far longer than the clock window (a handover):
    // its age counts from when JetStream stored it, and the stream's duplicate window stops replays.
    const delivery: AuthenticateInput['delivery'] =
      arrival.mode === 'core'
        ? { mode: 'core' }
        : {
            mode: 'durable',
            storedAtMs: arrival.storedAtMs,
            messageId: arrival.messageId,
            replyTo: arrival.replyTo,
          };
    const auth = this.authenticator.authenticate({
      identity: this.ctx.identity,
      headers: header,
      body: data,
      delivery,
    });
    const claimed = { name: header(H.caller), key: header(H.key) };
    const decision = decide(spec.access, claimed, auth, verb, this.ctx.identity);
    if (decision.action === 'drop') {
      this.ctx.onRequest('dropped');
      return 'drop';
    }
    if (decision.action === 'refuse') {
      this.ctx.onRequest('refused');
      if (decision.pending) this.ctx.onPending({ ...decision.pending, request: body.slice(0, 200) });
      return { body: decision.message, error: decision.code };
    }
    if (needsReplayCheck(decision, auth) && auth.kind === 'verified') {
      // After the access lists: only listed callers' nonces are recorded (a flood of strangers
      // cannot fill the cache), and before acting: a replay is refused by every leader.
      const admitted = await this.replay.admit(
        { identity: this.ctx.identity, key: auth.key, nonce: auth.nonce, signedAt: auth.signedAt },
        arrival.mode === 'core' ? { mode: 'core', now: Date.now() } : { mode: 'durable', seq: arrival.seq },
      );
      if (!admitted.ok) {
        if (admitted.code === 'unavailable' && arrival.mode === 'durable') return 'later';
        this.ctx.onRequest('refused');
        return { body: `request not authenticated: ${admitted.reason}`, error: admitted.code };
      }
      if (!this.active || !this.ctx.mayAct()) return 'inactive';
    }
    if (verb === '') {
      this.ctx.onRequest('refused');
      return { body: 'empty request: send HELP for the list of commands', error: 'bad-request' };
    }
    const answer = await this.dispatch(verb, body, decision.caller, spec);
    this.ctx.onRequest(answer.error && answer.error !== 'bad-request' ? 'failed' : 'served');
    if (!answer.error) this.served++;
    return answer;
  }

  private async dispatch(
    verb: string,
    body: string,
    caller: string | undefined,
    spec: IdentitySpec,
  ): Promise<Answer> {
    switch (verb) {
      case 'PING':
        if (this.ctx.driver.alive && !(await this.ctx.driver.alive(LIVENESS_TIMEOUT_MS))) {
          return {
            body: `${this.ctx.identity} is logged in on ${this.ctx.node} but its service does not respond`,
            error: 'unavailable',
          };
        }
        return { body: formatPong(this.ctx.node, this.ctx.token) };
      case 'HELP':
        return { body: this.help(spec) };
      case 'STATUS':
        return { body: JSON.stringify(await this.status()) };
    }
    const reply: ServiceReply = await this.ctx.driver.handle(
      {
        id: `${this.ctx.token}-${Date.now()}-${Math.random().toString(36).slice(2, 10)}`,
        command: body,
        caller,
      },
      spec.requestTimeoutMs,
    );
    return reply;
  }

  private help(spec: IdentitySpec): string {
    const builtin: Record<(typeof BUILTIN_VERBS)[number], string> = {
      PING: 'presence check: answers PONG <node> <token>',
      HELP: 'this list',
      STATUS: 'up since, requests served, current term, last failover (contacts only)',
    };
    const lines = [`${this.ctx.identity} answers:`];
    for (const verb of BUILTIN_VERBS) lines.push(`  ${verb.padEnd(10)} ${builtin[verb]}`);
    for (const line of spec.help) lines.push(`  ${line}`);
    return lines.join('\n');
  }

  private async status(): Promise<StatusReply> {
    const service = await this.ctx.driver.status(STATUS_TIMEOUT_MS);
    return {
      ...this.ctx.status(),
      now: new Date().toISOString(),
      requestsServed: this.requestsServed,
      ...(Object.keys(service).length > 0 ? { service } : {}),
    };
  }

  private async consumeInbox(): Promise<void> {
    const js = this.nc.jetstream();
    const consumer = await js.consumers.get(inboxStream(this.ctx.identity), INBOX_CONSUMER);
    // A NATS outage fails every fetch the same way: one line when it begins, one when it ends.
    const fetchFailures = new ReasonLog(this.ctx.logger, 'fetching durable requests from the inbox');
    while (this.active) {
      let batch;
      try {
        batch = await consumer.fetch({ max_messages: INBOX_BATCH, expires: INBOX_FETCH_EXPIRES_MS });
        fetchFailures.ok();
      } catch (err) {
        fetchFailures.fail((err as Error).message);
        await new Promise((resolve) => setTimeout(resolve, INBOX_FETCH_EXPIRES_MS));
        continue;
      }
      this.stopFetch = () => batch.stop();
      for await (const m of batch) {
        if (!this.active || !this.ctx.mayAct()) {
          // Offer it to the next leader at once instead of after the ack wait.
          m.nak();
          continue;
        }
        await this.onInbox(m);
      }
      this.stopFetch = undefined;
    }
  }

  private async onInbox(m: JsMsg): Promise<void> {
    const replyTo = m.headers?.get(H.replyTo) || undefined;
    const requestId = requestIdOf(m.headers);
    const { token } = this.ctx;
    const stored = storedRequest(m.seq, m.info.timestampNanos);
    // A second delivery of a request this term answered, or is answering (answered.ts).
    const before = await this.answered.answerOf(token, stored);
    if (before) {
      if (!this.active || !this.ctx.mayAct()) {
        m.nak();
        return;
      }
      // The same reply again, which the caller's dedupe drops if the first arrived; no second
      // service call.
      this.copiesAnswered++;
      this.ctx.logger.debug(
        { identity: this.ctx.identity, seq: m.seq, requestId, deliveries: m.info.deliveryCount },
        'durable request delivered again after it was answered: the same reply sent again, not served twice',
      );
      if (before.reply)
        this.nc.publish(before.reply.to, before.reply.body, { headers: before.reply.headers });
      m.ack();
      return;
    }
    const serving = this.answered.serve(token, stored);
    let answered: Answered | undefined;
    try {
      const arrival: Arrival = {
        mode: 'durable',
        storedAtMs: Number(m.info.timestampNanos / 1_000_000),
        messageId: m.headers?.get('Nats-Msg-Id') || undefined,
        replyTo,
        seq: m.seq,
      };
      const answer = await this.answer(m.data, m.headers, arrival);
      if (answer === 'later') {
        m.nak(REPLAY_UNAVAILABLE_RETRY_MS);
        return;
      }
      if (answer === 'inactive' || !this.ctx.mayAct()) {
        // The term ended before or while handling: leave the request to the next leader.
        m.nak();
        return;
      }
      answered = {};
      if (answer !== 'drop' && replyTo) {
        const body = new TextEncoder().encode(answer.body);
        const headers = this.replyHeaders(body, 'durable', requestId, answer.error);
        headers.set(H.serve, randomUUID());
        this.nc.publish(replyTo, body, { headers });
        answered.reply = { to: replyTo, body, headers };
      }
      // Answered (or deliberately dropped): done for good. The answer was written before the
      // ack, so a crash in between re-delivers it (to the next term) and the client's dedupe
      // keeps it once; within this term a copy gets this same answer.
      m.ack();
    } finally {
      serving.done(answered);
    }
  }
}

/** The request id a reply echoes and signs: the caller's, if well formed ('' otherwise). */
function requestIdOf(hdrs: MsgHdrs | undefined): string {
  const id = hdrs?.get(H.requestId) ?? '';
  return REQUEST_ID_PATTERN.test(id) ? id : '';
}

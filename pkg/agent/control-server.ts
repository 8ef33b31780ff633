// The agent's side of the control plane: requests from the controller on
// `understudy.agent.<node>.control`. Nothing is done unless the request is signed by a key etcd
// says may send it (pkg/control/signing.ts, authority.ts) and, for a state-changing request,
// carries the active controller's term (pkg/control/term.ts). Both are judged on one bounded
// read of the controllers' keys in etcd.
import type { Etcd3 } from 'etcd3';
import type { Msg, NatsConnection, Subscription } from 'nats';
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import {
  controllersPrefix,
  readAuthority,
  trustedFor,
  type ControllerAuthority,
} from '../control/authority.js';
import {
  ControlError,
  fail,
  isMutating,
  ok,
  parseControlRequest,
  PROTOCOL_VERSION,
  type ControlReply,
  type ControlRequest,
} from '../control/protocol.js';
import { ControlNonces, judgeControlSignature } from '../control/signing.js';
import { judgeControllerTerm } from '../control/term.js';
import { subjects } from '../identity/wire.js';
import { within } from '../lease/etcd.js';

/**
 * Bound on the read of the controllers' keys and term before acting: well under the
 * controller's 2 s control timeout, so a refusal still reaches it as a reply.
 */
export const AUTHORITY_READ_MS = 1_000;

/** What the server does once a request is proven: the agent's own operations. */
export type ControlHandler = (request: ControlRequest) => Promise<unknown>;

export interface ControlServerDeps {
  node: string;
  /** This start of the agent (announced in heartbeats; requests are signed for it). */
  instance: string;
  nc: NatsConnection;
  etcd: Etcd3;
  logger: Logger;
  clock: Clock;
  /** Controller keys pinned in the agent's config (empty: etcd's registration suffices). */
  pinnedKeys: readonly string[];
  handle: ControlHandler;
}

/** Refusals worth a warning: someone sent what no controller of ours would. */
const WARN_CODES = new Set(['bad-request', 'incompatible-version', 'stale-controller', 'unauthenticated']);

export class ControlServer {
  private sub: Subscription | undefined;
  private readonly nonces = new ControlNonces();

  constructor(private readonly deps: ControlServerDeps) {}

  start(): void {
    this.sub = this.deps.nc.subscribe(subjects.control(this.deps.node), {
      callback: (err, msg) => {
        if (!err) void this.onRequest(msg);
      },
    });
  }

  stop(): void {
    this.sub?.unsubscribe();
  }

  private async onRequest(msg: Msg): Promise<void> {
    const { logger, node } = this.deps;
    const raw = new TextDecoder().decode(msg.data);
    logger.debug({ subject: msg.subject, request: raw.slice(0, 500) }, 'control request received');
    let reply: ControlReply;
    let v = PROTOCOL_VERSION;
    try {
      const request = parseControlRequest(raw, node);
      v = request.v;
      await this.authorize(request, msg, raw);
      reply = ok(await this.deps.handle(request), v);
    } catch (err) {
      const e = err instanceof ControlError ? err : new ControlError('failed', (err as Error).message);
      if (WARN_CODES.has(e.code)) {
        logger.warn(
          { code: e.code, err: e.message, signedBy: msg.headers?.get('Understudy-Control-Key') || undefined },
          'control request refused; nothing changed',
        );
      }
      reply = fail(e, v);
    }
    logger.debug({ reply }, 'control reply sent');
    if (msg.reply) msg.respond(new TextEncoder().encode(JSON.stringify(reply)));
  }

  /** Throws the refusal: unsigned, untrusted, replayed, stale, or etcd unreadable. */
  private async authorize(request: ControlRequest, msg: Msg, raw: string): Promise<void> {
    const authority = await this.readAuthority(request);
    const mutating = isMutating(request);
    const now = this.deps.clock.wallMs();
    const verdict = judgeControlSignature({
      headers: (name) => msg.headers?.get(name),
      body: raw,
      node: this.deps.node,
      instance: this.deps.instance,
      now,
      trusted: trustedFor(mutating, authority, this.deps.pinnedKeys),
      seen: (key, nonce) => this.nonces.seen(key, nonce),
    });
    if (!verdict.ok) {
      const key = msg.headers?.get('Understudy-Control-Key');
      // A valid live controller that is not the active one: say so plainly.
      if (mutating && key && authority.liveKeys.has(key) && key !== authority.activeKey) {
        throw new ControlError(
          'stale-controller',
          `${request.op} is signed by a controller that is not the active one; ignoring it. Nothing to do: the active controller sends its own requests`,
          'signature',
        );
      }
      throw verdict.error;
    }
    if (!this.nonces.remember(verdict.key, verdict.nonce, verdict.signedAt, now)) {
      throw new ControlError(
        'failed',
        `too many control requests within ${ControlNonces.MAX_REMEMBERED} nonces' memory; not done, ask again in a few seconds`,
      );
    }
    if (mutating) {
      const term = judgeControllerTerm(request, authority.term);
      if (!term.act) throw term.error;
    }
  }

  private async readAuthority(request: ControlRequest): Promise<ControllerAuthority> {
    try {
      const res = await this.deps.etcd
        .getAll()
        .prefix(controllersPrefix())
        .options(within(AUTHORITY_READ_MS))
        .exec();
      return readAuthority(
        res.kvs.map((kv) => ({
          key: kv.key.toString(),
          value: kv.value.toString(),
          modRevision: kv.mod_revision,
          lease: kv.lease,
        })),
      );
    } catch (err) {
      throw new ControlError(
        'failed',
        `cannot read the controllers' keys and term: etcd did not answer within ${AUTHORITY_READ_MS} ms ` +
          `(${(err as Error).message}); ${request.op} not done. The controller asks again; if this ` +
          `persists, check this agent's etcd endpoints`,
      );
    }
  }
}

// Who answers PING for an identity right now, each answer's signature checked (presence.ts):
// the probe behind the controller's split-brain and failover rules, the CLI's ping and watch,
// and tests. One PING with its own reply subject collects every answer, not only the first.
import { setTimeout as sleep } from 'node:timers/promises';
import { createInbox, headers as natsHeaders, type Msg, type NatsConnection, type Subscription } from 'nats';
import {
  memoKeys,
  msgHeaders,
  newRequestId,
  verifyReply,
  type Expected,
  type NodeKeySource,
} from './presence.js';
import { headers as H, subjects, type ErrorCode } from './wire.js';

/** The NATS status code of "no one subscribes to the subject" (no-responders). */
const NO_RESPONDERS = 503;

/** One answer to a presence probe. */
export interface PresenceAnswer {
  node: string;
  token: bigint;
  error?: ErrorCode;
  /** Its signature verified under the node's trusted key. */
  verified: boolean;
  /** The session lease of that key, when the key source knows it. */
  lease?: string;
  /** When the answer arrived, on the caller's `now` clock (only when one was given). */
  receivedAt?: number;
}

/** What a probe is told besides the answers. */
export interface ProbeOptions {
  keys?: NodeKeySource;
  ignored?: (problem: string) => void;
  /** Stamp each answer with its arrival on this clock (an answer may come long after the PING). */
  now?: () => number;
}

/**
 * Every instance answering PING for `identity` within `windowMs`: more than one is a split
 * brain. Publishes one PING with its own reply subject and request id (a core request would
 * keep only the first answer). Answers without valid token and node headers are not counted.
 * With `keys`, only answers whose signature verifies are returned (forged ones are counted in
 * `ignored`); without, every answer comes back with verified: false. A key source that throws
 * makes this reject: the probe then proves nothing, which is not the same as "no answer".
 */
export async function collectResponders(
  nc: NatsConnection,
  identity: string,
  windowMs: number,
  opts: ProbeOptions = {},
): Promise<PresenceAnswer[]> {
  const inbox = createInbox();
  const probe = new Probe(identity, opts);
  const sub = nc.subscribe(inbox, { callback: (err, msg) => err === null && probe.take(msg) });
  try {
    return await probe.run(nc, inbox, windowMs);
  } finally {
    sub.unsubscribe();
  }
}

/**
 * PINGs sent one after another (a sampler's) collected through one subscription: each PING's
 * reply subject is this collector's inbox and a number. A subscription per PING costs a
 * subscribe and an unsubscribe, each spread to every server of a NATS cluster; at a hundred
 * PINGs a second that churn is a load of its own on the machine whose failover is measured.
 */
export class ResponderCollector {
  private readonly prefix = createInbox();
  private readonly open = new Map<string, Probe>();
  private readonly sub: Subscription;
  private next = 0;
  private closed = false;

  constructor(private readonly nc: NatsConnection) {
    this.sub = nc.subscribe(`${this.prefix}.*`, {
      callback: (err, msg) => {
        if (err === null) this.open.get(msg.subject.slice(this.prefix.length + 1))?.take(msg);
      },
    });
  }

  /** As collectResponders: every answer to one PING of `identity` within `windowMs`. */
  async collect(identity: string, windowMs: number, opts: ProbeOptions = {}): Promise<PresenceAnswer[]> {
    // No answer could reach a closed collector: a PING sent now would prove nothing.
    if (this.closed) throw new Error(`PING of ${identity}: this collector was closed (make a new one)`);
    const id = String(this.next++);
    const probe = new Probe(identity, opts);
    this.open.set(id, probe);
    try {
      return await probe.run(this.nc, `${this.prefix}.${id}`, windowMs);
    } finally {
      this.open.delete(id);
    }
  }

  /** Stop listening: answers of PINGs still open are dropped. */
  close(): void {
    this.closed = true;
    this.sub.unsubscribe();
  }
}

/** One PING and the answers to it that arrive on its reply subject within its window. */
class Probe {
  private readonly requestId = newRequestId();
  private readonly expected: Expected;
  private readonly keys: NodeKeySource | undefined;
  private readonly checks: Array<Promise<PresenceAnswer | undefined>> = [];
  private closed = false;

  constructor(
    private readonly identity: string,
    private readonly opts: ProbeOptions,
  ) {
    this.expected = { identity, requestId: this.requestId, mode: 'core' };
    this.keys = opts.keys && memoKeys(opts.keys);
  }

  take(msg: Msg): void {
    if (this.closed || msg.headers?.code === NO_RESPONDERS) return;
    const { opts } = this;
    const receivedAt = opts.now?.();
    this.checks.push(
      verifyReply(msgHeaders(msg.headers), msg.data, this.expected, this.keys).then((checked) => {
        if (!checked.ok) {
          opts.ignored?.(checked.problem);
          return undefined;
        }
        // An instance answering with an error (its service does not respond) is still
        // logged in under the name: it counts as a responder, with its error.
        const { node, token, error, verified, lease } = checked.reply;
        return {
          node,
          token,
          verified,
          ...(error !== undefined && { error }),
          ...(lease !== undefined && { lease }),
          ...(receivedAt !== undefined && { receivedAt }),
        };
      }),
    );
  }

  async run(nc: NatsConnection, reply: string, windowMs: number): Promise<PresenceAnswer[]> {
    try {
      const hdrs = natsHeaders();
      hdrs.set(H.requestId, this.requestId);
      nc.publish(subjects.identity(this.identity), new TextEncoder().encode('PING'), {
        reply,
        headers: hdrs,
      });
      await sleep(windowMs);
      // Answers that arrived while this process was busy wait in the socket, and the expired
      // timer runs before they are read: let the event loop read them before closing the window.
      await new Promise((resolve) => setImmediate(resolve));
    } finally {
      this.closed = true;
    }
    const answers = await Promise.all(this.checks);
    return answers.filter((a): a is PresenceAnswer => a !== undefined);
  }
}

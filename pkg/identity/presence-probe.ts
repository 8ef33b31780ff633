// Who answers PING for an identity right now, each answer's signature checked (presence.ts):
// the probe behind the controller's split-brain and failover rules, the CLI's ping and watch,
// and tests. One PING with its own reply subject collects every answer, not only the first.
import { setTimeout as sleep } from 'node:timers/promises';
import { createInbox, headers as natsHeaders, type NatsConnection } from 'nats';
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
  opts: {
    keys?: NodeKeySource;
    ignored?: (problem: string) => void;
    /** Stamp each answer with its arrival on this clock (an answer may come long after the PING). */
    now?: () => number;
  } = {},
): Promise<PresenceAnswer[]> {
  const inbox = createInbox();
  const requestId = newRequestId();
  const expected: Expected = { identity, requestId, mode: 'core' };
  const keys = opts.keys && memoKeys(opts.keys);
  const checks: Array<Promise<PresenceAnswer | undefined>> = [];
  const sub = nc.subscribe(inbox, {
    callback: (err, msg) => {
      if (err !== null || msg.headers?.code === NO_RESPONDERS) return;
      const receivedAt = opts.now?.();
      checks.push(
        verifyReply(msgHeaders(msg.headers), msg.data, expected, keys).then((checked) => {
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
    },
  });
  try {
    const hdrs = natsHeaders();
    hdrs.set(H.requestId, requestId);
    nc.publish(subjects.identity(identity), new TextEncoder().encode('PING'), {
      reply: inbox,
      headers: hdrs,
    });
    await sleep(windowMs);
    // Answers that arrived while this process was busy wait in the socket, and the expired
    // timer runs before they are read: let the event loop read them before closing the window.
    await new Promise((resolve) => setImmediate(resolve));
  } finally {
    sub.unsubscribe();
  }
  const answers = await Promise.all(checks);
  return answers.filter((a): a is PresenceAnswer => a !== undefined);
}

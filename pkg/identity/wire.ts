// What travels on NATS for an identity: subjects, headers, and the shape of requests and
// replies. Callers, agents and the controller all read this one file, so they agree.
//
// A request is one line of text, `VERB args...` (verbs are case-insensitive), sent with core
// request/reply to the identity's subject, or published to its durable inbox (JetStream).
// A reply is text; the headers say which term answered (token, node), whether it is an error,
// and carry the node's signature over all that (presence.ts). Callers authenticate by signing
// with their NATS nkey (request-signing.ts, access.ts).
import { z } from 'zod';

export const SUBJECT_ROOT = 'understudy';

export const subjects = {
  /** Core request/reply: PING, HELP, STATUS and the service's own commands. */
  identity: (identity: string) => `${SUBJECT_ROOT}.id.${identity}`,
  /** Durable inbox (JetStream work queue), when the identity's spec opts in. */
  inbox: (identity: string) => `${SUBJECT_ROOT}.inbox.${identity}`,
  /** Control requests from the controller to one agent (see pkg/control). */
  control: (node: string) => `${SUBJECT_ROOT}.agent.${node}.control`,
  /** Agent heartbeats (published, never requested). */
  heartbeat: (node: string) => `${SUBJECT_ROOT}.agent.${node}.heartbeat`,
  heartbeats: () => `${SUBJECT_ROOT}.agent.*.heartbeat`,
} as const;

/** JetStream stream holding an identity's durable inbox. Stream names allow no dots. */
export const inboxStream = (identity: string) =>
  `UNDERSTUDY_INBOX_${identity.replace(/[^A-Za-z0-9_-]/g, '_')}`;
/** The one durable consumer of an inbox; only the logged-in node pulls from it. */
export const INBOX_CONSUMER = 'leader';

export const headers = {
  // Request authentication (access.ts).
  caller: 'Understudy-Caller',
  key: 'Understudy-Key',
  time: 'Understudy-Time',
  nonce: 'Understudy-Nonce',
  signature: 'Understudy-Signature',
  // Where a durable request's answer goes (signed by the caller, request-signing.ts).
  replyTo: 'Understudy-Reply-To',
  // The id a request's answer must carry back, chosen by the caller for every request (core
  // and durable; a signed request's nonce, and a durable request's Nats-Msg-Id). The reply
  // signature covers it, so an old answer cannot pass for the answer to a new request.
  requestId: 'Understudy-Request-Id',
  // Replies.
  identity: 'Understudy-Identity',
  token: 'Understudy-Token',
  node: 'Understudy-Node',
  error: 'Understudy-Error',
  /** The answering node's signature over the reply (presence.ts). */
  replySignature: 'Understudy-Reply-Signature',
  /**
   * A durable reply's serve id, new each time the request is served: a reply sent again to a
   * second delivery (answered.ts) keeps it, so an observer tells one answer sent twice from a
   * request served twice. Not signed: it says nothing a caller relies on.
   */
  serve: 'Understudy-Serve',
} as const;

/** Error codes carried in the `Understudy-Error` header of a reply; the body explains. */
export const ErrorCode = z.enum([
  /** Signature missing where needed, invalid, outside the clock window, or replayed. */
  'unauthenticated',
  /** Authenticated, but not allowed to use this command (a pending request may be recorded). */
  'not-authorized',
  /** STATUS and admin commands are for the identity's contacts only. */
  'not-a-contact',
  'unknown-command',
  'bad-request',
  /** The service could not answer (crashed, logging out, timed out). Safe to retry. */
  'unavailable',
  'internal',
]);
export type ErrorCode = z.infer<typeof ErrorCode>;

/** Commands every logged-in identity answers itself, before the service sees anything. */
export const BUILTIN_VERBS = ['PING', 'HELP', 'STATUS'] as const;
/** Built-in commands anyone not blocked may send (presence must work for probes). */
export const OPEN_VERBS: ReadonlySet<string> = new Set(['PING', 'HELP']);
/** Built-in commands for contacts only. */
export const CONTACT_VERBS: ReadonlySet<string> = new Set(['STATUS']);

export const MAX_REQUEST_BYTES = 64 * 1024;

/** Split a request line into its verb (upper-cased) and the rest. */
export function parseCommand(body: string): { verb: string; args: string } {
  const line = body.trim();
  const space = line.search(/\s/);
  const verb = (space < 0 ? line : line.slice(0, space)).toUpperCase();
  const args = space < 0 ? '' : line.slice(space + 1).trim();
  return { verb, args };
}

/** PONG body: `PONG <node> <token>` (the headers carry the same). */
export const formatPong = (node: string, token: bigint) => `PONG ${node} ${token}`;

/** What STATUS returns (JSON body); services may add fields under `service`. */
export const StatusReply = z.object({
  identity: z.string(),
  node: z.string(),
  token: z.string(),
  upSince: z.string(),
  now: z.string(),
  requestsServed: z.number().int().nonnegative(),
  lastFailover: z
    .object({ at: z.string(), fromNode: z.string().optional(), fromToken: z.string().optional() })
    .nullable(),
  service: z.record(z.string(), z.unknown()).optional(),
});
export type StatusReply = z.infer<typeof StatusReply>;

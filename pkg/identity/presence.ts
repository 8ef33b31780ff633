// Signed presence: every reply from a logged-in instance (PONGs, errors, service answers, core
// and durable) carries the node's signature over who answered (identity, node, token), which
// request it answers (the request id the caller chose) and how (core or durable), plus the
// body digest. Anyone can subscribe to an identity's subject and answer PING; only the agent
// holding the node key registered in etcd for its live session can sign (pkg/keys). So a
// verifier that knows the node keys ignores forged answers, and an old PONG cannot pass for a
// fresh one (the request id is new for every request).
//
// Pure: the key lookup is a function the caller passes (etcd for the controller, the
// controller's API or --trust-node-key for the CLI, anything for library users).
import { randomBytes } from 'node:crypto';
import type { MsgHdrs } from 'nats';
import { signFields, verifyFields, type UserSigner } from '../keys/index.js';
import { NAME_PATTERN } from '../lease/keys.js';
import type { HeaderLookup } from './authenticator.js';
import { ErrorCode, headers as H } from './wire.js';

/**
 * The kind line of a reply signature (pkg/keys/signed.ts): a signature made for a reply never
 * verifies as anything else, and a later layout gets a new name instead of a silent change.
 */
export const REPLY_SIGNATURE_KIND = 'understudy-reply-v1';

/** Header lookup over a NATS message (missing headers read as undefined). */
export const msgHeaders =
  (hdrs: MsgHdrs | undefined): HeaderLookup =>
  (name) => {
    const v = hdrs?.get(name);
    return v === undefined || v === '' ? undefined : v;
  };

/** A request id is 8-64 characters of [A-Za-z0-9_-] (a nonce, or a durable message id). */
export const REQUEST_ID_PATTERN = /^[A-Za-z0-9_-]{8,64}$/;
const REQUEST_ID_BYTES = 16;
/** A fresh random request id (also valid as a nonce). */
export const newRequestId = () => randomBytes(REQUEST_ID_BYTES).toString('base64url');

/**
 * A fencing token is an etcd revision: a positive int64. Anything else (a huge number, a sign,
 * leading zeros) is malformed: a forged 10^30 would otherwise raise a client's stale-reply gate
 * above every real term for good.
 */
const TOKEN_PATTERN = /^[1-9][0-9]{0,18}$/;
const MAX_TOKEN = 2n ** 63n - 1n;
export function parseToken(text: string | undefined): bigint | undefined {
  if (text === undefined || !TOKEN_PATTERN.test(text)) return undefined;
  const token = BigInt(text);
  return token <= MAX_TOKEN ? token : undefined;
}

export type DeliveryMode = 'core' | 'durable';

/** What a reply signature covers, besides the body. */
export interface ReplyFields {
  identity: string;
  node: string;
  token: bigint;
  /** The id the caller put in Understudy-Request-Id ('' when it sent none). */
  requestId: string;
  mode: DeliveryMode;
  /** The error code ('' for a normal answer). */
  error: string;
}

const fieldList = (f: ReplyFields) => [f.identity, f.node, String(f.token), f.requestId, f.mode, f.error];

/** The Understudy-Reply-Signature value for a reply. */
export function signReply(signer: UserSigner, fields: ReplyFields, body: Uint8Array | string): string {
  return signFields(signer, REPLY_SIGNATURE_KIND, fieldList(fields), body);
}

/** A node's public key as a verifier trusts it. */
export interface TrustedNodeKey {
  /** The node's public nkey ('U...'). */
  key: string;
  /** The session lease it is bound to in etcd, when known (decimal lease id). */
  lease?: string;
}

/**
 * Where a verifier finds a node's key: undefined when the node has none it trusts (unknown
 * node, no live session). May throw when the source cannot be read (etcd down): the caller
 * then knows nothing, which is not the same as "forged".
 */
export type NodeKeySource = (node: string) => Promise<TrustedNodeKey | undefined>;

/** A parsed reply; `verified` says whether its signature was checked and holds. */
export interface PresenceReply {
  body: string;
  token: bigint;
  node: string;
  error?: ErrorCode;
  /** The request id the reply says it answers. */
  requestId?: string;
  verified: boolean;
  /** The lease of the key it verified under (verified replies with a known lease). */
  lease?: string;
}

/**
 * Read a reply's headers: token and node are required (a reply that cannot be fenced cannot
 * be trusted); an error code this version does not know reads as 'internal'.
 */
export function parseReplyHeaders(
  get: HeaderLookup,
  data: Uint8Array | string,
): { ok: true; reply: PresenceReply } | { ok: false; problem: string } {
  const token = parseToken(get(H.token));
  if (token === undefined) {
    return { ok: false, problem: `${H.token} header missing or not a fencing token (a positive int64)` };
  }
  const node = get(H.node);
  if (node === undefined || !NAME_PATTERN.test(node)) {
    return { ok: false, problem: `${H.node} header missing or not a node name` };
  }
  const body = typeof data === 'string' ? data : new TextDecoder().decode(data);
  const reply: PresenceReply = { body, token, node, verified: false };
  const error = get(H.error);
  if (error !== undefined) {
    const code = ErrorCode.safeParse(error);
    reply.error = code.success ? code.data : 'internal';
  }
  const requestId = get(H.requestId);
  if (requestId !== undefined && REQUEST_ID_PATTERN.test(requestId)) reply.requestId = requestId;
  return { ok: true, reply };
}

/** What the verifier expects of a reply: the identity it asked and the request id it sent. */
export interface Expected {
  identity: string;
  requestId: string;
  mode: DeliveryMode;
}

/**
 * Does the reply's signature hold under `key` for what was asked? Pure. The reason says what
 * is wrong, in words for a log line (never shown as the identity's answer).
 */
export function checkReplySignature(
  get: HeaderLookup,
  data: Uint8Array | string,
  reply: PresenceReply,
  expected: Expected,
  key: TrustedNodeKey | undefined,
): { ok: true } | { ok: false; reason: string } {
  const identity = get(H.identity);
  if (identity !== expected.identity) {
    return { ok: false, reason: `the reply names identity '${identity ?? ''}', not ${expected.identity}` };
  }
  const signature = get(H.replySignature);
  if (signature === undefined) return { ok: false, reason: `the reply from ${reply.node} is not signed` };
  if (key === undefined) {
    return { ok: false, reason: `no trusted key is known for node ${reply.node} (no live agent session)` };
  }
  const fields: ReplyFields = {
    identity: expected.identity,
    node: reply.node,
    token: reply.token,
    requestId: expected.requestId,
    mode: expected.mode,
    error: get(H.error) ?? '',
  };
  if (!verifyFields(key.key, signature, REPLY_SIGNATURE_KIND, fieldList(fields), data)) {
    return {
      ok: false,
      reason: `the signature of the reply from ${reply.node} does not verify under its key for this request`,
    };
  }
  return { ok: true };
}

/**
 * A NodeKeySource that asks `source` at most once per node: a flood of forged answers naming
 * many nodes costs one lookup each, and the same node is never looked up twice in one round.
 */
export function memoKeys(source: NodeKeySource): NodeKeySource {
  const seen = new Map<string, Promise<TrustedNodeKey | undefined>>();
  return (node) => {
    let p = seen.get(node);
    if (p === undefined) seen.set(node, (p = source(node)));
    return p;
  };
}

/**
 * Parse and verify one reply. Without a key source the reply comes back with verified: false
 * (the caller decides what an unverified reply may do: never advance a stale-reply gate,
 * never count as a responder). A key source that throws makes this throw.
 */
export async function verifyReply(
  get: HeaderLookup,
  data: Uint8Array | string,
  expected: Expected,
  keys: NodeKeySource | undefined,
): Promise<{ ok: true; reply: PresenceReply } | { ok: false; problem: string }> {
  const parsed = parseReplyHeaders(get, data);
  if (!parsed.ok || keys === undefined) return parsed;
  const key = await keys(parsed.reply.node);
  const check = checkReplySignature(get, data, parsed.reply, expected, key);
  if (!check.ok) return { ok: false, problem: check.reason };
  return {
    ok: true,
    reply: { ...parsed.reply, verified: true, ...(key?.lease !== undefined && { lease: key.lease }) },
  };
}

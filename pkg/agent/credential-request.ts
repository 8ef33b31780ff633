// The agent's side of credential release (pkg/credentials/protocol.ts): at login, ask the
// controllers for the identity's credential with a request signed by this node's key, naming
// the term's token and a fresh X25519 key the answer is encrypted to. Only a reply signed by a
// controller whose member record is in etcd is opened. Every failure is an Error saying why
// and what to do; the term treats it as a failed login and campaigns again later.
import { randomBytes } from 'node:crypto';
import type { Etcd3 } from 'etcd3';
import { ErrorCode, type NatsConnection, type NatsError } from 'nats';
import {
  CredentialReply,
  credentialSubject,
  openReply,
  replyKeyPair,
  replySignedBy,
  signRequest,
  type ReplyContext,
} from '../credentials/protocol.js';
import type { UserSigner } from '../keys/index.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';

/**
 * How long a login waits for a controller's answer. A controller answers after one etcd read
 * (bounded by ETCD_CALL_MS, 2 s) and a few ms of cryptography; 5 s covers a slow read, and a
 * login whose credential cannot be had fails in bounded time and is retried.
 */
export const CREDENTIAL_REQUEST_TIMEOUT_MS = 5_000;
/** Nonce size: 18 random bytes (24 base64url characters) never repeat in practice. */
const NONCE_BYTES = 18;

export interface CredentialRequestDeps {
  nc: NatsConnection;
  etcd: Etcd3;
  signer: UserSigner;
  identity: string;
  node: string;
  /** Wall clock for the request's time (default Date.now). */
  now?: () => number;
  timeoutMs?: number;
  /** etcd prefix (default understudy). */
  prefix?: string;
}

/** Where a controller's member record (with its public key) is: pkg/controller/store.ts. */
const controllerMemberKey = (prefix: string, name: string) => `${prefix}/controllers/members/${name}`;

export async function requestCredential(deps: CredentialRequestDeps, token: bigint): Promise<Buffer> {
  const { nc, identity, node } = deps;
  const subject = credentialSubject(identity);
  const pair = replyKeyPair();
  const context: ReplyContext = {
    identity,
    node,
    token: String(token),
    nonce: randomBytes(NONCE_BYTES).toString('base64url'),
  };
  const request = signRequest(deps.signer, {
    ...context,
    at: (deps.now ?? Date.now)(),
    replyKey: pair.publicKey,
  });
  const timeout = deps.timeoutMs ?? CREDENTIAL_REQUEST_TIMEOUT_MS;
  let data: Uint8Array;
  try {
    data = (await nc.request(subject, JSON.stringify(request), { timeout })).data;
  } catch (err) {
    const code = (err as NatsError).code;
    const why =
      code === ErrorCode.NoResponders
        ? 'no controller listens'
        : code === ErrorCode.Timeout
          ? `no controller answered within ${timeout} ms`
          : (err as Error).message;
    throw new Error(
      `cannot get the credential of ${identity} from a controller on ${subject} (${why}): ` +
        'credential.source etcd needs a running controller with credentials.keyFile; the login is retried',
    );
  }
  let reply: CredentialReply;
  try {
    reply = CredentialReply.parse(JSON.parse(new TextDecoder().decode(data)));
  } catch {
    throw new Error(`the answer on ${subject} is not a credential reply; ignored`);
  }
  if (!reply.ok) {
    throw new Error(`the controller refused the credential of ${identity} (${reply.code}): ${reply.reason}`);
  }
  const key = await controllerKey(deps, reply.controller);
  if (!key || !replySignedBy(key, reply.controller, context, reply.sealed, reply.sig)) {
    throw new Error(
      `the credential reply for ${identity} is not signed by the registered key of controller ` +
        `${reply.controller}; ignored (is something else answering on ${subject}?)`,
    );
  }
  try {
    return openReply(reply.sealed, pair.privateKey, context);
  } catch {
    throw new Error(`the credential reply for ${identity} does not decrypt with this request's key; ignored`);
  }
}

/** The public key in a controller's member record (on its session lease), if it is live. */
async function controllerKey(deps: CredentialRequestDeps, name: string): Promise<string | undefined> {
  const raw = await deps.etcd
    .get(controllerMemberKey(deps.prefix ?? 'understudy', name))
    .options(within(ETCD_CALL_MS))
    .string();
  if (raw === null) return undefined;
  try {
    const key = (JSON.parse(raw) as { key?: unknown }).key;
    return typeof key === 'string' ? key : undefined;
  } catch {
    return undefined;
  }
}

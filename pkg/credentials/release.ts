// Whether a controller hands an identity's credential to the node that asks: the pure
// decision, given the request and what etcd said at one revision. The secret goes only to the
// node that proves it holds the identity's current term:
//   - the request is fresh (signed within REQUEST_WINDOW_MS of the controller's clock),
//   - it is signed by the key the node registered for its live session,
//   - its nonce was not seen before (only requests that passed the signature are remembered),
//   - the identity's leader key names this node, its mod revision is the token the node sent,
//   - and the leader key's lease is the session lease the node key is bound to,
//   - and the spec asks for credential.source etcd and a credential is stored.
// Every refusal has a code and a sentence; the caller logs and counts it.
import type { NodeKeyRecord } from '../keys/index.js';
import { REQUEST_WINDOW_MS, requestSignedBy, type CredentialRequest, type RefusalCode } from './protocol.js';

/** What etcd said, read in one transaction (one revision). */
export interface ReleaseState {
  /** The node's registered key (pkg/keys/registry.ts), if its session is alive. */
  nodeKey?: NodeKeyRecord;
  /** The identity's leader key: the holder, its lease, and its mod revision (the token). */
  leader?: { node: string; leaseId: string; token: string };
  /** The spec's credential source; undefined when no spec is stored. */
  source?: 'none' | 'file' | 'etcd';
  /** A value is stored under the identity's credential key. */
  stored: boolean;
}

export interface ReleaseFacts {
  /** The identity named by the subject the request arrived on. */
  subjectIdentity: string;
  request: CredentialRequest;
  /** The controller's wall clock. */
  nowMs: number;
  /** The nonce is in this controller's replay cache. */
  nonceSeen: boolean;
  state: ReleaseState;
}

export type ReleaseDecision =
  | { release: true; reason: string; authenticated: true }
  | {
      release: false;
      code: RefusalCode;
      reason: string;
      /** The signature verified: the nonce may be remembered (never for unauthenticated callers). */
      authenticated: boolean;
    };

const refuse = (code: RefusalCode, reason: string, authenticated = false): ReleaseDecision => ({
  release: false,
  code,
  reason,
  authenticated,
});

/**
 * The checks that need no etcd read: a request that fails them costs the controller nothing
 * more. undefined when they pass.
 */
export function precheck(
  subjectIdentity: string,
  request: CredentialRequest,
  nowMs: number,
): ReleaseDecision | undefined {
  if (request.identity !== subjectIdentity) {
    return refuse(
      'bad-request',
      `the request names identity ${request.identity} but was sent on the subject of ${subjectIdentity}`,
    );
  }
  const skew = request.at - nowMs;
  if (Math.abs(skew) > REQUEST_WINDOW_MS) {
    return refuse(
      'stale-request',
      `the request was signed ${Math.round(Math.abs(skew) / 1000)} s ${skew < 0 ? 'ago' : 'ahead of this controller'}; ` +
        `requests are good for ${REQUEST_WINDOW_MS / 1000} s either way: check the clocks (NTP) of ${request.node} and this controller`,
    );
  }
  return undefined;
}

export function decideRelease(f: ReleaseFacts): ReleaseDecision {
  const { request: r, state } = f;
  const early = precheck(f.subjectIdentity, r, f.nowMs);
  if (early) return early;
  const id = r.identity;
  if (!state.nodeKey) {
    return refuse(
      'unknown-node',
      `node ${r.node} has no key registered in etcd (no live agent session): only a running agent can ask`,
    );
  }
  if (!requestSignedBy(state.nodeKey.key, r)) {
    return refuse('bad-signature', `the request is not signed by the key node ${r.node} registered`);
  }
  if (f.nonceSeen) {
    return refuse('replayed', `the request's nonce was seen before: a request is answered once`, true);
  }
  if (!state.leader) {
    return refuse('not-leader', `no node holds the term of ${id}`, true);
  }
  if (state.leader.node !== r.node) {
    return refuse('not-leader', `${id}'s term is held by ${state.leader.node}, not ${r.node}`, true);
  }
  if (state.leader.token !== r.token) {
    return refuse(
      'stale-token',
      `${r.node} sent token ${r.token} but ${id}'s current term is ${state.leader.token}`,
      true,
    );
  }
  if (state.leader.leaseId !== state.nodeKey.lease) {
    return refuse(
      'wrong-session',
      `${id}'s term is held by lease ${state.leader.leaseId} but ${r.node}'s key is bound to lease ` +
        `${state.nodeKey.lease}: the request does not come from the session that holds the term`,
      true,
    );
  }
  if (state.source !== 'etcd') {
    return refuse(
      'no-credential',
      state.source === undefined
        ? `no spec is stored for ${id}`
        : `${id}'s spec has credential.source ${state.source}, not etcd: nothing is released`,
      true,
    );
  }
  if (!state.stored) {
    return refuse(
      'no-credential',
      `no credential is stored for ${id}: store one with \`understudy credential set ${id} --from-file FILE\``,
      true,
    );
  }
  return {
    release: true,
    reason: `${r.node} holds ${id}'s term ${r.token} on lease ${state.leader.leaseId}`,
    authenticated: true,
  };
}

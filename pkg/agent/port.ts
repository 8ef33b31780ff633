// What a term needs from the outside world besides the lease and the service driver: the
// credential a login hands the service, the NATS responder that answers for the identity,
// and the records of callers asking to be authorized. The runner calls only this interface,
// so its decisions can be exercised without NATS or etcd; login-io.ts is the real one.
import type { ResponderContext } from '../identity/responder.js';
import type { IdentitySpec, PendingRequest } from '../spec/schema.js';
import type { LeaderState } from '../lease/index.js';

/** A subscribed responder: answering for the identity from `open()` until stopped. */
export interface ResponderHandle {
  /** The service is in: answer the requests held since subscribing, and all that follow. */
  open(): void;
  /** Requests served so far, including those of the terms before (for STATUS). */
  readonly requestsServed: number;
  /** Stop answering (confirmed unsubscribed), letting in-flight requests finish within `graceMs`. */
  stop(graceMs: number): Promise<void>;
}

export interface LoginPort {
  /**
   * Fetch the identity's credential and write it to a file only the service can read; the
   * path, or undefined when the spec asks for none. Throws saying what to provision. `token`:
   * the term logging in (a controller releases an etcd credential only to its holder).
   */
  fetchCredential(spec: IdentitySpec, token: bigint): Promise<string | undefined>;
  /** Remove a credential file written by fetchCredential (gone already is fine). */
  removeCredential(file: string): Promise<void>;
  /** Make sure the durable inbox exists, so requests are stored even while no one leads. */
  ensureInbox(spec: IdentitySpec): Promise<void>;
  /**
   * Subscribe for the identity, answering nothing until the handle's `open()`; resolves once
   * the server confirmed the subscription.
   */
  subscribeResponder(ctx: ResponderContext, servedBefore: number): Promise<ResponderHandle>;
  /** Record a caller's pending authorization request; true when it was new. */
  recordPending(pending: PendingRequest): Promise<boolean>;
  /** Follow the identity's leader key (who leads, for the status); resolves once watching. */
  /** `onTrouble`: a failed read or watch (retried by itself), or undefined once it recovered. */
  observeLeader(
    onChange: (s: LeaderState) => void,
    onTrouble?: (err: Error | undefined) => void,
  ): Promise<{ close(): Promise<void> }>;
}

// What can go wrong when calling an identity (client.ts throws these).
import { subjects, type ErrorCode } from './wire.js';

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

/** Only replies whose signature did not verify came back (forged, or from an unknown node). */
export class UnverifiedReplyError extends Error {
  constructor(
    readonly identity: string,
    readonly problem: string,
  ) {
    super(
      `no verified reply from ${identity}: ${problem}; the answers were ignored (possibly forged). ` +
        `Check that the answering agent is registered (its node key in etcd) and that this client's key source knows it`,
    );
    this.name = 'UnverifiedReplyError';
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

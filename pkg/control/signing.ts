// Signed control: a control request is obeyed only when the controller that sent it proves
// who it is, for this node, now. Defence in depth behind NATS subject permissions, and the only
// defence on a NATS you do not control.
//
// The controller signs, with the key in its member record (pkg/controller/store.ts), the kind
// line `understudy-control-v1` and: the target node, the target agent's instance (a random id
// each agent start announces in its heartbeats, so nothing signed for an earlier start of the
// agent is obeyed after a restart), its own public key, the time (ms), a nonce, and the sha256
// of the exact body. The signature and those values travel in headers; the body is unchanged.
//
// The agent finds the keys it trusts in etcd (one read, authority.ts): a state-changing request
// must be signed by the *active* controller, whose member record is on the same session lease
// as the election key whose revision is the request's term; `status` may be signed by any live
// controller. Pinned keys in the agent's config narrow that further.
import { randomBytes } from 'node:crypto';
import { signFields, verifyFields, type UserSigner } from '../keys/index.js';
import { ControlError } from './protocol.js';

export const CONTROL_SIGNATURE_KIND = 'understudy-control-v1';

export const controlHeaders = {
  key: 'Understudy-Control-Key',
  instance: 'Understudy-Control-Instance',
  time: 'Understudy-Control-Time',
  nonce: 'Understudy-Control-Nonce',
  signature: 'Understudy-Control-Signature',
} as const;

/**
 * How far a control request's signed time may be from the agent's clock, either way. A control
 * request is answered within seconds (the controller's timeout is 2 s), so only clock skew
 * between hosts needs room: NTP keeps it well under a second, 10 s allows for a host whose
 * clock is being slewed. It also bounds how long the agent must remember each nonce.
 */
export const CONTROL_CLOCK_WINDOW_MS = 10_000;

const TIME_PATTERN = /^(0|[1-9][0-9]{0,15})$/;
const NONCE_PATTERN = /^[A-Za-z0-9_-]{16,64}$/;
const INSTANCE_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export type HeaderLookup = (name: string) => string | undefined;

const fieldsOf = (p: { node: string; instance: string; key: string; time: string; nonce: string }) => [
  p.node,
  p.instance,
  p.key,
  p.time,
  p.nonce,
];

/** The headers that sign `body` for `node` (started as `instance`), now. */
export function signControl(
  signer: UserSigner,
  target: { node: string; instance: string },
  body: string,
  now: number,
  nonce = randomBytes(16).toString('base64url'),
): Record<string, string> {
  const p = { ...target, key: signer.publicKey, time: String(Math.round(now)), nonce };
  return {
    [controlHeaders.key]: p.key,
    [controlHeaders.instance]: p.instance,
    [controlHeaders.time]: p.time,
    [controlHeaders.nonce]: p.nonce,
    [controlHeaders.signature]: signFields(signer, CONTROL_SIGNATURE_KIND, fieldsOf(p), body),
  };
}

/** What the agent knows when it judges a signature. */
export interface ControlSignatureInput {
  headers: HeaderLookup;
  body: string;
  /** This agent's node name and instance: a request signed for another is refused. */
  node: string;
  instance: string;
  now: number;
  /** Keys that may sign this request (the active controller's, or any live one's for status). */
  trusted: ReadonlySet<string>;
  /** Was this nonce used already by this key within the window? */
  seen(key: string, nonce: string): boolean;
  windowMs?: number;
}

export type SignatureVerdict =
  { ok: true; key: string; nonce: string; signedAt: number } | { ok: false; error: ControlError };

const refuse = (message: string): SignatureVerdict => ({
  ok: false,
  error: new ControlError('unauthenticated', message, 'signature'),
});

/**
 * Is the request signed, for this agent, recently, once, by a trusted key? Pure: the caller
 * reads the trusted keys from etcd and keeps the nonces. Checks run cheapest first and the
 * signature last, so a flood of junk costs no ed25519 work.
 */
export function judgeControlSignature(input: ControlSignatureInput): SignatureVerdict {
  const read = (name: string) => {
    const v = input.headers(name);
    return v === undefined || v === '' ? undefined : v;
  };
  const key = read(controlHeaders.key);
  const instance = read(controlHeaders.instance);
  const time = read(controlHeaders.time);
  const nonce = read(controlHeaders.nonce);
  const signature = read(controlHeaders.signature);
  if (key === undefined || signature === undefined || time === undefined || nonce === undefined) {
    return refuse(
      `control request to ${input.node} is not signed; only a controller signs control requests ` +
        `(use the controller's API or CLI, not a raw NATS request)`,
    );
  }
  if (instance === undefined || !INSTANCE_PATTERN.test(instance)) {
    return refuse(`control request names no valid agent instance in ${controlHeaders.instance}`);
  }
  if (instance !== input.instance) {
    return refuse(
      `control request was signed for another start of ${input.node} (instance ${instance}, this one is ` +
        `${input.instance}); the controller learns the current instance from heartbeats and asks again`,
    );
  }
  if (!TIME_PATTERN.test(time)) return refuse(`${controlHeaders.time} must be decimal milliseconds`);
  if (!NONCE_PATTERN.test(nonce)) return refuse(`${controlHeaders.nonce} must be 16-64 of [A-Za-z0-9_-]`);
  const windowMs = input.windowMs ?? CONTROL_CLOCK_WINDOW_MS;
  const signedAt = Number(time);
  const skew = signedAt - input.now;
  if (Math.abs(skew) > windowMs) {
    return refuse(
      `control request time is ${Math.round(Math.abs(skew) / 1000)} s ${skew > 0 ? 'ahead of' : 'behind'} ` +
        `${input.node}'s clock (allowed ±${windowMs / 1000} s); sync the clocks of controller and agent (NTP)`,
    );
  }
  if (!input.trusted.has(key)) {
    return refuse(
      `control request is signed by ${key}, which is not the key of ${
        input.trusted.size === 0
          ? 'any live controller (none is registered in etcd)'
          : 'a controller allowed to send it'
      }; a controller publishes its key in etcd when it starts`,
    );
  }
  if (input.seen(key, nonce)) {
    return refuse(
      `control request replayed: nonce ${nonce} was used already; a controller signs each request afresh`,
    );
  }
  const fields = fieldsOf({ node: input.node, instance, key, time, nonce });
  if (!verifyFields(key, signature, CONTROL_SIGNATURE_KIND, fields, input.body)) {
    return refuse(`control request signature does not verify for ${input.node} with ${key}`);
  }
  return { ok: true, key, nonce, signedAt };
}

/**
 * Nonces of verified control requests, remembered for the clock window (a nonce older than that
 * is refused by its time anyway). Only requests that verified enter, so its size is bounded by
 * what live controllers send; MAX_REMEMBERED guards against a controller gone wild.
 */
export class ControlNonces {
  static readonly MAX_REMEMBERED = 10_000;
  private readonly seenAt = new Map<string, number>();

  constructor(private readonly windowMs = CONTROL_CLOCK_WINDOW_MS) {}

  seen(key: string, nonce: string): boolean {
    return this.seenAt.has(`${key} ${nonce}`);
  }

  /** Remember a verified nonce; false when full (the request is then refused, not obeyed). */
  remember(key: string, nonce: string, signedAt: number, now: number): boolean {
    for (const [entry, at] of this.seenAt) {
      if (at >= now - 2 * this.windowMs) break;
      this.seenAt.delete(entry);
    }
    if (this.seenAt.size >= ControlNonces.MAX_REMEMBERED) return false;
    this.seenAt.set(`${key} ${nonce}`, Math.max(signedAt, now));
    return true;
  }

  get size(): number {
    return this.seenAt.size;
  }
}

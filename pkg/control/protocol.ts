// The control protocol between the controller and agents, over NATS request/reply on
// `understudy.agent.<node>.control` (agents make outbound connections only). Every request
// carries the protocol version `v`; an agent answers versions PROTOCOL_VERSION and one back
// (rolling upgrades move one component at a time) and refuses anything else with a reply
// that says which versions it speaks.
//
// Version 2: every request that changes state (drain, undrain, fence, unfence) carries `term`,
// the sending controller's election term (its fencing token, the mod revision of the
// controller election key). The agent acts only if that is still the current term, so a
// controller that froze after its own term check and resumed after losing the election is
// refused (see term.ts). A request without `term` is refused whatever its version.
//
// Every request is signed by the sending controller (signing.ts; signature in headers, body
// unchanged): an agent obeys only a signature of the active controller, as registered in etcd.
import { z } from 'zod';
import { Name } from '../lease/keys.js';

export const PROTOCOL_VERSION = 2;
/** Oldest version still accepted: one back, so controller and agents can be upgraded in turn. */
export const OLDEST_SUPPORTED_VERSION = Math.max(1, PROTOCOL_VERSION - 1);
/**
 * Heartbeats have not changed since version 1 and keep saying so: a controller one version
 * back (which hears only its own version and the one before) still hears agents upgraded
 * first, instead of taking them for dead.
 */
export const HEARTBEAT_VERSION = 1;

/**
 * Bounds of a drain hold. Shorter than 100 ms cannot cover one transfer round trip; longer
 * than an hour would keep an identity away from its node past any handover deadline (the
 * longest is an hour, pkg/api/workflows.ts) and makes a forgotten drain look like an outage.
 */
export const DRAIN_HOLD_MIN_MS = 100;
export const DRAIN_HOLD_MAX_MS = 3_600_000;

const Actor = z.string().min(1).max(200);
/**
 * The sending controller's election term: the decimal fencing token (mod revision of the
 * controller election key) it acts under. Required on state-changing requests from version 2.
 */
export const Term = z
  .string()
  .regex(/^[1-9][0-9]{0,18}$/, "must be the controller's election term (a positive decimal etcd revision)");

export const ControlRequest = z.discriminatedUnion('op', [
  z.strictObject({ v: z.number().int(), op: z.literal('status'), identity: Name.optional() }),
  /**
   * Log the identity out but keep the leader key, so the controller can transfer it. If no
   * transfer happens within `holdMs`, the agent logs back in (the workflow was abandoned).
   * With `to` and `workflow`, the agent moves the key to that node itself, in the transaction
   * that records its logout, guarded by `term` and by its own hold-off, which must be that
   * workflow's (still running); if the move's guards do not hold it drains as without `to`.
   * Sent only to agents whose heartbeat says `handsOver` (older agents refuse the fields).
   */
  z.strictObject({
    v: z.number().int(),
    op: z.literal('drain'),
    identity: Name,
    actor: Actor,
    holdMs: z.number().int().min(DRAIN_HOLD_MIN_MS).max(DRAIN_HOLD_MAX_MS),
    reason: z.string().max(500).optional(),
    term: Term.optional(),
    to: Name.optional(),
    workflow: z.string().min(1).max(200).optional(),
  }),
  /** Abort a drain: log back in if this node still holds the key (the old leader is restored). */
  z.strictObject({
    v: z.number().int(),
    op: z.literal('undrain'),
    identity: Name,
    actor: Actor,
    term: Term.optional(),
  }),
  z.strictObject({
    v: z.number().int(),
    op: z.literal('fence'),
    actor: Actor,
    reason: z.string().min(1).max(500),
    term: Term.optional(),
  }),
  z.strictObject({ v: z.number().int(), op: z.literal('unfence'), actor: Actor, term: Term.optional() }),
  /** Snapshot the identity's state directory now (the leader only); replies with the record. */
  z.strictObject({
    v: z.number().int(),
    op: z.literal('snapshot'),
    identity: Name,
    actor: Actor,
    term: Term.optional(),
  }),
]);
export type ControlRequest = z.infer<typeof ControlRequest>;

/** The requests that change state: each is checked against the controller's current term. */
export type MutatingRequest = Exclude<ControlRequest, { op: 'status' }>;
export const MUTATING_OPS: ReadonlySet<ControlRequest['op']> = new Set([
  'drain',
  'undrain',
  'fence',
  'unfence',
  'snapshot',
]);
export function isMutating(request: ControlRequest): request is MutatingRequest {
  return MUTATING_OPS.has(request.op);
}

export const ControlErrorCode = z.enum([
  'incompatible-version',
  'bad-request',
  'unknown-identity',
  'not-leader',
  /** The request's controller term is not the current one: a deposed controller sent it. */
  'stale-controller',
  /** Not signed, signed by a key that may not send it, replayed, or outside the clock window. */
  'unauthenticated',
  'failed',
]);
export type ControlErrorCode = z.infer<typeof ControlErrorCode>;

export const ControlReply = z.union([
  z.strictObject({ v: z.number().int(), ok: z.literal(true), result: z.unknown() }),
  z.strictObject({
    v: z.number().int(),
    ok: z.literal(false),
    error: z.strictObject({ code: ControlErrorCode, message: z.string(), field: z.string().optional() }),
  }),
]);
export type ControlReply = z.infer<typeof ControlReply>;

export const IdentityStatus = z.strictObject({
  identity: z.string(),
  state: z.string(),
  token: z.string().optional(),
  loggedIn: z.boolean(),
  /** ISO time the current state began. */
  since: z.string(),
  leader: z.string().optional(),
  pid: z.number().optional(),
  healthy: z.boolean(),
  detail: z.string().optional(),
});
export type IdentityStatus = z.infer<typeof IdentityStatus>;

export const AgentStatus = z.strictObject({
  node: z.string(),
  protocol: z.number().int(),
  startedAt: z.string(),
  fenced: z.boolean(),
  session: z.string(),
  identities: z.array(IdentityStatus),
});
export type AgentStatus = z.infer<typeof AgentStatus>;

/**
 * Published, never answered, so it cannot refuse a peer: read loosely (unknown fields are
 * ignored), so an agent one version ahead that adds a field is still heard by its controller.
 */
export const Heartbeat = z.object({
  v: z.number().int(),
  node: z.string(),
  /**
   * A random id of this start of the agent: control requests are signed for it, so a request
   * captured before a restart is not obeyed after (signing.ts).
   */
  instance: z.string().optional(),
  at: z.number(),
  /** The agent's heartbeat period: a beat older than about two periods vouches for nothing. */
  everyMs: z.number().int().positive().optional(),
  fenced: z.boolean(),
  /** It takes a drain's `to`: it hands the key over itself as it logs out (agents since 2026-12). */
  handsOver: z.boolean().optional(),
  identities: z.array(
    z.object({
      identity: z.string(),
      state: z.string(),
      token: z.string().optional(),
      /** Revision of the spec this node runs (its clone of the identity). */
      specRevision: z.string().optional(),
      /** Digest of the access lists it enforces (pkg/spec/fingerprint.ts). */
      access: z.string().optional(),
      /** The service version it would run: declared in the spec, or its executable's sha256. */
      version: z.string().optional(),
      /** The snapshot its state directory holds (restored, or published while leading). */
      snapshot: z
        .object({ object: z.string(), token: z.string(), takenAt: z.string(), how: z.string() })
        .optional(),
      /**
       * While leader: the service passed the agent's own liveness check (the one behind its
       * PING answers) within the last period. Absent when not checked lately.
       */
      alive: z.boolean().optional(),
    }),
  ),
});
export type HeartbeatIdentity = Heartbeat['identities'][number];
export type Heartbeat = z.infer<typeof Heartbeat>;

export class ControlError extends Error {
  constructor(
    readonly code: ControlErrorCode,
    message: string,
    readonly field?: string,
  ) {
    super(message);
    this.name = 'ControlError';
  }
}

/**
 * Parse a control request. Throws ControlError: `incompatible-version` when `v` is outside
 * what this side speaks, `bad-request` naming the field otherwise.
 */
export function parseControlRequest(raw: string, node: string): ControlRequest {
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch {
    throw new ControlError('bad-request', `control request to ${node} is not JSON: ${raw.slice(0, 60)}`);
  }
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ControlError(
      'bad-request',
      'control request must be a JSON object with "v" and "op"',
      '(root)',
    );
  }
  const v = (json as { v?: unknown }).v;
  if (typeof v !== 'number' || !Number.isInteger(v)) {
    throw new ControlError('bad-request', 'control request needs an integer protocol version "v"', 'v');
  }
  if (!isSupportedVersion(v)) {
    throw new ControlError(
      'incompatible-version',
      `${node} speaks control protocol ${OLDEST_SUPPORTED_VERSION}..${PROTOCOL_VERSION}, this request is ${v}: ` +
        `upgrade the older of controller and agent so they are at most one version apart`,
      'v',
    );
  }
  const parsed = ControlRequest.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const field = issue.path.map(String).join('.') || '(root)';
    throw new ControlError('bad-request', `control request field ${field}: ${issue.message}`, field);
  }
  return parsed.data;
}

export function isSupportedVersion(v: number, current = PROTOCOL_VERSION): boolean {
  return v <= current && v >= Math.max(1, current - 1);
}

export function ok(result: unknown, v = PROTOCOL_VERSION): ControlReply {
  return { v, ok: true, result };
}

export function fail(err: ControlError, v = PROTOCOL_VERSION): ControlReply {
  return {
    v,
    ok: false,
    error: { code: err.code, message: err.message, ...(err.field ? { field: err.field } : {}) },
  };
}

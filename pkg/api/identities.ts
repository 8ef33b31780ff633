// Identities, nodes and access lists as the API shows and changes them.
import { z } from 'zod';
import { AccessLists, BlockedCaller, Caller, PendingRequest } from '../spec/schema.js';
import { Workflow } from './workflows.js';

// --- identities ---------------------------------------------------------------------------

/** A candidate node of an identity as the controller sees it. */
export const StandbyView = z.object({
  node: z.string(),
  /** Agent state for the identity (standby, campaigning, drained, fenced...) from its heartbeat. */
  state: z.string().optional(),
  priority: z.number().int().optional(),
  /** Registered as a live candidate (its agent session holds a candidate key). */
  registered: z.boolean(),
  /** Candidate healthy (its service can start) and its agent heartbeats are fresh. */
  healthy: z.boolean(),
  fenced: z.boolean(),
  nofailover: z.boolean(),
  /** Spec revisions this node's copy of the identity (its clone) is behind; 0 in sync. */
  cloneLag: z.number().int().optional(),
  /** Held back from elections as drifted: why (from the controller's hold in etcd). */
  drift: z.array(z.string()).optional(),
  /** The snapshot of the identity's state this node holds (its heartbeat). */
  snapshot: z.strictObject({ object: z.string(), token: z.string(), takenAt: z.string() }).optional(),
  lastHeartbeat: z.string().optional(),
});
export type StandbyView = z.infer<typeof StandbyView>;

export const IDENTITY_HEALTH = ['ok', 'degraded', 'down', 'split-brain', 'unknown'] as const;

export const IdentityView = z.object({
  identity: z.string(),
  description: z.string().optional(),
  specRevision: z.string(),
  /** Node holding the leader key, if any. */
  leader: z.string().optional(),
  /** Fencing token of the current term. */
  token: z.string().optional(),
  loggedIn: z.boolean(),
  /** ISO time the current term logged in. */
  loggedInSince: z.string().optional(),
  termSince: z.string().optional(),
  /** PING responders seen by the last probe (more than one is a split brain). */
  responders: z.array(
    z.object({
      node: z.string(),
      token: z.string(),
      /** Set when the instance answered PING with an error: logged in, but its service does not respond. */
      error: z.string().optional(),
    }),
  ),
  lastProbe: z.string().optional(),
  probeFailures: z.number().int(),
  /** ok | degraded (leader not answering) | down (no leader) | split-brain */
  health: z.enum(IDENTITY_HEALTH),
  paused: z.object({ reason: z.string(), actor: z.string(), at: z.string() }).optional(),
  standbys: z.array(StandbyView),
  fencedNodes: z.array(z.string()),
  /** The running (or last) workflow's id and state. */
  workflow: z.object({ id: z.string(), kind: z.string(), state: z.string() }).optional(),
});
export type IdentityView = z.infer<typeof IdentityView>;

/** Identities in a page of GET /v1/identities by default, and at most. */
export const LIST_PAGE_DEFAULT = 500;
export const LIST_PAGE_MAX = 5_000;

/**
 * GET /v1/identities: a page in name order, filtered. Pages are cut by name (`after`), not by
 * position, so an identity added or removed between two pages neither repeats nor hides another.
 */
export const IdentityListQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(LIST_PAGE_MAX).default(LIST_PAGE_DEFAULT),
  /** Start after this name: the previous page's `next`. */
  after: z.string().max(253).optional(),
  /** Only names starting with this. */
  prefix: z.string().max(253).optional(),
  /** Only these healths, comma-separated (ok,degraded,down,split-brain,unknown). */
  health: z
    .string()
    .transform((text) => text.split(',').map((h) => h.trim()))
    .pipe(z.array(z.enum(IDENTITY_HEALTH)).min(1))
    .optional(),
  /** Only identities this node leads. */
  leader: z.string().max(253).optional(),
});
export type IdentityListQuery = z.infer<typeof IdentityListQuery>;

export const IdentityList = z.object({
  identities: z.array(IdentityView),
  /** More match: ask again with `after` set to this. */
  next: z.string().optional(),
  /** Identities that match the filters, on every page. */
  total: z.number().int(),
});
export type IdentityList = z.infer<typeof IdentityList>;

/** PUT /v1/identities/:id and POST /v1/apply take identity specs (pkg/spec IdentitySpec). */
export const ApplyBody = z.strictObject({
  /** Spec documents; each is validated with pkg/spec's IdentitySpec. */
  specs: z.array(z.unknown()).min(1).max(500),
  /** Validate and report, change nothing. */
  dryRun: z.boolean().default(false),
});
export type ApplyBody = z.infer<typeof ApplyBody>;

export const ApplyResult = z.object({
  identity: z.string(),
  action: z.enum(['created', 'updated', 'unchanged']),
  revision: z.string(),
});
export type ApplyResult = z.infer<typeof ApplyResult>;

// --- nodes --------------------------------------------------------------------------------

export const NodeView = z.object({
  node: z.string(),
  /** Heartbeats fresh (within the configured heartbeat timeout). */
  alive: z.boolean(),
  lastHeartbeat: z.string().optional(),
  fenced: z.object({ reason: z.string(), actor: z.string(), at: z.string() }).optional(),
  /** A fence requested and waiting for its identities to move away. */
  fencePending: z
    .object({ reason: z.string(), actor: z.string(), workflows: z.array(z.string()) })
    .optional(),
  identities: z.array(z.object({ identity: z.string(), state: z.string(), token: z.string().optional() })),
  /**
   * The node's public key ('U...') registered in etcd for its live agent session: clients
   * without etcd verify the node's signed replies with it (pkg/identity/presence.ts).
   */
  key: z.string().optional(),
});
export type NodeView = z.infer<typeof NodeView>;

export const FenceBody = z.strictObject({ reason: z.string().min(1).max(500) });
export type FenceBody = z.infer<typeof FenceBody>;

export const FenceResult = z.object({
  node: z.string(),
  /** true once the fence is written; false while identities are still moving away. */
  fenced: z.boolean(),
  /** Handovers started to move the node's identities away first. */
  workflows: z.array(Workflow),
});
export type FenceResult = z.infer<typeof FenceResult>;

// --- access lists -------------------------------------------------------------------------

export const AclView = z.object({
  identity: z.string(),
  access: AccessLists,
  pending: z.array(PendingRequest),
});
export type AclView = z.infer<typeof AclView>;

/** Add, block or remove one caller; `open` switches the open flag. */
export const AclChangeBody = z.discriminatedUnion('op', [
  z.strictObject({ op: z.literal('add'), list: z.enum(['contacts', 'authorized']), caller: Caller }),
  z.strictObject({ op: z.literal('block'), caller: BlockedCaller }),
  z.strictObject({
    op: z.literal('remove'),
    list: z.enum(['contacts', 'authorized', 'blocked']),
    /** Caller name, or the nkey of a caller blocked by key. */
    name: z.string().min(1),
  }),
  z.strictObject({ op: z.literal('open'), open: z.boolean() }),
]);
export type AclChangeBody = z.infer<typeof AclChangeBody>;

/** An approval names the key that asked when a name asked with several (default: the only one). */
export const ApproveBody = z.strictObject({
  key: z
    .string()
    .regex(/^U[A-Z2-7]{55}$/, 'must be a NATS user public nkey')
    .optional(),
});
export type ApproveBody = z.infer<typeof ApproveBody>;

export const DenyBody = z.strictObject({
  block: z.boolean().default(false),
  /** Deny only the request made with this key (a name may ask with several; default: all of them). */
  key: z
    .string()
    .regex(/^U[A-Z2-7]{55}$/, 'must be a NATS user public nkey')
    .optional(),
});
export type DenyBody = z.infer<typeof DenyBody>;

// The controller's HTTP API, as data: every request body and query, every response shape, the
// roles and the error document. The server (pkg/controller/http.ts), the OpenAPI document and
// the CLI (pkg/cli) all read this one file, so they cannot drift apart.
import { z } from 'zod';
import { HistoryEntry } from '../history/index.js';
import { Name } from '../lease/keys.js';
import { AccessLists, BlockedCaller, Caller, PendingRequest } from '../spec/schema.js';

export const API_PREFIX = '/v1';

// --- auth ---------------------------------------------------------------------------------

/** Roles in increasing power: each may do everything the previous ones may. */
export const ROLES = ['viewer', 'operator', 'admin'] as const;
export const Role = z.enum(ROLES);
export type Role = z.infer<typeof Role>;

export function roleAllows(held: Role, needed: Role): boolean {
  return ROLES.indexOf(held) >= ROLES.indexOf(needed);
}

// --- errors (RFC 9457 problem+json) -------------------------------------------------------

export const PROBLEM_CODES = [
  'bad-request',
  'unauthorized',
  'forbidden',
  'not-found',
  /** The request conflicts with the current state (a workflow runs, node fenced, leader changed). */
  'conflict',
  /** This controller is a standby: send writes to `active`. */
  'not-active',
  /** etcd or NATS does not answer; retry. */
  'unavailable',
  'internal',
] as const;
export const ProblemCode = z.enum(PROBLEM_CODES);
export type ProblemCode = z.infer<typeof ProblemCode>;

export const Problem = z.object({
  type: z.string(),
  title: z.string(),
  status: z.number().int(),
  /** What went wrong and what to do next, for a human. */
  detail: z.string(),
  code: ProblemCode,
  /** The request field at fault (dotted path into the body, or `query.x` / `path.x`). */
  field: z.string().optional(),
  /** Only with `not-active`: the controller that takes writes. */
  active: z.object({ name: z.string(), url: z.string().optional() }).optional(),
});
export type Problem = z.infer<typeof Problem>;

const STATUS_OF: Record<ProblemCode, number> = {
  'bad-request': 400,
  unauthorized: 401,
  forbidden: 403,
  'not-found': 404,
  conflict: 409,
  'not-active': 503,
  unavailable: 503,
  internal: 500,
};

/** Thrown by the controller core; the HTTP layer turns it into problem+json. */
export class ApiError extends Error {
  constructor(
    readonly code: ProblemCode,
    message: string,
    readonly field?: string,
    readonly active?: { name: string; url?: string },
  ) {
    super(message);
    this.name = 'ApiError';
  }
  get status(): number {
    return STATUS_OF[this.code];
  }
  toProblem(): Problem {
    return {
      type: `https://understudy.dev/problems/${this.code}`,
      title: this.code,
      status: this.status,
      detail: this.message,
      code: this.code,
      ...(this.field ? { field: this.field } : {}),
      ...(this.active ? { active: this.active } : {}),
    };
  }
}

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
  lastHeartbeat: z.string().optional(),
});
export type StandbyView = z.infer<typeof StandbyView>;

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
  health: z.enum(['ok', 'degraded', 'down', 'split-brain', 'unknown']),
  paused: z.object({ reason: z.string(), actor: z.string(), at: z.string() }).optional(),
  standbys: z.array(StandbyView),
  fencedNodes: z.array(z.string()),
  /** The running (or last) workflow's id and state. */
  workflow: z.object({ id: z.string(), kind: z.string(), state: z.string() }).optional(),
});
export type IdentityView = z.infer<typeof IdentityView>;

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

// --- workflows ----------------------------------------------------------------------------

export const WORKFLOW_STATES = [
  /** Waiting for its scheduled time (`at`). */
  'scheduled',
  'requested',
  /** The old leader was asked to log out (polite) or is being forced out (escalation). */
  'draining',
  /** The old leader is proved out: confirmed logout, or revoked and its deadline waited out. */
  'logged-out',
  /** The leader key is on the target's lease; the target is logging in. */
  'transferred',
  /** The target answers PING under the new token. */
  'logged-in',
  'done',
  'aborted',
] as const;
export const WorkflowState = z.enum(WORKFLOW_STATES);
export type WorkflowState = z.infer<typeof WorkflowState>;
export const TERMINAL_STATES: ReadonlySet<WorkflowState> = new Set(['done', 'aborted']);

export const WorkflowKind = z.enum(['switchover', 'failover', 'probe-failover', 'node-fence']);
export type WorkflowKind = z.infer<typeof WorkflowKind>;

export const Workflow = z.object({
  id: z.string(),
  identity: z.string(),
  kind: WorkflowKind,
  state: WorkflowState,
  actor: z.string(),
  reason: z.string().optional(),
  /** Node and token of the term being ended. */
  from: z.object({ node: z.string(), token: z.string() }).optional(),
  /** Node asked for; the controller picks the best healthy standby when absent. */
  target: z.string().optional(),
  /** Chosen target once known. */
  chosen: z.string().optional(),
  newToken: z.string().optional(),
  createdAt: z.string(),
  /** Scheduled start (ISO). */
  at: z.string().optional(),
  /** The workflow completes or is rolled back by this time (ISO). */
  deadline: z.string(),
  /** Escalations taken to prove the old leader out, in order. */
  escalation: z.array(z.enum(['drain', 'revoke', 'self-fence-wait', 'fence-command'])),
  /** For node-fence workflows: the node being fenced for maintenance. */
  fencingNode: z.string().optional(),
  /** Why it aborted, or a note on how it finished. */
  outcome: z.string().optional(),
  steps: z.array(z.object({ state: WorkflowState, at: z.string(), note: z.string().optional() })),
  updatedAt: z.string(),
  /** Controller that last advanced it. */
  controller: z.string(),
  /** Nodes held off the identity for the duration, and the etcd lease their keys share. */
  holdOff: z.object({ lease: z.string(), nodes: z.array(z.string()) }).optional(),
  /** When the polite logout request was sent (ISO). */
  drainSentAt: z.string().optional(),
  /** The old leader's lease was revoked at `at`; it is provably out from `until` (ISO). */
  revoked: z.object({ at: z.string(), until: z.string() }).optional(),
  /** An operator asked to cancel: it rolls back at its next step, if it still can. */
  cancelRequested: z.object({ actor: z.string(), at: z.string() }).optional(),
  /**
   * Aborting: the old leader is being given the identity back (an undrain, or waiting for a
   * drain in flight to settle) before the workflow ends as aborted. `reason` is why it aborts.
   */
  rollback: z.object({ reason: z.string(), since: z.string() }).optional(),
});
export type Workflow = z.infer<typeof Workflow>;

const IsoTime = z.iso.datetime({
  offset: true,
  message: 'must be an ISO 8601 time, e.g. 2026-11-21T03:00:00Z',
});

/**
 * How far ahead a switchover may be scheduled. A week covers "next maintenance window"; a
 * scheduled workflow occupies its identity (no other handover may start meanwhile), so a
 * typo such as 9999-12-31 would block it for good.
 */
export const MAX_SCHEDULE_AHEAD_MS = 7 * 24 * 3_600_000;
/** A scheduled time this far in the past still counts as "now" (client and controller clocks). */
export const SCHEDULE_PAST_SLACK_MS = 1_000;

/** Why `at` cannot be a switchover's scheduled time, or undefined when it can. */
export function scheduledAtProblem(at: string, now: number): string | undefined {
  const t = Date.parse(at);
  if (Number.isNaN(t)) return `at ${at} is not a time; give an ISO 8601 time such as 2026-11-21T03:00:00Z`;
  if (t < now - SCHEDULE_PAST_SLACK_MS) return `at ${at} is in the past; leave it out to switch over now`;
  if (t > now + MAX_SCHEDULE_AHEAD_MS) {
    return `at ${at} is more than 7 days ahead (latest ${new Date(now + MAX_SCHEDULE_AHEAD_MS).toISOString()}); schedule it closer, or later once it is within a week`;
  }
  return undefined;
}

/** Shortest handover deadline: a drain, a transfer and a login take a second or two. */
export const MIN_DEADLINE_MS = 2_000;
/**
 * Longest handover deadline. The old leader's drain hold and the hold-off lease both follow
 * the deadline, and the agent refuses holds over an hour (pkg/control/protocol.ts); it is also
 * far under what a Node timer can hold (2^31 − 1 ms, about 24.8 days).
 */
export const MAX_DEADLINE_MS = 3_600_000;

/** A duration field in ms, bounded, with errors that name the bound and the unit. */
function durationMs(field: string, min: number, max: number) {
  return z
    .number({ message: `${field} must be a number of milliseconds` })
    .int({ message: `${field} must be a whole number of milliseconds` })
    .min(min, { message: `${field} must be at least ${min} ms` })
    .max(max, { message: `${field} must be at most ${max} ms (${max / 60_000} min)` });
}

export const SwitchoverBody = z.strictObject({
  /** Target node; absent: the best healthy standby. */
  to: Name.optional(),
  /** Start at this time instead of now: not in the past, at most 7 days ahead. */
  at: IsoTime.refine((at) => Date.parse(at) <= Date.now() + MAX_SCHEDULE_AHEAD_MS, {
    message: 'must be at most 7 days ahead; schedule it closer',
  }).optional(),
  /** Complete or roll back within this many ms after the start (default from config). */
  deadlineMs: durationMs('deadlineMs', MIN_DEADLINE_MS, MAX_DEADLINE_MS).optional(),
  reason: z.string().min(1).max(500).optional(),
});
export type SwitchoverBody = z.infer<typeof SwitchoverBody>;

export const FailoverBody = z.strictObject({
  /** Required: a forced move names where to go. */
  to: Name,
  deadlineMs: durationMs('deadlineMs', MIN_DEADLINE_MS, MAX_DEADLINE_MS).optional(),
  reason: z.string().min(1).max(500).optional(),
});
export type FailoverBody = z.infer<typeof FailoverBody>;

export const PauseBody = z.strictObject({ reason: z.string().min(1).max(500).optional() });
export type PauseBody = z.infer<typeof PauseBody>;

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

export const DenyBody = z.strictObject({ block: z.boolean().default(false) });
export type DenyBody = z.infer<typeof DenyBody>;

// --- history and events -------------------------------------------------------------------

export const HistoryQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(2_000).default(100),
});
export type HistoryQuery = z.infer<typeof HistoryQuery>;

export const HistoryView = z.object({ entries: z.array(HistoryEntry) });
export type HistoryView = z.infer<typeof HistoryView>;

/** What GET /v1/events streams (SSE: `event:` is `type`, `data:` is this JSON). */
export const ApiEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('identity'), at: z.string(), identity: IdentityView }),
  z.object({ type: z.literal('workflow'), at: z.string(), workflow: Workflow }),
  z.object({ type: z.literal('node'), at: z.string(), node: NodeView }),
  z.object({
    type: z.literal('alarm'),
    at: z.string(),
    alarm: z.enum(['split-brain', 'leader-unresponsive', 'probe-failover-paused', 'fence-command-failed']),
    identity: z.string().optional(),
    node: z.string().optional(),
    message: z.string(),
  }),
]);
export type ApiEvent = z.infer<typeof ApiEvent>;

export const ControllerInfo = z.object({
  name: z.string(),
  active: z.boolean(),
  activeController: z.object({ name: z.string(), url: z.string().optional() }).optional(),
  version: z.string(),
});
export type ControllerInfo = z.infer<typeof ControllerInfo>;

// --- what the HTTP layer needs from the controller -----------------------------------------

/**
 * The controller core behind the HTTP API. Every method validates what the schemas cannot
 * (unknown identity, fenced target...) and throws ApiError; writes throw `not-active` on a
 * standby controller. `actor` is the authenticated token's name.
 */
export interface ControllerApi {
  info(): ControllerInfo;
  /** Ready: etcd and NATS answer and the controller knows whether it is active. */
  readiness(): Promise<{ ready: boolean; problems: string[] }>;

  listIdentities(): Promise<IdentityView[]>;
  getIdentity(identity: string): Promise<IdentityView>;
  /** The stored spec document of an identity (404 when absent). */
  getSpec(identity: string): Promise<{ spec: unknown; revision: string }>;
  apply(body: ApplyBody, actor: string): Promise<ApplyResult[]>;
  deleteIdentity(identity: string, actor: string): Promise<void>;

  switchover(identity: string, body: SwitchoverBody, actor: string): Promise<Workflow>;
  failover(identity: string, body: FailoverBody, actor: string): Promise<Workflow>;
  pause(identity: string, body: PauseBody, actor: string): Promise<IdentityView>;
  resume(identity: string, actor: string): Promise<IdentityView>;
  /** The running or most recent workflow of an identity (404 when there never was one). */
  getWorkflow(identity: string): Promise<Workflow>;
  /** Cancel a scheduled or running workflow: it rolls back (aborted). */
  cancelWorkflow(identity: string, actor: string): Promise<Workflow>;
  listWorkflows(): Promise<Workflow[]>;

  listNodes(): Promise<NodeView[]>;
  fenceNode(node: string, body: FenceBody, actor: string): Promise<FenceResult>;
  unfenceNode(node: string, actor: string): Promise<NodeView>;

  getAcl(identity: string): Promise<AclView>;
  changeAcl(identity: string, change: AclChangeBody, actor: string): Promise<AclView>;
  approve(identity: string, caller: string, actor: string): Promise<AclView>;
  deny(identity: string, caller: string, body: DenyBody, actor: string): Promise<AclView>;

  history(identity: string | undefined, query: HistoryQuery): Promise<HistoryView>;

  /** Subscribe to changes; returns the unsubscribe function. */
  subscribe(listener: (event: ApiEvent) => void): () => void;
  /** Prometheus text exposition and its content type. */
  metrics(): Promise<{ contentType: string; body: string }>;
}

/**
 * The route table: method, path (hono syntax), role needed, body/query schema, success
 * status. The server mounts exactly these; the OpenAPI document is generated from them.
 */
export interface RouteSpec {
  method: 'get' | 'put' | 'post' | 'delete';
  path: string;
  role: Role | 'none';
  summary: string;
  body?: z.ZodType;
  query?: z.ZodType;
  response?: z.ZodType;
  status: number;
}

export const ROUTES: readonly RouteSpec[] = [
  {
    method: 'get',
    path: '/v1/controller',
    role: 'viewer',
    summary: 'this controller and the active one',
    response: ControllerInfo,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/identities',
    role: 'viewer',
    summary: 'every identity with its leader, health and standbys',
    response: z.object({ identities: z.array(IdentityView) }),
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity',
    role: 'viewer',
    summary: 'one identity: leader, token, logged in since, standbys, fenced nodes',
    response: IdentityView,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity/spec',
    role: 'viewer',
    summary: 'the stored spec document',
    status: 200,
  },
  {
    method: 'put',
    path: '/v1/identities/:identity',
    role: 'admin',
    summary: 'create or replace one identity spec (body: the spec)',
    response: ApplyResult,
    status: 200,
  },
  {
    method: 'delete',
    path: '/v1/identities/:identity',
    role: 'admin',
    summary: 'delete an identity spec (its leader logs out)',
    status: 204,
  },
  {
    method: 'post',
    path: '/v1/apply',
    role: 'admin',
    summary: 'create or update many identity specs at once',
    body: ApplyBody,
    response: z.object({ results: z.array(ApplyResult) }),
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/switchover',
    role: 'operator',
    summary: 'planned move to a standby (optionally named, optionally scheduled)',
    body: SwitchoverBody,
    response: Workflow,
    status: 202,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/failover',
    role: 'operator',
    summary: 'forced move to a named healthy node when the leader is gone or unhealthy',
    body: FailoverBody,
    response: Workflow,
    status: 202,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/pause',
    role: 'operator',
    summary: 'maintenance mode: no automatic (probe-driven) failover',
    body: PauseBody,
    response: IdentityView,
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/resume',
    role: 'operator',
    summary: 'leave maintenance mode',
    response: IdentityView,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity/workflow',
    role: 'viewer',
    summary: 'the running or last workflow',
    response: Workflow,
    status: 200,
  },
  {
    method: 'delete',
    path: '/v1/identities/:identity/workflow',
    role: 'operator',
    summary: 'cancel a scheduled or running workflow (rolls back)',
    response: Workflow,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/workflows',
    role: 'viewer',
    summary: 'workflows not yet finished',
    response: z.object({ workflows: z.array(Workflow) }),
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/nodes',
    role: 'viewer',
    summary: 'nodes: heartbeat, fence, identities',
    response: z.object({ nodes: z.array(NodeView) }),
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/nodes/:node/fence',
    role: 'operator',
    summary: 'fence a node for maintenance: its identities move away first',
    body: FenceBody,
    response: FenceResult,
    status: 202,
  },
  {
    method: 'post',
    path: '/v1/nodes/:node/unfence',
    role: 'operator',
    summary: 'let a node campaign again',
    response: NodeView,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity/acl',
    role: 'viewer',
    summary: 'access lists and pending authorization requests',
    response: AclView,
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/acl',
    role: 'admin',
    summary: 'add or remove a caller, or open/close the identity',
    body: AclChangeBody,
    response: AclView,
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/acl/pending/:caller/approve',
    role: 'operator',
    summary: 'authorize a pending caller',
    response: AclView,
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/acl/pending/:caller/deny',
    role: 'operator',
    summary: 'deny a pending caller (optionally block its key)',
    body: DenyBody,
    response: AclView,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity/history',
    role: 'viewer',
    summary: 'terms, transitions and operator actions of an identity',
    query: HistoryQuery,
    response: HistoryView,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/history',
    role: 'viewer',
    summary: 'recent history of every identity',
    query: HistoryQuery,
    response: HistoryView,
    status: 200,
  },
  {
    method: 'get',
    path: '/v1/events',
    role: 'viewer',
    summary: 'server-sent events: identity, workflow, node and alarm changes',
    status: 200,
  },
  { method: 'get', path: '/healthz', role: 'none', summary: 'the process is up', status: 200 },
  { method: 'get', path: '/readyz', role: 'none', summary: 'etcd and NATS answer', status: 200 },
  { method: 'get', path: '/metrics', role: 'none', summary: 'Prometheus metrics', status: 200 },
  { method: 'get', path: '/openapi.json', role: 'none', summary: 'this document', status: 200 },
];

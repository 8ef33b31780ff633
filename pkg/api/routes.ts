// The route table and the controller core behind it. The server (pkg/http) mounts exactly
// these routes; the OpenAPI document is generated from them.
import { z } from 'zod';
import { AgentStatus } from '../control/protocol.js';
import { CredentialBody, CredentialResult } from './credentials.js';
import { ApiEvent, ControllerInfo, HistoryQuery, HistoryView } from './events.js';
import {
  AclChangeBody,
  AclView,
  ApplyBody,
  ApplyResult,
  ApproveBody,
  IdentityList,
  IdentityListQuery,
  DenyBody,
  FenceBody,
  FenceResult,
  IdentityView,
  NodeView,
} from './identities.js';
import { Role } from './problem.js';
import { SnapshotBody, SnapshotList, SnapshotRecord } from './snapshots.js';
import { CloneBody, CloneList, CloneView } from './clones.js';
import { FailoverBody, PauseBody, ReasonBody, SwitchoverBody, Workflow } from './workflows.js';

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

  listIdentities(query: IdentityListQuery): Promise<IdentityList>;
  getIdentity(identity: string): Promise<IdentityView>;
  /** The stored spec document of an identity (404 when absent). */
  getSpec(identity: string): Promise<{ spec: unknown; revision: string }>;
  apply(body: ApplyBody, actor: string): Promise<ApplyResult[]>;
  deleteIdentity(identity: string, actor: string): Promise<void>;
  /** Store an identity's credential, sealed with the controllers' key; never returned by any route. */
  setCredential(identity: string, body: CredentialBody, actor: string): Promise<CredentialResult>;
  deleteCredential(identity: string, actor: string): Promise<void>;

  switchover(identity: string, body: SwitchoverBody, actor: string): Promise<Workflow>;
  failover(identity: string, body: FailoverBody, actor: string): Promise<Workflow>;
  pause(identity: string, body: PauseBody, actor: string): Promise<IdentityView>;
  resume(identity: string, body: ReasonBody, actor: string): Promise<IdentityView>;
  /** The running or most recent workflow of an identity (404 when there never was one). */
  getWorkflow(identity: string): Promise<Workflow>;
  /** Cancel a scheduled or running workflow: it rolls back (aborted). */
  cancelWorkflow(identity: string, actor: string): Promise<Workflow>;
  listWorkflows(): Promise<Workflow[]>;

  listNodes(): Promise<NodeView[]>;
  /** An agent's own view (its session, fence, identities), asked over the signed control plane. */
  agentStatus(node: string): Promise<AgentStatus>;
  fenceNode(node: string, body: FenceBody, actor: string): Promise<FenceResult>;
  unfenceNode(node: string, body: ReasonBody, actor: string): Promise<NodeView>;

  getAcl(identity: string): Promise<AclView>;
  changeAcl(identity: string, change: AclChangeBody, actor: string): Promise<AclView>;
  approve(identity: string, caller: string, body: ApproveBody, actor: string): Promise<AclView>;
  deny(identity: string, caller: string, body: DenyBody, actor: string): Promise<AclView>;

  history(identity: string | undefined, query: HistoryQuery): Promise<HistoryView>;

  /** Ask the leader to snapshot the identity's state directory now; resolves with its record. */
  snapshot(identity: string, body: SnapshotBody, actor: string): Promise<SnapshotRecord>;
  listSnapshots(identity: string): Promise<SnapshotList>;
  /** Register `body.node` as a cold standby of the identity, with the bundle it needs. */
  clone(identity: string, body: CloneBody, actor: string): Promise<CloneView>;
  listClones(identity: string): Promise<CloneList>;
  deleteClone(identity: string, node: string, actor: string): Promise<void>;

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
    summary: 'identities with their leader, health and standbys: a page in name order, filtered',
    query: IdentityListQuery,
    response: IdentityList,
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
    method: 'put',
    path: '/v1/identities/:identity/credential',
    role: 'admin',
    summary: 'store the credential handed to the leader at login (credential.source: etcd); never read back',
    body: CredentialBody,
    response: CredentialResult,
    status: 200,
  },
  {
    method: 'delete',
    path: '/v1/identities/:identity/credential',
    role: 'admin',
    summary: 'delete the stored credential',
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
    path: '/v1/identities/:identity/snapshot',
    role: 'operator',
    summary: "snapshot the identity's state directory now (its leader publishes it, fenced by its token)",
    body: SnapshotBody,
    response: SnapshotRecord,
    status: 201,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity/snapshots',
    role: 'viewer',
    summary: 'the snapshots kept of the identity, newest first',
    response: SnapshotList,
    status: 200,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/clones',
    role: 'operator',
    summary:
      'register a node as a cold standby: records the bundle it needs (spec revision, credential reference, access lists, service version, latest snapshot)',
    body: CloneBody,
    response: CloneView,
    status: 201,
  },
  {
    method: 'get',
    path: '/v1/identities/:identity/clones',
    role: 'viewer',
    summary: 'the clones of an identity with their age and drift',
    response: CloneList,
    status: 200,
  },
  {
    method: 'delete',
    path: '/v1/identities/:identity/clones/:node',
    role: 'operator',
    summary: 'forget a clone (its agent, if running, keeps standing by)',
    status: 204,
  },
  {
    method: 'post',
    path: '/v1/identities/:identity/resume',
    role: 'operator',
    summary: 'leave maintenance mode',
    body: ReasonBody,
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
    method: 'get',
    path: '/v1/nodes/:node/agent',
    role: 'viewer',
    summary: "the agent's own view: session, fence, each identity's state",
    response: AgentStatus,
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
    body: ReasonBody,
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
    summary: 'authorize a pending caller (the key that asked, if it asked with several)',
    body: ApproveBody,
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

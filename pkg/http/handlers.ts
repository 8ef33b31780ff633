// One handler per entry of the route table (pkg/api/routes.ts).
import {
  ApiError,
  type AclChangeBody,
  type ApplyBody,
  type ApproveBody,
  type DenyBody,
  type FailoverBody,
  type FenceBody,
  type HistoryQuery,
  type IdentityListQuery,
  type PauseBody,
  type ReasonBody,
  type RouteSpec,
  type SwitchoverBody,
} from '../api/schema.js';
import type { CredentialBody } from '../api/credentials.js';
import type { SnapshotBody } from '../api/snapshots.js';
import type { CloneBody } from '../api/clones.js';
import { openApiDocument } from '../api/openapi.js';
import { specForRole } from '../api/redact.js';
import { events, EVENTS_PATH } from './events.js';
import { isPlainObject, readJson, type Call } from './validate.js';

export type RouteHandler = (call: Call) => Promise<unknown>;

export function routeKey(route: Pick<RouteSpec, 'method' | 'path'>): string {
  return `${route.method} ${route.path}`;
}

function param(call: Call, name: string): string {
  const value = call.params[name];
  if (value === undefined) throw new Error(`route has no :${name} parameter`);
  return value;
}

/** One handler per entry of ROUTES; createApp refuses to start if one is missing. */
export function routeHandlers(): Record<string, RouteHandler> {
  const id = (call: Call) => param(call, 'identity');
  return {
    'get /v1/controller': async ({ api }) => api.info(),
    'get /v1/identities': async ({ api, query }) => api.listIdentities(query as IdentityListQuery),
    'get /v1/identities/:identity': async (call) => call.api.getIdentity(id(call)),
    'get /v1/identities/:identity/spec': async (call) => {
      const stored = await call.api.getSpec(id(call));
      return { ...stored, spec: specForRole(call.role, stored.spec) };
    },
    'put /v1/identities/:identity': putIdentity,
    'delete /v1/identities/:identity': async (call) => call.api.deleteIdentity(id(call), call.actor),
    'put /v1/identities/:identity/credential': async (call) =>
      call.api.setCredential(id(call), call.body as CredentialBody, call.actor),
    'delete /v1/identities/:identity/credential': async (call) =>
      call.api.deleteCredential(id(call), call.actor),
    'post /v1/apply': async ({ api, body, actor }) => ({
      results: await api.apply(body as ApplyBody, actor),
    }),
    'post /v1/identities/:identity/switchover': async (call) =>
      call.api.switchover(id(call), call.body as SwitchoverBody, call.actor),
    'post /v1/identities/:identity/failover': async (call) =>
      call.api.failover(id(call), call.body as FailoverBody, call.actor),
    'post /v1/identities/:identity/pause': async (call) =>
      call.api.pause(id(call), call.body as PauseBody, call.actor),
    'post /v1/identities/:identity/resume': async (call) =>
      call.api.resume(id(call), call.body as ReasonBody, call.actor),
    'post /v1/identities/:identity/snapshot': async (call) =>
      call.api.snapshot(id(call), call.body as SnapshotBody, call.actor),
    'get /v1/identities/:identity/snapshots': async (call) => call.api.listSnapshots(id(call)),
    'post /v1/identities/:identity/clones': async (call) =>
      call.api.clone(id(call), call.body as CloneBody, call.actor),
    'get /v1/identities/:identity/clones': async (call) => call.api.listClones(id(call)),
    'delete /v1/identities/:identity/clones/:node': async (call) =>
      call.api.deleteClone(id(call), param(call, 'node'), call.actor),
    'get /v1/identities/:identity/workflow': async (call) => call.api.getWorkflow(id(call)),
    'delete /v1/identities/:identity/workflow': async (call) => call.api.cancelWorkflow(id(call), call.actor),
    'get /v1/workflows': async ({ api }) => ({ workflows: await api.listWorkflows() }),
    'get /v1/nodes': async ({ api }) => ({ nodes: await api.listNodes() }),
    'get /v1/nodes/:node/agent': async (call) => call.api.agentStatus(param(call, 'node')),
    'post /v1/nodes/:node/fence': async (call) =>
      call.api.fenceNode(param(call, 'node'), call.body as FenceBody, call.actor),
    'post /v1/nodes/:node/unfence': async (call) =>
      call.api.unfenceNode(param(call, 'node'), call.body as ReasonBody, call.actor),
    'get /v1/identities/:identity/acl': async (call) => call.api.getAcl(id(call)),
    'post /v1/identities/:identity/acl': async (call) =>
      call.api.changeAcl(id(call), call.body as AclChangeBody, call.actor),
    'post /v1/identities/:identity/acl/pending/:caller/approve': async (call) =>
      call.api.approve(id(call), param(call, 'caller'), call.body as ApproveBody, call.actor),
    'post /v1/identities/:identity/acl/pending/:caller/deny': async (call) =>
      call.api.deny(id(call), param(call, 'caller'), call.body as DenyBody, call.actor),
    'get /v1/identities/:identity/history': async (call) =>
      call.api.history(id(call), call.query as HistoryQuery),
    'get /v1/history': async ({ api, query }) => api.history(undefined, query as HistoryQuery),
    [`get ${EVENTS_PATH}`]: events,
    'get /healthz': async () => ({ ok: true }),
    'get /readyz': async ({ api, c }) => {
      const readiness = await api.readiness();
      return c.json(readiness, readiness.ready ? 200 : 503);
    },
    'get /metrics': async ({ api, c }) => {
      const { contentType, body } = await api.metrics();
      return c.body(body, 200, { 'Content-Type': contentType });
    },
    'get /openapi.json': async ({ api }) => openApiDocument({ version: api.info().version }),
  };
}

/**
 * PUT takes one spec document. Its name may be left out (the path names it) but must not
 * contradict the path: renaming by PUT would silently create a second identity.
 */
async function putIdentity(call: Call): Promise<unknown> {
  const identity = param(call, 'identity');
  const doc = await readJson(call.c);
  if (!isPlainObject(doc)) {
    throw new ApiError('bad-request', 'send the identity spec as one JSON object', '(body)');
  }
  if (doc.name !== undefined && doc.name !== identity) {
    throw new ApiError(
      'bad-request',
      `spec name ${JSON.stringify(doc.name)} differs from the path's '${identity}': ` +
        `PUT it to /v1/identities/${String(doc.name)} or fix the name`,
      'name',
    );
  }
  const results = await call.api.apply({ specs: [{ ...doc, name: identity }], dryRun: false }, call.actor);
  if (results.length !== 1) {
    throw new Error(`apply of one spec returned ${results.length} results`);
  }
  return results[0];
}

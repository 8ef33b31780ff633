// The controller's OpenAPI 3.1 document, generated from the route table in pkg/api/schema.ts
// so it cannot drift from what the server mounts. Schemas come from zod's own JSON Schema
// export (draft 2020-12, which is what OpenAPI 3.1 uses).
import { z } from 'zod';
import { ApiEvent, Problem, ROUTES, type RouteSpec } from './schema.js';
import { Name } from '../lease/keys.js';
import { IdentitySpec } from '../spec/schema.js';

const PROBLEM_REF = { $ref: '#/components/schemas/Problem' };
const PROBLEM_JSON = 'application/problem+json';

/** Error answers an authenticated route may give; each is a Problem document. */
const AUTHED_ERRORS: Record<string, string> = {
  '400': 'invalid path, query or body; `field` names the culprit',
  '401': 'missing or unknown bearer token',
  '403': 'the token is valid but its role is too low',
  '404': 'no such identity, node, workflow or caller',
  '409': 'conflicts with the current state (a workflow runs, the node is fenced, ...)',
  '503': 'this controller is a standby (`active` says where to go) or etcd/NATS do not answer',
};

/**
 * What the route table does not describe as a JSON response: non-JSON bodies and the few
 * routes whose answer has no zod schema in pkg/api.
 */
const SPECIAL_RESPONSES: Record<string, { description: string; content?: Record<string, unknown> }> = {
  'get /v1/identities/{identity}/spec': {
    description: 'the stored spec document and its etcd revision',
    content: {
      'application/json': {
        schema: {
          type: 'object',
          properties: { spec: jsonSchema(IdentitySpec, 'output'), revision: { type: 'string' } },
          required: ['spec', 'revision'],
        },
      },
    },
  },
  'get /v1/events': {
    description:
      'a text/event-stream: each event has `event:` = the type, `data:` = this JSON, `id:` counting ' +
      'up from 1 per connection; a `: keepalive` comment every 15 s. No replay: reconnect and re-read state.',
    content: { 'text/event-stream': { schema: jsonSchema(ApiEvent, 'output') } },
  },
  'get /healthz': {
    description: 'the process is up',
    content: { 'application/json': { schema: { type: 'object', properties: { ok: { const: true } } } } },
  },
  'get /readyz': {
    description: 'ready (200) or not (503), with what is wrong',
    content: {
      'application/json': {
        schema: {
          type: 'object',
          properties: { ready: { type: 'boolean' }, problems: { type: 'array', items: { type: 'string' } } },
          required: ['ready', 'problems'],
        },
      },
    },
  },
  'get /metrics': {
    description: 'Prometheus text exposition',
    content: { 'text/plain': { schema: { type: 'string' } } },
  },
  'get /openapi.json': {
    description: 'this document',
    content: { 'application/json': { schema: { type: 'object' } } },
  },
};

/** Query parameters handled by the server but not declared as a zod query schema. */
const EXTRA_QUERY: Record<string, object[]> = {
  'get /v1/events': [
    {
      name: 'identity',
      in: 'query',
      required: false,
      description: 'only events about this identity (its identity, workflow and alarm events)',
      schema: jsonSchema(Name, 'input'),
    },
  ],
};

export function openApiDocument(info: { version?: string } = {}): object {
  return {
    openapi: '3.1.0',
    info: {
      title: 'understudy controller API',
      version: info.version ?? '0.0.0',
      description:
        'Moves service identities between nodes (switchover, failover), fences nodes and edits access ' +
        'lists. Writes go to the active controller; a standby answers 503 `not-active` naming it.',
    },
    paths: buildPaths(ROUTES),
    components: {
      securitySchemes: {
        bearer: {
          type: 'http',
          scheme: 'bearer',
          description:
            'a token from the controller config (auth.tokens); its role is viewer, operator or admin',
        },
      },
      schemas: { Problem: jsonSchema(Problem, 'output') },
    },
  };
}

function buildPaths(routes: readonly RouteSpec[]): Record<string, Record<string, object>> {
  const paths: Record<string, Record<string, object>> = {};
  for (const route of routes) {
    const path = openApiPath(route.path);
    (paths[path] ??= {})[route.method] = operation(route, path);
  }
  return paths;
}

/** hono's `/a/:b` is OpenAPI's `/a/{b}`. */
export function openApiPath(honoPath: string): string {
  return honoPath.replace(/:(\w+)/g, '{$1}');
}

function operation(route: RouteSpec, path: string): object {
  const key = `${route.method} ${path}`;
  const parameters = [...pathParameters(route.path), ...queryParameters(route), ...(EXTRA_QUERY[key] ?? [])];
  return {
    operationId: operationId(route),
    summary: route.summary,
    description: roleNote(route),
    'x-understudy-role': route.role,
    security: route.role === 'none' ? [] : [{ bearer: [] }],
    ...(parameters.length > 0 ? { parameters } : {}),
    ...requestBody(route),
    responses: { ...successResponse(route, key), ...(route.role === 'none' ? {} : errorResponses(route)) },
  };
}

function roleNote(route: RouteSpec): string {
  if (route.role === 'none') return 'No authentication.';
  return `Needs a bearer token with role \`${route.role}\` or higher.`;
}

/** `get /v1/identities/:identity/spec` → `getIdentitiesByIdentitySpec` (unique per route). */
function operationId(route: RouteSpec): string {
  const words = route.path
    .split('/')
    .filter((s) => s !== '' && s !== 'v1')
    .map((s) => (s.startsWith(':') ? `By${capitalize(s.slice(1))}` : capitalize(s)))
    .map((s) => s.replace(/[^A-Za-z0-9]+(.)?/g, (_m, c: string | undefined) => (c ?? '').toUpperCase()));
  return route.method + words.join('');
}

function capitalize(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

function pathParameters(honoPath: string): object[] {
  return [...honoPath.matchAll(/:(\w+)/g)].map((m) => ({
    name: m[1],
    in: 'path',
    required: true,
    schema: jsonSchema(Name, 'input'),
  }));
}

function queryParameters(route: RouteSpec): object[] {
  if (!route.query) return [];
  const schema = jsonSchema(route.query, 'input') as {
    properties?: Record<string, object>;
    required?: string[];
  };
  return Object.entries(schema.properties ?? {}).map(([name, property]) => ({
    name,
    in: 'query',
    required: schema.required?.includes(name) ?? false,
    schema: property,
  }));
}

function requestBody(route: RouteSpec): { requestBody?: object } {
  if (route.body) {
    return {
      requestBody: {
        required: !acceptsEmpty(route.body),
        content: { 'application/json': { schema: jsonSchema(route.body, 'input') } },
      },
    };
  }
  if (route.method === 'put') {
    // The one document route: the body is an identity spec, validated by the controller core.
    return {
      requestBody: {
        required: true,
        description: 'one identity spec; `name` may be left out (it is taken from the path)',
        content: { 'application/json': { schema: jsonSchema(IdentitySpec, 'input') } },
      },
    };
  }
  return {};
}

/** Whether `{}` is a valid body (then the body may be left out). A schema that throws needs one. */
function acceptsEmpty(schema: z.ZodType): boolean {
  try {
    return schema.safeParse({}).success;
  } catch {
    return false;
  }
}

function successResponse(route: RouteSpec, key: string): Record<string, object> {
  const status = String(route.status);
  const special = SPECIAL_RESPONSES[key];
  if (special) return { [status]: special };
  if (!route.response) return { [status]: { description: 'done' } };
  return {
    [status]: {
      description: route.status === 202 ? 'accepted: the work goes on in the background' : 'ok',
      content: { 'application/json': { schema: jsonSchema(route.response, 'output') } },
    },
  };
}

/** Extra error answers of a route that reads a body. */
const BODY_ERRORS: Record<string, string> = {
  '413': 'the body is over 1 MiB: split a bulk apply',
  '415': 'the body has a Content-Type other than JSON',
};

function errorResponses(route: RouteSpec): Record<string, object> {
  const readsBody = route.method === 'post' || route.method === 'put';
  return Object.fromEntries(
    Object.entries({ ...AUTHED_ERRORS, ...(readsBody ? BODY_ERRORS : {}) }).map(([status, description]) => [
      status,
      { description, content: { [PROBLEM_JSON]: { schema: PROBLEM_REF } } },
    ]),
  );
}

/**
 * A zod schema as JSON Schema. `input` describes what a client sends (defaults optional),
 * `output` what the server answers. Things JSON Schema cannot say (refinements, transforms)
 * become `{}` rather than throwing: the document is a guide, the server is the judge.
 */
function jsonSchema(schema: z.ZodType, io: 'input' | 'output'): Record<string, unknown> {
  const { $schema: _dialect, ...rest } = z.toJSONSchema(schema, { io, unrepresentable: 'any' });
  return rest;
}

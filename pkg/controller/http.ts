// The controller's HTTP server: authenticates bearer tokens, checks roles, validates every
// path, query and body against pkg/api/schema.ts and hands the request to the controller core
// (ControllerApi). Everything that goes wrong is answered as RFC 9457 problem+json naming the
// field at fault and what to do next; nothing reaches the core until the request is valid.
import { createHash, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { serve } from '@hono/node-server';
import { Hono, type Context, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { z } from 'zod';
import {
  ApiError,
  ROUTES,
  roleAllows,
  type AclChangeBody,
  type ApiEvent,
  type ApplyBody,
  type ControllerApi,
  type DenyBody,
  type FailoverBody,
  type FenceBody,
  type HistoryQuery,
  type PauseBody,
  type Problem,
  type ProblemCode,
  type RouteSpec,
  type SwitchoverBody,
} from '../api/schema.js';
import type { ResolvedToken } from '../config/controller.js';
import { Name } from '../lease/keys.js';
import type { Logger } from '../log/index.js';
import { openApiDocument } from './openapi.js';

/** Largest request body accepted: a bulk apply of 500 specs fits with room to spare. */
export const MAX_BODY_BYTES = 1024 * 1024;

/**
 * An SSE stream sends a comment this often when nothing happens: proxies and load balancers
 * drop connections idle for 30-60 s, and a client only notices a dead controller when a
 * write it expected does not arrive.
 */
export const SSE_KEEPALIVE_MS = 15_000;

/**
 * Events queued for one SSE client that does not read them. Past this the stream is cut: a
 * stalled client must not grow the controller's memory without bound; it reconnects and
 * re-reads the state instead.
 */
export const SSE_MAX_QUEUED = 1_000;

/**
 * On close, in-flight requests get this long to finish before their connections are cut, so
 * a stuck request cannot hold a controller's shutdown (and its successor) up.
 */
const CLOSE_GRACE_MS = 2_000;

const PROBLEM_JSON = 'application/problem+json';

/** The SSE route: its streams are cut at once on close (clients reconnect elsewhere). */
const EVENTS_PATH = '/v1/events';

/**
 * The authenticated token's name per request (written in history as who did it). Kept beside
 * the context rather than in typed hono variables so createApp can return a plain `Hono`.
 */
const actors = new WeakMap<Context, string>();

export interface AppOptions {
  api: ControllerApi;
  tokens: ResolvedToken[];
  logger: Logger;
}

export function createApp(opts: AppOptions): Hono {
  const app = new Hono();
  const authenticate = tokenChecker(opts.tokens);
  const handlers = routeHandlers();

  app.use('*', requestLogger(opts.logger));
  for (const route of ROUTES) {
    const handler = handlers[routeKey(route)];
    if (!handler) throw new Error(`no handler for ${routeKey(route)}: add one to routeHandlers()`);
    app.on(route.method.toUpperCase(), route.path, authorize(route, authenticate), limitBody, async (c) => {
      const call = await validate(route, c, opts);
      return respond(c, route, await handler(call));
    });
  }
  mountMethodNotAllowed(app);
  app.notFound((c) =>
    problemResponse(
      c,
      404,
      'not-found',
      `no route ${c.req.method} ${c.req.path}; GET /openapi.json lists them`,
    ),
  );
  app.onError((err, c) => errorResponse(c, err, opts.logger));
  return app;
}

// --- authentication and roles --------------------------------------------------------------

type TokenCheck = (header: string | undefined) => ResolvedToken | 'missing' | 'invalid';

/**
 * Compares the presented token with every configured one in constant time: both sides are
 * hashed first so the compared buffers always have equal length, and the loop never stops
 * early, so neither a token's length nor its position in the list shows in the timing.
 */
function tokenChecker(tokens: ResolvedToken[]): TokenCheck {
  const known = tokens.map((t) => ({ token: t, digest: sha256(t.secret) }));
  return (header) => {
    const presented = bearerToken(header);
    if (presented === undefined) return 'missing';
    const digest = sha256(presented);
    let found: ResolvedToken | undefined;
    for (const k of known) {
      if (timingSafeEqual(k.digest, digest)) found = k.token;
    }
    return found ?? 'invalid';
  };
}

function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

function sha256(text: string): Buffer {
  return createHash('sha256').update(text, 'utf8').digest();
}

function authorize(route: RouteSpec, check: TokenCheck): MiddlewareHandler {
  return async (c, next) => {
    if (route.role === 'none') return next();
    const result = check(c.req.header('authorization'));
    if (result === 'missing' || result === 'invalid') return unauthorized(c, result);
    if (!roleAllows(result.role, route.role)) {
      return problemResponse(
        c,
        403,
        'forbidden',
        `${route.method.toUpperCase()} ${route.path} needs role ${route.role} or higher; ` +
          `token '${result.name}' has role ${result.role}. Use a token with role ${route.role} ` +
          `(auth.tokens in the controller config).`,
      );
    }
    actors.set(c, result.name);
    return next();
  };
}

function unauthorized(c: Context, why: 'missing' | 'invalid'): Response {
  const detail =
    why === 'missing'
      ? 'no bearer token: send "Authorization: Bearer <token>" with a token from auth.tokens in the controller config'
      : 'the bearer token is not one this controller knows: check the token (or its tokenFile) against auth.tokens';
  const challenge =
    why === 'missing' ? 'Bearer realm="understudy"' : 'Bearer realm="understudy", error="invalid_token"';
  return problemResponse(c, 401, 'unauthorized', detail, { 'WWW-Authenticate': challenge });
}

const limitBody = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: (c) =>
    problemResponse(
      c,
      413,
      'bad-request',
      `request body larger than ${MAX_BODY_BYTES} bytes: split a bulk apply into smaller batches`,
      {},
      '(body)',
    ),
});

// --- validation -----------------------------------------------------------------------------

/** A request that passed validation, as a route handler sees it. */
interface Call {
  api: ControllerApi;
  /** The token's name; empty on unauthenticated routes. */
  actor: string;
  params: Record<string, string>;
  /** Parsed with the route's query schema (defaults applied), or undefined. */
  query: unknown;
  /** Parsed with the route's body schema (defaults applied), or undefined. */
  body: unknown;
  c: Context;
  logger: Logger;
}

async function validate(route: RouteSpec, c: Context, deps: AppOptions): Promise<Call> {
  const params = validateParams(c.req.param() as Record<string, string>);
  const query = route.query ? parseOrThrow(route.query, c.req.query(), 'query', 'query') : undefined;
  const body = await validateBody(route, c);
  return { api: deps.api, logger: deps.logger, actor: actors.get(c) ?? '', params, query, body, c };
}

function validateParams(params: Record<string, string>): Record<string, string> {
  for (const [name, value] of Object.entries(params)) {
    const parsed = Name.safeParse(value);
    if (!parsed.success) {
      const field = `path.${name}`;
      throw new ApiError('bad-request', `${field} '${value}': ${parsed.error.issues[0]!.message}`, field);
    }
  }
  return params;
}

/**
 * Routes with a body schema validate against it. Other POSTs (resume, unfence, approve) take
 * no body but accept an empty one or `{}`, so generic clients that always send JSON work.
 * PUT reads its spec document itself; DELETE ignores bodies.
 */
async function validateBody(route: RouteSpec, c: Context): Promise<unknown> {
  if (route.body) {
    const json = await readJson(c);
    if (json === undefined) return parseMissingBody(route.body);
    return parseOrThrow(route.body, json, '', '(body)');
  }
  if (route.method !== 'post') return undefined;
  const json = await readJson(c);
  if (json === undefined || isEmptyObject(json)) return undefined;
  throw new ApiError('bad-request', 'this request takes no body: send none or {}', '(body)');
}

/** An absent body is `{}` when the schema allows it (every field optional). */
function parseMissingBody(schema: z.ZodType): unknown {
  const parsed = schema.safeParse({});
  if (parsed.success) return parsed.data;
  throw new ApiError(
    'bad-request',
    `request body missing: send a JSON object (${describeIssues(parsed.error, schema, '')})`,
    '(body)',
  );
}

/** The body as JSON; undefined when there is none. */
async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text) as unknown;
  } catch (err) {
    throw new ApiError(
      'bad-request',
      `request body is not valid JSON (${(err as Error).message}): send a JSON object`,
      '(body)',
    );
  }
}

function isEmptyObject(value: unknown): boolean {
  return isPlainObject(value) && Object.keys(value).length === 0;
}

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parse with a zod schema or throw a 400 whose `field` is the first culprit (`prefix.path`, or
 * `root` for the value as a whole) and whose detail lists every issue.
 */
function parseOrThrow(schema: z.ZodType, value: unknown, prefix: string, root: string): unknown {
  const parsed = schema.safeParse(value);
  if (parsed.success) return parsed.data;
  const fields = parsed.error.issues.flatMap((issue) => issueFields(issue, prefix));
  const where = prefix === 'query' ? 'query string' : 'request body';
  throw new ApiError(
    'bad-request',
    `invalid ${where}: ${describeIssues(parsed.error, schema, prefix)}`,
    fields[0] || root,
  );
}

/** Dotted fields an issue is about; an unknown key names the key itself. */
function issueFields(issue: z.core.$ZodIssue, prefix: string): string[] {
  const base = issue.path.map(String);
  const paths = issue.code === 'unrecognized_keys' ? issue.keys.map((k) => [...base, k]) : [base];
  return paths.map((p) => [prefix, ...p].filter((s) => s !== '').join('.'));
}

function describeIssues(error: z.ZodError, schema: z.ZodType, prefix: string): string {
  return error.issues
    .map((issue) => {
      const fields = issueFields(issue, prefix).map((f) => f || '(body)');
      if (issue.code === 'unrecognized_keys') {
        const allowed = knownKeys(schema, issue.path);
        const hint = allowed ? ` (allowed: ${allowed.join(', ')})` : '';
        return fields.map((f) => `${f}: unknown field${hint}`).join('; ');
      }
      return `${fields[0]}: ${issue.message}`;
    })
    .join('; ');
}

/** Field names an object schema allows, for "unknown field" hints (top level only). */
function knownKeys(schema: z.ZodType, path: readonly PropertyKey[]): string[] | undefined {
  return path.length === 0 && schema instanceof z.ZodObject ? Object.keys(schema.shape) : undefined;
}

// --- route handlers --------------------------------------------------------------------------

type RouteHandler = (call: Call) => Promise<unknown>;

function routeKey(route: Pick<RouteSpec, 'method' | 'path'>): string {
  return `${route.method} ${route.path}`;
}

function param(call: Call, name: string): string {
  const value = call.params[name];
  if (value === undefined) throw new Error(`route has no :${name} parameter`);
  return value;
}

/** One handler per entry of ROUTES; createApp refuses to start if one is missing. */
function routeHandlers(): Record<string, RouteHandler> {
  const id = (call: Call) => param(call, 'identity');
  return {
    'get /v1/controller': async ({ api }) => api.info(),
    'get /v1/identities': async ({ api }) => ({ identities: await api.listIdentities() }),
    'get /v1/identities/:identity': async (call) => call.api.getIdentity(id(call)),
    'get /v1/identities/:identity/spec': async (call) => call.api.getSpec(id(call)),
    'put /v1/identities/:identity': putIdentity,
    'delete /v1/identities/:identity': async (call) => call.api.deleteIdentity(id(call), call.actor),
    'post /v1/apply': async ({ api, body, actor }) => ({
      results: await api.apply(body as ApplyBody, actor),
    }),
    'post /v1/identities/:identity/switchover': async (call) =>
      call.api.switchover(id(call), call.body as SwitchoverBody, call.actor),
    'post /v1/identities/:identity/failover': async (call) =>
      call.api.failover(id(call), call.body as FailoverBody, call.actor),
    'post /v1/identities/:identity/pause': async (call) =>
      call.api.pause(id(call), call.body as PauseBody, call.actor),
    'post /v1/identities/:identity/resume': async (call) => call.api.resume(id(call), call.actor),
    'get /v1/identities/:identity/workflow': async (call) => call.api.getWorkflow(id(call)),
    'delete /v1/identities/:identity/workflow': async (call) => call.api.cancelWorkflow(id(call), call.actor),
    'get /v1/workflows': async ({ api }) => ({ workflows: await api.listWorkflows() }),
    'get /v1/nodes': async ({ api }) => ({ nodes: await api.listNodes() }),
    'post /v1/nodes/:node/fence': async (call) =>
      call.api.fenceNode(param(call, 'node'), call.body as FenceBody, call.actor),
    'post /v1/nodes/:node/unfence': async (call) => call.api.unfenceNode(param(call, 'node'), call.actor),
    'get /v1/identities/:identity/acl': async (call) => call.api.getAcl(id(call)),
    'post /v1/identities/:identity/acl': async (call) =>
      call.api.changeAcl(id(call), call.body as AclChangeBody, call.actor),
    'post /v1/identities/:identity/acl/pending/:caller/approve': async (call) =>
      call.api.approve(id(call), param(call, 'caller'), call.actor),
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

// --- server-sent events ----------------------------------------------------------------------

async function events(call: Call): Promise<Response> {
  const identity = call.c.req.query('identity');
  if (identity !== undefined) {
    const parsed = Name.safeParse(identity);
    if (!parsed.success) {
      throw new ApiError(
        'bad-request',
        `query.identity '${identity}': ${parsed.error.issues[0]!.message}`,
        'query.identity',
      );
    }
  }
  const wanted = identity === undefined ? () => true : (e: ApiEvent) => concerns(e, identity);
  return streamSSE(
    call.c,
    (stream) => pumpEvents(stream, call.api, wanted),
    async (err) => {
      call.logger.error({ err }, 'event stream failed; the client gets an error event and reconnects');
    },
  );
}

/**
 * Streams the core's events until the client goes away. There is no replay (Last-Event-ID is
 * not honoured): a client that reconnects re-reads the state it cares about.
 */
async function pumpEvents(
  stream: SSEStreamingApi,
  api: ControllerApi,
  wanted: (e: ApiEvent) => boolean,
): Promise<void> {
  let id = 0;
  let queued = 0;
  // Writes are chained so events go out in the order the core published them.
  let writing = Promise.resolve();
  const written = () => {
    queued--;
  };
  const enqueue = (write: () => Promise<unknown>) => {
    if (queued >= SSE_MAX_QUEUED) return stream.abort();
    queued++;
    writing = writing.then(write).then(written, written);
  };
  const unsubscribe = api.subscribe((event) => {
    if (!wanted(event)) return;
    const message = { event: event.type, data: JSON.stringify(event), id: String(++id) };
    enqueue(() => stream.writeSSE(message));
  });
  const keepalive = setInterval(() => enqueue(() => stream.write(': keepalive\n\n')), SSE_KEEPALIVE_MS);
  try {
    await new Promise<void>((resolve) => {
      if (stream.aborted) resolve();
      stream.onAbort(resolve);
    });
  } finally {
    clearInterval(keepalive);
    unsubscribe();
  }
}

/** Node events describe a host, not an identity: a filtered stream leaves them out. */
function concerns(event: ApiEvent, identity: string): boolean {
  switch (event.type) {
    case 'identity':
      return event.identity.identity === identity;
    case 'workflow':
      return event.workflow.identity === identity;
    case 'alarm':
      return event.identity === identity;
    case 'node':
      return false;
  }
}

// --- responses -------------------------------------------------------------------------------

function respond(c: Context, route: RouteSpec, result: unknown): Response {
  if (result instanceof Response) return result;
  if (route.status === 204) return c.body(null, 204);
  return c.json(result, route.status as ContentfulStatusCode);
}

function problemResponse(
  c: Context,
  status: number,
  code: ProblemCode,
  detail: string,
  headers: Record<string, string> = {},
  field?: string,
): Response {
  return sendProblem(c, { ...new ApiError(code, detail, field).toProblem(), status }, headers);
}

function sendProblem(c: Context, problem: Problem, headers: Record<string, string> = {}): Response {
  return c.body(JSON.stringify(problem), problem.status as ContentfulStatusCode, {
    ...headers,
    'Content-Type': PROBLEM_JSON,
  });
}

/** ApiErrors are the core's answers; anything else is a fault, logged and reported as 500. */
function errorResponse(c: Context, err: Error, logger: Logger): Response {
  if (err instanceof ApiError) return sendProblem(c, err.toProblem());
  const what = `${c.req.method} ${c.req.path}`;
  logger.error({ err, method: c.req.method, path: c.req.path, actor: actors.get(c) }, `${what} failed`);
  return problemResponse(
    c,
    500,
    'internal',
    `${what} failed inside the controller: ${err.message}. Retry; if it persists, see the controller log.`,
  );
}

/**
 * A known path with the wrong method answers 405 with `Allow`. Registered after the real
 * routes, so it only runs when none of them matched the method.
 */
function mountMethodNotAllowed(app: Hono): void {
  const methodsByPath = new Map<string, string[]>();
  for (const route of ROUTES) {
    const methods = methodsByPath.get(route.path) ?? [];
    methods.push(route.method.toUpperCase());
    if (route.method === 'get') methods.push('HEAD');
    methodsByPath.set(route.path, methods);
  }
  for (const [path, methods] of methodsByPath) {
    const allow = methods.join(', ');
    app.all(path, (c) =>
      problemResponse(
        c,
        405,
        'bad-request',
        `${c.req.method} is not allowed on ${c.req.path}; use ${allow}`,
        {
          Allow: allow,
        },
      ),
    );
  }
}

// --- logging ---------------------------------------------------------------------------------

/**
 * Writes are logged at info (they change things and name who did it), reads at debug.
 * Only the method, path, actor and outcome are logged: never headers, so never a token.
 */
function requestLogger(logger: Logger): MiddlewareHandler {
  return async (c, next) => {
    const started = performance.now();
    await next();
    const record = {
      method: c.req.method,
      path: c.req.path,
      actor: actors.get(c),
      status: c.res.status,
      durationMs: Math.round(performance.now() - started),
    };
    const mutating = c.req.method !== 'GET' && c.req.method !== 'HEAD';
    if (mutating) logger.info(record, 'http request');
    else logger.debug(record, 'http request');
  };
}

// --- listening -------------------------------------------------------------------------------

export interface HttpServerHandle {
  /** Base URL, e.g. http://127.0.0.1:8480 (wildcard hosts are shown as localhost). */
  url: string;
  /** The port actually bound (the real one when asked for port 0). */
  port: number;
  /** Stops accepting, lets in-flight requests finish briefly, then cuts what remains (SSE). */
  close(): Promise<void>;
}

export async function serveHttp(
  app: Hono,
  opts: { listen: string; tls?: { cert: string; key: string } },
): Promise<HttpServerHandle> {
  const { host, port } = parseListen(opts.listen);
  const tls = opts.tls ? await readTls(opts.tls) : undefined;
  const fetch = app.fetch;
  return new Promise((resolve, reject) => {
    const onListening = (info: { port: number }) => {
      server.off('error', onError);
      const scheme = tls ? 'https' : 'http';
      const close = closer(server, trackEventStreams(server));
      resolve({ url: `${scheme}://${urlHost(host)}:${info.port}`, port: info.port, close });
    };
    const server = (
      tls
        ? serve(
            { fetch, hostname: host, port, createServer: createHttpsServer, serverOptions: tls },
            onListening,
          )
        : serve({ fetch, hostname: host, port }, onListening)
    ) as HttpServer | HttpsServer;
    const onError = (err: Error) =>
      reject(
        new Error(`cannot listen on ${opts.listen}: ${err.message}; free the port or change http.listen`),
      );
    server.once('error', onError);
  });
}

/** `host:port` or `[v6]:port`. */
function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  if (!match || port > 65_535) {
    throw new Error(`http.listen '${listen}' is not host:port (e.g. 127.0.0.1:8480, [::1]:8480, 0.0.0.0:0)`);
  }
  return { host: (match[1] ?? match[2])!, port };
}

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return 'localhost';
  return host.includes(':') ? `[${host}]` : host;
}

async function readTls(files: { cert: string; key: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const read = async (field: 'cert' | 'key') => {
    try {
      return await readFile(files[field]);
    } catch (err) {
      throw new Error(`cannot read http.tls.${field} ${files[field]}: ${(err as Error).message}`);
    }
  };
  return { cert: await read('cert'), key: await read('key') };
}

/** Open SSE responses: they never end on their own, so close() ends them instead of waiting. */
function trackEventStreams(server: HttpServer | HttpsServer): Set<ServerResponse> {
  const streams = new Set<ServerResponse>();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (new URL(req.url ?? '/', 'http://any').pathname !== EVENTS_PATH) return;
    streams.add(res);
    res.once('close', () => streams.delete(res));
  });
  return streams;
}

function closer(server: HttpServer | HttpsServer, streams: Set<ServerResponse>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () =>
    (closing ??= new Promise<void>((resolve, reject) => {
      const cutOff = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      cutOff.unref();
      server.close((err) => {
        clearTimeout(cutOff);
        if (err) reject(err);
        else resolve();
      });
      server.closeIdleConnections();
      for (const res of streams) res.destroy();
    }));
}

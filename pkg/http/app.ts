// The controller's HTTP server: authenticates bearer tokens, checks roles, validates every
// path, query and body against pkg/api and hands the request to the controller core
// (ControllerApi). Everything that goes wrong is answered as RFC 9457 problem+json naming the
// field at fault and what to do next; nothing reaches the core until the request is valid.
//
// One file per job: auth.ts (tokens and roles), validate.ts (requests), handlers.ts (one
// handler per route), events.ts (the SSE stream), respond.ts (answers and problems),
// serve.ts (listening and closing).
import { Hono, type MiddlewareHandler } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { ROUTES, type ControllerApi } from '../api/schema.js';
import type { ResolvedToken } from '../config/controller.js';
import type { Logger } from '../log/index.js';
import { mountDashboard } from '../dashboard/routes.js';
import { actorOf, authorize, tokenChecker } from './auth.js';
import { routeHandlers, routeKey } from './handlers.js';
import { errorResponse, problemResponse, respond } from './respond.js';
import { validate } from './validate.js';

const METRICS_PATH = '/metrics';

/** Largest request body accepted: a bulk apply of 500 specs fits with room to spare. */
export const MAX_BODY_BYTES = 1024 * 1024;

export interface AppOptions {
  api: ControllerApi;
  tokens: ResolvedToken[];
  logger: Logger;
  /** Who may read /metrics (controller config http.metricsAuth): nobody needs a token by default. */
  metricsAuth?: 'none' | 'viewer';
  /** Serve the dashboard (pkg/dashboard) at `/` (controller config http.dashboard). */
  dashboard?: boolean;
}

export function createApp(opts: AppOptions): Hono {
  const app = new Hono();
  const authenticate = tokenChecker(opts.tokens);
  const handlers = routeHandlers();

  app.use('*', requestLogger(opts.logger));
  for (const route of ROUTES) {
    const handler = handlers[routeKey(route)];
    if (!handler) throw new Error(`no handler for ${routeKey(route)}: add one to routeHandlers()`);
    const needed = route.path === METRICS_PATH ? (opts.metricsAuth ?? 'none') : route.role;
    app.on(
      route.method.toUpperCase(),
      route.path,
      authorize(route, authenticate, needed),
      limitBody,
      async (c) => {
        const call = await validate(route, c, opts);
        return respond(c, route, await handler(call));
      },
    );
  }
  if (opts.dashboard ?? true) mountDashboard(app, opts);
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

const limitBody = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: (c) =>
    problemResponse(
      c,
      413,
      'payload-too-large',
      `request body larger than ${MAX_BODY_BYTES} bytes: split a bulk apply into smaller batches`,
      {},
      '(body)',
    ),
});

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
        'method-not-allowed',
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
      actor: actorOf(c),
      status: c.res.status,
      durationMs: Math.round(performance.now() - started),
    };
    const mutating = c.req.method !== 'GET' && c.req.method !== 'HEAD';
    if (mutating) logger.info(record, 'http request');
    else logger.debug(record, 'http request');
  };
}

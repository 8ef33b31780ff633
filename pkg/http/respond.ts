// Answers: a route's result with its status, and every failure as problem+json.
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { ApiError, type Problem, type ProblemCode, type RouteSpec } from '../api/schema.js';
import type { Logger } from '../log/index.js';
import { actorOf } from './auth.js';

const PROBLEM_JSON = 'application/problem+json';

export function respond(c: Context, route: RouteSpec, result: unknown): Response {
  if (result instanceof Response) return result;
  if (route.status === 204) return c.body(null, 204);
  return c.json(result, route.status as ContentfulStatusCode);
}

export function problemResponse(
  c: Context,
  status: number,
  code: ProblemCode,
  detail: string,
  headers: Record<string, string> = {},
  field?: string,
): Response {
  return sendProblem(c, { ...new ApiError(code, detail, field).toProblem(), status }, headers);
}

export function sendProblem(c: Context, problem: Problem, headers: Record<string, string> = {}): Response {
  return c.body(JSON.stringify(problem), problem.status as ContentfulStatusCode, {
    ...headers,
    'Content-Type': PROBLEM_JSON,
  });
}

/** ApiErrors are the core's answers; anything else is a fault, logged and reported as 500. */
export function errorResponse(c: Context, err: Error, logger: Logger): Response {
  if (err instanceof ApiError) return sendProblem(c, err.toProblem());
  const what = `${c.req.method} ${c.req.path}`;
  logger.error({ err, method: c.req.method, path: c.req.path, actor: actorOf(c) }, `${what} failed`);
  return problemResponse(
    c,
    500,
    'internal',
    `${what} failed inside the controller: ${err.message}. Retry; if it persists, see the controller log.`,
  );
}

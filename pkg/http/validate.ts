// Requests as the core may see them: path names, query and body parsed with the route's
// schema, every problem reported with the field at fault.
import type { Context } from 'hono';
import { z } from 'zod';
import { ApiError, type ControllerApi, type Role, type RouteSpec } from '../api/schema.js';
import { Name } from '../lease/keys.js';
import type { Logger } from '../log/index.js';
import type { AppOptions } from './app.js';
import { actorOf, roleOf } from './auth.js';

/** A request that passed validation, as a route handler sees it. */
export interface Call {
  api: ControllerApi;
  /** The token's name; empty on unauthenticated routes. */
  actor: string;
  /** The token's role; undefined on unauthenticated routes. */
  role: Role | undefined;
  params: Record<string, string>;
  /** Parsed with the route's query schema (defaults applied), or undefined. */
  query: unknown;
  /** Parsed with the route's body schema (defaults applied), or undefined. */
  body: unknown;
  c: Context;
  logger: Logger;
}

export async function validate(route: RouteSpec, c: Context, deps: AppOptions): Promise<Call> {
  const params = validateParams(c.req.param() as Record<string, string>);
  const query = route.query ? parseOrThrow(route.query, c.req.query(), 'query', 'query') : undefined;
  const body = await validateBody(route, c);
  const role = roleOf(c);
  return { api: deps.api, logger: deps.logger, actor: actorOf(c) ?? '', role, params, query, body, c };
}

function validateParams(params: Record<string, string>): Record<string, string> {
  for (const [name, value] of Object.entries(params)) validName(name, value);
  return params;
}

/** A path parameter naming an identity or a node, or a bad-request naming `path.<param>`. */
export function validName(param: string, value: string): string {
  const parsed = Name.safeParse(value);
  if (!parsed.success) {
    const field = `path.${param}`;
    throw new ApiError('bad-request', `${field} '${value}': ${parsed.error.issues[0]!.message}`, field);
  }
  return parsed.data;
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

/**
 * A body's Content-Type, when it names one, must be JSON (`application/json`, or a
 * `+json` type): a form or a text body is not read as JSON by accident. No Content-Type at
 * all is taken as JSON, for hand-written clients.
 */
function isJsonContentType(header: string | undefined): boolean {
  if (header === undefined || header.trim() === '') return true;
  const type = header.split(';')[0]!.trim().toLowerCase();
  return type === 'application/json' || /^application\/[\w.+-]+\+json$/.test(type);
}

/** The body as JSON; undefined when there is none. */
export async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === '') return undefined;
  const contentType = c.req.header('content-type');
  if (!isJsonContentType(contentType)) {
    throw new ApiError(
      'unsupported-media-type',
      `request body has Content-Type ${contentType}: send JSON with Content-Type application/json`,
      '(body)',
    );
  }
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

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/**
 * Parse with a zod schema or throw a 400 whose `field` is the first culprit (`prefix.path`, or
 * `root` for the value as a whole) and whose detail lists every issue.
 */
/** `value` parsed with `schema`, or a bad-request naming the first field at fault. */
export function parseOrThrow(schema: z.ZodType, value: unknown, prefix: string, root: string): unknown {
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

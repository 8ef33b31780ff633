// Who is calling: bearer tokens compared in constant time, and the role each route needs.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import { roleAllows, type Role, type RouteSpec } from '../api/schema.js';
import type { ResolvedToken } from '../config/controller.js';
import { problemResponse } from './respond.js';

/**
 * The authenticated token's name per request (written in history as who did it). Kept beside
 * the context rather than in typed hono variables so createApp can return a plain `Hono`.
 */
const actors = new WeakMap<Context, string>();
/** The authenticated token's role per request (what a response may show, e.g. redact.ts). */
const roles = new WeakMap<Context, Role>();

/** The authenticated token's name for this request ('' on unauthenticated routes). */
export function actorOf(c: Context): string | undefined {
  return actors.get(c);
}

/** The authenticated token's role (undefined on unauthenticated routes). */
export function roleOf(c: Context): Role | undefined {
  return roles.get(c);
}

export type TokenCheck = (header: string | undefined) => ResolvedToken | 'missing' | 'invalid';

/**
 * Compares the presented token with every configured one in constant time: both sides are
 * hashed first so the compared buffers always have equal length, and the loop never stops
 * early, so neither a token's length nor its position in the list shows in the timing.
 */
export function tokenChecker(tokens: ResolvedToken[]): TokenCheck {
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

/** `needed` overrides the route's role (e.g. /metrics behind http.metricsAuth). */
export function authorize(route: RouteSpec, check: TokenCheck, needed = route.role): MiddlewareHandler {
  return async (c, next) => {
    if (needed === 'none') return next();
    const result = check(c.req.header('authorization'));
    if (result === 'missing' || result === 'invalid') return unauthorized(c, result);
    if (!roleAllows(result.role, needed)) {
      return problemResponse(
        c,
        403,
        'forbidden',
        `${route.method.toUpperCase()} ${route.path} needs role ${needed} or higher; ` +
          `token '${result.name}' has role ${result.role}. Use a token with role ${needed} ` +
          `(auth.tokens in the controller config).`,
      );
    }
    actors.set(c, result.name);
    roles.set(c, result.role);
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

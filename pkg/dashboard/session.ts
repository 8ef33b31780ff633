// The dashboard's login session: a browser cannot attach a bearer token to an EventSource or
// to a plain link, so the token is exchanged once for an HttpOnly cookie.
//
// The cookie carries the token's name and an expiry, signed with a key derived from the
// token's own secret. So any controller replica configured with the same tokens accepts it
// (no session store to share), and rotating or removing a token ends every session opened
// with it. The role is looked up in the current configuration at each request, never trusted
// from the cookie.
import { createHmac, timingSafeEqual } from 'node:crypto';
import type { ResolvedToken } from '../config/controller.js';

export const SESSION_COOKIE = 'understudy_session';

/** A working shift: a dashboard left open overnight asks for the token again in the morning. */
export const SESSION_TTL_MS = 8 * 60 * 60 * 1000;

/** Domain separation: the derived key signs dashboard sessions and nothing else. */
const KEY_LABEL = 'understudy dashboard session v1';

/** The cookie value for a session opened now with `token`. */
export function mintSession(token: ResolvedToken, nowMs: number): string {
  const expires = nowMs + SESSION_TTL_MS;
  const name = Buffer.from(token.name, 'utf8').toString('base64url');
  return `${name}.${expires}.${mac(token, name, expires).toString('base64url')}`;
}

export type SessionCheck = { token: ResolvedToken; expiresMs: number } | { problem: string };

/** The token a cookie value was minted with, if it is genuine, unexpired and still configured. */
export function readSession(value: string | undefined, tokens: ResolvedToken[], nowMs: number): SessionCheck {
  if (!value) return { problem: 'not signed in' };
  const match = /^([A-Za-z0-9_-]+)\.(\d{1,16})\.([A-Za-z0-9_-]{43})$/.exec(value);
  if (!match) return { problem: 'the session cookie is malformed: sign in again' };
  const [, name, expiresText, presented] = match as unknown as [string, string, string, string];
  const expires = Number(expiresText);
  if (expires <= nowMs) return { problem: 'the session expired: sign in again' };
  const tokenName = Buffer.from(name, 'base64url').toString('utf8');
  const token = tokens.find((t) => t.name === tokenName);
  // An unknown name and a bad signature read the same, in answer and in time: a cookie says
  // nothing about which tokens exist.
  const expected = mac(token ?? UNKNOWN, name, expires);
  const genuine = timingSafeEqual(expected, Buffer.from(presented, 'base64url'));
  if (!token || !genuine)
    return { problem: 'the session is no longer valid (its token changed): sign in again' };
  return { token, expiresMs: expires };
}

/** Stands in for a name no token has, so that case costs the same two HMACs. */
const UNKNOWN: ResolvedToken = { name: '', role: 'viewer', secret: 'no token has this name' };

function mac(token: ResolvedToken, name: string, expires: number): Buffer {
  const key = createHmac('sha256', token.secret).update(KEY_LABEL).digest();
  return createHmac('sha256', key).update(`${name}.${expires}`).digest();
}

// Who may call what, and how the API says no: roles, and the RFC 9457 problem document every
// error is answered with (naming the field at fault and what to do next).
import { z } from 'zod';

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
  /** The path exists but not with this method (`Allow` lists the ones it has). */
  'method-not-allowed',
  /** The body is larger than the server accepts. */
  'payload-too-large',
  /** The body is not JSON by its Content-Type. */
  'unsupported-media-type',
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
  'method-not-allowed': 405,
  'payload-too-large': 413,
  'unsupported-media-type': 415,
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

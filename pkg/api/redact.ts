// What a role may read of a stored spec. `service.env` often carries secrets (passwords, API
// keys handed to the service), so a viewer sees which variables are set but not their values;
// operators and admins, who may change the spec anyway, see it whole. Credentials themselves
// are never in a spec (the spec says only where one comes from) and no route returns one.
import { roleAllows, type Role } from './problem.js';

export const REDACTED = '[redacted]';

/** The least role that sees `service.env` values. */
export const ENV_READER_ROLE: Role = 'operator';

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * The spec as `role` may see it (a copy; the input is never changed). An unknown role (no
 * token) is treated as the least one.
 */
export function specForRole(role: Role | undefined, spec: unknown): unknown {
  if (role !== undefined && roleAllows(role, ENV_READER_ROLE)) return spec;
  if (!isObject(spec) || !isObject(spec.service) || !isObject(spec.service.env)) return spec;
  const env = Object.fromEntries(Object.keys(spec.service.env).map((k) => [k, REDACTED]));
  return { ...spec, service: { ...spec.service, env } };
}

// Short digests of what a standby runs, for drift checks: equal digests, equal content.
import { createHash } from 'node:crypto';
import type { AccessLists } from './schema.js';

/** JSON with object keys sorted, so the same lists always give the same digest. */
function canonical(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonical).join(',')}]`;
  if (value !== null && typeof value === 'object') {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonical(v)}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/** The access lists' digest: 16 hex characters of sha256, enough to tell two lists apart. */
export function accessFingerprint(access: AccessLists): string {
  return createHash('sha256').update(canonical(access)).digest('hex').slice(0, 16);
}

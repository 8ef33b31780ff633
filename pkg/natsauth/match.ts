// What a permission table lets a user do, decided the way nats-server decides it: allowed when
// an allow entry covers the subject and no deny entry matches it. Pure: the docs' table and the
// unit tests read the permission data through it, and the integration test checks the real
// server agrees.
import type { Permissions } from './permissions.js';

/** Does every subject matching `subject` (wildcards allowed) also match `pattern`? */
export function covers(pattern: string, subject: string): boolean {
  const p = pattern.split('.');
  const s = subject.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i < s.length;
    if (i >= s.length || s[i] === '>') return false;
    if (p[i] === '*') continue;
    if (s[i] === '*' || s[i] !== p[i]) return false;
  }
  return p.length === s.length;
}

/** An entry is `<subject>` or `<subject> <queue>` (a subscription only with that queue group). */
function split(entry: string): { subject: string; queue?: string } {
  const [subject, queue] = entry.split(' ');
  return { subject: subject!, ...(queue !== undefined && { queue }) };
}

/**
 * May a user with `p` publish to, or subscribe to, `subject` (with `queue`)? A deny entry that
 * matches only part of a wildcard subscription does not refuse it (the server filters those
 * messages instead), so for subscriptions only a deny covering the whole subject refuses.
 */
export function permits(
  p: Permissions,
  operation: 'publish' | 'subscribe',
  subject: string,
  queue?: string,
): boolean {
  const d = p[operation];
  const allowed = d.allow.some((r) => {
    const e = split(r.subject);
    return covers(e.subject, subject) && (e.queue === undefined || e.queue === queue);
  });
  const denied = d.deny.some((r) => {
    const e = split(r.subject);
    if (e.queue !== undefined && e.queue !== queue) return false;
    return covers(e.subject, subject);
  });
  return allowed && !denied;
}

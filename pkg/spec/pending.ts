// Pending authorization requests, as pure rules: how many an identity keeps, and which record
// an approval or a denial acts on. A record is one (caller name, key) pair that asked: the
// same name asking with two keys makes two records, so an approval can only ever authorize
// the exact pair an admin looked at, never a key that asked later under the same name.
import type { AccessLists, PendingRequest } from './schema.js';

/**
 * Most pending records one identity keeps. Each is one etcd key of ~400 bytes written by the
 * leader at most once a minute per caller; anyone with a fresh nkey can cause one, so without
 * a bound a flood of made-up callers grows etcd without end. 100 is far more than an admin
 * reviews at once; beyond it, new requests are refused (logged on the leader, and the caller
 * is told its request could not be recorded) until some are approved or denied.
 */
export const MAX_PENDING_PER_IDENTITY = 100;

export type PendingAdmission = { record: true } | { record: false; reason: string };

/** May a new pending record be written, with `count` records already kept? */
export function admitPending(
  identity: string,
  count: number,
  limit = MAX_PENDING_PER_IDENTITY,
): PendingAdmission {
  if (count < limit) return { record: true };
  return {
    record: false,
    reason:
      `${identity} already has ${count} pending authorization requests (the limit is ${limit}); ` +
      `nothing was recorded: approve or deny some (understudy acl ${identity}) before new ones can be recorded`,
  };
}

export type PendingChoice =
  | { ok: true; records: PendingRequest[] }
  | { ok: false; code: 'no-pending' | 'ambiguous' | 'conflict'; message: string };

/**
 * Which of `name`'s pending records a decision acts on. `key` picks one; without it an
 * approval needs exactly one (two keys asking as one name: one of them is not that caller),
 * while a denial acts on all of them (refusing is the safe direction). An approval of a name
 * already on a list with another key is refused: it would silently replace that key.
 */
export function choosePending(
  identity: string,
  name: string,
  records: PendingRequest[],
  decision: 'approve' | 'deny' | 'block',
  access: AccessLists,
  key?: string,
): PendingChoice {
  const mine = records.filter((r) => r.name === name);
  const chosen = key === undefined ? mine : mine.filter((r) => r.nkey === key);
  if (chosen.length === 0) {
    return {
      ok: false,
      code: 'no-pending',
      message:
        key === undefined
          ? `${identity} has no pending authorization request from ${name}; list them with understudy acl ${identity}`
          : `${identity} has no pending authorization request from ${name} with key ${key}` +
            (mine.length > 0 ? ` (its pending keys: ${mine.map((r) => r.nkey).join(', ')})` : ''),
    };
  }
  if (decision !== 'approve') return { ok: true, records: chosen };
  if (chosen.length > 1) {
    return {
      ok: false,
      code: 'ambiguous',
      message:
        `${chosen.length} different keys asked as ${name} (${chosen.map((r) => r.nkey).join(', ')}): at most one is really ${name}; ` +
        `deny the others by key (deny with {"key": "U..."}), then approve`,
    };
  }
  const record = chosen[0]!;
  const onFile = [...access.contacts, ...access.authorized].find((c) => c.name === name);
  if (onFile !== undefined && onFile.nkey !== record.nkey) {
    return {
      ok: false,
      code: 'conflict',
      message:
        `${name} is already on ${identity}'s lists with key ${onFile.nkey}, not ${record.nkey}; ` +
        `if ${name}'s key really changed, remove ${name} first, then approve`,
    };
  }
  return { ok: true, records: [record] };
}

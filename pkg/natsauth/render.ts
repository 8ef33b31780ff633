// The nats-server (2.9+) configuration block for understudy's role users: a pure function
// from users to text. Each permission entry is preceded by its reason as a comment, so an
// operator reading the server's config sees why a subject is there.
//
//   authorization {
//     users = [
//       { nkey: "U...", permissions: { publish: {...}, subscribe: {...}, allow_responses: true } }
//     ]
//   }
import { isUserPublicKey } from '../keys/index.js';
import {
  rolePermissions,
  type Direction,
  type Permissions,
  type Role,
  type RoleScope,
} from './permissions.js';

export interface AuthUser {
  /** A label for the comment above the user (e.g. agent-a); not part of the server config. */
  name: string;
  /** How the user authenticates: a user public nkey ('U...'), or a plain user name (tests only). */
  nkey?: string;
  user?: string;
  permissions: Permissions;
}

/** A user of one of understudy's roles; a scope makes a per-node (or per-identity) agent user. */
export function roleUser(name: string, role: Role, nkey: string, scope: RoleScope = {}): AuthUser {
  return { name, nkey, permissions: rolePermissions(role, scope) };
}

/** Characters a subject, name or comment may not hold: they would end the quoted string or line. */
const UNSAFE = /["\\\r\n\0]/;
/** A subject is tokens separated by dots; `>` only last; optionally one queue name after a space. */
const SUBJECT = /^([^\s.*>]+|\*)(\.([^\s.*>]+|\*))*(\.>)?( [^\s.*>]+)?$|^>$/;

function quoted(value: string, field: string): string {
  if (UNSAFE.test(value)) throw new Error(`${field}: '${value}' holds a quote, backslash or line break`);
  return `"${value}"`;
}

function checkSubject(subject: string, field: string): void {
  if (!SUBJECT.test(subject)) {
    throw new Error(
      `${field}: '${subject}' is not a NATS subject (dot-separated tokens, '*' for one token, '>' last), optionally followed by one queue name`,
    );
  }
}

function direction(d: Direction, field: string, indent: string): string[] {
  const lines: string[] = [];
  for (const kind of ['allow', 'deny'] as const) {
    if (d[kind].length === 0) continue;
    lines.push(`${indent}${kind}: [`);
    d[kind].forEach((r, i) => {
      checkSubject(r.subject, `${field}.${kind}[${i}]`);
      lines.push(`${indent}  # ${comment(r.why)}`);
      lines.push(`${indent}  ${quoted(r.subject, `${field}.${kind}[${i}]`)}`);
    });
    lines.push(`${indent}]`);
  }
  return lines;
}

const comment = (text: string) => text.replace(/[\r\n]+/g, ' ');

function userBlock(u: AuthUser, i: number): string[] {
  const field = `users[${i}]`;
  if ((u.nkey === undefined) === (u.user === undefined)) {
    throw new Error(`${field} (${u.name}): give exactly one of nkey or user`);
  }
  if (u.nkey !== undefined && !isUserPublicKey(u.nkey)) {
    throw new Error(
      `${field}.nkey (${u.name}): not a NATS user public key ('U' and 55 base32 characters); give the public key of the user's seed, never the seed`,
    );
  }
  const id =
    u.nkey !== undefined
      ? `nkey: ${quoted(u.nkey, `${field}.nkey`)}`
      : `user: ${quoted(u.user!, `${field}.user`)}`;
  const p = u.permissions;
  return [
    `    # ${comment(u.name)}`,
    '    {',
    `      ${id}`,
    '      permissions: {',
    '        publish: {',
    ...direction(p.publish, `${field}.publish`, '          '),
    '        }',
    '        subscribe: {',
    ...direction(p.subscribe, `${field}.subscribe`, '          '),
    '        }',
    ...(p.responses
      ? [
          `        # ${comment(p.responses.why)} (once per request, within 2 minutes)`,
          '        allow_responses: true',
        ]
      : []),
    '      }',
    '    }',
  ];
}

/**
 * The `authorization { users = [...] }` block for nats-server 2.9 and later. Throws, naming the
 * user and field, on a key that is not a user public key or a subject that is not one.
 */
export function renderAuthorization(users: readonly AuthUser[]): string {
  if (users.length === 0)
    throw new Error('users: list at least one user; an empty list would lock everyone out');
  const seen = new Set<string>();
  users.forEach((u, i) => {
    const id = u.nkey ?? u.user ?? '';
    if (seen.has(id)) throw new Error(`users[${i}] (${u.name}): the same key or name is given twice`);
    seen.add(id);
  });
  return [
    '# understudy NATS users, one per role (docs/nats-authorization.md). Generated: edit the',
    '# permission table in pkg/natsauth/permissions.ts, not this file.',
    'authorization {',
    '  users = [',
    ...users.flatMap(userBlock),
    '  ]',
    '}',
    '',
  ].join('\n');
}

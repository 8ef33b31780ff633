// The nkeys of the role users: made once, kept in 0600 seed files, read back to connect. The
// server's config holds only public keys; each component holds only its own seed.
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateCallerKey, loadSigner } from '../keys/index.js';
import { assertName, ROLES, type Role } from './permissions.js';
import { roleUser, type AuthUser } from './render.js';

/** A role user to provision: its file name, its role, and for a per-node agent its node. */
export interface RoleUserSpec {
  name: string;
  role: Role;
  node?: string;
  identities?: string[];
}

export interface ProvisionedUser extends RoleUserSpec {
  publicKey: string;
  seedFile: string;
}

/** User names become file names: no path separators, no dots to climb out. */
const USER_NAME = /^[a-z0-9][a-z0-9_-]{0,62}$/;

/**
 * The seed of a NATS user from a seed file ('SU...'), for nats.js' nkeyAuthenticator. The file
 * must be readable by its owner only; errors name `field` and never echo the seed.
 */
export async function readUserSeed(file: string, field: string): Promise<Uint8Array> {
  await loadSigner(file, field); // checks the mode and that it is a user seed
  return new TextEncoder().encode((await readFile(file, 'utf8')).trim());
}

/**
 * The seed file of `name` in `dir`: kept if it exists (its public key read back), otherwise a
 * fresh user nkey written with mode 0600. Never overwrites: a key in use stays valid.
 */
export async function ensureUserSeed(
  dir: string,
  name: string,
): Promise<{ publicKey: string; seedFile: string }> {
  if (!USER_NAME.test(name)) {
    throw new Error(
      `user name '${name}': use 1-63 lowercase letters, digits, "-" or "_" (it names the seed file)`,
    );
  }
  const seedFile = join(dir, `${name}.nk`);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const key = generateCallerKey();
  try {
    await writeFile(seedFile, `${key.seed}\n`, { mode: 0o600, flag: 'wx' });
    return { publicKey: key.publicKey, seedFile };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') {
      throw new Error(
        `cannot write ${seedFile} (${(err as NodeJS.ErrnoException).code}); check ${dir} is writable`,
      );
    }
  }
  return { publicKey: (await loadSigner(seedFile, `seed of ${name}`)).publicKey, seedFile };
}

/** Make (or keep) a seed per user; returns their public keys for the server's config. */
export async function provisionUsers(
  dir: string,
  specs: readonly RoleUserSpec[],
): Promise<ProvisionedUser[]> {
  const names = new Set<string>();
  for (const s of specs) {
    if (!ROLES.includes(s.role))
      throw new Error(`user ${s.name}: role '${s.role}' is not one of ${ROLES.join(', ')}`);
    if (s.node !== undefined) assertName(s.node, `user ${s.name} node`);
    for (const id of s.identities ?? []) assertName(id, `user ${s.name} identities`);
    if (names.has(s.name)) throw new Error(`user ${s.name} is listed twice`);
    names.add(s.name);
  }
  const out: ProvisionedUser[] = [];
  for (const s of specs) out.push({ ...s, ...(await ensureUserSeed(dir, s.name)) });
  return out;
}

/** The server-config users of provisioned role users. */
export function authUsers(users: readonly ProvisionedUser[]): AuthUser[] {
  return users.map((u) => {
    const what = u.node ? `agent of node ${u.node}` : u.role;
    const ids = u.identities ? `, identities ${u.identities.join(', ')}` : '';
    return roleUser(`${u.name} (${what}${ids})`, u.role, u.publicKey, {
      ...(u.node !== undefined && { node: u.node }),
      ...(u.identities !== undefined && { identities: u.identities }),
    });
  });
}

/**
 * Parse `[NAME=]ROLE[:NODE[:IDENTITY,...]]` (e.g. `controller`, `agent:a`, `agent:a:demo,billing`,
 * `ops=client`): the default name is the role, or `agent-NODE` for a per-node agent.
 */
export function parseUserSpec(text: string): RoleUserSpec {
  const m = /^(?:([^=]+)=)?([a-z]+)(?::([^:]+))?(?::([^:]+))?$/.exec(text);
  const role = m?.[2] as Role | undefined;
  if (!m || role === undefined || !ROLES.includes(role)) {
    throw new Error(
      `'${text}': give [NAME=]ROLE[:NODE[:IDENTITY,...]] with ROLE one of ${ROLES.join(', ')}, e.g. agent:a, agent:a:demo or ops=client`,
    );
  }
  const [, name, , node, ids] = m;
  if (node !== undefined && role !== 'agent') throw new Error(`'${text}': only agent users take a node`);
  if (node !== undefined) assertName(node, `'${text}' node`);
  const identities = ids?.split(',');
  for (const id of identities ?? []) assertName(id, `'${text}' identities`);
  return {
    name: name ?? (node !== undefined ? `agent-${node}` : role),
    role,
    ...(node !== undefined && { node }),
    ...(identities !== undefined && { identities }),
  };
}

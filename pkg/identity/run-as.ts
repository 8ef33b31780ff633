// Who a process service runs as. An agent that runs as root starts services as the configured
// unprivileged `service.user` (and its group), never as root unless the config says
// `service.allowRoot: true`. An agent that runs unprivileged starts them as itself: it cannot
// switch users, and a config asking it to is refused with what to change. The decision is pure
// (decideRunAs); looking the account up is the only I/O (getent, else /etc/passwd and /etc/group).
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';

/** The agent config's `service` section. */
export interface ServiceUserSettings {
  user?: string | undefined;
  group?: string | undefined;
  allowRoot: boolean;
}

/** An account found in the user (or group) database. */
export interface Account {
  name: string;
  id: number;
  /** The user's primary group (users only). */
  gid?: number;
  home?: string;
}

/** Who runs services: `switchTo` absent means "as the agent itself". */
export interface RunAs {
  uid: number;
  gid: number;
  user: string;
  home: string | undefined;
}

export type RunAsDecision = { ok: true; switchTo?: RunAs } | { ok: false; reason: string };

/** What the lookups found (undefined: not configured; null: configured and not found). */
export interface RunAsFacts {
  agent: { uid: number; gid: number };
  user?: Account | null;
  group?: Account | null;
}

const ROOT = 0;

export function decideRunAs(settings: ServiceUserSettings, facts: RunAsFacts): RunAsDecision {
  const { agent, user, group } = facts;
  if (user === null) {
    return {
      ok: false,
      reason: `service.user '${settings.user}' does not exist on this node: create it (useradd --system --no-create-home ${settings.user}) or change service.user in the agent config`,
    };
  }
  if (group === null) {
    return {
      ok: false,
      reason: `service.group '${settings.group}' does not exist on this node: create it (groupadd --system ${settings.group}) or change service.group in the agent config`,
    };
  }
  if (agent.uid !== ROOT) {
    // An unprivileged agent cannot switch users: services run as the agent (which is not root).
    const sameUser = user === undefined || user.id === agent.uid;
    const sameGroup =
      group === undefined ? user === undefined || user.gid === agent.gid : group.id === agent.gid;
    if (sameUser && sameGroup) return { ok: true };
    return {
      ok: false,
      reason: `service.user/service.group ask for ${describe(settings)}, but this agent runs as uid ${agent.uid} (not root) and cannot start processes as anyone else. Remove service.user and service.group (services then run as the agent's own user), or run the agent as root (see docs/running-unprivileged.md)`,
    };
  }
  if (user === undefined) {
    if (settings.allowRoot) return { ok: true };
    return {
      ok: false,
      reason:
        'this agent runs as root and service.user is not set, so the service would run as root. Set service.user in the agent config to an unprivileged account (e.g. understudy-svc), or set service.allowRoot: true to run services as root on purpose',
    };
  }
  const uid = user.id;
  const gid = group?.id ?? user.gid ?? uid;
  if ((uid === ROOT || gid === ROOT) && !settings.allowRoot) {
    return {
      ok: false,
      reason: `service.user/service.group (${describe(settings)}) is root (uid ${uid}, gid ${gid}); set them to an unprivileged account, or set service.allowRoot: true to run services as root on purpose`,
    };
  }
  return { ok: true, switchTo: { uid, gid, user: user.name, home: user.home } };
}

function describe(s: ServiceUserSettings): string {
  return [s.user && `user ${s.user}`, s.group && `group ${s.group}`].filter(Boolean).join(', ');
}

/** Bound on one getent call: a hung name service must not hold an identity forever. */
const GETENT_TIMEOUT_MS = 5_000;

/**
 * Look up a user or group by name or number: `getent` (so LDAP and other NSS sources count),
 * else the files. null: no such account.
 */
export async function lookupAccount(db: 'passwd' | 'group', key: string): Promise<Account | null> {
  const line = await getent(db, key).catch(async () => fromFile(db, key));
  if (!line) return null;
  const f = line.split(':');
  const id = Number(f[2]);
  if (!Number.isInteger(id)) return null;
  return db === 'passwd'
    ? { name: f[0]!, id, gid: Number(f[3]), ...(f[5] ? { home: f[5] } : {}) }
    : { name: f[0]!, id };
}

function getent(db: string, key: string): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    execFile('getent', [db, key], { timeout: GETENT_TIMEOUT_MS }, (err, stdout) => {
      // Exit 2: no such key (an answer); anything else (no getent, a timeout) is no answer.
      if (err && (err as { code?: unknown }).code === 2) return resolve(undefined);
      if (err) return reject(err);
      resolve(stdout.split('\n')[0] || undefined);
    });
  });
}

async function fromFile(db: 'passwd' | 'group', key: string): Promise<string | undefined> {
  const text = await readFile(`/etc/${db}`, 'utf8');
  const byId = /^\d+$/.test(key);
  return text.split('\n').find((l) => {
    const f = l.split(':');
    return byId ? f[2] === key : f[0] === key;
  });
}

/** Resolve the settings against the user database and decide. */
export async function resolveRunAs(
  settings: ServiceUserSettings,
  agent = { uid: process.getuid?.() ?? -1, gid: process.getgid?.() ?? -1 },
): Promise<RunAsDecision> {
  const facts: RunAsFacts = { agent };
  if (settings.user !== undefined) facts.user = await lookupAccount('passwd', settings.user);
  if (settings.group !== undefined) facts.group = await lookupAccount('group', settings.group);
  return decideRunAs(settings, facts);
}

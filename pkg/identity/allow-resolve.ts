// The file-system half of the allow-list (allow.ts decides): where the paths a spec names lead
// on this node. argv[0] is looked up on PATH the way the spawn would (the service's own PATH,
// relative to its cwd), then every path is resolved to its real path, symlinks and `..`
// included, and so is every allow-list entry. The executable found is what gets spawned
// (process-start.ts), so a PATH change between this check and the spawn decides nothing.
import { constants } from 'node:fs';
import { access, realpath, stat } from 'node:fs/promises';
import { basename, delimiter, dirname, join, resolve } from 'node:path';
import { stateDirFor, type IdentitySpec } from '../spec/schema.js';
import {
  PATH_MAX,
  mayRun,
  type AllowField,
  type AllowList,
  type Entry,
  type Found,
  type ResolvedAllow,
  type Targets,
  type Verdict,
} from './allow.js';

/** An executable found for argv[0]: the absolute path to spawn, and what it really is. */
export type FoundCommand = Found & { path?: string };

/** The real path of a regular file at `path` (relative to `cwd`), or why there is none. */
export async function resolveFile(path: string, cwd: string, executable = false): Promise<FoundCommand> {
  if (path.length > PATH_MAX) return { given: path, problem: `is longer than ${PATH_MAX} characters` };
  if (path.includes('\0')) return { given: path, problem: 'contains a NUL character' };
  const absolute = resolve(cwd, path);
  try {
    const real = await realpath(absolute);
    const info = await stat(real);
    if (!info.isFile()) return { given: path, problem: `is not a regular file on this node (${real})` };
    if (executable) await access(real, constants.X_OK);
    return { given: path, real, path: absolute };
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES' && executable) return { given: path, problem: `is not executable (${absolute})` };
    return { given: path, problem: `cannot be found on this node (${code ?? 'error'} at ${absolute})` };
  }
}

/**
 * Where a state directory really is, existing or not: the real path of its nearest existing
 * ancestor with the rest appended, so a symlinked parent cannot lead a restore elsewhere.
 */
export async function resolveStateDir(path: string): Promise<Found> {
  if (path.length > PATH_MAX) return { given: path, problem: `is longer than ${PATH_MAX} characters` };
  if (path.includes('\0')) return { given: path, problem: 'contains a NUL character' };
  let existing = resolve(path);
  const rest: string[] = [];
  for (;;) {
    try {
      const real = await realpath(existing);
      const info = await stat(real);
      if (!info.isDirectory()) return { given: path, problem: `is not a directory on this node (${real})` };
      return { given: path, real: rest.length ? join(real, ...rest.reverse()) : real };
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code !== 'ENOENT' || existing === '/') {
        return {
          given: path,
          problem: `cannot be resolved on this node (${code ?? 'error'} at ${existing})`,
        };
      }
      rest.push(basename(existing));
      existing = dirname(existing);
    }
  }
}

/**
 * argv[0] as execvp (and the lifeline's `exec "$@"`) would find it: a name with a `/` is a path
 * relative to the service's cwd; a bare name is looked up in the service's PATH, in order, the
 * first executable regular file winning (an empty PATH element is the cwd, as POSIX says).
 */
export async function findCommand(
  argv0: string,
  pathVar: string | undefined,
  cwd: string,
): Promise<FoundCommand> {
  if (argv0.includes('/')) return resolveFile(argv0, cwd, true);
  if (argv0.length > PATH_MAX) return { given: argv0, problem: `is longer than ${PATH_MAX} characters` };
  if (argv0 === '.' || argv0 === '..') return { given: argv0, problem: 'is not a command' };
  const dirs = (pathVar ?? '').split(delimiter);
  for (const dir of dirs) {
    const found = await resolveFile(`${dir === '' ? '.' : dir}/${argv0}`, cwd, true);
    if ('real' in found) return { ...found, given: argv0 };
  }
  return { given: argv0, problem: `is not an executable file in the service's PATH (${pathVar ?? 'unset'})` };
}

/** Each entry's real path (undefined when it does not exist here: it then allows nothing). */
export async function resolveEntries(entries: readonly string[]): Promise<Entry[]> {
  return Promise.all(
    entries.map(async (entry) => {
      const real = await realpath(entry).catch(() => undefined);
      return { entry, real };
    }),
  );
}

/**
 * State directory entries resolve like the spec's state.dir: through the nearest existing
 * ancestor, so an entry for a directory not made yet still allows it (the restore makes it),
 * and a symlinked parent still counts as where it leads.
 */
async function resolveStateEntries(entries: readonly string[]): Promise<Entry[]> {
  return Promise.all(
    entries.map(async (entry) => {
      const found = await resolveStateDir(entry.length > 1 ? entry.replace(/\/$/, '') : entry);
      return { entry, real: 'real' in found ? found.real : undefined };
    }),
  );
}

export async function resolveAllow(allow: AllowList): Promise<ResolvedAllow> {
  const [commands, modules, credentials, stateDirs] = await Promise.all([
    resolveEntries(allow.commands),
    resolveEntries(allow.modules),
    resolveEntries(allow.credentialPaths),
    resolveStateEntries(allow.stateDirs),
  ]);
  return {
    unrestricted: allow.unrestricted,
    'service.command': commands,
    'service.module': modules,
    'credential.path': credentials,
    'state.dir': stateDirs,
  };
}

/** How the service would be started: its PATH and cwd decide where argv[0] leads. */
export interface Launch {
  /** The PATH of the service's environment (its spec's env may set it). */
  path: string | undefined;
  /** The service's cwd (the agent's own when the spec sets none). */
  cwd: string;
}

/** Where everything a spec names leads on this node. Module and credential paths are relative
 * to the agent's cwd, as cmd/agent and the login read them. */
export async function targetsOf(spec: IdentitySpec, launch: Launch, node: string): Promise<Targets> {
  const targets: Targets = {};
  const service = spec.service;
  if (service.driver === 'process') {
    targets['service.command'] = await findCommand(service.command[0]!, launch.path, launch.cwd);
  } else if (service.module !== undefined) {
    targets['service.module'] = await resolveFile(service.module, process.cwd());
  }
  if (spec.credential.source === 'file') {
    targets['credential.path'] = await resolveFile(spec.credential.path, process.cwd());
  }
  if (spec.state) targets['state.dir'] = await resolveStateDir(stateDirFor(spec.state, node));
  return targets;
}

/** Resolve and decide in one step, for one field or the whole spec. */
export async function checkTargets(targets: Targets, allow: AllowList, only?: AllowField): Promise<Verdict> {
  const picked: Targets = only ? { [only]: targets[only] } : targets;
  return mayRun(picked, await resolveAllow(allow));
}

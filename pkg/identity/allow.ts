// What an identity spec may make this node run or read: the agent config's allow-list
// (`allow.commands`, `allow.modules`, `allow.credentialPaths`) against the real paths a spec's
// `service.command`, `service.module`, `credential.path` and `state.dir` lead to. Anyone who may write a
// spec (an API admin) would otherwise choose what this node executes. Pure: the file system is
// read by allow-resolve.ts, which hands in what it found.
//
// The matching rule, chosen so an operator can read the list at 3 a.m. and know what passes:
// - An entry is an absolute path, written plainly (no globs, no `..`, no `.`, no `//`).
// - An entry without a trailing `/` allows exactly that file: the spec's path must lead to the
//   same real file (symlinks resolved on both sides, so `/usr/bin/python3` allows a spec's
//   `python3` found on PATH when both lead to `/usr/bin/python3.11`).
// - An entry ending in `/` allows the files directly in that directory, not in its
//   subdirectories (as sudoers does for a directory in a command list).
// - Nothing else: a spec's path is compared only after PATH lookup and symlink resolution, so
//   `../` segments, symlinks out of an allowed directory and a spec's own `env.PATH` decide
//   nothing. An empty list allows nothing.

/** Longest path accepted anywhere here (Linux's PATH_MAX). */
export const PATH_MAX = 4096;

/** Characters that would be a glob in sudoers or a shell: refused so nobody thinks they match. */
const GLOB_CHARS = /[*?[\]{}]/;

export interface AllowList {
  commands: readonly string[];
  modules: readonly string[];
  credentialPaths: readonly string[];
  /**
   * State directories a spec's state.dir may name: a restore replaces that directory whole
   * (a rename in its parent), so an unlisted one could be any directory of this node.
   */
  stateDirs: readonly string[];
  /** Allow whatever a spec names: only when the config says so in as many words. */
  unrestricted: boolean;
}

/** The spec field each list governs, as errors and the identity's detail name it. */
export type AllowField = 'service.command' | 'service.module' | 'credential.path' | 'state.dir';

export const LIST_OF: Record<AllowField, keyof Omit<AllowList, 'unrestricted'>> = {
  'service.command': 'commands',
  'service.module': 'modules',
  'credential.path': 'credentialPaths',
  'state.dir': 'stateDirs',
};

/** Where a path a spec names led on this node: its real path, or why there is none. */
export type Found = { given: string; real: string } | { given: string; problem: string };

/** An allow-list entry with its real path (undefined: it does not exist on this node). */
export interface Entry {
  entry: string;
  real: string | undefined;
}

/** What a spec names, resolved; a field the spec does not use is absent. */
export type Targets = Partial<Record<AllowField, Found>>;

/** The allow-list with each entry's real path, per field. */
export type ResolvedAllow = { unrestricted: boolean } & Record<AllowField, readonly Entry[]>;

export type Verdict = { ok: true } | { ok: false; field: AllowField; reason: string };

export const ALLOWED: Verdict = { ok: true };

/** Why `entry` is not a usable allow-list entry (undefined: it is). */
export function entryProblem(entry: string): string | undefined {
  if (entry.length > PATH_MAX) return `is ${entry.length} characters long; the limit is ${PATH_MAX}`;
  if (entry.includes('\0')) return 'contains a NUL character';
  if (!entry.startsWith('/')) {
    return `'${short(entry)}' is not an absolute path: write the full path, e.g. /usr/local/bin/myservice, or a directory ending in /`;
  }
  if (GLOB_CHARS.test(entry)) {
    return `'${short(entry)}' contains a glob character; globs are not supported: list the file, or its directory ending in /`;
  }
  const segments = entry.split('/').slice(1, entry.endsWith('/') ? -1 : undefined);
  if (segments.some((s) => s === '' || s === '.' || s === '..')) {
    return `'${short(entry)}' is not a plain path (no '.', '..' or '//'): write the path it means`;
  }
  return undefined;
}

/** Is `real` allowed by one of `entries`? */
export function matches(real: string, entries: readonly Entry[]): boolean {
  return entries.some(({ entry, real: target }) => {
    if (target === undefined) return false;
    if (!entry.endsWith('/')) return real === target;
    const dir = target.endsWith('/') ? target : `${target}/`;
    return real.startsWith(dir) && !real.slice(dir.length).includes('/') && real.length > dir.length;
  });
}

/**
 * May this node run (or read) what the spec names? The first field refused is reported, in
 * the order a start would touch them: the credential, then the command or module.
 */
export function mayRun(targets: Targets, allow: ResolvedAllow): Verdict {
  if (allow.unrestricted) return ALLOWED;
  for (const field of ['state.dir', 'credential.path', 'service.command', 'service.module'] as const) {
    const found = targets[field];
    if (!found) continue;
    const list = LIST_OF[field];
    const entries = allow[field];
    if ('problem' in found) {
      return { ok: false, field, reason: `${field} '${short(found.given)}' ${found.problem}` };
    }
    if (entries.length === 0) {
      return {
        ok: false,
        field,
        reason: `${field} '${short(found.given)}' is refused: allow.${list} in this agent's config is empty. Add ${short(found.real)} (or its directory, ending in /) to allow.${list} if this node should run it`,
      };
    }
    if (!matches(found.real, entries)) {
      const via = found.real === found.given ? '' : ` (${short(found.real)})`;
      return {
        ok: false,
        field,
        reason: `${field} '${short(found.given)}'${via} is not in allow.${list} of this agent's config; add it there if this node should run it`,
      };
    }
  }
  return ALLOWED;
}

/** Long paths are cut in messages (the whole path is in the spec): a reason stays one line. */
const SHOWN_MAX = 200;

/** C0 and C1 controls: a spec's path reaches logs and terminals, never as an escape sequence. */
// eslint-disable-next-line no-control-regex
const CONTROLS = /[\u0000-\u001f\u007f-\u009f]/g;

export function short(text: string): string {
  const printable = text.replace(CONTROLS, '\uFFFD');
  return printable.length > SHOWN_MAX ? `${printable.slice(0, SHOWN_MAX)}…` : printable;
}

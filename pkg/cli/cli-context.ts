// Where the CLI finds its cluster, the way kubectl finds its kubeconfig: `--context FILE`, else
// $UNDERSTUDY_CONFIG, else ~/.config/understudy/config.yaml, else the local cluster's (the
// .understudy/run/context.yaml that `npm start` leaves, looked for from the working directory
// up). A flag or environment variable the operator sets still wins over the file.
import { existsSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import YAML from 'yaml';
import { z } from 'zod';
import { CliError, EXIT } from './exit.js';

/** The local cluster's context, relative to the repository (scripts/run-local writes it). */
export const LOCAL_CONTEXT = join('.understudy', 'run', 'context.yaml');
/** The operator's own, relative to their home. */
export const USER_CONTEXT = join('.config', 'understudy', 'config.yaml');

export const CliContextFile = z.strictObject({
  /** Controller HTTP API. */
  controller: z.string().url().optional(),
  /** File holding the API token (relative paths are from this file's directory). */
  tokenFile: z.string().min(1).optional(),
  /** Controllers a standby may redirect writes to, comma-separated. */
  controllerAllow: z.string().min(1).optional(),
  nats: z
    .strictObject({
      /** NATS servers, comma-separated. */
      servers: z.string().min(1),
      /** NATS user seed file (relative paths are from this file's directory). */
      nkeyFile: z.string().min(1).optional(),
    })
    .optional(),
});
export type CliContextFile = z.infer<typeof CliContextFile>;

/** A context file found, and which rule found it (said by `understudy context`). */
export interface FoundContext {
  path: string;
  how: '--context' | 'UNDERSTUDY_CONFIG' | 'user config' | 'local cluster';
  /** The local cluster's context, not used because the user config comes first. */
  shadows?: string;
}

export interface Lookup {
  flag?: string | undefined;
  env: NodeJS.ProcessEnv;
  home: string;
  cwd: string;
  exists?: (path: string) => boolean;
}

/**
 * Which context file applies. One named by `--context` or $UNDERSTUDY_CONFIG must exist (a typo
 * must not silently talk to another cluster); the user's and the local cluster's are optional.
 */
export function findContext(l: Lookup): FoundContext | undefined {
  const exists = l.exists ?? existsSync;
  const named = (path: string, how: FoundContext['how']): FoundContext => {
    const full = resolve(l.cwd, path);
    if (!exists(full)) {
      throw new CliError(
        `${how} names ${full}, which does not exist; fix the path, or unset it to use the default context`,
        EXIT.usage,
      );
    }
    return { path: full, how };
  };
  if (l.flag) return named(l.flag, '--context');
  if (l.env.UNDERSTUDY_CONFIG) return named(l.env.UNDERSTUDY_CONFIG, 'UNDERSTUDY_CONFIG');
  let local: string | undefined;
  for (let dir = resolve(l.cwd); ; dir = dirname(dir)) {
    if (exists(join(dir, LOCAL_CONTEXT))) {
      local = join(dir, LOCAL_CONTEXT);
      break;
    }
    if (dirname(dir) === dir) break;
  }
  const user = join(l.home, USER_CONTEXT);
  if (exists(user)) return { path: user, how: 'user config', ...(local ? { shadows: local } : {}) };
  return local ? { path: local, how: 'local cluster' } : undefined;
}

/**
 * A context found by looking up from the working directory was not named by the operator:
 * anyone who could write a directory above it (a shared /tmp, a cloned repository) could
 * have put it there. It is used only if the operator owns it and nobody else may write it,
 * names a controller on this host, and keeps its token and seed files beside it; otherwise
 * the CLI refuses it and says how to use it anyway (--context).
 */
export function localContextProblem(
  path: string,
  ctx: CliContextFile,
  stat: { uid: number; mode: number },
  uid: number | undefined,
): string | undefined {
  const dir = dirname(path);
  if (uid !== undefined && stat.uid !== uid) return `it is not yours (owner uid ${stat.uid})`;
  if ((stat.mode & 0o022) !== 0) return 'others may write it (chmod go-w)';
  if (ctx.controller) {
    const host = new URL(ctx.controller).hostname;
    if (!['127.0.0.1', 'localhost', '[::1]'].includes(host))
      return `its controller ${ctx.controller} is not on this host`;
  }
  for (const [field, file] of [
    ['tokenFile', ctx.tokenFile],
    ['nats.nkeyFile', ctx.nats?.nkeyFile],
  ] as const) {
    if (file && relative(dir, file).startsWith('..')) return `its ${field} ${file} is outside ${dir}`;
  }
  return undefined;
}

/** Read and check a context file; relative paths in it are made absolute from its directory. */
export async function loadContext(found: FoundContext): Promise<CliContextFile> {
  const text = await readFile(found.path, 'utf8').catch((err: Error) => {
    throw new CliError(`context ${found.path} cannot be read: ${err.message}`, EXIT.usage);
  });
  let raw: unknown;
  try {
    raw = YAML.parse(text) ?? {};
  } catch (err) {
    throw new CliError(`context ${found.path} is not YAML: ${(err as Error).message}`, EXIT.usage);
  }
  const parsed = CliContextFile.safeParse(raw);
  if (!parsed.success) {
    const issues = parsed.error.issues.map((i) => `${i.path.join('.') || '(root)'}: ${i.message}`).join('; ');
    throw new CliError(`context ${found.path}: ${issues}; fix the file (or pass --context)`, EXIT.usage);
  }
  const ctx = parsed.data;
  const from = dirname(found.path);
  const absolute: CliContextFile = {
    ...ctx,
    ...(ctx.tokenFile ? { tokenFile: resolve(from, ctx.tokenFile) } : {}),
    ...(ctx.nats
      ? {
          nats: {
            servers: ctx.nats.servers,
            ...(ctx.nats.nkeyFile ? { nkeyFile: resolve(from, ctx.nats.nkeyFile) } : {}),
          },
        }
      : {}),
  };
  if (found.how === 'local cluster') {
    const problem = localContextProblem(found.path, absolute, statSync(found.path), process.getuid?.());
    if (problem) {
      throw new CliError(
        `not using ${found.path}, found above the working directory: ${problem}; pass --context ${found.path} if you trust it`,
        EXIT.usage,
      );
    }
  }
  return absolute;
}

/** The CLI's option names a context fills, and where each comes from in the file. */
export function contextOptions(ctx: CliContextFile): Record<string, string | undefined> {
  return {
    controller: ctx.controller,
    tokenFile: ctx.tokenFile,
    controllerAllow: ctx.controllerAllow,
    nats: ctx.nats?.servers,
    natsNkeyFile: ctx.nats?.nkeyFile,
  };
}

/**
 * Fill the options the operator did not set (on the command line or in the environment) from
 * the context. The token is one choice of three (`--token`, `--token-file`, UNDERSTUDY_TOKEN):
 * a context's token file never overrides a token given any of those ways, and goes only with
 * the context's own controller (as do the controllers it allows); its NATS seed only with its
 * own NATS servers.
 */
export function applyContext(
  ctx: CliContextFile,
  opts: {
    /** 'cli', 'env', 'default' or undefined, as commander says. */
    sourceOf(option: string): string | undefined;
    set(option: string, value: string): void;
    env: NodeJS.ProcessEnv;
  },
): string[] {
  const applied: string[] = [];
  // The file's token belongs to the file's controller, its NATS seed to its NATS servers:
  // never used with ones named elsewhere.
  const controllerSource = opts.sourceOf('controller');
  const ownController = controllerSource === undefined || controllerSource === 'default';
  const natsSource = opts.sourceOf('nats');
  const ownNats = natsSource === undefined || natsSource === 'default';
  const tokenGiven =
    opts.sourceOf('token') !== undefined ||
    opts.sourceOf('tokenFile') !== undefined ||
    !!opts.env.UNDERSTUDY_TOKEN;
  for (const [option, value] of Object.entries(contextOptions(ctx))) {
    if (value === undefined) continue;
    if (option === 'tokenFile' && (tokenGiven || !ownController)) continue;
    if (option === 'controllerAllow' && !ownController) continue;
    if (option === 'natsNkeyFile' && !ownNats) continue;
    const source = opts.sourceOf(option);
    if (source !== undefined && source !== 'default') continue;
    opts.set(option, value);
    applied.push(option);
  }
  return applied;
}

/** What `understudy context` prints: the file in use, and each setting with where it came from. */
export function contextReport(
  found: FoundContext | undefined,
  opts: { controller?: string; tokenFile?: string; nats?: string; natsNkeyFile?: string },
  sourceOf: (option: string) => string | undefined,
  env: NodeJS.ProcessEnv,
): string {
  const from = (option: string) =>
    ({ cli: 'flag', env: 'environment', config: 'context', default: 'default' })[sourceOf(option) ?? ''] ??
    'unset';
  const token =
    sourceOf('token') !== undefined
      ? 'from --token'
      : opts.tokenFile
        ? `${opts.tokenFile} (${from('tokenFile')})`
        : env.UNDERSTUDY_TOKEN
          ? 'from UNDERSTUDY_TOKEN'
          : '- (unset)';
  return [
    `context     ${found ? `${found.path} (${found.how})` : 'none found: flags, environment and defaults only'}`,
    ...(found?.shadows
      ? [`            (not ${found.shadows}: the user config comes first; pass --context to use it)`]
      : []),
    `controller  ${opts.controller ?? '-'} (${from('controller')})`,
    `token       ${token}`,
    `nats        ${opts.nats ?? '-'} (${from('nats')})`,
    `nats nkey   ${opts.natsNkeyFile ?? '-'} (${from('natsNkeyFile')})`,
    '',
  ].join('\n');
}

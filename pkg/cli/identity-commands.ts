// Identities through the controller: list, status, pause/resume, history, which controller
// is active, and apply.
import { readFile } from 'node:fs/promises';
import YAML from 'yaml';
import {
  type ApplyResult,
  type ControllerInfo,
  type HistoryView,
  type IdentityList,
  type IdentityView,
} from '../api/schema.js';
import { CliError, EXIT } from './exit.js';
import {
  renderApplyResults,
  renderControllerInfo,
  renderHistory,
  renderIdentityList,
  renderIdentityStatus,
} from './render.js';
import { context, fieldsAsOptions, routes, type ControllerOptions } from './controller-context.js';

export interface ListFlags {
  health?: string;
  leader?: string;
  prefix?: string;
  limit?: number;
}

const LIST_OPTIONS: Record<string, string> = {
  health: '--health',
  leader: '--leader',
  prefix: '--prefix',
  limit: '--limit',
};

/** Identities fetched per request: each page is one bounded answer, however many there are. */
const LIST_CHUNK = 500;

/**
 * Every identity that matches, fetched a page at a time (as kubectl does), at most `--limit`.
 * The server checks the filters and names a bad one.
 */
export async function list(opts: ControllerOptions, flags: ListFlags = {}): Promise<number> {
  const { api, out } = await context(opts);
  const identities: IdentityView[] = [];
  let total = 0;
  let after: string | undefined;
  const want = flags.limit ?? Infinity;
  do {
    const query = new URLSearchParams({ limit: String(Math.min(LIST_CHUNK, want - identities.length)) });
    for (const [name, value] of Object.entries({
      health: flags.health,
      leader: flags.leader,
      prefix: flags.prefix,
      after,
    }))
      if (value !== undefined) query.set(name, value);
    const page = await api.get<IdentityList>(`${routes.identities}?${query}`, {
      // `query.health.0` is the first item of --health.
      describeField: (field) => LIST_OPTIONS[field.split('.')[1] ?? ''] ?? field,
    });
    identities.push(...page.identities);
    total = page.total;
    after = page.next;
  } while (after !== undefined && identities.length < want);
  const res = { identities, total };
  out.result(res, () => {
    const table = renderIdentityList(identities, Date.now());
    return identities.length < total ? `${table}\n(${identities.length} of ${total} shown)` : table;
  });
  return EXIT.ok;
}

export async function status(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.get<IdentityView>(routes.identity(identity));
  out.result(view, () => renderIdentityStatus(view, Date.now()));
  return EXIT.ok;
}

export async function pauseIdentity(
  opts: ControllerOptions,
  identity: string,
  reason?: string,
): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<IdentityView>(routes.pause(identity), reason ? { reason } : {}, {
    describeField: fieldsAsOptions({ reason: '--reason' }),
  });
  out.result(view, () => `${identity} paused: no automatic failover until \`understudy resume ${identity}\``);
  return EXIT.ok;
}

export async function resumeIdentity(
  opts: ControllerOptions,
  identity: string,
  reason?: string,
): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<IdentityView>(routes.resume(identity), reason ? { reason } : {}, {
    describeField: fieldsAsOptions({ reason: '--reason' }),
  });
  out.result(view, () => `${identity} resumed: automatic failover is on again`);
  return EXIT.ok;
}

export async function history(
  opts: ControllerOptions,
  identity: string | undefined,
  flags: { limit?: number },
): Promise<number> {
  const { api, out } = await context(opts);
  const res = await api.get<HistoryView>(identity ? routes.history(identity) : routes.allHistory, {
    query: { limit: flags.limit },
    describeField: fieldsAsOptions({ 'query.limit': '--limit' }),
  });
  out.result(res, () => renderHistory(res.entries));
  return EXIT.ok;
}

export async function controller(opts: ControllerOptions): Promise<number> {
  const { api, out } = await context(opts);
  const info = await api.get<ControllerInfo>(routes.controller);
  out.result(info, () => renderControllerInfo(info, api.baseUrl));
  return EXIT.ok;
}

/**
 * Identity specs from YAML text, in any of three layouts: one document holding a list of
 * specs, one map with an `identities:` list, or several `---` documents of one spec each.
 * A parse error names the file, line and column (exit 2).
 */
export function specsFromYaml(text: string, source: string): unknown[] {
  const docs = YAML.parseAllDocuments(text);
  for (const doc of docs) {
    const error = doc.errors[0];
    if (error) throw new CliError(`cannot parse ${source}: ${error.message.trimEnd()}`, EXIT.usage);
  }
  const specs = docs
    .map((doc) => doc.toJS() as unknown)
    .filter((value) => value !== null && value !== undefined)
    .flatMap((value) =>
      Array.isArray(value) ? value : isIdentitiesList(value) ? value.identities : [value],
    );
  if (specs.length === 0) throw new CliError(`${source} holds no identity specs`, EXIT.usage);
  return specs;
}

/** `{identities: [...]}` and nothing a spec would have (a spec has a `name`). */
const isIdentitiesList = (value: unknown): value is { identities: unknown[] } =>
  typeof value === 'object' &&
  value !== null &&
  Array.isArray((value as { identities?: unknown }).identities) &&
  !('name' in value);

async function readInput(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  return readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read -f ${file} (${err.code ?? err.message})`, EXIT.usage);
  });
}

/** `specs.3.service.command` -> `specs.yaml spec #4 (msggateway): service.command`. */
function specField(source: string, specs: unknown[]) {
  return (field: string): string => {
    const match = /^specs\.(\d+)(?:\.(.+))?$/.exec(field);
    if (!match) return `${source}: ${field}`;
    const index = Number(match[1]);
    const name = (specs[index] as { name?: unknown } | undefined)?.name;
    const which = `${source} spec #${index + 1}${typeof name === 'string' ? ` (${name})` : ''}`;
    return match[2] ? `${which}: ${match[2]}` : which;
  };
}

export async function apply(
  opts: ControllerOptions,
  flags: { file: string; dryRun?: boolean },
): Promise<number> {
  const source = flags.file === '-' ? 'stdin' : flags.file;
  const specs = specsFromYaml(await readInput(flags.file), source);
  const { api, out } = await context(opts);
  const dryRun = flags.dryRun ?? false;
  const res = await api.post<{ results: ApplyResult[] }>(
    routes.apply,
    { specs, dryRun },
    {
      describeField: specField(source, specs),
    },
  );
  out.result(res, () => renderApplyResults(res.results, dryRun));
  return EXIT.ok;
}

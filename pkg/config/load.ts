// Loading a YAML config file with environment overrides, validated by a zod schema. Every
// problem is reported at once, each naming the field and where its value came from: the
// file and line, or the environment variable that overrode it.
import { readFile } from 'node:fs/promises';
import { isMap, LineCounter, parseDocument } from 'yaml';
import { z } from 'zod';

export interface ConfigProblem {
  /** Dotted path of the field, e.g. `lease.ttlSeconds`. */
  field: string;
  message: string;
  /** `file:line`, or the environment variable the value came from. */
  source: string;
}

export class ConfigError extends Error {
  constructor(
    readonly file: string,
    readonly problems: ConfigProblem[],
  ) {
    const lines = problems.map((p) => `  - ${p.field} (${p.source}): ${p.message}`);
    super(
      `config ${file}: ${problems.length} problem${problems.length === 1 ? '' : 's'}:\n${lines.join('\n')}\n` +
        `fix the field${problems.length === 1 ? '' : 's'} above and start again; nothing was started`,
    );
    this.name = 'ConfigError';
  }
}

/** How one environment variable overrides one config field. */
export interface EnvOverride {
  env: string;
  path: string[];
  parse: 'string' | 'int' | 'number' | 'bool' | 'list';
}

function parseEnv(raw: string, kind: EnvOverride['parse']): unknown {
  switch (kind) {
    case 'string':
      return raw;
    case 'int':
    case 'number':
      // Left for the schema to refuse with its own message when not a number.
      return raw.trim() !== '' && Number.isFinite(Number(raw)) ? Number(raw) : raw;
    case 'bool':
      return ['1', 'true', 'yes', 'on'].includes(raw.toLowerCase())
        ? true
        : ['0', 'false', 'no', 'off'].includes(raw.toLowerCase())
          ? false
          : raw;
    case 'list':
      return raw
        .split(',')
        .map((s) => s.trim())
        .filter((s) => s !== '');
  }
}

function setIn(target: Record<string, unknown>, path: string[], value: unknown): void {
  let node = target;
  for (const key of path.slice(0, -1)) {
    const next = node[key];
    if (typeof next !== 'object' || next === null || Array.isArray(next)) node[key] = {};
    node = node[key] as Record<string, unknown>;
  }
  node[path[path.length - 1]!] = value;
}

/**
 * Read `file` (YAML), apply the overrides set in `env`, validate with `schema`. Throws
 * ConfigError listing every problem; never returns a partly valid config.
 */
export async function loadConfig<S extends z.ZodType>(
  schema: S,
  file: string,
  overrides: EnvOverride[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<z.infer<S>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    throw new ConfigError(file, [
      {
        field: '(file)',
        message: `cannot read it: ${(err as Error).message}; pass the path of an existing config with --config`,
        source: file,
      },
    ]);
  }
  return parseConfig(schema, text, file, overrides, env);
}

export function parseConfig<S extends z.ZodType>(
  schema: S,
  text: string,
  file: string,
  overrides: EnvOverride[],
  env: NodeJS.ProcessEnv = process.env,
): z.infer<S> {
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter, prettyErrors: true });
  if (doc.errors.length > 0) {
    throw new ConfigError(
      file,
      doc.errors.map((e) => ({
        field: '(yaml)',
        message: e.message.split('\n')[0]!,
        source: `${file}:${e.linePos?.[0].line ?? '?'}`,
      })),
    );
  }
  if (doc.contents !== null && !isMap(doc.contents)) {
    throw new ConfigError(file, [
      { field: '(root)', message: 'must be a mapping of fields (key: value)', source: `${file}:1` },
    ]);
  }
  const raw = (doc.toJS() ?? {}) as Record<string, unknown>;
  const fromEnv = new Map<string, string>();
  for (const o of overrides) {
    const value = env[o.env];
    if (value === undefined || value === '') continue;
    setIn(raw, o.path, parseEnv(value, o.parse));
    fromEnv.set(o.path.join('.'), o.env);
  }
  const parsed = schema.safeParse(raw);
  if (parsed.success) return parsed.data;

  const where = (path: PropertyKey[]): string => {
    // The longest overridden prefix names the variable; otherwise the deepest node in the file.
    for (let n = path.length; n > 0; n--) {
      const name = fromEnv.get(path.slice(0, n).join('.'));
      if (name) return `from ${name}`;
    }
    for (let n = path.length; n >= 0; n--) {
      const node = doc.getIn(path.slice(0, n) as (string | number)[], true) as
        { range?: [number, number, number] } | undefined;
      if (node?.range) return `${file}:${lineCounter.linePos(node.range[0]).line}`;
    }
    return file;
  };
  throw new ConfigError(
    file,
    parsed.error.issues.map((issue) => ({
      field: issue.path.length > 0 ? issue.path.map(String).join('.') : '(root)',
      message: issue.message,
      source: where(issue.path),
    })),
  );
}

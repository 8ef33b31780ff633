// The configuration reference (docs/config.md), generated: every field of the agent's and the
// controller's config with its type, limits and default from the zod schema, and its meaning
// from the comment on it in the schema's source. `npm run docs:config` writes the file; a
// unit test fails when it is stale, so the reference cannot drift from what is accepted.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { formattedMarkdown, writeIfRun } from './generated-doc.js';
import ts from 'typescript';
import { z } from 'zod';
import { AGENT_ENV_OVERRIDES, AgentConfig } from '../pkg/config/agent.js';
import { CONTROLLER_ENV_OVERRIDES, ControllerConfig } from '../pkg/config/controller.js';
import type { EnvOverride } from '../pkg/config/load.js';

interface JsonSchema {
  type?: string | string[];
  properties?: Record<string, JsonSchema>;
  additionalProperties?: JsonSchema | boolean;
  items?: JsonSchema;
  required?: string[];
  default?: unknown;
  enum?: unknown[];
  const?: unknown;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
  minimum?: number;
  maximum?: number;
  minLength?: number;
  minItems?: number;
  pattern?: string;
  format?: string;
  description?: string;
}

interface Row {
  path: string;
  type: string;
  required: boolean;
  default?: unknown;
  description?: string;
}

/** The comments on the schema's fields, by path ('lease.ttlSeconds'; map and list levels dropped). */
export function fieldComments(files: string[]): Map<string, string> {
  const out = new Map<string, string>();
  const consts = new Map<string, ts.Expression>();
  const sources = files.map((f) =>
    ts.createSourceFile(f, readFileSync(f, 'utf8'), ts.ScriptTarget.Latest, true),
  );
  for (const src of sources) {
    for (const statement of src.statements) {
      if (!ts.isVariableStatement(statement)) continue;
      for (const d of statement.declarationList.declarations) {
        if (ts.isIdentifier(d.name) && d.initializer) consts.set(d.name.text, d.initializer);
      }
    }
  }
  /** The object literal of the first z.object/strictObject call inside `expr`. */
  const objectIn = (expr: ts.Node): ts.ObjectLiteralExpression | undefined => {
    if (ts.isArrowFunction(expr) || ts.isFunctionExpression(expr)) return undefined;
    if (ts.isCallExpression(expr) && ts.isPropertyAccessExpression(expr.expression)) {
      const name = expr.expression.name.text;
      const arg = expr.arguments[0];
      if ((name === 'strictObject' || name === 'object') && arg && ts.isObjectLiteralExpression(arg))
        return arg;
    }
    let found: ts.ObjectLiteralExpression | undefined;
    expr.forEachChild((child) => {
      found ??= objectIn(child);
    });
    return found;
  };
  /** The first schema constant named inside `expr`. */
  const firstKnown = (expr: ts.Node): string | undefined => {
    if (ts.isIdentifier(expr) && consts.has(expr.text)) return expr.text;
    let found: string | undefined;
    expr.forEachChild((child) => {
      found ??= firstKnown(child);
    });
    return found;
  };
  const walk = (expr: ts.Expression, prefix: string, seen: Set<string>) => {
    if (ts.isIdentifier(expr)) {
      const target = consts.get(expr.text);
      if (target && !seen.has(expr.text)) walk(target, prefix, new Set([...seen, expr.text]));
      return;
    }
    const literal = objectIn(expr);
    if (!literal) {
      // `Base.extend({…})` and the like: the fields are Base's.
      const base = firstKnown(expr);
      if (base && !seen.has(base)) walk(consts.get(base)!, prefix, new Set([...seen, base]));
      return;
    }
    for (const prop of literal.properties) {
      if (!ts.isPropertyAssignment(prop) || !(ts.isIdentifier(prop.name) || ts.isStringLiteral(prop.name)))
        continue;
      const path = `${prefix}${prop.name.text}`;
      const text = ts
        .getJSDocCommentsAndTags(prop)
        .map((doc) => (ts.isJSDoc(doc) ? (ts.getTextOfJSDocComment(doc.comment) ?? '') : ''))
        .join(' ')
        .replace(/\s+/g, ' ')
        .trim();
      if (text) out.set(path, text);
      walk(prop.initializer, `${path}.`, seen);
    }
  };
  for (const name of ['AgentConfig', 'ControllerConfig']) {
    const root = consts.get(name);
    if (root) walk(root, `${name}:`, new Set([name]));
  }
  return out;
}

function typeOf(s: JsonSchema): string {
  const variants = s.anyOf ?? s.oneOf;
  if (variants) return variants.map(typeOf).join(' or ');
  if (s.enum) return s.enum.map((v) => `\`${String(v)}\``).join(', ');
  if (s.const !== undefined) return `\`${String(s.const)}\``;
  const base = Array.isArray(s.type) ? s.type.join(' or ') : (s.type ?? 'any');
  const limits: string[] = [];
  if (s.minimum !== undefined && s.maximum !== undefined) limits.push(`${s.minimum}–${s.maximum}`);
  else if (s.minimum !== undefined) limits.push(`≥ ${s.minimum}`);
  else if (s.maximum !== undefined) limits.push(`≤ ${s.maximum}`);
  if (s.minLength) limits.push('not empty');
  if (s.minItems) limits.push(`at least ${s.minItems}`);
  if (s.pattern) limits.push(`matching \`${s.pattern}\``);
  if (s.format) limits.push(s.format);
  if (base === 'array' && s.items)
    return `list of ${typeOf(s.items)}${limits.length ? ` (${limits.join(', ')})` : ''}`;
  return limits.length ? `${base} (${limits.join(', ')})` : base;
}

function rows(
  schema: JsonSchema,
  prefix: string,
  required: boolean,
  comments: Map<string, string>,
  key: string,
): Row[] {
  const out: Row[] = [];
  const props = schema.properties ?? {};
  for (const [name, child] of Object.entries(props)) {
    const path = `${prefix}${name}`;
    const commentKey = `${key}${name}`;
    const isRequired = required && (schema.required ?? []).includes(name) && child.default === undefined;
    const nested = child.properties !== undefined;
    const values = typeof child.additionalProperties === 'object' ? child.additionalProperties : undefined;
    // A map whose entries may be left empty (`demo:` or `demo: null`) offers its object form.
    const map = values?.anyOf?.find((v) => v.properties) ?? values;
    const listOf = child.type === 'array' && child.items?.properties ? child.items : undefined;
    out.push({
      path,
      type: nested ? 'section' : map ? 'map of name →' : typeOf(child),
      required: isRequired,
      ...(child.default !== undefined && !nested ? { default: child.default } : {}),
      ...(comments.get(commentKey) ? { description: comments.get(commentKey) } : {}),
    });
    if (nested)
      out.push(
        ...rows(child, `${path}.`, isRequired || child.default !== undefined, comments, `${commentKey}.`),
      );
    if (map?.properties) out.push(...rows(map, `${path}.<name>.`, false, comments, `${commentKey}.`));
    if (listOf) out.push(...rows(listOf, `${path}[].`, true, comments, `${commentKey}.`));
  }
  return out;
}

const cell = (text: string) => text.replace(/\|/g, '\\|');

function table(config: z.ZodType, name: string, comments: Map<string, string>): string {
  const schema = z.toJSONSchema(config, { io: 'input', unrepresentable: 'any' }) as JsonSchema;
  const lines = ['| field | type | default | meaning |', '| --- | --- | --- | --- |'];
  for (const r of rows(schema, '', true, comments, `${name}:`)) {
    const def =
      r.default === undefined ? (r.required ? '**required**' : '') : `\`${JSON.stringify(r.default)}\``;
    lines.push(`| \`${r.path}\` | ${cell(r.type)} | ${cell(def)} | ${cell(r.description ?? '')} |`);
  }
  return lines.join('\n');
}

function envTable(overrides: EnvOverride[]): string {
  return [
    '| variable | sets |',
    '| --- | --- |',
    ...overrides.map((o) => `| \`${o.env}\` | \`${o.path.join('.')}\` (${o.parse}) |`),
  ].join('\n');
}

/** docs/config.md as the schemas and their comments say it should read. */
export function configReference(root: string): string {
  const comments = fieldComments(
    ['pkg/config/agent.ts', 'pkg/config/controller.ts', 'pkg/lease/timing.ts'].map((f) => join(root, f)),
  );
  return `# Configuration reference

Generated by \`npm run docs:config\` from the zod schemas in \`pkg/config/agent.ts\` and
\`pkg/config/controller.ts\` (types, limits, defaults) and the comments on their fields; do not
edit by hand. Both files are YAML; unknown fields are refused, and every problem is reported
at once with the field and where its value came from. Environment variables override the file.
Cross-field rules (the lease's self-fence inequality, the kill budget per agent) are checked
after these and explained in the README. Sections marked as defaults may be left out.

## Agent (\`understudy-agent --config agent.yaml\`)

${table(AgentConfig, 'AgentConfig', comments)}

Environment overrides:

${envTable(AGENT_ENV_OVERRIDES)}

## Controller (\`understudy-controller --config controller.yaml\`)

${table(ControllerConfig, 'ControllerConfig', comments)}

Environment overrides:

${envTable(CONTROLLER_ENV_OVERRIDES)}
`;
}

/** The reference as the file holds it: formatted the way the repository formats Markdown. */
export async function formattedReference(root: string): Promise<string> {
  return formattedMarkdown(join(root, 'docs', 'config.md'), configReference(root));
}

// `npm run docs:...`: write it.
await writeIfRun(import.meta.url, 'config.md', formattedReference);

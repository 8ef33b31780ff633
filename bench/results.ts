// Where benchmark results go, and what each records about the run: the machine, the versions
// and (by the caller) the settings, so a figure can be compared with another only when they
// were measured alike.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { images } from '../test/support/images.js';
import { repoRoot } from '../test/support/paths.js';
import type { ScaleFigures } from './plots.js';

export const RESULTS_DIR = fileURLToPath(new URL('./results/', import.meta.url));

/** bench/results/<bench>-<date>-<tag>.json, never overwriting an earlier result. */
export function resultPath(bench: string, date: Date, tag: string): string {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = date
    .toISOString()
    .replace(/\.\d+Z$/, 'Z')
    .replaceAll(':', '-');
  const file = join(RESULTS_DIR, `${bench}-${stamp}-${tag}.json`);
  return existsSync(file) ? file.replace(/\.json$/, `-${process.pid}.json`) : file;
}

export function machine(): Record<string, unknown> {
  return {
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model,
    memoryBytes: os.totalmem(),
    kernel: `${os.type()} ${os.release()}`,
    loadAverage: os.loadavg(),
  };
}

export function gitVersion(): string | undefined {
  try {
    return execFileSync('git', ['describe', '--always', '--dirty'], { cwd: repoRoot }).toString().trim();
  } catch {
    return undefined;
  }
}

export function versions(): Record<string, unknown> {
  return {
    node: process.version,
    etcdImage: images().etcd,
    natsImage: images().nats,
    hostImage: images().host,
    git: gitVersion(),
  };
}

/** Write `value` as JSON in the repository's own style (so `npm run lint` passes with it). */
export async function writeJson(file: string, value: unknown): Promise<void> {
  let text = `${JSON.stringify(value, null, 2)}\n`;
  try {
    const prettier = await import('prettier');
    text = await prettier.format(text, { ...(await prettier.resolveConfig(file)), parser: 'json' });
  } catch {
    // Unformatted JSON is still the result.
  }
  writeFileSync(file, text);
}

/** The scale bench's profiles (bench/scale.ts): quick is the first, full both. */
const SCALE_PROFILE_SHAPES = ['1000x10', '10000x10'];

/**
 * The newest scale result of each profile shape (identities × agents) whose failover completed,
 * from bench/results/: what the failover bench plots next to its own figures. (Other shapes are
 * one-off checks, often of older code.)
 */
export function latestScaleRuns(): ScaleFigures[] {
  const newest = new Map<string, ScaleFigures>();
  const files = existsSync(RESULTS_DIR) ? readdirSync(RESULTS_DIR) : [];
  for (const name of files.filter((f) => /^scale-.*\.json$/.test(f)).sort()) {
    try {
      const r = JSON.parse(readFileSync(join(RESULTS_DIR, name), 'utf8')) as {
        settings?: { identities?: number; agents?: number; ttlS?: number };
        failover?: { reached?: boolean; firstMs?: number; medianMs?: number; ms?: number; moved?: number };
      };
      const { identities, agents, ttlS } = r.settings ?? {};
      const f = r.failover;
      if (!identities || !agents || !ttlS || !f?.reached || f.firstMs === undefined) continue;
      if (!SCALE_PROFILE_SHAPES.includes(`${identities}x${agents}`)) continue;
      newest.set(`${identities}x${agents}`, {
        identities,
        agents,
        ttlS,
        failover: {
          firstMs: f.firstMs,
          medianMs: f.medianMs ?? f.firstMs,
          ms: f.ms ?? f.firstMs,
          moved: f.moved ?? 0,
        },
      });
    } catch {
      // A result written by an older bench, or torn: not plotted.
    }
  }
  return [...newest.values()].sort((a, b) => a.identities - b.identities || a.agents - b.agents);
}

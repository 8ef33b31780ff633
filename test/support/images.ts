// Which container images the harness runs. Chosen by scripts/images (official images when a
// registry answers, local FROM-scratch builds otherwise) and overridable per variable.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { repoRoot } from './paths.js';

export interface Images {
  etcd: string;
  nats: string;
  node: string;
  /** The Node image plus a host's tools (sh, sleep, date, setpriv): chaos agents run in it. */
  host: string;
}

const VARIABLES = {
  etcd: 'UNDERSTUDY_ETCD_IMAGE',
  nats: 'UNDERSTUDY_NATS_IMAGE',
  node: 'UNDERSTUDY_NODE_IMAGE',
  host: 'UNDERSTUDY_HOST_IMAGE',
} as const satisfies Record<keyof Images, string>;

function readImagesEnv(): Record<string, string> {
  const stateDir = process.env.UNDERSTUDY_STATE_DIR ?? join(repoRoot, '.understudy');
  const file = join(stateDir, 'images.env');
  if (!existsSync(file)) return {};
  const entries = readFileSync(file, 'utf8')
    .split('\n')
    .map((line) => line.trim())
    .filter((line) => line && !line.startsWith('#'))
    .map((line) => {
      const eq = line.indexOf('=');
      return [line.slice(0, eq), line.slice(eq + 1)] as const;
    });
  return Object.fromEntries(entries);
}

let cached: Images | undefined;

export function images(): Images {
  if (cached) return cached;
  const recorded = readImagesEnv();
  const pick = (kind: keyof Images): string => {
    const variable = VARIABLES[kind];
    const image = process.env[variable] || recorded[variable];
    if (!image) {
      throw new Error(
        `no ${kind} image chosen: set ${variable} or run scripts/setup (it records its choice in .understudy/images.env)`,
      );
    }
    return image;
  };
  cached = { etcd: pick('etcd'), nats: pick('nats'), node: pick('node'), host: pick('host') };
  return cached;
}

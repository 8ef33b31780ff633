import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the harness mounts it into Node containers. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * How to start a component: through tsx from the sources (default), or, with
 * UNDERSTUDY_BUILT=1, the compiled JavaScript in dist/ (`npm run build` first) — what an
 * operator runs, and what the footprint figures should be taken on.
 */
export function entryPoint(component: 'agent' | 'controller'): string[] {
  if (process.env.UNDERSTUDY_BUILT === '1') {
    const built = resolve(repoRoot, 'dist', 'cmd', component, 'main.js');
    if (!existsSync(built)) throw new Error(`UNDERSTUDY_BUILT=1 but ${built} is missing: run npm run build`);
    return [built];
  }
  return ['--import', 'tsx', `cmd/${component}/main.ts`];
}

// Identity specs the integration tests and the chaos run share.
import type { IdentitySpecInput } from '../../pkg/spec/schema.js';
import { repoRoot } from './paths.js';

/** The demo rate bot as a warm process service, run from this checkout. */
export function rateBotSpec(name: string, extra: Partial<IdentitySpecInput> = {}): IdentitySpecInput {
  return {
    name,
    service: {
      driver: 'process',
      command: [process.execPath, '--import', 'tsx', 'pkg/demo/ratebot.ts', '--feed', 'demo/rates.json'],
      cwd: repoRoot,
      mode: 'warm',
      channel: 'fd3',
      // tsx compiles on the way: seconds on a cold cache and a loaded machine.
      startTimeoutMs: 30_000,
    },
    access: { open: true },
    help: ['RATE <CUR>   EUR exchange rate, e.g. RATE USD'],
    ...extra,
  };
}

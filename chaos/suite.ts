// The chaos suite's settings and shared pieces, for its command (main.ts) and the tests that
// run it under npm test (test/chaos/matrix.test.ts).
import type { ScenarioResult } from './runner.js';
import { SLOW_IDENTITY } from './scenarios.js';
import { DEFAULT_IDENTITIES, type ChaosIdentity } from './topology.js';

/**
 * T of the suite's agents: the default and recommended 5 s, the smallest that rides out an
 * etcd raft election (README, "Riding out an etcd election"); below it, an ordinary election
 * fences healthy leaders and the matrix's "no move" rows would not hold.
 */
export const CHAOS_TTL_S = 5;
/**
 * L1's margin over T: the successor's stagger (up to a second by rank), its witness starting
 * (Node and tsx, ~0.5 s on a loaded machine) and etcd's lease expiry granularity.
 */
export const FAILOVER_MARGIN_MS = 3_000;
/** Quiet after each nemesis fault: one failover's worth (T + margin) and a little more. */
export const NEMESIS_SETTLE_MS = CHAOS_TTL_S * 1000 + FAILOVER_MARGIN_MS + 2_000;

/** The suite's identities: the defaults, with one witness that takes its time to log out. */
export function chaosIdentities(): ChaosIdentity[] {
  return DEFAULT_IDENTITIES.map((i) =>
    i.name === SLOW_IDENTITY ? { ...i, witnessEnv: { WITNESS_STOP_DELAY_MS: '500' } } : { ...i },
  );
}

export function formatResults(results: readonly ScenarioResult[]): string {
  const lines = ['scenario                              moved        expected  verdict'];
  for (const r of results) {
    const ok = r.problems.length === 0 && r.violations.length === 0;
    lines.push(
      `${r.scenario.name.padEnd(37)} ${(r.moved.join(',') || '-').padEnd(12)} ${r.scenario.expect.padEnd(9)} ${ok ? 'ok' : 'FAILED'}`,
    );
    for (const p of r.problems) lines.push(`    ${p}`);
    for (const n of r.notes ?? []) lines.push(`    note: ${n}`);
    for (const v of r.violations) lines.push(`    ${v.invariant}: ${v.message}`);
  }
  return lines.join('\n');
}

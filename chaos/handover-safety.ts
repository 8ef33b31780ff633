// The handover-safety loop (issue 10, point 7): runs the scenarios of
// test/integration/handover-safety.test.ts many times against real etcd, NATS and agents, and
// prints per scenario the rounds, the overlapping service logins and token decreases the
// services' own records show, and how long after the fault the successor's service started.
//
//   npm run chaos -- safety                 20 rounds of every scenario
//   npm run chaos -- safety --rounds 8 --grep freeze
//
// Exit code 0 only when every round had no overlap, no token decrease and a successor.
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../test/support/paths.js';

interface RoundResult {
  scenario: string;
  round: number;
  overlaps: number;
  decreases: number;
  successorDelaysMs: Array<number | null | undefined>;
  problems: string[];
}

const { values } = parseArgs({
  options: {
    rounds: { type: 'string', default: '20' },
    grep: { type: 'string' },
    help: { type: 'boolean', default: false },
  },
});
if (values.help) {
  console.log('usage: npm run chaos -- safety [--rounds 20] [--grep <scenario title pattern>]');
  process.exit(0);
}
const rounds = Number(values.rounds);
if (!Number.isInteger(rounds) || rounds < 1) {
  console.error(`--rounds ${values.rounds}: give a positive whole number`);
  process.exit(2);
}

const dir = await mkdtemp(join(tmpdir(), 'understudy-safety-'));
const report = join(dir, 'report.json');
const args = [
  join(repoRoot, 'node_modules', 'mocha', 'bin', 'mocha.js'),
  '--node-option',
  'import=tsx',
  '--extension',
  'ts',
  '--require',
  'test/support/global-fixtures.ts',
  '--timeout',
  '120000',
  '--reporter',
  'spec',
  ...(values.grep ? ['--grep', values.grep] : []),
  'test/integration/handover-safety.test.ts',
];
const startedAt = Date.now();
const code = await new Promise<number | null>((resolve) => {
  const child = spawn(process.execPath, args, {
    cwd: repoRoot,
    stdio: 'inherit',
    env: {
      ...process.env,
      UNDERSTUDY_SAFETY_ROUNDS: String(rounds),
      UNDERSTUDY_SAFETY_REPORT: report,
    },
  });
  child.once('exit', (c) => resolve(c));
});

let results: RoundResult[] = [];
try {
  results = JSON.parse(await readFile(report, 'utf8')) as RoundResult[];
} catch {
  console.error(`no report from the scenarios (mocha exited with ${code}); see the output above`);
}
await rm(dir, { recursive: true, force: true });

const stats = (xs: number[]) => {
  if (xs.length === 0) return 'n/a';
  const s = [...xs].sort((a, b) => a - b);
  const mid = s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
  return `${s[0]!.toFixed(0)} / ${mid.toFixed(0)} / ${s.at(-1)!.toFixed(0)}`;
};

const scenarios = [...new Set(results.map((r) => r.scenario))];
console.log(
  `\nhandover safety: ${rounds} round(s) per scenario, ${((Date.now() - startedAt) / 60_000).toFixed(1)} min`,
);
const header = [
  'scenario',
  'rounds',
  'overlaps',
  'token decreases',
  'no successor',
  'successor login after fault, ms (min / median / max)',
];
const rows = scenarios.map((scenario) => {
  const mine = results.filter((r) => r.scenario === scenario);
  const delays = mine.flatMap((r) => r.successorDelaysMs.filter((d): d is number => typeof d === 'number'));
  const missing = mine.reduce(
    (n, r) => n + r.successorDelaysMs.filter((d) => typeof d !== 'number').length,
    0,
  );
  return [
    scenario,
    String(mine.length),
    String(mine.reduce((n, r) => n + r.overlaps, 0)),
    String(mine.reduce((n, r) => n + r.decreases, 0)),
    String(missing),
    stats(delays),
  ];
});
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
for (const row of [header, ...rows]) console.log(row.map((c, i) => c.padEnd(widths[i]!)).join('  '));
const problems = results.flatMap((r) => r.problems.map((p) => `${r.scenario} round ${r.round}: ${p}`));
if (problems.length > 0) {
  console.log('\nproblems:');
  for (const p of problems) console.log(`  ${p}`);
}
process.exit(problems.length === 0 && code === 0 && results.length > 0 ? 0 : 1);

// The chaos suite's command (npm run chaos -- …; scripts/chaos builds and sets up first).
//
//   matrix [--only a,b] [--rounds N]        every failure-matrix scenario (chaos/scenarios.ts), N times
//   nemesis --seed N --minutes M            a seeded plan of random faults (chaos/nemesis.ts)
//   variants [--only name]                  the unsafe agents, each where it can misbehave: all caught?
//   kit --spec FILE [--mount DIR] [--host-image IMAGE]
//                                           is the user's own service failover-ready? (chaos/kit.ts)
//
// Each run writes to --out (default .understudy/chaos/<time>-<what>): history.jsonl (the
// run's history, which `npm run chaos -- check FILE` judges again), report.txt and
// report.html (the timeline), and each agent's and controller's own log (<name>.log). Exit 0: no violation and everything as expected; 1: not (the
// seed to replay is printed); 2: the run could not be done (bad flags, no Docker...).
import { mkdir, writeFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { parseArgs } from 'node:util';
import { repoRoot } from '../test/support/paths.js';
import { reapOrphans } from '../test/support/reaper.js';
import { check, formatReport, formatViolation, type Report } from './checker.js';
import { Faults } from './faults.js';
import { formatKit, runKit } from './kit.js';
import { FAULTS, type FaultAction } from './nemesis.js';
import { HistoryLog } from './observe.js';
import { renderHtml, type ScenarioBand } from './report.js';
import { describePlan, judgeMatrix, runMatrix, runNemesis, runScenario, violationsIn } from './runner.js';
import { SCENARIOS, scenarioNamed } from './scenarios.js';
import {
  CHAOS_TTL_S,
  chaosIdentities,
  FAILOVER_MARGIN_MS,
  formatResults,
  NEMESIS_SETTLE_MS,
} from './suite.js';
import { DEFAULT_NATS_SERVERS, Topology, type TopologyOptions } from './topology.js';
import { buildVariant, VARIANTS, variantNamed } from './variants.js';

class UsageError extends Error {}

const COMMANDS = ['matrix', 'nemesis', 'variants', 'kit'] as const;
type Command = (typeof COMMANDS)[number];

/** The run's cluster, removed on Ctrl-C or a timeout's SIGTERM: no container outlives a run. */
let current: Topology | undefined;
// `on` and a flag, not `once`: a second signal (a wrapper relaying the terminal's Ctrl-C) must
// not kill the process while it removes its containers. The removal is bounded instead: the
// engine removes a container in seconds, and past this it is stuck and waiting helps no one.
const SIGNAL_CLEANUP_MS = 120_000;
let signalled = false;
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.on(signal, () => {
    if (signalled) return;
    signalled = true;
    process.stderr.write(`chaos: ${signal}: removing the run's containers\n`);
    setTimeout(() => {
      process.stderr.write(
        `chaos: containers not removed within ${SIGNAL_CLEANUP_MS / 1000} s; exiting anyway (the next npm test, npm run chaos or failover bench removes what is left)\n`,
      );
      process.exit(130);
    }, SIGNAL_CLEANUP_MS); // not unref'd: a stalled removal still ends in exit 130
    void (current?.close() ?? Promise.resolve()).finally(() => process.exit(130));
  });
}

/** NATS servers for this run (--nats 1 or 3). */
let natsServers = DEFAULT_NATS_SERVERS;

async function startTopology(
  opts: Omit<TopologyOptions, 'ttlSeconds' | 'failoverMarginMs'>,
): Promise<Topology> {
  current = await Topology.start({
    ttlSeconds: CHAOS_TTL_S,
    failoverMarginMs: FAILOVER_MARGIN_MS,
    identities: chaosIdentities(),
    natsServers,
    ...opts,
  });
  return current;
}

interface Flags {
  seed?: string;
  minutes?: string;
  rounds?: string;
  only?: string;
  actions?: string;
  out?: string;
  spec?: string;
  mount?: string;
  'host-image'?: string;
  nats?: string;
}

function positive(name: string, raw: string | undefined, fallback: number): number {
  const v = raw === undefined ? fallback : Number(raw);
  if (!Number.isFinite(v) || v <= 0)
    throw new UsageError(`--${name} must be a positive number (got '${raw}')`);
  return v;
}

async function output(what: string, given: string | undefined): Promise<{ dir: string; log: HistoryLog }> {
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19);
  const dir = given ?? join(repoRoot, '.understudy', 'chaos', `${stamp}-${what}`);
  await mkdir(dir, { recursive: true });
  process.stdout.write(`chaos ${what}: history in ${relative(process.cwd(), dir)}/history.jsonl\n`);
  return { dir, log: new HistoryLog(join(dir, 'history.jsonl')) };
}

async function writeOutputs(
  dir: string,
  log: HistoryLog,
  report: Report,
  text: string,
  title: string,
  scenarios: ScenarioBand[] = [],
) {
  await log.flushed();
  await writeFile(join(dir, 'report.txt'), `${text}\n`);
  await writeFile(join(dir, 'report.html'), renderHtml(log.sorted(), report, title, text, scenarios));
  process.stdout.write(`\n${text}\nreport: ${relative(process.cwd(), join(dir, 'report.html'))}\n`);
}

async function matrix(flags: Flags): Promise<number> {
  const chosen = flags.only ? flags.only.split(',').map((n) => scenarioNamed(n.trim())) : SCENARIOS;
  const rounds = Math.floor(positive('rounds', flags.rounds, 1));
  const { dir, log } = await output('matrix', flags.out);
  const top = await startTopology({ log, logDir: dir });
  let results;
  try {
    const list = Array.from({ length: rounds }, () => chosen).flat();
    results = await runMatrix(top, list, (r) =>
      process.stdout.write(`${formatResults([r]).split('\n').slice(1).join('\n')}\n`),
    );
  } finally {
    await top.close();
  }
  const { report } = judgeMatrix(log.events, results);
  const text = [formatResults(results), '', formatReport(report)].join('\n');
  const bands = results.map((r) => ({
    name: r.scenario.name,
    from: r.from,
    to: r.to,
    ok: r.problems.length === 0 && r.violations.length === 0,
  }));
  await writeOutputs(dir, log, report, text, 'chaos matrix', bands);
  return results.some((r) => r.problems.length > 0) || report.violations.length > 0 ? 1 : 0;
}

async function nemesis(flags: Flags): Promise<number> {
  const seed = Math.floor(positive('seed', flags.seed, 1 + (Date.now() % 100_000)));
  const minutes = positive('minutes', flags.minutes, 5);
  const actions = flags.actions?.split(',').map((a) => {
    if (!(a in FAULTS)) {
      throw new UsageError(`--actions: unknown fault '${a}' (known: ${Object.keys(FAULTS).join(', ')})`);
    }
    return a as FaultAction;
  });
  const { dir, log } = await output(`nemesis-seed-${seed}`, flags.out);
  const top = await startTopology({ log, seed, logDir: dir });
  try {
    await runNemesis(top, {
      seed,
      minutes,
      settleMs: NEMESIS_SETTLE_MS,
      ...(actions ? { actions } : {}),
      onFault: (f) => process.stdout.write(`${describePlan([f]).split('\n')[1]}\n`),
    });
  } finally {
    await top.close();
  }
  const report = check(log.sorted());
  await writeOutputs(dir, log, report, formatReport(report), `chaos nemesis, seed ${seed}`);
  if (report.violations.length > 0) {
    process.stdout.write(`replay: npm run chaos -- nemesis --seed ${seed} --minutes ${minutes}\n`);
    return 1;
  }
  return 0;
}

/** Every unsafe variant in every scenario where it can misbehave, each on a fresh cluster. */
async function variants(flags: Flags): Promise<number> {
  const chosen = flags.only ? flags.only.split(',').map((n) => variantNamed(n.trim())) : VARIANTS;
  const lines: string[] = [];
  let missed = 0;
  for (const variant of chosen) {
    for (const name of variant.scenarios) {
      const built = await buildVariant(variant);
      const { log } = await output(`variant-${variant.name}-${name}`, undefined);
      try {
        const top = await startTopology({ log, agentDist: built.dist });
        let caught;
        try {
          const r = await runScenario(top, new Faults(top), scenarioNamed(name), `${variant.name}-${name}`, {
            recover: false,
          });
          caught = violationsIn(log.sorted(), r.from, Infinity).filter((v) =>
            variant.caughtBy.includes(v.invariant),
          );
        } finally {
          await top.close();
        }
        if (caught.length === 0) missed++;
        lines.push(
          `${variant.name} in ${name}: ${caught.length === 0 ? 'NOT CAUGHT' : `caught (${caught.length} violation(s))`}`,
          ...caught.map((v) => formatViolation(v).replace(/^/gm, '    ')),
        );
        process.stdout.write(`${lines.slice(-1 - caught.length).join('\n')}\n`);
      } finally {
        await built.remove();
      }
    }
  }
  process.stdout.write(`\n${lines.join('\n')}\n`);
  return missed === 0 ? 0 : 1;
}

async function kit(flags: Flags): Promise<number> {
  if (!flags.spec) throw new UsageError('kit needs --spec FILE: the identity spec of your service');
  const { dir, log } = await output('kit', flags.out);
  const { checks, report } = await runKit({
    specFile: flags.spec,
    log,
    ...(flags.mount ? { mount: flags.mount } : {}),
    ...(flags['host-image'] ? { hostImage: flags['host-image'] } : {}),
  });
  const text = [formatKit(flags.spec, checks), '', formatReport(report)].join('\n');
  await writeOutputs(dir, log, report, text, `failover-readiness: ${flags.spec}`);
  return checks.every((c) => c.passed) ? 0 : 1;
}

async function main(): Promise<number> {
  const argv = process.argv.slice(2);
  // `npm run chaos -- --seed N --minutes M` is the nemesis.
  const command = (argv[0] && !argv[0].startsWith('--') ? argv.shift()! : 'nemesis') as Command;
  if (!COMMANDS.includes(command)) {
    throw new UsageError(`unknown chaos command '${command}' (known: ${COMMANDS.join(', ')}, check)`);
  }
  const { values } = parseArgs({
    args: argv,
    options: Object.fromEntries(
      ['seed', 'minutes', 'rounds', 'only', 'actions', 'out', 'spec', 'mount', 'host-image', 'nats'].map(
        (n) => [n, { type: 'string' as const }],
      ),
    ),
  });
  await reapOrphans();
  const flags = values as Flags;
  if (flags.nats !== undefined) {
    if (flags.nats !== '1' && flags.nats !== '3')
      throw new UsageError(`--nats must be 1 or 3 (got '${flags.nats}')`);
    natsServers = Number(flags.nats);
  }
  switch (command) {
    case 'matrix':
      return matrix(flags);
    case 'nemesis':
      return nemesis(flags);
    case 'variants':
      return variants(flags);
    case 'kit':
      return kit(flags);
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(
      `chaos: ${err instanceof UsageError ? '' : 'the run could not be done: '}${(err as Error).message}\n`,
    );
    process.exit(2);
  },
);

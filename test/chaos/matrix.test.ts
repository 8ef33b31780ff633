// The chaos suite under npm test (issue 14): every row of the failure matrix as a named
// scenario (chaos/scenarios.ts), each fault at each duration that matters, against hosts of
// their own — a 3-member etcd, NATS with authorization, two controllers and three agents, each
// in its own container and network namespace — then a short seeded nemesis. Every scenario is
// judged by the checker over the history written from outside the agents (the witnesses' own
// records, PING, etcd) and by what it must do: move, or stay put. The run's history, its HTML
// report and every node's own log (logs/, to see why a row failed) are kept under
// .understudy/chaos/ci-matrix/.
import { expect } from 'chai';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { check, formatReport, formatViolation } from '../../chaos/checker.js';
import { Faults } from '../../chaos/faults.js';
import { HistoryLog } from '../../chaos/observe.js';
import { renderHtml } from '../../chaos/report.js';
import {
  judgeMatrix,
  runNemesis,
  runScenario,
  violationsIn,
  type ScenarioResult,
} from '../../chaos/runner.js';
import { SCENARIOS } from '../../chaos/scenarios.js';
import {
  CHAOS_TTL_S,
  chaosIdentities,
  FAILOVER_MARGIN_MS,
  formatResults,
  NEMESIS_SETTLE_MS,
} from '../../chaos/suite.js';
import { Topology } from '../../chaos/topology.js';
import { repoRoot } from '../support/paths.js';

/** The short nemesis of every CI run: a fixed seed, so a failure replays exactly. */
const CI_NEMESIS_SEED = Number(process.env.UNDERSTUDY_CHAOS_SEED ?? 7);
const CI_NEMESIS_MINUTES = 2;
const OUT = join(repoRoot, '.understudy', 'chaos', 'ci-matrix');

describe('chaos matrix: every failure-matrix row on hosts of their own, judged from outside', function () {
  // Per scenario: the fault (up to 1.5 T), a failover (T + margin), the host restarted, the
  // cluster steady again; generous for a loaded 2-core machine.
  this.timeout(180_000);
  let top: Topology;
  let faults: Faults;
  let log: HistoryLog;
  const results: ScenarioResult[] = [];

  before(async function () {
    await rm(OUT, { recursive: true, force: true });
    await mkdir(join(OUT, 'logs'), { recursive: true });
    log = new HistoryLog(join(OUT, 'history.jsonl'));
    top = await Topology.start({
      ttlSeconds: CHAOS_TTL_S,
      identities: chaosIdentities(),
      log,
      seed: CI_NEMESIS_SEED,
      failoverMarginMs: FAILOVER_MARGIN_MS,
      logDir: join(OUT, 'logs'),
    });
    faults = new Faults(top);
  });

  after(async function () {
    await top?.close();
    if (!log) return;
    await log.flushed();
    const { report } = judgeMatrix(log.events, results);
    const text = [formatResults(results), '', formatReport(report)].join('\n');
    await writeFile(join(OUT, 'report.txt'), `${text}\n`);
    const bands = results.map((r) => ({
      name: r.scenario.name,
      from: r.from,
      to: r.to,
      ok: r.problems.length === 0 && r.violations.length === 0,
    }));
    await writeFile(
      join(OUT, 'report.html'),
      renderHtml(log.sorted(), report, 'chaos matrix (npm test)', text, bands),
    );
  });

  SCENARIOS.forEach((s, i) => {
    it(`${s.name}: ${s.row} (${s.expect === 'either' ? 'no overlap, whoever leads' : `the identity ${s.expect}`})`, async function () {
      const result = await runScenario(top, faults, s, `s${i + 1}-${s.name}`);
      result.violations = violationsIn(log.sorted(), result.from, result.to);
      results.push(result);
      expect(
        result.violations.map(formatViolation),
        'violations (with the events that prove them)',
      ).to.deep.equal([]);
      expect(result.problems).to.deep.equal([]);
    });
  });

  it(`a seeded nemesis (seed ${CI_NEMESIS_SEED}, ${CI_NEMESIS_MINUTES} min) leaves no violation in the whole run`, async function () {
    this.timeout(CI_NEMESIS_MINUTES * 60_000 + 300_000);
    const plan = await runNemesis(top, {
      seed: CI_NEMESIS_SEED,
      minutes: CI_NEMESIS_MINUTES,
      settleMs: NEMESIS_SETTLE_MS,
    });
    // The whole run, judged once it is over (the workload's last answers are in).
    await top.close();
    const report = check(log.sorted());
    expect(plan.length, 'faults in the plan').to.be.at.least(5);
    expect(
      report.violations.map(formatViolation),
      `violations; replay: npm run chaos -- nemesis --seed ${CI_NEMESIS_SEED} --minutes ${CI_NEMESIS_MINUTES}`,
    ).to.deep.equal([]);
  });
});

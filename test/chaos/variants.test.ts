// The chaos suite can fail (issue 14, point 5): unsafe agents — the shipped agent with one rule
// broken in a copy of its compiled code (chaos/variants.ts) — run the matrix scenarios where
// each can misbehave, on the same hosts-in-containers topology, and the checker must catch
// every one from outside, printing the events that prove it. A fresh cluster per run: an
// unsafe agent may leave it broken.
import { expect } from 'chai';
import { formatViolation } from '../../chaos/checker.js';
import { Faults } from '../../chaos/faults.js';
import { HistoryLog } from '../../chaos/observe.js';
import { runScenario, violationsIn } from '../../chaos/runner.js';
import { scenarioNamed } from '../../chaos/scenarios.js';
import { CHAOS_TTL_S, chaosIdentities, FAILOVER_MARGIN_MS } from '../../chaos/suite.js';
import { Topology } from '../../chaos/topology.js';
import { applyPatches, buildVariant, VARIANTS, VariantError } from '../../chaos/variants.js';

describe('chaos self-test: every unsafe agent variant is caught where it can misbehave', function () {
  this.timeout(240_000);

  it('a variant whose target code changed does not build (it would be safe, and prove nothing)', function () {
    const patches = [{ file: 'x.js', find: 'if (a) {', replace: 'if (false) {' }];
    expect(applyPatches('x.js', 'if (a) { b(); }', patches, 'v')).to.equal('if (false) { b(); }');
    expect(() => applyPatches('x.js', 'if (c) { b(); }', patches, 'v'))
      .to.throw(VariantError)
      .with.property('message')
      .that.matches(/dist\/x\.js has 0 occurrences.*update chaos\/variants\.ts/);
    expect(() => applyPatches('x.js', 'if (a) {} if (a) {}', patches, 'v')).to.throw(/has 2 occurrences/);
  });

  for (const variant of VARIANTS) {
    for (const name of variant.scenarios) {
      it(`${variant.name} (${variant.breaks}) is caught in ${name}`, async function () {
        const built = await buildVariant(variant);
        const log = new HistoryLog();
        let top: Topology | undefined;
        try {
          top = await Topology.start({
            ttlSeconds: CHAOS_TTL_S,
            identities: chaosIdentities(),
            log,
            failoverMarginMs: FAILOVER_MARGIN_MS,
            agentDist: built.dist,
          });
          const result = await runScenario(
            top,
            new Faults(top),
            scenarioNamed(name),
            `${variant.name}-${name}`,
            {
              recover: false,
            },
          );
          const caught = violationsIn(log.sorted(), result.from, Infinity).filter((v) =>
            variant.caughtBy.includes(v.invariant),
          );
          // What an operator reads in the report: the rule and the proving events.
          process.stdout.write(
            `      caught: ${caught.map((v) => formatViolation(v).split('\n')[0]).join('\n              ')}\n`,
          );
          expect(caught.length, `${variant.name} in ${name}: violations found`).to.be.above(0);
          for (const v of caught) expect(v.events.length, formatViolation(v)).to.be.above(0);
        } finally {
          await top?.close();
          await built.remove();
        }
      });
    }
  }
});

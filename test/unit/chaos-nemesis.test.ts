// The nemesis's plan as a specification: the same seed replays the same run, every lasting
// fault visits all three timing bands (short of D, between D and T, past T), and the run is
// bounded: each fault ends and settles before the next, all within the minutes asked for.
import { expect } from 'chai';
import {
  BANDS,
  describePlan,
  durationIn,
  FAULTS,
  planFaults,
  PlanError,
  random,
  type PlanOptions,
} from '../../chaos/nemesis.js';

const TTL_MS = 4_000;
const D_MS = 3_000;
const OPTIONS: PlanOptions = {
  seed: 7,
  minutes: 20,
  ttlMs: TTL_MS,
  selfFenceMs: D_MS,
  settleMs: 8_000,
  agents: ['a', 'b', 'c'],
  controllers: ['c1', 'c2'],
  identities: ['bot', 'gw'],
};

describe('chaos nemesis: the plan of faults', function () {
  it('is the same for the same seed, and another for another seed', function () {
    expect(planFaults(OPTIONS)).to.deep.equal(planFaults(OPTIONS));
    expect(planFaults({ ...OPTIONS, seed: 8 })).to.not.deep.equal(planFaults(OPTIONS));
    const r = random(42);
    const s = random(42);
    expect([r(), r(), r()]).to.deep.equal([s(), s(), s()]);
  });

  it('draws each band of the timing well inside it', function () {
    for (const r of [0, 0.5, 0.999]) {
      const short = durationIn('short-of-D', TTL_MS, D_MS, r);
      const middle = durationIn('between-D-and-T', TTL_MS, D_MS, r);
      const past = durationIn('past-T', TTL_MS, D_MS, r);
      expect(short).to.be.within(0.2 * D_MS, 0.8 * D_MS);
      expect(middle).to.be.within(D_MS + 0.2 * (TTL_MS - D_MS), D_MS + 0.8 * (TTL_MS - D_MS));
      expect(past).to.be.within(1.2 * TTL_MS, 1.8 * TTL_MS);
    }
  });

  it('takes every lasting fault through all three bands in turn (the middle one found an S1 bug once)', function () {
    const plan = planFaults({ ...OPTIONS, actions: ['freeze', 'cut-etcd'], minutes: 10 });
    for (const action of ['freeze', 'cut-etcd'] as const) {
      const bands = plan.filter((f) => f.action === action).map((f) => f.band);
      expect(bands.length, `${action} drawn at least three times`).to.be.at.least(3);
      expect(new Set(bands), action).to.deep.equal(new Set(BANDS));
      // In turn: any three in a row are the three bands.
      expect(new Set(bands.slice(0, 3))).to.deep.equal(new Set(BANDS));
    }
  });

  it('is bounded: faults do not overlap, each settles before the next, and all end within the run', function () {
    const plan = planFaults(OPTIONS);
    expect(plan.length).to.be.greaterThan(20);
    for (const [i, f] of plan.entries()) {
      const end = f.at + (f.durationMs ?? 0) + OPTIONS.settleMs;
      expect(end, f.id).to.be.at.most(OPTIONS.minutes * 60_000);
      const next = plan[i + 1];
      if (next) expect(next.at, `${next.id} after ${f.id} settled`).to.be.at.least(end);
      expect(FAULTS[f.action].lasts, f.id).to.equal(f.durationMs !== undefined);
    }
  });

  it('aims each fault at something of its kind, and leaves out faults the topology has no target for', function () {
    const plan = planFaults({ ...OPTIONS, controllers: [], identities: [] });
    expect(plan.length).to.be.greaterThan(0);
    for (const f of plan) {
      expect(['controller', 'identity']).to.not.include(FAULTS[f.action].target);
      if (FAULTS[f.action].target === 'agent') expect(OPTIONS.agents).to.include(f.targets[0]);
    }
  });

  it('refuses a timing where D is not below T, and a topology with nothing to aim at, saying which', function () {
    expect(() => planFaults({ ...OPTIONS, selfFenceMs: TTL_MS })).to.throw(
      PlanError,
      'selfFenceMs (4000) must lie between 0 and ttlMs (4000)',
    );
    expect(() => planFaults({ ...OPTIONS, agents: [] })).to.throw(PlanError, 'give at least one agent');
    expect(() => planFaults({ ...OPTIONS, controllers: [], actions: ['controller-kill'] })).to.throw(
      PlanError,
      'no fault action has a target in this topology',
    );
  });

  it('prints as a table an operator can follow', function () {
    const text = describePlan(planFaults({ ...OPTIONS, minutes: 1, actions: ['freeze'] }));
    const [header, first] = text.split('\n');
    expect(header).to.match(/id +at \(s\) +action +targets +duration +band/);
    expect(first).to.match(/^ {2}f1 +8\.0 +freeze +[abc] +\d+ ms +(short-of-D|between-D-and-T|past-T)$/);
  });
});

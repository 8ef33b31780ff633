import { expect } from 'chai';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TrialResult } from '../../bench/measure.js';
import { renderPlots, renderScalePlot } from '../../bench/plots.js';

// The plots are rendered here, without a browser, from the trials' results.
describe('benchmark plots', function () {
  this.timeout(30_000);
  const trial = (kind: TrialResult['trial']['kind'], fault: string, ttlS: number) => ({
    id: `${fault}-${ttlS}`,
    kind,
    fault,
    ttlS,
    identity: 'w1',
    node: 'a',
    token: '1',
    at: 0,
    until: 1,
  });
  const results: TrialResult[] = [
    { trial: trial('failover', 'kill', 5), handover: { answerMs: 5_123 }, moved: ['w1'], doubles: 0 },
    { trial: trial('false', 'stall-200ms', 5), handover: {}, moved: [], doubles: 0 },
    {
      trial: trial('switchover', 'switchover', 5),
      handover: { answerMs: 700 },
      gapMs: 42,
      moved: ['w1'],
      doubles: 0,
    },
  ];

  it('draws each plot there is data for as an SVG file, titled', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bench-plots-'));
    try {
      const files = await renderPlots(results, join(dir, 'run'));
      expect(files.map((f) => f.split('/').at(-1))).to.deep.equal([
        'run-failover.svg',
        'run-false-failovers.svg',
        'run-gaps.svg',
      ]);
      const failover = await readFile(files[0]!, 'utf8');
      expect(failover).to.match(/^<svg/);
      expect(failover).to.include('Unplanned failover');
      expect(await readFile(files[1]!, 'utf8')).to.include('False failovers');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it("draws the scale bench's failover next to them", async () => {
    const dir = await mkdtemp(join(tmpdir(), 'bench-plots-'));
    try {
      const file = await renderScalePlot(
        [
          {
            identities: 1000,
            agents: 10,
            ttlS: 5,
            failover: { firstMs: 5_100, medianMs: 5_700, ms: 6_600, moved: 200 },
          },
        ],
        join(dir, 'scale.svg'),
      );
      expect(await readFile(file!, 'utf8')).to.include('1,000 identities on 10 agents');
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('draws nothing without data', async () => {
    expect(await renderScalePlot([], '/nonexistent/scale.svg')).to.equal(undefined);
    expect(await renderPlots([], '/nonexistent/run')).to.deep.equal([]);
  });
});

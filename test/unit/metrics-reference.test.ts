// docs/metrics.md is generated from the registries: a metric added, renamed or re-labelled
// without regenerating it fails here.
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formattedMetricsReference, metricsReference } from '../../scripts/metrics-reference.js';
import { repoRoot } from '../support/paths.js';

describe('the metrics reference (docs/metrics.md)', function () {
  this.timeout(20_000);

  it('is what the registries say now (run `npm run docs:metrics` when this fails)', async () => {
    const onDisk = await readFile(join(repoRoot, 'docs', 'metrics.md'), 'utf8');
    expect(
      onDisk === (await formattedMetricsReference(repoRoot)),
      'docs/metrics.md is stale: run npm run docs:metrics',
    ).to.equal(true);
  });

  it('names each metric with its type, labels and meaning', () => {
    const text = metricsReference();
    expect(text).to.match(
      /\| `understudy_session_stops_total` \| counter \| `reason` \| etcd sessions that had to stop/,
    );
    expect(text).to.match(
      /\| `understudy_identity_split_brain` \| gauge \| `identity` \| 1 while more than one node answers PING/,
    );
  });
});

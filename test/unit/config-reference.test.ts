// docs/config.md is generated from the config schemas and the comments on their fields: a
// field added, renamed, re-limited or given a new default without regenerating it fails here.
import { expect } from 'chai';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { configReference, formattedReference } from '../../scripts/config-reference.js';
import { repoRoot } from '../support/paths.js';

describe('the configuration reference (docs/config.md)', function () {
  this.timeout(20_000); // reading the schemas' sources and formatting take a few seconds

  it('is what the schemas say now (run `npm run docs:config` when this fails)', async () => {
    const onDisk = await readFile(join(repoRoot, 'docs', 'config.md'), 'utf8');
    expect(
      onDisk === (await formattedReference(repoRoot)),
      'docs/config.md is stale: run npm run docs:config',
    ).to.equal(true);
  });

  it('lists every field with its limits and default, and says what it means where the schema comments it', () => {
    const text = configReference(repoRoot);
    expect(text).to.match(
      /\| `lease\.ttlSeconds` \| integer \(2–3600\) \| `5` \| Lease TTL in whole seconds/,
    );
    expect(text).to.match(/\| `identities\.<name>\.priority` \| integer \(-1000–1000\) \|/);
    expect(text).to.match(
      /\| `auth\.tokens\[\]\.role` \| `viewer`, `operator`, `admin` \| \*\*required\*\* \|/,
    );
    expect(text).to.include('| `UNDERSTUDY_NODE` | `node` (string) |');
  });
});

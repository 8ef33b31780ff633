// The CLI as a user runs it: `npx understudy` in the repository after a build, with no alias.
// The bin is the compiled JavaScript; tsc writes new files without the executable bit, so the
// build must set it or npx answers "Permission denied" on a fresh clone.
import { expect } from 'chai';
import { execFile } from 'node:child_process';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from '../support/paths.js';

const run = promisify(execFile);
const BIN = join(repoRoot, 'dist', 'cmd', 'understudy', 'main.js');

describe('the published CLI bin', function () {
  this.timeout(180_000);

  before(async () => {
    await run('npm', ['run', '-s', 'build'], { cwd: repoRoot });
  });

  it('is executable after a build', () => {
    expect(statSync(BIN).mode & 0o111, `${BIN} mode`).to.not.equal(0);
  });

  it('runs as `npx understudy` in the repository', async () => {
    const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const { stdout } = await run('npx', ['--no-install', 'understudy', '--version'], { cwd: repoRoot });
    expect(stdout.trim()).to.equal(pkg.version);
  });
});

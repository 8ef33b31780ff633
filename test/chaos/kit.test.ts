// The kit for users' own services (issue 14, point 8): `npm run chaos -- kit --spec FILE`
// runs the handovers with the user's spec instead of the witness and says whether the service
// is failover-ready. A well-behaved service (the witness itself, given as a user's spec file)
// passes every check; one that leaves a detached child behind is not gone when its agent dies,
// and the kit says so, naming what was left.
import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { formatKit, KitError, kitSpec, runKit } from '../../chaos/kit.js';
import { HistoryLog } from '../../chaos/observe.js';

describe('chaos kit: is a user\u2019s own service failover-ready?', function () {
  this.timeout(300_000);
  let dir: string;

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'understudy-kit-'));
  });
  after(async function () {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const specFile = async (name: string, command: string[], env: Record<string, string> = {}) => {
    const file = join(dir, `${name}.yaml`);
    await writeFile(
      file,
      stringify({
        name,
        service: { driver: 'process', command, cwd: '/app', mode: 'cold', env, restart: { maxAttempts: 0 } },
        access: { open: true },
      }),
    );
    return file;
  };

  it('a spec file with more or less than one identity is refused, naming the file', async function () {
    const file = join(dir, 'two.yaml');
    await writeFile(
      file,
      '- {name: x, service: {driver: process, command: [a]}}\n- {name: y, service: {driver: process, command: [b]}}\n',
    );
    const err = await kitSpec(file).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(KitError);
    expect((err as Error).message).to.match(
      /two\.yaml: the kit checks one identity at a time, and this file holds 2/,
    );
  });

  it('a service that stops on SIGTERM and keeps to its process group is failover-ready', async function () {
    const file = await specFile('kit-good', ['/usr/local/bin/node', '--import', 'tsx', 'chaos/witness.ts'], {
      WITNESS_FILE: '/tmp/witness.jsonl',
    });
    const { checks } = await runKit({ specFile: file, log: new HistoryLog() });
    process.stdout.write(`${formatKit(file, checks).replace(/^/gm, '      ')}\n`);
    expect(checks.filter((c) => !c.passed).map((c) => `${c.name}: ${c.detail}`)).to.deep.equal([]);
    expect(checks.map((c) => c.name)).to.deep.equal([
      'logs out within its budget',
      'answers after a switchover',
      'is gone when its agent dies',
      'answers after a failover',
      'never logged in twice',
    ]);
  });

  it('a service that leaves a detached child behind is not gone when its agent dies, and the kit names it', async function () {
    const escape =
      "require('child_process').spawn('/bin/sleep', ['999'], { detached: true, stdio: 'ignore' }).unref(); setInterval(() => {}, 1000)";
    const file = await specFile('kit-leaky', ['/usr/local/bin/node', '-e', escape]);
    const { checks } = await runKit({ specFile: file, log: new HistoryLog() });
    process.stdout.write(`${formatKit(file, checks).replace(/^/gm, '      ')}\n`);
    const gone = checks.find((c) => c.name === 'is gone when its agent dies')!;
    expect(gone.passed).to.equal(false);
    expect(gone.detail).to.match(/still running on \w .*sleep 999/);
    expect(formatKit(file, checks)).to.contain('NOT failover-ready');
  });
});

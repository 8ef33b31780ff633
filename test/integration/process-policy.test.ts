// The process driver asks the node's policy right before each spawn (real processes, no etcd
// or NATS): a command outside the allow-list never starts, whatever PATH the spec sets, and the
// executable found on PATH at the check is the one that runs.
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { pino } from 'pino';
import type { LoginContext } from '../../pkg/identity/driver.js';
import { ExecPolicy } from '../../pkg/identity/exec-policy.js';
import { Lifeline } from '../../pkg/identity/lifeline.js';
import { ProcessDriver } from '../../pkg/identity/process.js';
import { ProcessService } from '../../pkg/spec/schema.js';
import { waitFor } from '../support/wait.js';

const STOP_BUDGET_MS = 3_000;

describe('process driver: the policy decides what is spawned', function () {
  this.timeout(30_000);
  const logger = pino({ level: 'silent' });
  let dir: string;
  let lifeline: Lifeline;
  const drivers: ProcessDriver[] = [];

  before(async function () {
    dir = await mkdtemp(join(tmpdir(), 'understudy-process-policy-'));
    lifeline = await Lifeline.start(logger);
    // A directory a spec might put first on its PATH, with a `sleep` that leaves a marker.
    await mkdir(join(dir, 'evil'));
    await writeFile(join(dir, 'evil', 'sleep'), `#!/bin/sh\ntouch ${dir}/evil-ran\nexec /bin/sleep "$@"\n`);
    await chmod(join(dir, 'evil', 'sleep'), 0o755);
  });

  after(async function () {
    await Promise.all(drivers.map((d) => d.close(STOP_BUDGET_MS)));
    await lifeline.close();
    await rm(dir, { recursive: true, force: true });
  });

  function driver(command: string[], env: Record<string, string> = {}): ProcessDriver {
    const spec = ProcessService.parse({ driver: 'process', command, env });
    const policy = new ExecPolicy({
      allow: {
        commands: ['/usr/bin/sleep', '/bin/sleep'],
        modules: [],
        credentialPaths: [],
        stateDirs: [],
        unrestricted: false,
      },
      service: { allowRoot: true },
    });
    const d = new ProcessDriver(spec, { identity: 'pol', node: 'n1', logger, runDir: dir, lifeline, policy });
    drivers.push(d);
    return d;
  }

  const ctx = (token: bigint): LoginContext => ({ identity: 'pol', node: 'n1', token });

  it('a command outside the allow-list is not started; the login fails saying why', async function () {
    const d = driver(['/bin/sh', '-c', `touch ${dir}/sh-ran; exec sleep 1000`]);
    let error: Error | undefined;
    await d.login(ctx(1n)).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/not started: service\.command '\/bin\/sh' .*is not in allow\.commands/);
    expect(d.pid).to.equal(undefined);
    expect(existsSync(join(dir, 'sh-ran'))).to.equal(false);
  });

  it("a spec's PATH that finds another `sleep` first is refused; the allowed one runs by its full path", async function () {
    const evil = driver(['sleep', '1000'], { PATH: `${dir}/evil:/usr/bin:/bin` });
    let error: Error | undefined;
    await evil.login(ctx(2n)).catch((e: Error) => (error = e));
    expect(error?.message).to.match(/service\.command 'sleep' \(.*\/evil\/sleep\) is not in allow\.commands/);
    expect(existsSync(join(dir, 'evil-ran'))).to.equal(false);

    const good = driver(['sleep', '1000']);
    await good.login(ctx(3n));
    const pid = good.pid!;
    const cmdline = await waitFor(
      async () => {
        const args = (await readFile(`/proc/${pid}/cmdline`, 'utf8')).split('\0');
        return args[0]?.endsWith('sleep') ? args : undefined; // past the lifeline's wrapper
      },
      { what: 'the service to exec sleep', timeoutMs: 5_000 },
    );
    expect(cmdline[0]).to.match(/^\/(usr\/)?bin\/sleep$/);
    await good.logout(STOP_BUDGET_MS);
  });
});

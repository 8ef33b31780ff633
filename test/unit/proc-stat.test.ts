// A service's /proc state through a held descriptor (pkg/identity/proc-stat.ts), on real
// processes: it follows the process through SIGSTOP and SIGCONT, survives a command name
// with parentheses and spaces, and says nothing once the process is gone but that it is gone.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { once } from 'node:events';
import { ProcStat } from '../../pkg/identity/proc-stat.js';
import { waitFor } from '../support/wait.js';

describe('a service process state from /proc, through a held descriptor', function () {
  const children: ChildProcess[] = [];
  let dir: string;
  before(() => (dir = mkdtempSync(join(tmpdir(), 'proc-stat-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));
  afterEach(() => {
    for (const c of children.splice(0)) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  });

  const start = (path = 'sleep') => {
    const child = spawn(path, ['30'], { stdio: 'ignore' });
    children.push(child);
    return child;
  };

  it('reads sleeping, then stopped after SIGSTOP, then sleeping again after SIGCONT', async function () {
    const child = start();
    await once(child, 'spawn');
    const stat = new ProcStat(child.pid!);
    try {
      await waitFor(() => stat.state() === 'S', { what: 'sleep to be sleeping', timeoutMs: 5_000 });
      child.kill('SIGSTOP');
      await waitFor(() => stat.state() === 'T', { what: 'the process to be stopped', timeoutMs: 5_000 });
      child.kill('SIGCONT');
      await waitFor(() => stat.state() === 'S', { what: 'the process to sleep again', timeoutMs: 5_000 });
    } finally {
      stat.close();
    }
  });

  it('finds the state after a command name holding ") " (the name is not split on it)', async function () {
    const odd = join(dir, 'x) Z (y');
    copyFileSync('/bin/sleep', odd);
    chmodSync(odd, 0o755);
    const child = start(odd);
    await once(child, 'spawn');
    const stat = new ProcStat(child.pid!);
    try {
      await waitFor(() => stat.state() === 'S', {
        what: 'the oddly named process to be sleeping',
        timeoutMs: 5_000,
      });
    } finally {
      stat.close();
    }
  });

  it('says nothing of a process that was reaped, nor of one that never existed', async function () {
    const child = start();
    await once(child, 'spawn');
    const stat = new ProcStat(child.pid!);
    expect(stat.gone(), 'alive').to.equal(false);
    child.kill('SIGKILL');
    await once(child, 'exit');
    expect(stat.state()).to.equal(undefined);
    expect(stat.gone(), 'reaped').to.equal(true);
    stat.close();
    const never = new ProcStat(2 ** 22 + 1);
    expect(never.state()).to.equal(undefined);
    expect(never.gone(), 'never opened: it cannot tell').to.equal(false);
  });
});

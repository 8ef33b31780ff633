// The cold witness dates its login from its process's start (chaos/witness.ts): the checker's
// S1 verdicts stand on that date, so it must never come before the process existed (a false
// overlap) and never after it started running (a hidden one).
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/paths.js';
import { waitFor } from '../support/wait.js';

const monoMs = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * Loaded before the witness: it notes the monotonic clock as the process's first code runs
 * (the process started before that), and makes the witness's first use of `performance` take
 * LOAD_MS, as Node's lazy load of it did on a host starved of CPU.
 */
const LOAD_MS = 300;
const SLOW_FIRST_USE = `data:text/javascript,${encodeURIComponent(`
import { writeFileSync } from 'node:fs';
writeFileSync(process.env.FIRST_CODE_FILE, String(Number(process.hrtime.bigint()) / 1e6));
const real = globalThis.performance;
let slow = true;
Object.defineProperty(globalThis, 'performance', {
  configurable: true,
  get() {
    if (slow && new Error().stack.includes('witness')) {
      slow = false;
      const end = Date.now() + ${LOAD_MS};
      while (Date.now() < end);
    }
    return real;
  },
});
`)}`;

describe('the cold witness dates its login from its process start', function () {
  this.timeout(60_000);
  let dir: string;
  let child: ChildProcess | undefined;

  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'witness-start-'))));
  afterEach(async () => {
    child?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  it('between its spawn and its first code, even when its first use of `performance` is slow', async () => {
    const file = join(dir, 'witness.jsonl');
    const firstCodeFile = join(dir, 'first-code');
    const spawnedAt = monoMs();
    child = spawn(process.execPath, ['--import', SLOW_FIRST_USE, '--import', 'tsx', 'chaos/witness.ts'], {
      cwd: repoRoot,
      env: {
        ...process.env,
        WITNESS_FILE: file,
        WITNESS_DEATH_LINE: '0',
        UNDERSTUDY_NODE: 'a',
        UNDERSTUDY_TOKEN: '7',
        FIRST_CODE_FILE: firstCodeFile,
      },
      stdio: ['ignore', 'ignore', 'inherit'],
    });
    const login = await waitFor(
      async () => {
        const text = await readFile(file, 'utf8').catch(() => '');
        const line = text.split('\n').find((l) => l.includes('"login"'));
        return line ? (JSON.parse(line) as { mono: number; writtenMono: number }) : undefined;
      },
      { what: 'the witness to log in', timeoutMs: 50_000 },
    );
    const firstCode = Number(await readFile(firstCodeFile, 'utf8'));
    expect(login.mono, 'login dated before the process existed').to.be.at.least(spawnedAt);
    // Later than the process's first code would hide an overlap as long as its start-up.
    expect(login.mono, 'login dated after the process was running').to.be.at.most(firstCode);
  });
});

// The `understudy` CLI run as a separate process, as an operator runs it, for tests of what it
// prints and how it exits.
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { TEST_TOKENS } from './controllers.js';
import { repoRoot } from './paths.js';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * An empty context file: the CLI under test must not pick up the local cluster's context that
 * `npm start` leaves in the repository, nor the user's own (kubectl-style lookup).
 */
const EMPTY_CONTEXT = (async () => {
  const dir = await mkdtemp(join(tmpdir(), 'understudy-cli-'));
  await writeFile(join(dir, 'context.yaml'), '');
  return join(dir, 'context.yaml');
})();

/**
 * `understudy <args>` with the operator's API token, and with only the NATS credentials the
 * arguments name (none inherited from the test's environment, no context file).
 */
export async function runCli(
  args: string[],
  /** A context file to use instead (then no token from the environment either). */
  opts: { context?: string } = {},
): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    UNDERSTUDY_TOKEN: TEST_TOKENS.operator,
    UNDERSTUDY_CONFIG: opts.context ?? (await EMPTY_CONTEXT),
  };
  if (opts.context) delete env.UNDERSTUDY_TOKEN;
  delete env.UNDERSTUDY_NATS_NKEY_FILE;
  const child = spawn(process.execPath, ['--import', 'tsx', 'cmd/understudy/main.ts', ...args], {
    cwd: repoRoot,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const code = await new Promise<number | null>((resolve) => child.once('exit', resolve));
  return { code, stdout, stderr };
}

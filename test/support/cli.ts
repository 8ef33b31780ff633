// The `understudy` CLI run as a separate process, as an operator runs it, for tests of what it
// prints and how it exits.
import { spawn } from 'node:child_process';
import { TEST_TOKENS } from './controllers.js';
import { repoRoot } from './paths.js';

export interface CliRun {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * `understudy <args>` with the operator's API token, and with only the NATS credentials the
 * arguments name (none inherited from the test's environment).
 */
export async function runCli(args: string[]): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = { ...process.env, UNDERSTUDY_TOKEN: TEST_TOKENS.operator };
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

#!/usr/bin/env node
// understudy: the operator's CLI. Thin: parse the command line (program.ts) and turn a failure
// into one line on stderr and an exit code.
import { CommanderError } from 'commander';
import { CliError, EXIT } from '../../pkg/cli/exit.js';
import { printable } from '../../pkg/cli/output.js';
import { program } from './program.js';

try {
  await program.parseAsync();
} catch (err) {
  if (err instanceof CommanderError) {
    // commander has printed its message already; help and --version exit 0.
    process.exitCode = err.exitCode === 0 ? EXIT.ok : EXIT.usage;
  } else {
    const code = err instanceof CliError ? err.exitCode : EXIT.failed;
    process.stderr.write(`understudy: ${printable((err as Error).message)}\n`);
    process.exitCode = code;
  }
}

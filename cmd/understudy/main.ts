// understudy: the operator's CLI. Thin: commander wiring; the commands live in pkg/cli.
import { Command, InvalidArgumentError, Option } from 'commander';
import {
  agentStatus,
  call,
  CliError,
  EXIT,
  ping,
  watch,
  type GlobalOptions,
} from '../../pkg/cli/nats-commands.js';

const positiveInt = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive whole number');
  return n;
};

const program = new Command('understudy')
  .description(
    'operate understudy: presence, requests and agents (controller commands arrive with the controller)',
  )
  .addOption(
    new Option('--nats <urls>', 'NATS servers, comma-separated')
      .env('UNDERSTUDY_NATS_SERVERS')
      .default('nats://127.0.0.1:42220'),
  )
  .addOption(new Option('-o, --output <format>', 'output format').choices(['text', 'json']).default('text'))
  .showHelpAfterError();

const globals = () => program.opts<GlobalOptions>();
const run = (fn: () => Promise<number>) => async () => {
  process.exitCode = await fn();
};

program
  .command('ping <identity>')
  .description('who answers for the identity: exit 0 one responder, 3 none, 4 split brain')
  .addOption(new Option('--window <ms>', 'how long to collect replies').argParser(positiveInt).default(300))
  .action((identity: string, o: { window: number }) => run(() => ping(globals(), identity, o.window))());

program
  .command('call <identity> <command...>')
  .description('send a request (e.g. "RATE USD") and print the answer; exit 5 when refused')
  .option('--as <name>', 'caller name to sign as (with --seed-file)')
  .option('--seed-file <file>', "file holding the caller's NATS user nkey seed (SU...)")
  .option('--durable', 'go through the durable inbox (served after a handover if no one is logged in)')
  .addOption(new Option('--timeout <ms>', 'give up after').argParser(positiveInt).default(5_000))
  .action(
    (
      identity: string,
      words: string[],
      o: { as?: string; seedFile?: string; durable?: boolean; timeout: number },
    ) =>
      run(() =>
        call(globals(), identity, words.join(' '), {
          ...(o.as ? { name: o.as } : {}),
          ...(o.seedFile ? { seedFile: o.seedFile } : {}),
          durable: o.durable ?? false,
          timeoutMs: o.timeout,
        }),
      )(),
  );

program
  .command('watch <identity>')
  .description('print every change of responder and every gap: watch a handover from the network')
  .addOption(new Option('--interval <ms>', 'probe period').argParser(positiveInt).default(100))
  .addOption(new Option('--for <seconds>', 'stop after this long (default: Ctrl-C)').argParser(positiveInt))
  .action((identity: string, o: { interval: number; for?: number }) =>
    run(() => watch(globals(), identity, o.interval, o.for === undefined ? undefined : o.for * 1000))(),
  );

program
  .command('agent <node>')
  .description("an agent's own view: its session, fence and the state of each identity it hosts")
  .action((node: string) => run(() => agentStatus(globals(), node))());

try {
  await program.parseAsync();
} catch (err) {
  const code = err instanceof CliError ? err.exitCode : EXIT.failed;
  process.stderr.write(`understudy: ${(err as Error).message}\n`);
  process.exitCode = code;
}

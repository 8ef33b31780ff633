// The `understudy` CLI's commands and options: commander wiring only (the commands live in
// pkg/cli). Built here, parsed in main.ts, so tests can read the tree (help, completion).
import { homedir } from 'node:os';
import { Argument, Command, InvalidArgumentError, Option } from 'commander';
import { DEFAULT_CONTROLLER_URL } from '../../pkg/cli/api-client.js';
import * as api from '../../pkg/cli/controller-commands.js';
import { agentStatus } from '../../pkg/cli/agent-commands.js';
import { credentialDelete, credentialSet } from '../../pkg/cli/credential-commands.js';
import { call, ping, watch } from '../../pkg/cli/nats-commands.js';
import {
  applyContext,
  contextReport,
  findContext,
  loadContext,
  type FoundContext,
} from '../../pkg/cli/cli-context.js';
import { EXIT, exitCodesHelp } from '../../pkg/cli/exit.js';
import { addExamples, completionScript, packageVersion } from '../../pkg/cli/help.js';
import { OUTPUT_FORMATS } from '../../pkg/cli/output.js';
import { parseAtTime } from '../../pkg/cli/time.js';

const positiveInt = (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n <= 0) throw new InvalidArgumentError('must be a positive whole number');
  return n;
};

/** Options whose checks live in pkg/cli: their Error becomes commander's "argument is invalid". */
const checked =
  <T>(parse: (value: string) => T) =>
  (value: string): T => {
    try {
      return parse(value);
    } catch (err) {
      throw new InvalidArgumentError((err as Error).message);
    }
  };

const atTime = checked((value) => parseAtTime(value, Date.now()));
const deadlineSeconds = checked(api.parseDeadlineSeconds);

export const program = new Command('understudy')
  .description('operate understudy: identities, handovers, fences and access lists; presence over NATS')
  .version(packageVersion(), '-V, --version', 'print the version')
  .optionsGroup('Global options:')
  .option(
    '--context <file>',
    "where the cluster is (default: $UNDERSTUDY_CONFIG, ~/.config/understudy/config.yaml, then the local cluster's .understudy/run/context.yaml); flags and environment variables win over it",
  )
  .addOption(
    new Option('--controller <url>', 'controller HTTP API')
      .env('UNDERSTUDY_CONTROLLER')
      .default(DEFAULT_CONTROLLER_URL),
  )
  .addOption(
    new Option(
      '--controller-allow <urls>',
      'controllers (comma-separated URLs) a standby may redirect writes to, with the token',
    ).env('UNDERSTUDY_CONTROLLER_ALLOW'),
  )
  .option('--token <token>', 'API token (or env UNDERSTUDY_TOKEN; visible in ps: prefer --token-file)')
  .option('--token-file <file>', 'file holding the API token')
  .addOption(
    new Option('--nats <urls>', 'NATS servers, comma-separated')
      .env('UNDERSTUDY_NATS_SERVERS')
      .default('nats://127.0.0.1:42220'),
  )
  .addOption(
    new Option(
      '--nats-nkey-file <file>',
      'NATS user seed file (SU..., mode 0600): connect as that nkey user, e.g. the client user',
    ).env('UNDERSTUDY_NATS_NKEY_FILE'),
  )
  .addOption(
    new Option(
      '--trust-node-key <node=key>',
      "verify replies with this node's key (repeatable; default: the keys GET /v1/nodes shows)",
    ).argParser((v: string, prev: string[] = []) => [...prev, v]),
  )
  .addOption(new Option('-o, --output <format>', 'output format').choices(OUTPUT_FORMATS).default('text'))
  .addHelpText('after', `\n${exitCodesHelp()}`)
  .configureHelp({ showGlobalOptions: true })
  .showHelpAfterError()
  // Bad usage exits 2 (EXIT.usage), not commander's 1; see the catch below.
  .exitOverride();

const globals = () => program.opts<api.ControllerOptions>();

/** The context file in use, once a command runs (`understudy context` shows it). */
let contextInUse: FoundContext | undefined;
program.hook('preAction', async (_program, command) => {
  // A completion script needs no cluster, and must print even with a broken context file.
  if (command.name() === 'completion') return;
  const found = findContext({
    flag: program.opts<{ context?: string }>().context,
    env: process.env,
    home: homedir(),
    cwd: process.cwd(),
  });
  if (!found) return;
  if (found.shadows && command.name() !== 'context') {
    process.stderr.write(
      `understudy: using ${found.path} (user config), not the local cluster's ${found.shadows}; pass --context to choose\n`,
    );
  }
  applyContext(await loadContext(found), {
    sourceOf: (option) => program.getOptionValueSource(option),
    set: (option, value) => program.setOptionValueWithSource(option, value, 'config'),
    env: process.env,
  });
  contextInUse = found;
});
const run = (fn: () => Promise<number>) => async () => {
  process.exitCode = await fn();
};

program.commandsGroup('Controller commands:');

program
  .command('list')
  .description('every identity and its members: leader, token, health, standbys, lag')
  .option('--health <list>', 'only these healths, comma-separated: ok,degraded,down,split-brain,unknown')
  .option('--leader <node>', 'only identities this node leads')
  .option('--prefix <text>', 'only names starting with this')
  .addOption(new Option('--limit <n>', 'show at most this many').argParser(positiveInt))
  .action((o: api.ListFlags) => run(() => api.list(globals(), o))());

program
  .command('status <identity>')
  .description('one identity in detail: leader, token, responders, standbys, fences, workflow')
  .action((identity: string) => run(() => api.status(globals(), identity))());

program
  .command('switchover <identity>')
  .description('planned move to a standby; shows each step until done (exit 0) or aborted (exit 1)')
  .option('--to <node>', 'target node (default: the best healthy standby)')
  .addOption(new Option('--at <time>', 'start then: ISO time, or HH:MM today (local)').argParser(atTime))
  .addOption(new Option('--deadline <seconds>', 'complete or roll back within').argParser(deadlineSeconds))
  .option('--reason <text>', 'why (kept in the history)')
  .option('--no-wait', 'return once the switchover is accepted')
  .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
  .action((identity: string, o: api.SwitchoverFlags) => run(() => api.switchover(globals(), identity, o))());

program
  .command('failover <identity>')
  .description('forced move to a named healthy node when the leader is gone or unhealthy')
  .requiredOption('--to <node>', 'node to move to')
  .addOption(new Option('--deadline <seconds>', 'complete or roll back within').argParser(deadlineSeconds))
  .option('--reason <text>', 'why (kept in the history)')
  .option('--no-wait', 'return once the failover is accepted')
  .option('-y, --yes', 'do not ask for confirmation (required without a terminal)')
  .action((identity: string, o: api.FailoverFlags) => run(() => api.failover(globals(), identity, o))());

program
  .command('cancel <identity>')
  .description('cancel the scheduled or running switchover/failover of an identity (it rolls back)')
  .action((identity: string) => run(() => api.cancel(globals(), identity))());

program
  .command('pause <identity>')
  .description('maintenance mode: no automatic failover for the identity')
  .option('--reason <text>', 'why (shown in list and status)')
  .action((identity: string, o: { reason?: string }) =>
    run(() => api.pauseIdentity(globals(), identity, o.reason))(),
  );

program
  .command('resume <identity>')
  .description('leave maintenance mode')
  .option('--reason <text>', 'why (kept in the history)')
  .action((identity: string, o: { reason?: string }) =>
    run(() => api.resumeIdentity(globals(), identity, o.reason))(),
  );

program
  .command('snapshot <identity>')
  .description("snapshot the identity's state directory now (its leader publishes it)")
  .option('--reason <text>', 'why (kept in the log)')
  .action((identity: string, o: { reason?: string }) =>
    run(() => api.snapshotNow(globals(), identity, o.reason))(),
  );

program
  .command('snapshots <identity>')
  .description('the snapshots kept of an identity, newest first')
  .action((identity: string) => run(() => api.snapshots(globals(), identity))());

program
  .command('clone <identity>')
  .description('register a node as a cold standby of the identity (its agent then starts with --clone)')
  .requiredOption('--to <node>', 'the node to become a cold standby')
  .option('--reason <text>', 'why (kept in the history)')
  .action((identity: string, o: { to: string; reason?: string }) =>
    run(() => api.cloneTo(globals(), identity, o))(),
  );

program
  .command('clones <identity>')
  .description('the clones of an identity: age, agent, snapshot and drift')
  .action((identity: string) => run(() => api.clones(globals(), identity))());

program
  .command('nodes')
  .description('nodes: heartbeat, fence and the identities each hosts')
  .action(() => run(() => api.nodes(globals()))());

program
  .command('fence <node>')
  .description('fence a node for maintenance: its identities move away, then it stays out until unfenced')
  .requiredOption('--reason <text>', 'why (kept in the history)')
  .option('--no-wait', 'return once the fence is requested')
  .action((node: string, o: { reason: string; wait: boolean }) => run(() => api.fence(globals(), node, o))());

program
  .command('unfence <node>')
  .description('let a fenced node campaign and log in again')
  .option('--reason <text>', 'why (kept in the history)')
  .action((node: string, o: { reason?: string }) => run(() => api.unfence(globals(), node, o.reason))());

program
  .command('history [identity]')
  .description('terms, transitions and operator actions (of one identity, or of all)')
  .addOption(
    new Option('--limit <n>', 'at most this many entries (server default 100)').argParser(positiveInt),
  )
  .action((identity: string | undefined, o: { limit?: number }) =>
    run(() => api.history(globals(), identity, o))(),
  );

program
  .command('apply')
  .description('create or update identities from YAML specs (a list, `identities:`, or --- documents)')
  .requiredOption('-f, --file <file>', 'YAML file of identity specs; - reads stdin')
  .option('--dry-run', 'validate and report, change nothing')
  .action((o: { file: string; dryRun?: boolean }) => run(() => api.apply(globals(), o))());

program
  .command('acl <identity> [action] [args...]')
  .description('show or change access lists: approve, deny, add, remove, open, close')
  .addHelpText('after', `\nUsage:\n  ${api.ACL_USAGE}`)
  .option('--block', 'with deny: also block the caller')
  .action((identity: string, action: string | undefined, args: string[], o: { block?: boolean }) =>
    run(() => api.acl(globals(), identity, action, args, o))(),
  );

program
  .command('controller')
  .description('which controller answers, and which one is active')
  .action(() => run(() => api.controller(globals()))());

const credential = program
  .command('credential')
  .description(
    "store or delete the secret handed to an identity's leader at login (credential.source: etcd)",
  );
credential
  .command('set <identity>')
  .description('store the secret, sealed by the controller; it is never shown again')
  .requiredOption('--from-file <file>', 'file holding the secret, byte for byte; - reads stdin')
  .action((identity: string, o: { fromFile: string }) => run(() => credentialSet(globals(), identity, o))());
credential
  .command('delete <identity>')
  .description('delete the stored secret (the next login of the identity fails until one is stored)')
  .action((identity: string) => run(() => credentialDelete(globals(), identity))());

program.commandsGroup('NATS commands (no controller needed):');

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
  .command('context')
  .description('which cluster this CLI talks to, and from where it learnt it')
  .action(() =>
    run(async () => {
      process.stdout.write(
        contextReport(contextInUse, globals(), (option) => program.getOptionValueSource(option), process.env),
      );
      return EXIT.ok;
    })(),
  );

program
  .command('agent <node>')
  .description("an agent's own view: its session, fence and the state of each identity it hosts")
  .action((node: string) => run(() => agentStatus(globals(), node))());

program
  .command('completion')
  .description('print a shell completion script for commands and options')
  .addArgument(new Argument('<shell>', 'the shell').choices(['bash', 'zsh']))
  .action((shell: 'bash' | 'zsh') =>
    run(async () => {
      process.stdout.write(completionScript(program, shell));
      return EXIT.ok;
    })(),
  );

addExamples(program);

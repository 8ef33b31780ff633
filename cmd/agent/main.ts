// understudy agent: hosts identities on this node. Thin: parse flags, load config, run.
//   understudy-agent --config /etc/understudy/agent.yaml [--clone IDENTITY]
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import type { Logger } from 'pino';
import { Agent } from '../../pkg/agent/agent.js';
import { ConfigError, loadAgentConfig } from '../../pkg/config/agent.js';
import { execPolicy, type ExecPolicy } from '../../pkg/identity/exec-policy.js';
import { createLogger, logFormat } from '../../pkg/log/index.js';
import { SpecError } from '../../pkg/spec/store.js';

const USAGE = `usage: understudy-agent --config FILE [--clone IDENTITY]

Runs the understudy agent for this node. Settings come from FILE (YAML) and UNDERSTUDY_*
environment variables (see README). SIGTERM logs every identity out and resigns, so a
standby takes over at once; a second SIGTERM exits immediately.

--clone IDENTITY  bootstrap this node as a cold standby of IDENTITY first: pull the bundle
                  \`understudy clone IDENTITY --to NODE\` recorded, restore the newest good
                  snapshot of its state, then stand by (docs/state.md).`;

/** Exit codes a supervisor can tell apart. */
const EXIT_CONFIG = 2;
const EXIT_FAILED = 1;

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      options: {
        config: { type: 'string', short: 'c' },
        clone: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n${USAGE}\n`);
    process.exit(EXIT_CONFIG);
  }
  if (args.values.help) {
    process.stdout.write(`${USAGE}\n`);
    return;
  }
  const file = args.values.config ?? process.env.UNDERSTUDY_AGENT_CONFIG;
  if (!file) {
    process.stderr.write(`--config is required (or set UNDERSTUDY_AGENT_CONFIG)\n${USAGE}\n`);
    process.exit(EXIT_CONFIG);
  }

  let config;
  try {
    const clone = args.values.clone;
    config = await loadAgentConfig(file, clone ? { ...process.env, UNDERSTUDY_CLONE: clone } : process.env);
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      process.exit(EXIT_CONFIG);
    }
    throw err;
  }
  // A bad UNDERSTUDY_LOG_FORMAT is a configuration error like any other: say it, exit 2.
  try {
    logFormat(process.stdout.isTTY === true);
  } catch (err) {
    process.stderr.write(`${(err as Error).message}\n`);
    process.exit(EXIT_CONFIG);
  }
  const logger = createLogger({
    name: 'understudy-agent',
    level: config.logLevel,
    base: { node: config.node },
  });

  const policy = execPolicy(config);
  await reportPolicy(policy, logger);

  let agent: Agent;
  try {
    agent = await Agent.start({
      config,
      logger,
      loadHandlers: async (module) => {
        // The runner refused a spec whose module is not allowed before it campaigned; this is
        // the last word right before the import (the file system may have changed since).
        const verdict = await policy.module(module);
        if (!verdict.ok) throw new Error(`module not loaded: ${verdict.reason}`);
        const loaded = (await import(pathToFileURL(resolve(module)).href)) as {
          handlers?: Record<string, never>;
        };
        if (!loaded.handlers) throw new Error(`module ${module} exports no 'handlers' record`);
        return loaded.handlers;
      },
    });
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, 'agent could not start');
    process.exit(err instanceof SpecError ? EXIT_CONFIG : EXIT_FAILED);
  }

  let signals = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    if (++signals > 1) {
      // The lifeline stops the service processes; the lease bounds everything else.
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(EXIT_FAILED);
    }
    const watchdog = setTimeout(() => {
      logger.error({ budgetMs: agent.shutdownBudgetMs }, 'graceful shutdown overran its budget; exiting');
      process.exit(EXIT_FAILED);
    }, agent.shutdownBudgetMs);
    watchdog.unref();
    agent.shutdown(`received ${signal}`).then(
      () => process.exit(0),
      (err: Error) => {
        logger.error({ err: err.message }, 'shutdown failed');
        process.exit(EXIT_FAILED);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (err) => {
    logger.fatal(
      { err: err.stack ?? err.message },
      'uncaught exception: exiting (services die with the lifeline)',
    );
    process.exit(EXIT_FAILED);
  });
}

/** Say at start what specs may run here and as whom, so a refusal later is no surprise. */
async function reportPolicy(policy: ExecPolicy, logger: Logger): Promise<void> {
  const { allow } = policy.settings;
  if (allow.unrestricted) {
    logger.warn(
      'allow.unrestricted is true: whoever may write identity specs chooses what this node runs. Use it for development only; list allow.commands, allow.modules and allow.credentialPaths instead',
    );
  }
  const runAs = await policy.runAs();
  if (!runAs.ok) {
    logger.warn(
      { reason: runAs.reason },
      'process services will be refused on this node until the agent config changes',
    );
    return;
  }
  const as = runAs.switchTo
    ? `${runAs.switchTo.user} (uid ${runAs.switchTo.uid})`
    : `this agent's user (uid ${process.getuid?.()})`;
  logger.info(
    {
      commands: allow.commands.length,
      modules: allow.modules.length,
      credentialPaths: allow.credentialPaths.length,
      unrestricted: allow.unrestricted,
    },
    `process services run as ${as}; specs may run only what allow lists`,
  );
}

await main();

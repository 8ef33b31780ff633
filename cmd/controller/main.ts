// understudy controller: health probes, switchover/fence workflows, the HTTP API. Thin:
// parse flags, load config, connect, serve.
//   understudy-controller --config /etc/understudy/controller.yaml
import { parseArgs } from 'node:util';
import { ConfigError, loadControllerConfig, resolveTokens } from '../../pkg/config/controller.js';
import { loadSigner } from '../../pkg/keys/index.js';
import { Controller } from '../../pkg/controller/controller.js';
import { createApp, listensOnLoopbackOnly, serveHttp } from '../../pkg/http/index.js';
import { createLogger, logFormat } from '../../pkg/log/index.js';
import { connectNats, etcdFromSettings } from '../../pkg/transport/connect.js';

const USAGE = `usage: understudy-controller --config FILE

Runs an understudy controller. Settings come from FILE (YAML) and UNDERSTUDY_* environment
variables (see README). Run two or more: they elect one active controller; the others serve
reads and point writes at it. SIGTERM stops it; a running workflow is resumed by the next
active controller.`;

const EXIT_CONFIG = 2;
const EXIT_FAILED = 1;
/** A stop that takes longer than this (etcd or NATS frozen) is cut short. */
const SHUTDOWN_BUDGET_MS = 5_000;

async function main(): Promise<void> {
  let args;
  try {
    args = parseArgs({
      options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
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
  const file = args.values.config ?? process.env.UNDERSTUDY_CONTROLLER_CONFIG;
  if (!file) {
    process.stderr.write(`--config is required (or set UNDERSTUDY_CONTROLLER_CONFIG)\n${USAGE}\n`);
    process.exit(EXIT_CONFIG);
  }
  let config;
  let tokens;
  try {
    config = await loadControllerConfig(file);
    tokens = resolveTokens(config, file);
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
    name: 'understudy-controller',
    level: config.logLevel,
    base: { controller: config.name },
  });

  let controller: Controller;
  let server;
  try {
    const etcd = etcdFromSettings(config.etcd);
    const nc = await connectNats(config.nats, `understudy-controller-${config.name}`, logger);
    const signer = await loadSigner(config.keyFile);
    controller = new Controller({ config, etcd, nc, logger, signer });
    server = await serveHttp(
      createApp({
        api: controller,
        tokens,
        logger,
        metricsAuth: config.http.metricsAuth,
        dashboard: config.http.dashboard,
      }),
      {
        listen: config.http.listen,
        ...(config.http.tls ? { tls: config.http.tls } : {}),
      },
    );
    controller.start(config.http.advertiseUrl ?? server.url);
    logger.info({ url: server.url, tls: config.http.tls !== undefined }, 'controller API listening');
    if (!config.http.tls && !listensOnLoopbackOnly(config.http.listen)) {
      logger.warn(
        { listen: config.http.listen },
        'the API listens beyond loopback without TLS: bearer tokens cross the network in clear text. ' +
          'Set http.tls (cert and key), or listen on 127.0.0.1 behind a TLS proxy',
      );
    }
  } catch (err) {
    logger.fatal({ err: (err as Error).message }, 'controller could not start');
    process.exit(EXIT_FAILED);
  }

  let stopping = false;
  const onSignal = (signal: NodeJS.Signals) => {
    if (stopping) process.exit(EXIT_FAILED);
    stopping = true;
    logger.info({ signal }, 'stopping the controller');
    setTimeout(() => process.exit(EXIT_FAILED), SHUTDOWN_BUDGET_MS).unref();
    void (async () => {
      await server.close().catch(() => undefined);
      await controller.stop().catch(() => undefined);
      process.exit(0);
    })();
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', (err) => {
    logger.fatal({ err: err.stack ?? err.message }, 'uncaught exception: exiting');
    process.exit(EXIT_FAILED);
  });
}

await main();

// How the CLI reaches NATS for the commands that talk to identities and agents directly.
import { connect, type NatsConnection } from 'nats';
import { CliError, EXIT } from './exit.js';
import type { GlobalOptions } from './output.js';

export async function withNats<T>(opts: GlobalOptions, fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  let nc: NatsConnection;
  try {
    nc = await connect({ servers: opts.nats.split(','), name: 'understudy-cli', maxReconnectAttempts: 2 });
  } catch (err) {
    throw new CliError(
      `cannot connect to NATS at ${opts.nats}: ${(err as Error).message}; pass --nats or set UNDERSTUDY_NATS_SERVERS`,
      EXIT.failed,
    );
  }
  try {
    return await fn(nc);
  } finally {
    await nc.close();
  }
}

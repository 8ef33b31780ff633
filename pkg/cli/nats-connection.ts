// How the CLI reaches NATS for the commands that talk to identities and agents directly.
import { connect, nkeyAuthenticator, type NatsConnection } from 'nats';
import { readUserSeed } from '../natsauth/keys.js';
import { CliError, EXIT } from './exit.js';
import type { GlobalOptions } from './output.js';

/** The global options this file reads: the servers, and the nkey user to connect as. */
export type NatsCliOptions = GlobalOptions & { natsNkeyFile?: string | undefined };

export async function withNats<T>(opts: NatsCliOptions, fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  let seed: Uint8Array | undefined;
  if (opts.natsNkeyFile !== undefined) {
    seed = await readUserSeed(opts.natsNkeyFile, '--nats-nkey-file').catch((err: Error) => {
      throw new CliError(err.message, EXIT.usage);
    });
  }
  let nc: NatsConnection;
  try {
    nc = await connect({
      servers: opts.nats.split(','),
      name: 'understudy-cli',
      maxReconnectAttempts: 2,
      ...(seed !== undefined && { authenticator: nkeyAuthenticator(seed) }),
    });
  } catch (err) {
    const refused = (err as { code?: string }).code === 'AUTHORIZATION_VIOLATION';
    throw new CliError(
      `cannot connect to NATS at ${opts.nats}: ${(err as Error).message}; ` +
        (refused
          ? seed === undefined
            ? 'this server authorizes users: pass --nats-nkey-file (or set UNDERSTUDY_NATS_NKEY_FILE) with your NATS user seed'
            : 'the server does not know this user: check --nats-nkey-file is the seed of a user in its authorization block'
          : 'pass --nats or set UNDERSTUDY_NATS_SERVERS'),
      EXIT.failed,
    );
  }
  try {
    return await fn(nc);
  } finally {
    await nc.close();
  }
}

// How agents and controllers authenticate to NATS (pkg/transport/connect.ts): the seed file is
// checked before any connection is tried, and one way to authenticate is chosen, never two.
import { expect } from 'chai';
import { chmod, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { ensureUserSeed } from '../../pkg/natsauth/index.js';
import { connectNats } from '../../pkg/transport/connect.js';

/** Nothing listens here: a test that got as far as connecting would fail differently. */
const NOWHERE = ['nats://127.0.0.1:1'];
const quiet = pino({ level: 'silent' });

describe('NATS connection settings: nats.nkeyFile', () => {
  let dir: string;
  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'nats-connect-'))));
  afterEach(() => rm(dir, { recursive: true, force: true }));

  const refusal = (p: Promise<unknown>) =>
    p.then(
      () => {
        throw new Error('expected a refusal');
      },
      (err: Error) => err.message,
    );

  it('refuses nkeyFile and credsFile together, saying which to keep', async () => {
    const { seedFile } = await ensureUserSeed(dir, 'agent-a');
    const message = await refusal(
      connectNats({ servers: NOWHERE, nkeyFile: seedFile, credsFile: join(dir, 'x.creds') }, 't', quiet),
    );
    expect(message).to.match(/nats\.nkeyFile and nats\.credsFile both set: give one/);
  });

  it('refuses a seed file others can read before connecting, with the chmod to run', async () => {
    const { seedFile } = await ensureUserSeed(dir, 'agent-a');
    await chmod(seedFile, 0o640);
    const message = await refusal(connectNats({ servers: NOWHERE, nkeyFile: seedFile }, 't', quiet));
    expect(message).to.match(/^nats\.nkeyFile: .* readable by others .* chmod 600/);
  });

  it('refuses a missing seed file, naming the field', async () => {
    const message = await refusal(
      connectNats({ servers: NOWHERE, nkeyFile: join(dir, 'none.nk') }, 't', quiet),
    );
    expect(message).to.match(/^nats\.nkeyFile: cannot read .*none\.nk \(ENOENT\)/);
  });

  it('gets to connecting with a good seed file (and fails there, nothing listens)', async () => {
    const { seedFile } = await ensureUserSeed(dir, 'agent-a');
    const message = await refusal(connectNats({ servers: NOWHERE, nkeyFile: seedFile }, 't', quiet));
    expect(message).to.match(/cannot connect to NATS at nats:\/\/127\.0\.0\.1:1/);
  });
});

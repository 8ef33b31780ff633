import { expect } from 'chai';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MAX_CREDENTIAL_BYTES as CLI_MAX, readSecret } from '../../pkg/cli/credential-commands.js';
import { EXIT } from '../../pkg/cli/exit.js';
import { MAX_CREDENTIAL_BYTES } from '../../pkg/spec/credential-store.js';

describe('understudy credential set: reading the secret (pkg/cli/credential-commands.ts)', () => {
  it('takes the file byte for byte, or stdin with -', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'understudy-cli-credential-'));
    const file = join(dir, 'secret');
    await writeFile(file, Buffer.from([0, 1, 2, 10]));
    expect([...(await readSecret(file))]).to.deep.equal([0, 1, 2, 10]);
    const stdin = (async function* () {
      yield Buffer.from('pass');
      yield Buffer.from('word\n');
    })();
    expect((await readSecret('-', stdin)).toString()).to.equal('password\n');
  });

  it('refuses an empty, oversized or unreadable source with a usage error naming it', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'understudy-cli-credential-'));
    const empty = join(dir, 'empty');
    await writeFile(empty, '');
    const big = join(dir, 'big');
    await writeFile(big, Buffer.alloc(MAX_CREDENTIAL_BYTES + 1));
    for (const [file, message] of [
      [empty, /is empty/],
      [big, /at most 65536/],
      [join(dir, 'missing'), /cannot read --from-file .*ENOENT/],
    ] as const) {
      const err = (await readSecret(file).catch((e: unknown) => e)) as { message: string; exitCode: number };
      expect(err.message).to.match(message);
      expect(err.exitCode).to.equal(EXIT.usage);
    }
  });

  it('has the same size limit as the controller', () => {
    expect(CLI_MAX).to.equal(MAX_CREDENTIAL_BYTES);
  });
});

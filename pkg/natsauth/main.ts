// Provision understudy's NATS role users: a seed file per user (kept if present) and the
// server's authorization block with their public keys.
//
//   node --import tsx pkg/natsauth/main.ts --dir /etc/understudy/nats --out /etc/nats/understudy-auth.conf \
//     controller agent:a agent:b client
//
// `--table` prints the permission table as Markdown (docs/nats-authorization.md).
//
// Then `include` the block in the server's config (or pass the file with -c), and give each
// component its seed file as `nats.nkeyFile` (the CLI: --nats-nkey-file).
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { authUsers, parseUserSpec, provisionUsers } from './keys.js';
import { renderAuthorization } from './render.js';
import { renderTable } from './table.js';

const USAGE =
  'usage: main.ts --dir SEED_DIR --out AUTH_CONF [NAME=]ROLE[:NODE[:IDENTITY,...]]... (roles: controller, agent, client; e.g. controller agent:a:demo agent:b:demo client), or main.ts --table';

async function main(): Promise<void> {
  const { values, positionals } = parseArgs({
    options: { dir: { type: 'string' }, out: { type: 'string' }, table: { type: 'boolean' } },
    allowPositionals: true,
  });
  if (values.table) {
    process.stdout.write(`${renderTable()}\n`);
    return;
  }
  if (!values.dir || !values.out || positionals.length === 0) throw new Error(USAGE);
  const users = await provisionUsers(values.dir, positionals.map(parseUserSpec));
  await writeFile(values.out, renderAuthorization(authUsers(users)), { mode: 0o644 });
  for (const u of users)
    process.stdout.write(
      `${u.name}\t${u.role}${u.node ? `:${u.node}` : ''}\t${u.seedFile}\t${u.publicKey}\n`,
    );
}

main().catch((err: Error) => {
  process.stderr.write(`${err.message}\n`);
  process.exit(2);
});

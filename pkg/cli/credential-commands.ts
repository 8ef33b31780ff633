// `understudy credential set|delete`: store the secret an identity's leader gets at login
// (spec credential.source: etcd), or remove it. The secret is read from a file or stdin, never
// from the command line (argv is world-readable in /proc), sent once to the controller, which
// seals it; nothing ever reads it back.
import { readFile } from 'node:fs/promises';
import type { CredentialResult } from '../api/credentials.js';
import { context, routes, type ControllerOptions } from './controller-context.js';
import { CliError, EXIT } from './exit.js';

/** The controller takes at most 64 KiB (MAX_CREDENTIAL_BYTES in pkg/spec/credential-store.ts). */
export const MAX_CREDENTIAL_BYTES = 64 * 1024;

const credentialPath = (identity: string) => `${routes.identity(identity)}/credential`;

/** The secret's bytes exactly as in the file (a trailing newline is part of it). */
export async function readSecret(
  file: string,
  stdin: AsyncIterable<unknown> = process.stdin,
): Promise<Buffer> {
  let secret: Buffer;
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of stdin) chunks.push(Buffer.from(chunk as Buffer));
    secret = Buffer.concat(chunks);
  } else {
    secret = await readFile(file).catch((err: NodeJS.ErrnoException) => {
      throw new CliError(`cannot read --from-file ${file} (${err.code ?? err.message})`, EXIT.usage);
    });
  }
  const from = file === '-' ? 'stdin' : file;
  if (secret.length === 0) throw new CliError(`--from-file ${from} is empty: nothing to store`, EXIT.usage);
  if (secret.length > MAX_CREDENTIAL_BYTES) {
    throw new CliError(
      `--from-file ${from} holds ${secret.length} bytes; a credential is at most ${MAX_CREDENTIAL_BYTES}`,
      EXIT.usage,
    );
  }
  return secret;
}

export async function credentialSet(
  opts: ControllerOptions,
  identity: string,
  flags: { fromFile: string },
): Promise<number> {
  const secret = await readSecret(flags.fromFile);
  const { api, out } = await context(opts);
  const value = secret.toString('base64');
  secret.fill(0);
  const res = await api.put<CredentialResult>(credentialPath(identity), { value });
  out.result(
    res,
    () =>
      `credential of ${res.identity} stored, sealed with controller key ${res.keyId} (revision ${res.revision})`,
  );
  return EXIT.ok;
}

export async function credentialDelete(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  await api.delete(credentialPath(identity));
  out.result({ identity, deleted: true }, () => `credential of ${identity} deleted`);
  return EXIT.ok;
}

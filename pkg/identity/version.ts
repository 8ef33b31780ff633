// A service's version on this node, for drift checks: the version its spec declares, or else
// the sha256 of the executable (or module) the spec leads to here. Two hosts running different
// builds of the same command are told apart without anyone declaring anything.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import type { IdentitySpec } from '../spec/schema.js';
import { findCommand, resolveFile } from './allow-resolve.js';
import { serviceCwd } from './exec-policy.js';
import { serviceEnvironment } from './service-process.js';

/** Hashes kept by file (real path, size, mtime): a restart of the check costs a stat, not a read. */
const hashes = new Map<string, string>();

async function fileSha256(path: string): Promise<string> {
  const info = await stat(path);
  const key = `${path}\0${info.size}\0${info.mtimeMs}`;
  const known = hashes.get(key);
  if (known) return known;
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  const digest = `sha256:${hash.digest('hex').slice(0, 16)}`;
  if (hashes.size > 1000) hashes.clear();
  hashes.set(key, digest);
  return digest;
}

/**
 * The version of what `spec` runs on this node; undefined when it cannot be told (the
 * executable is not found: the spec is refused on this node anyway).
 */
export async function serviceVersion(
  spec: IdentitySpec,
  who: { identity: string; node: string },
): Promise<string | undefined> {
  const service = spec.service;
  if (service.driver === 'process') {
    if (service.version !== undefined) return `declared:${service.version}`;
    const found = await findCommand(
      service.command[0]!,
      serviceEnvironment(service, who, undefined).PATH,
      serviceCwd(service),
    );
    return 'real' in found ? fileSha256(found.real).catch(() => undefined) : undefined;
  }
  if (service.module === undefined) return `handler:${service.handler}`;
  const found = await resolveFile(service.module, process.cwd());
  return 'real' in found ? fileSha256(found.real).catch(() => undefined) : undefined;
}

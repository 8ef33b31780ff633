import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root: the harness mounts it into Node containers. */
export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

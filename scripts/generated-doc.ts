// What the scripts that write a generated document (docs/config.md, docs/metrics.md) share:
// the text formatted as the repository formats Markdown (so the staleness tests compare like
// with like), and writing it when the script is run rather than imported by a test.
import { writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as prettier from 'prettier';

/** `text` formatted the way prettier formats the file at `path` in this repository. */
export async function formattedMarkdown(path: string, text: string): Promise<string> {
  const options = (await prettier.resolveConfig(path)) ?? {};
  return prettier.format(text, { ...options, filepath: path });
}

/**
 * When the module at `moduleUrl` is the script being run (not a test importing it): write
 * `docs/<name>` from `produce(root)` and say so.
 */
export async function writeIfRun(
  moduleUrl: string,
  name: string,
  produce: (root: string) => Promise<string>,
): Promise<void> {
  if (process.argv[1] !== fileURLToPath(moduleUrl)) return;
  const root = join(dirname(fileURLToPath(moduleUrl)), '..');
  writeFileSync(join(root, 'docs', name), await produce(root));
  process.stdout.write(`docs/${name} written\n`);
}

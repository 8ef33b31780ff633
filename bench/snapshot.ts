// Snapshot benchmark (issue 15): take and restore a snapshot of a state directory of 10, 100
// and 400 MiB (files of 1 MiB plus one large file: a sequence store and a message journal),
// through a file standing in for the object store. Figures: time and throughput of each
// side, and the process's peak RSS above its baseline while it runs, sampled every 20 ms.
// Memory must not grow with the snapshot's size (both sides stream), so the peaks of the
// three sizes are printed side by side. Printed, never asserted.
//
//   npx tsx bench/snapshot.ts [--sizes-mib 10,100,400]   (npm run bench -- snapshot)
//   Results: table on stdout, JSON in bench/results/.
import { randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { parseArgs } from 'node:util';
import { packSnapshot, restoreSnapshot } from '../pkg/snapshot/index.js';

const MiB = 1024 * 1024;
/** RSS sampling period: short enough to catch a peak of a few hundred ms. */
const SAMPLE_MS = 20;

const { values } = parseArgs({ options: { 'sizes-mib': { type: 'string', default: '10,100,400' } } });
const sizes = values['sizes-mib']
  .split(',')
  .map((s) => Number(s.trim()))
  .filter((n) => Number.isInteger(n) && n > 0);
if (sizes.length === 0) {
  console.error('--sizes-mib: a comma-separated list of whole MiB, e.g. 10,100,400');
  process.exit(2);
}

interface Phase {
  seconds: number;
  mibPerSecond: number;
  peakRssAboveBaselineMiB: number;
}

/** Run `work`, sampling RSS; the peak is reported above the RSS measured just before. */
async function measured(sizeMiB: number, work: () => Promise<void>): Promise<Phase> {
  global.gc?.();
  const baseline = process.memoryUsage.rss();
  let peak = baseline;
  const timer = setInterval(() => {
    peak = Math.max(peak, process.memoryUsage.rss());
  }, SAMPLE_MS);
  const started = performance.now();
  try {
    await work();
  } finally {
    clearInterval(timer);
  }
  peak = Math.max(peak, process.memoryUsage.rss());
  const seconds = (performance.now() - started) / 1000;
  return {
    seconds: round(seconds, 3),
    mibPerSecond: round(sizeMiB / seconds, 1),
    peakRssAboveBaselineMiB: round((peak - baseline) / MiB, 1),
  };
}

async function makeState(dir: string, sizeMiB: number): Promise<void> {
  await mkdir(join(dir, 'seq'), { recursive: true });
  const small = Math.floor(sizeMiB / 2);
  // Random bytes: nothing compresses or dedupes on the way, as with a real journal.
  for (let i = 0; i < small; i++) await writeFile(join(dir, 'seq', `part-${i}`), randomBytes(MiB));
  const journal = createWriteStream(join(dir, 'journal'));
  for (let i = 0; i < sizeMiB - small; i++) {
    if (!journal.write(randomBytes(MiB))) await new Promise<void>((r) => journal.once('drain', () => r()));
  }
  await new Promise<void>((r) => journal.end(() => r()));
}

const root = await mkdtemp(join(os.tmpdir(), 'understudy-bench-snapshot-'));
const results: Record<string, unknown>[] = [];
try {
  for (const sizeMiB of sizes) {
    const state = join(root, `state-${sizeMiB}`);
    const archive = join(root, `snapshot-${sizeMiB}.tar`);
    await makeState(state, sizeMiB);
    const meta = { identity: 'bench', node: 'a', token: '1', quiesced: false, startedMs: Date.now() };
    const take = await measured(sizeMiB, async () => {
      const packed = packSnapshot(state, meta);
      await pipeline(packed.stream, createWriteStream(archive));
      await packed.manifest;
    });
    const restore = await measured(sizeMiB, async () => {
      await restoreSnapshot(createReadStream(archive), join(root, `restored-${sizeMiB}`), { token: '1' });
    });
    results.push({ sizeMiB, take, restore });
    await rm(state, { recursive: true, force: true });
    await rm(join(root, `restored-${sizeMiB}`), { recursive: true, force: true });
    await rm(archive, { force: true });
  }
} finally {
  await rm(root, { recursive: true, force: true });
}

console.log(
  'snapshot of a state directory: take (pack, hash, write) and restore (unpack, verify, fsync, swap)',
);
console.log('| size | take | take MiB/s | take peak RSS | restore | restore MiB/s | restore peak RSS |');
console.log('|---|---|---|---|---|---|---|');
for (const r of results as { sizeMiB: number; take: Phase; restore: Phase }[]) {
  console.log(
    `| ${r.sizeMiB} MiB | ${r.take.seconds} s | ${r.take.mibPerSecond} | +${r.take.peakRssAboveBaselineMiB} MiB | ` +
      `${r.restore.seconds} s | ${r.restore.mibPerSecond} | +${r.restore.peakRssAboveBaselineMiB} MiB |`,
  );
}
const out = {
  bench: 'snapshot',
  date: new Date().toISOString(),
  machine: {
    cpus: os.cpus().length,
    model: os.cpus()[0]?.model,
    memGiB: round(os.totalmem() / 1024 ** 3, 1),
  },
  node: process.version,
  tmpdir: os.tmpdir(),
  results,
};
const file = join(
  import.meta.dirname,
  'results',
  `snapshot-${out.date.replace(/[:.]/g, '-').slice(0, 19)}Z.json`,
);
await writeFile(file, `${JSON.stringify(out, null, 2)}\n`);
console.log(`results: ${file}`);

function round(n: number, digits: number): number {
  return Math.round(n * 10 ** digits) / 10 ** digits;
}

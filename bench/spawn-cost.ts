// What one service spawn costs the process that spawns it, by that process's size. Node's
// spawn() forks the whole process (libuv's uv_spawn, no vfork) and returns once the child has
// exec'd: the fork copies the parent's page tables in the parent's own thread, and the exec
// tears the copy down. An agent carrying many identities is a few hundred MiB, and starts its
// services one spawn at a time on its main thread (bench/README.md, "Scale").
//
// For each size a fresh node process (plain JavaScript: no loader in its RSS) touches that many
// MiB, then spawns what the agent spawns for a service — `setpriv --pdeathsig SIGKILL -- sh -c`
// (plain `sh -c` without setpriv) running `exec sleep 0` — N times, one after the other, each
// waited for. Per size: how long spawn() took to return (median / p90 / max) and the spawning
// process's CPU per spawn. Run it on an idle machine: every figure is a share of its cores.
//
//   npx tsx bench/spawn-cost.ts [--rss-mib 0,250,450] [--spawns 200]   (npm run bench -- spawn-cost)
//   Results: table on stdout, JSON in bench/results/. No containers.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import os from 'node:os';
import { parseArgs } from 'node:util';
import { gitVersion, machine, resultPath, writeJson } from './results.js';

const SETPRIV = '/usr/bin/setpriv';
/** One size's run, spawns included, takes seconds; past this it is stuck. */
const PER_SIZE_LIMIT_MS = 120_000;

const usage = 'usage: npx tsx bench/spawn-cost.ts [--rss-mib 0,250,450] [--spawns 200]';
const { values } = parseArgs({
  options: {
    'rss-mib': { type: 'string', default: '0,250,450' },
    spawns: { type: 'string', default: '200' },
  },
});
const sizes = values['rss-mib'].split(',').map(Number);
const spawns = Number(values.spawns);
if (sizes.some((m) => !Number.isInteger(m) || m < 0 || m > 4096)) {
  console.error(
    `bench spawn-cost: --rss-mib ${values['rss-mib']}: expected whole MiB from 0 to 4096, comma-separated`,
  );
  console.error(usage);
  process.exit(1);
}
if (!Number.isInteger(spawns) || spawns < 10 || spawns > 10_000) {
  console.error(`bench spawn-cost: --spawns ${values.spawns}: expected a whole number from 10 to 10000`);
  console.error(usage);
  process.exit(1);
}

// The measuring process, as plain JavaScript: argv[1] = MiB to touch, argv[2] = spawns.
const MEASURE = `
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
const [mib, n] = process.argv.slice(1).map(Number);
const ballast = [];
for (let i = 0; i < mib; i++) ballast.push(Buffer.alloc(1024 * 1024, 1));
const argv = existsSync(${JSON.stringify(SETPRIV)})
  ? [${JSON.stringify(SETPRIV)}, '--pdeathsig', 'SIGKILL', '--', '/bin/sh', '-c', 'exec sleep 0']
  : ['/bin/sh', '-c', 'exec sleep 0'];
const returnedMs = [];
const cpuMs = [];
for (let i = 0; i < n; i++) {
  const cpu = process.cpuUsage();
  const t = performance.now();
  const child = spawn(argv[0], argv.slice(1), { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  returnedMs.push(performance.now() - t);
  const used = process.cpuUsage(cpu);
  cpuMs.push((used.user + used.system) / 1000);
  await new Promise((resolve) => child.once('exit', resolve));
}
console.log(JSON.stringify({ rssMiB: process.memoryUsage().rss / 1048576, ballast: ballast.length, returnedMs, cpuMs }));
`;

interface SizeResult {
  askedMiB: number;
  rssMiB: number;
  returnedMs: { median: number; p90: number; max: number };
  cpuMsPerSpawn: number;
}

const pick = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

function measure(mib: number): Promise<SizeResult> {
  return new Promise((resolve, reject) => {
    execFile(
      process.execPath,
      ['--input-type=module', '-e', MEASURE, String(mib), String(spawns)],
      { timeout: PER_SIZE_LIMIT_MS, maxBuffer: 16 * 1024 * 1024 },
      (err, stdout) => {
        if (err) return reject(new Error(`measuring at ${mib} MiB: ${err.message}`));
        const raw = JSON.parse(stdout) as { rssMiB: number; returnedMs: number[]; cpuMs: number[] };
        const returned = [...raw.returnedMs].sort((a, b) => a - b);
        resolve({
          askedMiB: mib,
          rssMiB: Math.round(raw.rssMiB),
          returnedMs: { median: pick(returned, 0.5), p90: pick(returned, 0.9), max: returned.at(-1)! },
          cpuMsPerSpawn: raw.cpuMs.reduce((a, b) => a + b, 0) / raw.cpuMs.length,
        });
      },
    );
  });
}

const date = new Date();
const loadAtStart = os.loadavg();
const rows: SizeResult[] = [];
for (const mib of sizes) rows.push(await measure(mib));
const f = (v: number) => v.toFixed(1);
console.log(
  `spawn of ${existsSync(SETPRIV) ? 'setpriv --pdeathsig SIGKILL -- ' : ''}sh -c 'exec sleep 0', ${spawns} times per size; ` +
    `load average ${loadAtStart.map((l) => l.toFixed(1)).join(' ')} at start`,
);
console.log('process RSS   spawn() returned after, median / p90 / max   its CPU per spawn');
for (const r of rows) {
  console.log(
    `${`${r.rssMiB} MiB`.padEnd(14)}${`${f(r.returnedMs.median)} / ${f(r.returnedMs.p90)} / ${f(r.returnedMs.max)} ms`.padEnd(42)}${f(r.cpuMsPerSpawn)} ms`,
  );
}
const file = resultPath('spawn-cost', date, String(spawns));
await writeJson(file, {
  bench: 'spawn-cost',
  date: date.toISOString(),
  machine: { ...machine(), loadAverageAtStart: loadAtStart, loadAverageAtEnd: os.loadavg() },
  versions: { node: process.version, git: gitVersion() },
  settings: {
    rssMiB: sizes,
    spawns,
    command: existsSync(SETPRIV) ? 'setpriv --pdeathsig SIGKILL -- sh -c' : 'sh -c',
  },
  rows,
});
console.log(`bench spawn-cost: results written to ${file}`);

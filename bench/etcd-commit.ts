// What one etcd commit costs on this machine, with nothing else running: the floor under every
// step of a failover or handover that is "an etcd commit" (bench/README.md, "What dominates").
// A single member and a 3-member cluster (the chaos topology's), each in containers as the
// other benches run them; --puts sequential puts of a 200-byte value over 50 keys, each awaited
// before the next (as a login's writes are). Prints the put latency the client saw (min,
// median, p99, max) and, from the raft leader's /metrics, its WAL fsync and backend commit
// durations (etcd's histogram buckets: "≤ 1 ms" means the bucket the quantile fell in).
// Figures only; never fails on a timing. Every container is removed at the end. Results:
// table on stdout, JSON in bench/results/.
//
//   npx tsx bench/etcd-commit.ts [--puts 1000]
//   npm run bench -- etcd-commit --puts 1000
import { parseArgs } from 'node:util';
import type { Etcd3 } from 'etcd3';
import { connectEtcd, within } from '../pkg/lease/index.js';
import { Harness, type EtcdMember } from '../test/support/harness.js';
import { reapOwn } from '../test/support/reaper.js';
import { buckets, scrapeProm } from './prom.js';
import { machine, resultPath, versions, writeJson } from './results.js';

/** Bound on one call of the bench's own (a put, a status, a scrape). */
const CALL_MS = 5_000;
/** The engine removes a container in seconds; a removal taking longer is stuck. */
const CLEANUP_BOUND_MS = 120_000;
/** The whole run stops by itself: containers up (~1 min), the puts, the scrapes. */
const HARD_LIMIT_MS = 10 * 60_000;
const KEYS = 50;
const VALUE = 'x'.repeat(200);

const { values } = parseArgs({ options: { puts: { type: 'string' } } });
const puts = values.puts === undefined ? 1000 : Number(values.puts);
if (!Number.isInteger(puts) || puts < 10 || puts > 100_000) {
  console.error(`bench etcd-commit: --puts ${values.puts}: expected an integer from 10 to 100000`);
  console.error('usage: npx tsx bench/etcd-commit.ts [--puts 1000]');
  process.exit(1);
}

interface Histogram {
  /** Upper bound (seconds) and cumulative count of each bucket, ascending. */
  buckets: Array<[number, number]>;
}

async function histograms(endpoint: string, names: string[]): Promise<Map<string, Histogram>> {
  const scrape = await scrapeProm(`${endpoint}/metrics`, CALL_MS);
  return new Map(names.map((name) => [name, { buckets: buckets(scrape, name) }]));
}

/** The bucket bound a quantile of the counts between two scrapes falls in, in ms. */
function quantileBound(before: Histogram, after: Histogram, q: number): string {
  const delta = after.buckets.map(([le, n], i) => [le, n - (before.buckets[i]?.[1] ?? 0)] as const);
  const total = delta.at(-1)?.[1] ?? 0;
  if (total === 0) return 'none';
  const [le] = delta.find(([, n]) => n >= q * total)!;
  return le === Infinity ? '> largest bucket' : `≤ ${le * 1000} ms`;
}

function count(before: Histogram, after: Histogram): number {
  return (after.buckets.at(-1)?.[1] ?? 0) - (before.buckets.at(-1)?.[1] ?? 0);
}

const pick = (sorted: number[], q: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]!;

async function raftLeader(members: EtcdMember[]): Promise<EtcdMember> {
  const client = connectEtcd({ endpoints: [members[0]!.hostEndpoint] });
  try {
    const status = await client.maintenance.status(within(CALL_MS));
    for (const m of members) {
      const one = connectEtcd({ endpoints: [m.hostEndpoint] });
      try {
        if ((await one.maintenance.status(within(CALL_MS))).header.member_id === status.leader) return m;
      } finally {
        one.close();
      }
    }
  } finally {
    client.close();
  }
  throw new Error('no member is the raft leader');
}

async function measure(label: string, members: EtcdMember[]): Promise<Record<string, unknown>> {
  const leader = await raftLeader(members);
  const names = ['etcd_disk_wal_fsync_duration_seconds', 'etcd_disk_backend_commit_duration_seconds'];
  // Through the leader, as an agent's writes mostly are (a follower forwards them to it).
  const client: Etcd3 = connectEtcd({ endpoints: [leader.hostEndpoint] });
  try {
    for (let i = 0; i < KEYS; i++)
      await client.put(`bench/commit/${i}`).value(VALUE).options(within(CALL_MS));
    const before = await histograms(leader.hostEndpoint, names);
    const ms: number[] = [];
    for (let i = 0; i < puts; i++) {
      const t = performance.now();
      await client
        .put(`bench/commit/${i % KEYS}`)
        .value(VALUE)
        .options(within(CALL_MS));
      ms.push(performance.now() - t);
    }
    const after = await histograms(leader.hostEndpoint, names);
    ms.sort((a, b) => a - b);
    const [wal, commit] = names.map((n) => [before.get(n)!, after.get(n)!] as const);
    const row = {
      cluster: label,
      puts,
      putMs: { min: ms[0], median: pick(ms, 0.5), p99: pick(ms, 0.99), max: ms.at(-1) },
      walFsync: {
        count: count(...wal!),
        median: quantileBound(...wal!, 0.5),
        p99: quantileBound(...wal!, 0.99),
      },
      backendCommit: {
        count: count(...commit!),
        median: quantileBound(...commit!, 0.5),
        p99: quantileBound(...commit!, 0.99),
      },
    };
    const f = (n: number | undefined) => (n ?? NaN).toFixed(2);
    console.log(
      `${label.padEnd(10)} put ms min/median/p99/max ${f(row.putMs.min)} / ${f(row.putMs.median)} / ${f(row.putMs.p99)} / ${f(row.putMs.max)}; ` +
        `leader's WAL fsync (${row.walFsync.count}) median ${row.walFsync.median}, p99 ${row.walFsync.p99}; ` +
        `backend commit (${row.backendCommit.count}) median ${row.backendCommit.median}, p99 ${row.backendCommit.p99}`,
    );
    return row;
  } finally {
    client.close();
  }
}

/** Set by a signal or the hard limit: the exit code once the containers are gone. */
let interrupted: number | undefined;

async function main(harness: Harness): Promise<void> {
  const rows = [];
  const solo = await harness.startEtcd('solo');
  rows.push(await measure('1 member', [solo]));
  // Stopped before the cluster's run: it must not share the cores with it.
  await solo.stop();
  rows.push(await measure('3 members', (await harness.startEtcdCluster(3)).members));
  const date = new Date();
  const file = resultPath('etcd-commit', date, `${puts}`);
  await writeJson(file, {
    bench: 'etcd-commit',
    date: date.toISOString(),
    machine: machine(),
    versions: versions(),
    settings: { puts, keys: KEYS, valueBytes: VALUE.length },
    rows,
  });
  console.log(`bench etcd-commit: results written to ${file}`);
}

const harness = await Harness.create();
let closing: Promise<void> | undefined;
/** One removal of the containers, however many ask for it (the end, a signal, the limit). */
const close = () => (closing ??= harness.close());
/**
 * A signal or the limit removes the containers, those still starting too (found by this
 * process's labels), and exits. One whose creation the engine finishes after that is removed
 * by the next run's harness, as any run's leftovers whose process is gone.
 */
const interrupt = (code: number) => {
  if (interrupted !== undefined) return;
  interrupted = code;
  // Bounded, and not unref'd: a removal the engine does not finish still ends in `code`.
  setTimeout(() => {
    console.error(
      `bench etcd-commit: containers not removed within ${CLEANUP_BOUND_MS / 1000} s; exiting anyway (the next npm test, npm run chaos or failover bench removes what is left)`,
    );
    process.exit(code);
  }, CLEANUP_BOUND_MS);
  void close()
    .catch(() => undefined)
    .then(() => reapOwn())
    .finally(() => process.exit(interrupted));
};
const limit = setTimeout(() => {
  console.error(`bench etcd-commit: not done within ${HARD_LIMIT_MS / 60_000} min; removing the containers`);
  interrupt(2);
}, HARD_LIMIT_MS);
// `on`, not `once`: a second signal (a wrapper relaying the terminal's Ctrl-C) must not kill
// the process mid-removal; `interrupt` acts once.
process.on('SIGINT', () => interrupt(130)).on('SIGTERM', () => interrupt(143));
try {
  await main(harness);
} catch (err) {
  // After a signal or the limit, the call cut short is not the news: the exit code is.
  if (interrupted === undefined) console.error(`bench etcd-commit: ${(err as Error).message}`);
  interrupted ??= 1;
} finally {
  clearTimeout(limit);
  await close();
}
process.exit(interrupted ?? 0);

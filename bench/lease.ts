// Micro-benchmark of pkg/lease against a real etcd (one container started by the test harness).
// Prints figures only; it never asserts timings.
//
//   1. Election latency after key deletion: three nodes (own etcd client and session each)
//      campaign for one identity; each round the leader resigns (loggedOut: true, which deletes
//      the key) and we time from the resign call to the next campaign() resolving. The resigned
//      node campaigns again once the round's winner is known, so every round has one leader
//      resigning and two standbys campaigning.
//   2. etcd requests per second that N identities held by one session cost in a steady window,
//      counted from etcd's own Prometheus counters (grpc_server_msg_received_total: unary calls
//      plus every message sent on a stream, e.g. each lease keepalive and watch create/cancel).
//
// Environment: BENCH_ROUNDS (20), BENCH_WINDOW_S (10), BENCH_TTL_S (2), BENCH_SETTLE_MS (1000),
// BENCH_LOAD ("1x1,1x10,1x100,10x10": sessions x identities per row).
// Usage: npm run bench (scripts/bench), or: npx tsx bench/lease.ts
import type { Etcd3 } from 'etcd3';
import {
  Candidate,
  connectEtcd,
  Keys,
  Session,
  STAGGER_STEP_MS,
  type Leadership,
} from '../pkg/lease/index.js';
import { Harness } from '../test/support/harness.js';
import { byLabel, type Scrape, scrapeProm, total } from './prom.js';

const ROUNDS = envInt('BENCH_ROUNDS', 20, 1);
const WINDOW_S = envInt('BENCH_WINDOW_S', 10, 1);
const TTL_S = envInt('BENCH_TTL_S', 2, 2);
// Longer than the slowest standby's stagger (rank 2 × STAGGER_STEP_MS), so every standby is
// back to watching the new leader before the next round starts.
const SETTLE_MS = envInt('BENCH_SETTLE_MS', 1_000, 0);
const LOAD = parseLoad(process.env.BENCH_LOAD ?? '1x1,1x10,1x100,10x10');
/** Bound on one election round, and on electing all identities of one load row. */
const ROUND_TIMEOUT_MS = 15_000;
const LOAD_ELECT_TIMEOUT_MS = 60_000;
/** Last resort: the whole benchmark, including container start and cleanup. */
const HARD_LIMIT_MS = 10 * 60_000;

function envInt(name: string, fallback: number, min: number): number {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min) {
    throw new Error(`${name}=${raw}: expected an integer >= ${min}`);
  }
  return value;
}

function parseLoad(spec: string): Array<{ sessions: number; identities: number }> {
  return spec.split(',').map((part) => {
    const match = /^(\d+)x(\d+)$/.exec(part.trim());
    const sessions = Number(match?.[1]);
    const identities = Number(match?.[2]);
    if (!match || sessions < 1 || identities < sessions) {
      throw new Error(
        `BENCH_LOAD: '${part}': expected <sessions>x<identities> with identities >= sessions >= 1`,
      );
    }
    return { sessions, identities };
  });
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

function quantile(sorted: number[], q: number): number {
  // Nearest rank: the smallest value with at least q of the samples at or below it.
  const index = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[index]!;
}

function summary(samples: number[]): string {
  const sorted = [...samples].sort((a, b) => a - b);
  const f = (v: number) => v.toFixed(1);
  return (
    `n=${sorted.length} min=${f(sorted[0]!)} p50=${f(quantile(sorted, 0.5))} ` +
    `p90=${f(quantile(sorted, 0.9))} max=${f(sorted[sorted.length - 1]!)} ms`
  );
}

// --- etcd metrics ------------------------------------------------------------------------

/** etcd's /metrics (served on the client URL). */
const scrape = (endpoint: string): Promise<Scrape> => scrapeProm(`${endpoint}/metrics`, 5_000);

/** Sum of a metric over all its label sets (0 when etcd does not export it). */
const sum = (m: Scrape, name: string): number => total(m, name) ?? 0;

function diffByMethod(before: Scrape, after: Scrape, name: string): string {
  const b = byLabel(before, name, 'grpc_method');
  const parts: string[] = [];
  for (const [method, value] of byLabel(after, name, 'grpc_method')) {
    const delta = value - (b.get(method) ?? 0);
    if (delta !== 0) parts.push(`${method}=${delta}`);
  }
  return parts.length > 0 ? parts.sort().join(' ') : 'none';
}

const MSGS = 'grpc_server_msg_received_total';
const RPCS = 'grpc_server_started_total';
const WATCHERS = 'etcd_debugging_mvcc_watcher_total';
const WATCH_STREAMS = 'etcd_debugging_mvcc_watch_stream_total';

// --- 1. election latency after resign ----------------------------------------------------

type CampaignResult =
  | { ok: true; node: ElectionNode; leadership: Leadership; at: number }
  | { ok: false; node: ElectionNode; error: Error };

interface ElectionNode {
  name: string;
  client: Etcd3;
  session: Session;
  candidate: Candidate;
  abort: AbortController;
  pending: Promise<CampaignResult> | undefined;
  /** Set when the pending campaign settles (so a second winner in one round is visible). */
  settled: CampaignResult | undefined;
}

function startCampaign(node: ElectionNode): void {
  node.settled = undefined;
  node.pending = node.candidate.campaign(node.abort.signal).then(
    (leadership): CampaignResult => ({ ok: true, node, leadership, at: performance.now() }),
    (error: unknown): CampaignResult => ({ ok: false, node, error: error as Error }),
  );
  void node.pending.then((r) => {
    node.settled = r;
  });
}

async function electionBench(endpoint: string): Promise<void> {
  const keys = new Keys('bench-election');
  const nodes: ElectionNode[] = [];
  const problems: string[] = [];
  try {
    for (const name of ['node-a', 'node-b', 'node-c']) {
      const client = connectEtcd({ endpoints: [endpoint] });
      const session = await Session.open(client, { node: name, timing: { ttlSeconds: TTL_S } });
      const candidate = new Candidate(session, { identity: 'bench', keys });
      nodes.push({
        name,
        client,
        session,
        candidate,
        abort: new AbortController(),
        pending: undefined,
        settled: undefined,
      });
    }
    for (const node of nodes) startCampaign(node);
    const first = await withTimeout(
      Promise.race(nodes.map((n) => n.pending!)),
      ROUND_TIMEOUT_MS,
      'first election of bench',
    );
    if (!first.ok) throw new Error(`first campaign of ${first.node.name} failed: ${first.error.message}`);
    let leader = first;
    await sleep(SETTLE_MS);

    const latencies: number[] = [];
    const byWinner = new Map<string, number[]>();
    const sequence: string[] = [];
    const startedAt = performance.now();
    for (let round = 1; round <= ROUNDS; round++) {
      const resigner = leader.node;
      const standbys = nodes.filter((n) => n !== resigner);
      for (const n of standbys.filter((s) => s.settled)) {
        problems.push(
          `round ${round}: campaign of standby ${n.name} had already ended (${n.settled!.ok ? 'won' : 'failed'})`,
        );
        if (!n.settled!.ok) startCampaign(n);
      }
      const t0 = performance.now();
      const resigned = await leader.leadership.resign({ loggedOut: true });
      if (!resigned) problems.push(`round ${round}: resign() of ${resigner.name} returned false`);
      const next = await withTimeout(
        Promise.race(standbys.map((n) => n.pending!)),
        ROUND_TIMEOUT_MS,
        `round ${round}: a standby to win after ${resigner.name} resigned`,
      );
      if (!next.ok)
        throw new Error(`round ${round}: campaign of ${next.node.name} failed: ${next.error.message}`);
      const ms = next.at - t0;
      latencies.push(ms);
      const list = byWinner.get(next.node.name) ?? [];
      list.push(ms);
      byWinner.set(next.node.name, list);
      sequence.push(`${next.node.name.slice(-1)}:${ms.toFixed(0)}`);
      leader = next;
      // The resigned node becomes a standby again.
      startCampaign(resigner);
      await sleep(SETTLE_MS);
      const alsoWon = standbys.filter((n) => n !== next.node && n.settled?.ok);
      if (alsoWon.length > 0) {
        problems.push(
          `round ${round}: ${alsoWon.map((n) => n.name).join(', ')} also won while ${next.node.name} leads`,
        );
      }
      const other = standbys.find((n) => n !== next.node);
      if (other?.settled && !other.settled.ok) {
        problems.push(`round ${round}: campaign of ${other.name} ended: ${other.settled.error.message}`);
        startCampaign(other);
      }
    }
    const elapsedS = (performance.now() - startedAt) / 1000;
    const watchers = sum(await scrape(endpoint), WATCHERS);

    console.log(`election after resign: ${summary(latencies)}`);
    console.log(
      `  ttl=${TTL_S}s stagger step=${STAGGER_STEP_MS} ms, 3 nodes, settle ${SETTLE_MS} ms between rounds, ` +
        `${ROUNDS} rounds in ${elapsedS.toFixed(1)} s`,
    );
    const ranked = [...nodes].map((n) => n.name).sort();
    for (const [name, samples] of [...byWinner].sort(([a], [b]) => a.localeCompare(b))) {
      // All three stay registered (the resigner's record lives with its session), equal priority:
      // rank = position of the name, and the winner waited rank × STAGGER_STEP_MS.
      const rank = ranked.indexOf(name);
      console.log(
        `  won by ${name} (rank ${rank}, stagger ${rank * STAGGER_STEP_MS} ms): ${summary(samples)}`,
      );
    }
    console.log(`  rounds (winner:ms): ${sequence.join(' ')}`);
    console.log(
      `  etcd watchers after the rounds: ${watchers} (steady state expected 5: leader's own key + 2 keys per standby)`,
    );
  } finally {
    for (const node of nodes) node.abort.abort();
    await Promise.all(nodes.map((n) => n.session.close()));
    await withTimeout(Promise.all(nodes.map((n) => n.pending)), ROUND_TIMEOUT_MS, 'campaigns to end').catch(
      (err: Error) => problems.push(err.message),
    );
    // Every campaign has ended and every session is closed, but the clients are still open:
    // etcd should have no watcher left. One left here is a watch pkg/lease never cancelled; the
    // etcd3 client then keeps reconnecting it even after close(), so the process cannot exit.
    if (nodes.length > 0) {
      await sleep(500);
      const left = await scrape(endpoint).then(
        (m) => sum(m, WATCHERS),
        () => undefined,
      );
      console.log(
        `  etcd watchers left after every campaign ended and session closed: ${left ?? '?'} (expected 0)`,
      );
      if (left !== undefined && left > 0) {
        problems.push(`${left} etcd watcher(s) never cancelled by pkg/lease (leaked watch)`);
      }
    }
    for (const node of nodes) node.client.close();
    for (const p of problems) console.log(`  PROBLEM: ${p}`);
  }
}

// --- 2. requests per second for N identities ----------------------------------------------

interface LoadRow {
  sessions: number;
  identities: number;
  electMs: number;
  electRequests: number;
  windowS: number;
  requests: number;
  rpcs: number;
  methods: string;
  watchers: number;
  watchStreams: number;
  keepaliveRate: number;
  allLeading: boolean;
}

async function loadBench(
  endpoint: string,
  sessions: number,
  identities: number,
  label: string,
): Promise<LoadRow> {
  const client = connectEtcd({ endpoints: [endpoint] });
  const opened: Session[] = [];
  try {
    const keys = new Keys(`bench-load-${label}`);
    for (let s = 0; s < sessions; s++) {
      opened.push(await Session.open(client, { node: `load-${s}`, timing: { ttlSeconds: TTL_S } }));
    }
    const candidates = Array.from(
      { length: identities },
      (_, i) => new Candidate(opened[i % sessions]!, { identity: `id-${i}`, keys }),
    );
    const beforeElect = await scrape(endpoint);
    const t0 = performance.now();
    const leaderships = await withTimeout(
      Promise.all(candidates.map((c) => c.campaign())),
      LOAD_ELECT_TIMEOUT_MS,
      `${identities} identities to be won`,
    );
    const electMs = performance.now() - t0;
    await sleep(1_000); // let the last keepalive answers and watch creations land
    const before = await scrape(endpoint);
    const w0 = performance.now();
    await sleep(WINDOW_S * 1000);
    const after = await scrape(endpoint);
    const windowS = (performance.now() - w0) / 1000;
    return {
      sessions,
      identities,
      electMs,
      electRequests: sum(before, MSGS) - sum(beforeElect, MSGS),
      windowS,
      requests: sum(after, MSGS) - sum(before, MSGS),
      rpcs: sum(after, RPCS) - sum(before, RPCS),
      methods: diffByMethod(before, after, MSGS),
      watchers: sum(after, WATCHERS),
      watchStreams: sum(after, WATCH_STREAMS),
      keepaliveRate: (sessions * 1000) / opened[0]!.timing.keepaliveIntervalMs,
      allLeading: leaderships.every((l) => l.mayAct()),
    };
  } finally {
    await Promise.all(opened.map((s) => s.close()));
    client.close();
  }
}

function printLoad(rows: LoadRow[]): void {
  console.log(
    `etcd requests in a steady ${WINDOW_S} s window (ttl=${TTL_S}s; ${MSGS} summed over all methods):`,
  );
  for (const r of rows) {
    console.log(
      `identities=${r.identities} sessions=${r.sessions} etcd requests/s=${(r.requests / r.windowS).toFixed(2)}`,
    );
  }
  const header = [
    'sessions',
    'identities',
    'req/s',
    'req/s/session',
    'rpcs/s',
    'expected',
    'watchers',
    'elect',
  ];
  const table = rows.map((r) => [
    String(r.sessions),
    String(r.identities),
    (r.requests / r.windowS).toFixed(2),
    (r.requests / r.windowS / r.sessions).toFixed(2),
    (r.rpcs / r.windowS).toFixed(2),
    r.keepaliveRate.toFixed(2),
    String(r.watchers),
    `${r.electMs.toFixed(0)} ms/${r.electRequests} req`,
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((row) => row[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padStart(widths[i]!)).join('  ');
  console.log(line(header));
  for (const row of table) console.log(line(row));
  console.log(
    '  expected = sessions × 1000 / keepaliveIntervalMs (keepalive only); rpcs/s = unary calls + streams opened;',
  );
  console.log(
    '  watchers = etcd watchers open in the window; elect = time and requests to win all identities',
  );
  for (const r of rows) {
    console.log(
      `  ${r.sessions}x${r.identities}: window messages by method: ${r.methods}; watch streams=${r.watchStreams}` +
        (r.allLeading ? '' : '; PROBLEM: not every identity still led at the end of the window'),
    );
  }
}

// --- main ----------------------------------------------------------------------------------

async function main(): Promise<void> {
  const h = await Harness.create();
  const hardStop = setTimeout(() => {
    console.error(`bench: exceeded ${HARD_LIMIT_MS} ms; removing containers and exiting`);
    void h.close().finally(() => process.exit(2));
  }, HARD_LIMIT_MS);
  hardStop.unref();
  try {
    const etcd = await h.startEtcd();
    console.log(`etcd ${etcd.hostEndpoint} (harness run ${h.run})`);
    await electionBench(etcd.hostEndpoint);
    const rows: LoadRow[] = [];
    for (const [i, { sessions, identities }] of LOAD.entries()) {
      rows.push(await loadBench(etcd.hostEndpoint, sessions, identities, `${i}`));
    }
    printLoad(rows);
  } finally {
    clearTimeout(hardStop);
    await h.close();
  }
}

// Exit explicitly: a watch leaked by pkg/lease keeps the etcd3 client's reconnect timer alive
// after client.close(), which would keep this process running forever.
try {
  await main();
  process.exit(0);
} catch (err) {
  console.error(`bench: ${(err as Error).stack ?? String(err)}`);
  process.exit(1);
}

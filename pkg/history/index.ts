// The audit trail in etcd: every state transition of every identity on every node, and
// (later) every operator action. Keys sort by time, so a prefix range is the history in order.
import type { Etcd3, PutBuilder } from 'etcd3';
import { z } from 'zod';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';

/** Entries kept per identity; older ones are pruned so history cannot grow without bound. */
export const HISTORY_KEEP = 2_000;

export const HistoryEntry = z.strictObject({
  identity: z.string(),
  node: z.string(),
  /** Wall-clock ms. */
  at: z.number(),
  kind: z.enum(['transition', 'action']),
  from: z.string().optional(),
  to: z.string().optional(),
  token: z.string().optional(),
  reason: z.string().optional(),
  actor: z.string().optional(),
  /** Milliseconds spent in the state being left (transitions). */
  durationMs: z.number().optional(),
});
export type HistoryEntry = z.infer<typeof HistoryEntry>;

export class HistoryKeys {
  constructor(readonly prefix = 'understudy') {}
  all(identity: string): string {
    return `${this.prefix}/history/${identity}/`;
  }
  entry(identity: string, e: HistoryEntry, seq: number): string {
    // Zero-padded ms then node and a per-writer sequence: unique and in time order.
    return `${this.all(identity)}${String(e.at).padStart(15, '0')}-${e.node}-${String(seq).padStart(6, '0')}`;
  }
}

let sequence = 0;

/**
 * The put that records `entry` (validated), for a caller that writes it in its own txn (a
 * controller guards its audit records with its election term).
 */
export function historyPut(client: Etcd3, entry: HistoryEntry, keys = new HistoryKeys()): PutBuilder {
  const e = HistoryEntry.parse(entry);
  sequence = (sequence + 1) % 1_000_000;
  return client.put(keys.entry(e.identity, e, sequence)).value(JSON.stringify(e));
}

export async function recordHistory(
  client: Etcd3,
  entry: HistoryEntry,
  keys = new HistoryKeys(),
): Promise<void> {
  await historyPut(client, entry, keys).options(within(ETCD_CALL_MS)).exec();
}

export async function readHistory(
  client: Etcd3,
  identity: string,
  opts: { limit?: number; keys?: HistoryKeys } = {},
): Promise<HistoryEntry[]> {
  const keys = opts.keys ?? new HistoryKeys();
  const res = await client
    .getAll()
    .prefix(keys.all(identity))
    .sort('Key', 'Descend')
    .limit(opts.limit ?? 100)
    .options(within(ETCD_CALL_MS))
    .strings();
  return Object.entries(res)
    .sort(([a], [b]) => a.localeCompare(b))
    .flatMap(([, v]) => {
      const parsed = HistoryEntry.safeParse(JSON.parse(v));
      return parsed.success ? [parsed.data] : [];
    });
}

/**
 * The newest `limit` entries of every identity, oldest first: one range read sorted by write
 * revision on the server, however many identities there are.
 */
export async function readRecentHistory(
  client: Etcd3,
  opts: { limit?: number; keys?: HistoryKeys } = {},
): Promise<HistoryEntry[]> {
  const keys = opts.keys ?? new HistoryKeys();
  const res = await client
    .getAll()
    .prefix(`${keys.prefix}/history/`)
    .sort('Mod', 'Descend')
    .limit(opts.limit ?? 100)
    .options(within(ETCD_CALL_MS))
    .strings();
  return Object.values(res)
    .flatMap((v) => {
      try {
        const parsed = HistoryEntry.safeParse(JSON.parse(v));
        return parsed.success ? [parsed.data] : [];
      } catch {
        return [];
      }
    })
    .sort((a, b) => a.at - b.at);
}

/** Delete all but the newest `keep` entries of an identity. */
export async function pruneHistory(
  client: Etcd3,
  identity: string,
  keep = HISTORY_KEEP,
  keys = new HistoryKeys(),
): Promise<number> {
  const all = await client
    .getAll()
    .prefix(keys.all(identity))
    .sort('Key', 'Ascend')
    .options(within(ETCD_CALL_MS))
    .keys();
  const excess = all.length - keep;
  if (excess <= 0) return 0;
  const oldestKept = all[excess]!;
  // One range delete: [prefix, oldest kept) removes exactly the excess.
  await client
    .delete()
    .inRange({ start: keys.all(identity), end: oldestKept })
    .options(within(ETCD_CALL_MS))
    .exec();
  return excess;
}

/** Entries written in one transaction at most (etcd allows 128 operations in one). */
const HISTORY_BATCH = 64;

/**
 * Writes history without ever making the caller wait or fail: the state machine must not
 * stall on etcd (it may be logging out precisely because etcd is unreachable). Entries queue
 * (bounded) and are written in order, retried while etcd is away; the oldest are dropped
 * (and counted) if the queue overflows.
 */
export class HistoryWriter {
  private readonly queue: HistoryEntry[] = [];
  private running = false;
  private closed = false;
  dropped = 0;
  private writes = 0;

  constructor(
    private readonly client: Etcd3,
    private readonly onError: (err: Error, entry: HistoryEntry) => void = () => undefined,
    private readonly keys = new HistoryKeys(),
    private readonly maxQueue = 1_000,
    /** Entries kept per identity (the agent's history.keepPerIdentity). */
    private readonly keep = HISTORY_KEEP,
  ) {}

  record(entry: HistoryEntry): void {
    if (this.closed) return;
    if (this.queue.length >= this.maxQueue) {
      this.queue.shift();
      this.dropped++;
    }
    this.queue.push(entry);
    if (!this.running) void this.drain();
  }

  private async drain(): Promise<void> {
    this.running = true;
    while (this.queue.length > 0 && !this.closed) {
      // What queued meanwhile goes in one transaction: a login storm writes three or four
      // transitions per identity, one etcd write each until now.
      const batch = this.queue.slice(0, HISTORY_BATCH);
      try {
        await this.write(batch);
        this.queue.splice(0, batch.length);
        // Prune now and then, not on every write.
        for (const entry of batch) {
          if (++this.writes % 200 === 0)
            await pruneHistory(this.client, entry.identity, this.keep, this.keys);
        }
      } catch (err) {
        this.onError(err as Error, batch[0]!);
        await new Promise((resolve) => setTimeout(resolve, 500).unref());
      }
    }
    this.running = false;
  }

  private async write(batch: HistoryEntry[]): Promise<void> {
    if (batch.length === 1) return recordHistory(this.client, batch[0]!, this.keys);
    await this.client
      .if(this.keys.all(batch[0]!.identity), 'Create', '>', -1) // always true: several puts at once
      .then(...batch.map((entry) => historyPut(this.client, entry, this.keys)))
      .options(within(ETCD_CALL_MS))
      .commit();
  }

  /** Try to flush what is queued within `ms`, then stop. */
  async close(ms = 1_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (this.queue.length > 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    this.closed = true;
  }
}

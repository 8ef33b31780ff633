// When etcd committed writes at all, seen from outside the agents: every agent rewrites its
// session key at each renewal (several times a second across the topology), so the commits
// under the sessions prefix show every stretch in which etcd accepted nothing — a raft
// election, a frozen leader. Watched through one client per member: a watch on a member that
// was killed breaks, the others still deliver, and each commit counts at its first delivery.
//
// Why the suite needs it: a holder must fence itself D after its last acknowledged renewal,
// whatever stopped the acknowledgements. An etcd that commits nothing for that long (an
// election on a loaded machine) makes a move the safe, expected answer, not a false failover
// of ours; a move while etcd kept committing is ours to explain.
import type { Etcd3, Watcher } from 'etcd3';
import { setTimeout as sleep } from 'node:timers/promises';
import { perEndpointClients } from '../pkg/lease/etcd.js';
import { Keys } from '../pkg/lease/index.js';
import { monotonicMs } from './history.js';

/** How long closing waits for the watches' cancels before closing their clients regardless. */
const CLOSE_WAIT_MS = 2_000;
/** Commit times kept at most (about an hour of renewals of a few agents). */
const MAX_COMMITS = 100_000;

export class CommitWatch {
  /** First delivery time (monotonic ms) per revision, in revision order. */
  private readonly seen = new Map<string, number>();
  private readonly times: number[] = [];

  private constructor(
    private readonly clients: Etcd3[],
    private readonly watchers: Watcher[],
  ) {}

  static async start(endpoints: string[], keys = new Keys()): Promise<CommitWatch> {
    const clients = perEndpointClients({ endpoints });
    const watch = new CommitWatch(clients, []);
    for (const client of clients) {
      const w = await client.watch().prefix(keys.sessions()).create();
      w.on('put', (kv) => watch.commit(kv.mod_revision));
      w.on('error', () => undefined); // the library reconnects; the other members deliver meanwhile
      watch.watchers.push(w);
    }
    return watch;
  }

  private commit(revision: string): void {
    if (this.seen.has(revision)) return;
    const t = monotonicMs();
    this.seen.set(revision, t);
    this.times.push(t);
    if (this.times.length > MAX_COMMITS) {
      this.times.shift();
      const oldest = this.seen.keys().next();
      if (!oldest.done) this.seen.delete(oldest.value);
    }
  }

  /** The longest stretch without a commit that overlaps [from, to] (see longestGap). */
  longestGap(from: number, to: number): number {
    return longestGap(this.times, from, to);
  }

  async close(): Promise<void> {
    // A cancel sent to a member that is down may never be answered: close the clients anyway.
    const cancels = Promise.all(this.watchers.map((w) => w.cancel().catch(() => undefined)));
    await Promise.race([cancels, sleep(CLOSE_WAIT_MS, undefined, { ref: false })]);
    for (const c of this.clients) c.close();
  }
}

/**
 * The longest stretch without a commit (`times`, ms) that overlaps [from, to]: from the last
 * commit before it ends to the next one, or to `to` when none came after.
 */
export function longestGap(times: readonly number[], from: number, to: number): number {
  let longest = 0;
  let previous: number | undefined;
  for (const t of [...times].sort((a, b) => a - b)) {
    if (previous !== undefined && t >= from && previous <= to) longest = Math.max(longest, t - previous);
    previous = t;
  }
  if (previous !== undefined && previous < to) longest = Math.max(longest, to - Math.max(previous, from));
  return longest;
}

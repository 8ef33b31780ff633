// Observers that write a run's history (history.ts) from outside the agents: the log itself,
// a watcher of the identities' leader keys in etcd, and the witness services' own records
// turned into history events. Each stamps what it saw with the shared monotonic clock.
import { appendFile } from 'node:fs/promises';
import type { Etcd3, Watcher } from 'etcd3';
import type { NatsConnection } from 'nats';
import { ResponderCollector } from '../pkg/identity/client.js';
import { Keys, LeaderRecord, LoginRecord } from '../pkg/lease/keys.js';
import { HistoryEvent, monotonicMs } from './history.js';

/**
 * The run's history: kept in memory for the checker, and appended to a JSONL file if given.
 * Lines recorded while a write is under way go out together in the next one: a benchmark's
 * samplers record hundreds of events a second, and a file opened, written and closed for each
 * was a load of its own on the machine measured.
 */
export class HistoryLog {
  readonly events: HistoryEvent[] = [];
  private writing: Promise<void> = Promise.resolve();
  private unwritten: string[] = [];
  /** The first write that failed: the file then has a hole, which flushed() must not hide. */
  private failed: Error | undefined;

  constructor(private readonly file?: string) {}

  /** Record an event (validated: a malformed one is a bug of the observer, said at once). */
  add(event: HistoryEvent): void {
    const checked = HistoryEvent.parse(event);
    this.events.push(checked);
    const file = this.file;
    if (!file) return;
    this.unwritten.push(`${JSON.stringify(checked)}\n`);
    // One write queued at a time: it takes every line recorded until it starts.
    if (this.unwritten.length === 1)
      this.writing = this.writing.then(() => {
        const lines = this.unwritten.join('');
        this.unwritten = [];
        return appendFile(file, lines).catch((err: Error) => {
          this.failed ??= err;
        });
      });
  }

  /** Everything recorded, in time order (observers append as they see things). */
  sorted(): HistoryEvent[] {
    return this.events
      .map((e, i) => ({ e, i }))
      .sort((a, b) => a.e.t - b.e.t || a.i - b.i)
      .map(({ e }) => e);
  }

  /** Resolves once everything recorded so far is in the file; rejects if a write failed. */
  flushed(): Promise<void> {
    return this.writing.then(() => {
      if (this.failed) throw this.failed;
    });
  }
}

/**
 * Watch the leader keys of `identities`: a `leader` event at each change (the key's mod
 * revision is the term's token; a deletion is "no leader"), after one read of where they
 * stand. Close the returned watcher at the end of the run.
 */
export async function watchLeaders(
  etcd: Etcd3,
  identities: readonly string[],
  log: HistoryLog,
  keys = new Keys(),
): Promise<Watcher> {
  const byKey = new Map(identities.map((id) => [keys.leader(id), id]));
  const watcher = await etcd.watch().prefix(`${keys.prefix}/identities/`).create();
  const seen = (key: string, value: Buffer | undefined, modRevision: string | undefined) => {
    const identity = byKey.get(key);
    if (!identity) return;
    const record = value ? LeaderRecord.safeParse(JSON.parse(value.toString())) : undefined;
    log.add({
      kind: 'leader',
      t: monotonicMs(),
      identity,
      ...(record?.success && modRevision ? { node: record.data.node, token: modRevision } : {}),
    });
  };
  watcher.on('put', (kv) => seen(kv.key.toString(), kv.value, kv.mod_revision));
  watcher.on('delete', (kv) => seen(kv.key.toString(), undefined, undefined));
  for (const [key] of byKey) {
    const kv = (await etcd.get(key).exec()).kvs[0];
    if (kv) seen(key, kv.value, kv.mod_revision);
  }
  return watcher;
}

/** Watch the identities' login records: a `login-record` event at each write. */
export async function watchLoginRecords(
  etcd: Etcd3,
  identities: readonly string[],
  log: HistoryLog,
  keys = new Keys(),
): Promise<Watcher> {
  const byKey = new Map(identities.map((id) => [keys.login(id), id]));
  const watcher = await etcd.watch().prefix(`${keys.prefix}/identities/`).create();
  watcher.on('put', (kv) => {
    const identity = byKey.get(kv.key.toString());
    if (!identity) return;
    const record = LoginRecord.safeParse(JSON.parse(kv.value.toString()));
    if (!record.success) return;
    const { node, token, loggedIn } = record.data;
    log.add({ kind: 'login-record', t: monotonicMs(), identity, node, token, loggedIn });
  });
  return watcher;
}

/**
 * PING the identity every `everyMs`, each PING collecting every answer within `windowMs`, and
 * record who answered (S1 as the network sees it: two nodes answering one PING is a split
 * brain). A PING that could not be sent or read is not recorded: it proves nothing. Stop it at
 * the end of the run.
 */
export function samplePings(
  nc: NatsConnection,
  identity: string,
  log: HistoryLog,
  opts: { everyMs: number; windowMs: number },
): { stop(): Promise<void> } {
  let stopped = false;
  // A PING starts every everyMs whatever the ones before are doing: their windows overlap, so
  // no moment goes unwatched (about windowMs / everyMs PINGs are open at once), all answered
  // through one subscription.
  const collector = new ResponderCollector(nc);
  const open = new Set<Promise<void>>();
  const ping = () => {
    const t = monotonicMs();
    const p = collector.collect(identity, opts.windowMs, { now: monotonicMs }).then(
      (answers) =>
        log.add({
          kind: 'ping',
          t,
          identity,
          responders: answers.map((a) => ({
            node: a.node,
            token: String(a.token),
            ...(a.receivedAt !== undefined && { at: a.receivedAt }),
            ...(a.error !== undefined && { error: a.error }),
          })),
        }),
      () => undefined,
    );
    open.add(p);
    void p.finally(() => open.delete(p));
  };
  const timer = setInterval(() => {
    if (!stopped) ping();
  }, opts.everyMs);
  ping();
  return {
    stop: async () => {
      stopped = true;
      clearInterval(timer);
      try {
        await Promise.all([...open]);
      } finally {
        collector.close();
      }
    },
  };
}

/**
 * A witness service's own file (chaos/witness.ts: login, alive, logout, and
 * `dead` written from outside when the process died) as history events of `identity`. The
 * login is dated from the process's start: the service holds its token from its first instant.
 */
export function witnessEvents(text: string, identity: string): HistoryEvent[] {
  const events: HistoryEvent[] = [];
  for (const line of text.split('\n')) {
    if (line.trim() === '') continue;
    let record: { event?: string; node?: string; token?: string; mono?: number };
    try {
      record = JSON.parse(line) as typeof record;
    } catch {
      continue; // a line torn by a kill mid-write: the death line says when it ended
    }
    const what = { login: 'login', alive: 'alive', logout: 'logout', dead: 'exit' }[record.event ?? ''] as
      'login' | 'alive' | 'logout' | 'exit' | undefined;
    if (!what || record.node === undefined || record.token === undefined || record.mono === undefined) {
      throw new Error(`not a witness record: ${line.slice(0, 200)}`);
    }
    events.push({ kind: 'witness', t: record.mono, identity, node: record.node, token: record.token, what });
  }
  return events;
}

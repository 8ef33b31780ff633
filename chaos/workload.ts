// The workload: a client of the identities, as a user of the bot or gateway would be, writing
// every request it sends and what came back (who served it, under which token, or the error)
// to the history, for S5: every accepted request is answered or refused, and a durable one is
// served once — also when it was sent while no one was logged in.
//
// Core requests are PINGs with a timeout (an error is a refusal the sender sees). Durable
// requests go to the identity's JetStream inbox; a send counts once the server stored it, and
// its answer may come after a handover. At the end the workload stops sending and waits for
// the answers still owed while they keep coming, so a request sent just before the end, or
// queued behind a backlog being worked off, is not counted lost.
import type { NatsConnection, Subscription } from 'nats';
import { setTimeout as sleep } from 'node:timers/promises';
import { IdentityClient, msgHeaders, parseReply } from '../pkg/identity/client.js';
import { headers as H } from '../pkg/identity/wire.js';
import { monotonicMs } from './history.js';
import type { HistoryLog } from './observe.js';

/** A core request's wait: longer than a failover, so a handover shows as a late answer. */
export const CORE_TIMEOUT_MS = 3_000;
/** How long a durable send may wait for the server's acknowledgement. */
const SEND_TIMEOUT_MS = 3_000;

export interface WorkloadTarget {
  identity: string;
  durable: boolean;
  /**
   * Durable requests per second, sent on a schedule without waiting for each acknowledgement
   * (the benchmark's load); without it, one request at a time, `everyMs` apart.
   */
  ratePerS?: number;
}

/** The paced sender's tick: requests due are sent together each tick. */
const PACE_MS = 10;
/** Paced sends awaiting the server's acknowledgement at most: past it the rate falls behind. */
const MAX_IN_FLIGHT = 2_000;
/**
 * The longest a stop of a paced workload (the benchmark's load) waits for owed answers that
 * keep coming: a backlog at 500 requests/s behind back-to-back handovers took 14–18 s to work
 * off; a bound keeps a slow drain finite.
 */
export const PACED_DRAIN_CAP_MS = 120_000;

/** Workloads started by this process: request ids restart with each, and must not collide. */
let runs = 0;

export class Workload {
  private stopped = false;
  private readonly loops: Promise<void>[] = [];
  private readonly clients: IdentityClient[] = [];
  private readonly owed = new Set<string>();
  private readonly subs: Subscription[] = [];
  private readonly run = ++runs;
  private drainAbandoned = false;

  constructor(
    private readonly nc: NatsConnection,
    private readonly log: HistoryLog,
    private readonly targets: readonly WorkloadTarget[],
    private readonly everyMs: number,
  ) {}

  start(): this {
    for (const target of this.targets) {
      const client = new IdentityClient(this.nc, { identity: target.identity });
      this.clients.push(client);
      if (target.durable) {
        // Every answer as it arrives, before the client's own gates drop duplicates and stale
        // ones: the history must show a request served twice, not the client's tidy view.
        const sub = this.nc.subscribe(client.replySubject, {
          callback: (err, msg) => {
            if (err) return;
            const id = msg.headers?.get(H.requestId);
            const parsed = parseReply(msgHeaders(msg.headers), msg.data);
            if (!id || !parsed.ok) return;
            this.owed.delete(id);
            const { node, token, error } = parsed.reply;
            const serve = msg.headers?.get(H.serve);
            this.log.add({
              kind: 'request',
              t: monotonicMs(),
              identity: target.identity,
              id,
              what: error ? 'error' : 'reply',
              durable: true,
              node,
              token: String(token),
              ...(error ? { error } : {}),
              ...(serve ? { serve } : {}),
            });
          },
        });
        this.subs.push(sub);
      }
      this.loops.push(this.loop(client, target));
    }
    return this;
  }

  private requestId(target: WorkloadTarget, n: number): string {
    return `${target.identity}-${target.durable ? 'd' : 'c'}${n}-${process.pid}-${this.run}`;
  }

  /** One durable request: owed from the moment it may be stored (the answer can beat the ack). */
  private async sendDurable(client: IdentityClient, target: WorkloadTarget, n: number): Promise<void> {
    const id = this.requestId(target, n);
    this.owed.add(id);
    try {
      await client.send('PING', { requestId: id, timeoutMs: SEND_TIMEOUT_MS });
      this.log.add({
        kind: 'request',
        identity: target.identity,
        id,
        durable: true,
        t: monotonicMs(),
        what: 'send',
      });
    } catch {
      // Not stored: the sender knows it was not accepted; nothing is owed.
      this.owed.delete(id);
    }
  }

  /** Durable requests at `ratePerS`, each tick sending what is due, acknowledgements awaited concurrently. */
  private async paced(client: IdentityClient, target: WorkloadTarget, ratePerS: number): Promise<void> {
    const from = monotonicMs();
    const inFlight = new Set<Promise<void>>();
    let n = 0;
    while (!this.stopped) {
      const due = Math.floor(((monotonicMs() - from) * ratePerS) / 1000);
      while (n < due && inFlight.size < MAX_IN_FLIGHT) {
        const sent: Promise<void> = this.sendDurable(client, target, ++n).finally(() =>
          inFlight.delete(sent),
        );
        inFlight.add(sent);
      }
      await sleep(PACE_MS);
    }
    await Promise.all(inFlight);
  }

  private async loop(client: IdentityClient, target: WorkloadTarget): Promise<void> {
    if (target.durable && target.ratePerS) return this.paced(client, target, target.ratePerS);
    for (let n = 1; !this.stopped; n++) {
      const id = this.requestId(target, n);
      const base = { kind: 'request' as const, identity: target.identity, id, durable: target.durable };
      if (target.durable) {
        await this.sendDurable(client, target, n);
      } else {
        this.log.add({ ...base, t: monotonicMs(), what: 'send' });
        try {
          const reply = await client.request('PING', { timeoutMs: CORE_TIMEOUT_MS });
          this.log.add({
            ...base,
            t: monotonicMs(),
            what: reply.error ? 'error' : 'reply',
            node: reply.node,
            token: String(reply.token),
            ...(reply.error ? { error: reply.error } : {}),
          });
        } catch (err) {
          this.log.add({
            ...base,
            t: monotonicMs(),
            what: 'error',
            error: (err as Error).message.slice(0, 200),
          });
        }
      }
      await sleep(this.everyMs);
    }
  }

  /** A run being abandoned (a signal, its time limit): a stop under way or to come waits no more. */
  abandonDrain(): void {
    this.drainAbandoned = true;
  }

  /**
   * Stop sending; wait for the durable answers still owed until none has come for `quietMs`
   * (a request lost for good ends the wait then), `capMs` at most.
   */
  async stop(quietMs: number, capMs = quietMs): Promise<void> {
    this.stopped = true;
    await Promise.all(this.loops);
    const started = monotonicMs();
    let owed = this.owed.size;
    let lastAnswer = started;
    while (this.owed.size > 0) {
      const now = monotonicMs();
      if (this.owed.size < owed) {
        owed = this.owed.size;
        lastAnswer = now;
      }
      if (this.drainAbandoned || now - lastAnswer >= quietMs || now - started >= capMs) break;
      await sleep(100);
    }
    for (const sub of this.subs) sub.unsubscribe();
    for (const client of this.clients) client.close();
  }
}

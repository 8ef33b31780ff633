// S1 and S2 as seen from the network: PING the identity every few ms, each PING with its own
// reply subject, so two answers to one PING (two nodes logged in at once) are caught, and
// every answer's token is checked against the highest seen before it. Shared by the
// integration tests, the chaos runs and the switchover benchmark.
import { createInbox, type NatsConnection, type Subscription } from 'nats';
import { headers as H, subjects } from '../../pkg/identity/wire.js';

export interface PingAnswer {
  node: string;
  token: bigint;
}

export interface SamplerOptions {
  everyMs: number;
  /** Answers kept per PING for this many most recent PINGs (long runs stay bounded in memory). */
  keep?: number;
}

export class PingSampler {
  /** performance.now() at each PING's send, by PING number. */
  readonly sentAt: number[] = [];
  readonly answers = new Map<number, PingAnswer[]>();
  answered = 0;
  highest = 0n;
  /** S1: PINGs answered by more than one node. */
  readonly doubles: Array<{ ping: number; nodes: string[] }> = [];
  /** S2: answers whose token is below one seen earlier. */
  readonly tokenDrops: Array<{ ping: number; node: string; token: bigint; after: bigint }> = [];
  private readonly prefix = createInbox();
  private readonly sub: Subscription;
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly identity: string,
    private readonly opts: SamplerOptions = { everyMs: 5 },
  ) {
    this.sub = nc.subscribe(`${this.prefix}.*`, {
      callback: (_err, msg) => this.onAnswer(msg.subject, msg.headers),
    });
  }

  private onAnswer(subject: string, headers: { get(k: string): string } | undefined): void {
    const node = headers?.get(H.node);
    if (!node) return; // NATS itself answers "no responders" while no one is logged in
    const ping = Number(subject.slice(this.prefix.length + 1));
    const token = BigInt(headers?.get(H.token) || '0');
    const list = this.answers.get(ping) ?? [];
    if (list.length > 0 && !list.some((a) => a.node === node)) {
      this.doubles.push({ ping, nodes: [...new Set([...list.map((a) => a.node), node])] });
    }
    list.push({ node, token });
    this.answers.set(ping, list);
    if (token < this.highest) this.tokenDrops.push({ ping, node, token, after: this.highest });
    if (token > this.highest) this.highest = token;
    this.answered++;
  }

  get sent(): number {
    return this.sentAt.length;
  }

  start(): this {
    this.timer = setInterval(() => {
      if (this.nc.isClosed()) return;
      const ping = this.sentAt.length;
      this.sentAt.push(performance.now());
      this.nc.publish(subjects.identity(this.identity), 'PING', { reply: `${this.prefix}.${ping}` });
      const keep = this.opts.keep;
      if (keep !== undefined && ping % keep === 0) {
        for (const k of this.answers.keys()) if (k < ping - keep) this.answers.delete(k);
      }
    }, this.opts.everyMs);
    return this;
  }

  /** Stop sending; answers still in flight are collected until close(). */
  stop(): void {
    clearInterval(this.timer);
  }

  async close(): Promise<void> {
    this.stop();
    await this.nc.flush().catch(() => undefined);
    this.sub.unsubscribe();
  }

  /** Distinct terms seen, in order of first answer. */
  terms(): bigint[] {
    const seen: bigint[] = [];
    for (const list of this.answers.values())
      for (const a of list) if (!seen.includes(a.token)) seen.push(a.token);
    return seen;
  }

  /**
   * The no-responder gap of a move from `from` to `to` among PINGs [start, end): last PING
   * answered by `from` → first later PING answered by `to`. `interleaved` counts PINGs answered
   * by `from` after one answered by `to` (the old node serving again: an S1 breach in time).
   */
  gap(from: string, to: string, start: number, end: number) {
    let lastOld: number | undefined;
    let firstNew: number | undefined;
    let interleaved = 0;
    let unanswered = 0;
    for (let n = start; n < end; n++) {
      const nodes = (this.answers.get(n) ?? []).map((a) => a.node);
      if (nodes.length === 0) unanswered++;
      if (nodes.includes(to) && firstNew === undefined) firstNew = n;
      if (nodes.includes(from)) {
        if (firstNew !== undefined && n > firstNew) interleaved++;
        else lastOld = n;
      }
    }
    const gapMs =
      lastOld !== undefined && firstNew !== undefined
        ? this.sentAt[firstNew]! - this.sentAt[lastOld]!
        : undefined;
    return { gapMs, lastOld, firstNew, interleaved, unanswered, pings: end - start };
  }

  /** One line per S1 and S2 breach, for a failure message or a chaos report. */
  violations(): string[] {
    return [
      ...this.doubles.map((d) => `S1: PING #${d.ping} answered by ${d.nodes.join(' and ')}`),
      ...this.tokenDrops.map((t) => `S2: token ${t.token} from ${t.node} (PING #${t.ping}) after ${t.after}`),
    ];
  }
}

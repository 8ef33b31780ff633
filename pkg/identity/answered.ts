// The durable requests one term answered on this node, and the answer each got, so that a
// second delivery of one gets the same reply again instead of a second call to the service.
//
// JetStream hands a request to the leader again when its ack wait runs out while the service
// is still at it, and around a handover (the failover bench's inbox part once saw one request
// answered twice, 1 ms apart, by a leader that had just logged in: most likely the previous
// leader's nak of its last batch put back a request this one already had). The responder used
// to serve such a copy again: the service acted twice for one request. Acking the copy without
// an answer would be no better: if the first reply and its ack were both lost on the way (a
// connection or a route between NATS servers breaking), the caller would get nothing at all.
// So the copy gets the very reply the first delivery got (the same bytes, signature and serve
// id: to the caller a duplicate message, which its dedupe drops), and is acked. A copy of a
// request still being served waits for that answer.
//
// Kept per term, across the term's responders (a drain that is rolled back logs the same term
// in again with a new responder, while a handler of the old one may still be finishing); a
// later term forgets them (its replies carry its own token, and a copy is answered again), and
// an earlier term's late answer is not kept. Bounded: a copy that comes after its answer was
// pushed out (a lost ack, with an ack wait longer than the few seconds these hold at a high
// rate) is served again — at least once, as before.
import type { MsgHdrs } from 'nats';

/**
 * Answers kept, the newest: a copy comes within a batch or two of the answer, or after the
 * ack wait when the ack was lost; at 500 requests a second this is 8 s of answers.
 */
export const ANSWERED_REMEMBERED = 4_096;
/** Bytes of reply bodies kept at most: a few large replies must not grow the agent's memory. */
export const ANSWERED_BYTES = 8 * 1024 * 1024;

/** What the first delivery of a request got: a reply, or nothing owed (dropped, no reply-to). */
export interface Answered {
  reply?: { to: string; body: Uint8Array; headers: MsgHdrs };
}

/** A stored request: its stream sequence, and when it was stored (a recreated stream reuses sequences). */
export const storedRequest = (seq: number, storedAtNanos: number): string => `${seq}@${storedAtNanos}`;

/** A request being served: `done` with its answer, or with undefined when it was left to be offered again. */
export interface Serving {
  done(answered: Answered | undefined): void;
}

export class AnsweredRequests {
  private token: bigint | undefined;
  private readonly answers = new Map<string, Answered>();
  private readonly serving = new Map<string, Promise<Answered | undefined>>();
  private bytes = 0;

  constructor(
    private readonly maxEntries = ANSWERED_REMEMBERED,
    private readonly maxBytes = ANSWERED_BYTES,
  ) {}

  /** Start keeping `token`'s answers: an earlier term's are forgotten. A later term's are kept. */
  forTerm(token: bigint): this {
    if (this.token === undefined || token > this.token) {
      this.answers.clear();
      this.serving.clear();
      this.bytes = 0;
      this.token = token;
    }
    return this;
  }

  /**
   * What `token`'s term answered to `request`, waiting for it if it is being served; undefined
   * when it was not answered (or not by this term, or the answer was pushed out).
   */
  async answerOf(token: bigint, request: string): Promise<Answered | undefined> {
    if (token !== this.token) return undefined;
    const answered = this.answers.get(request);
    if (answered) return answered;
    const serving = this.serving.get(request);
    if (!serving) return undefined;
    const outcome = await serving;
    return token === this.token ? outcome : undefined;
  }

  /** `request` is being served by `token`'s term: copies that come meanwhile wait for its answer. */
  serve(token: bigint, request: string): Serving {
    let settle!: (answered: Answered | undefined) => void;
    const outcome = new Promise<Answered | undefined>((resolve) => (settle = resolve));
    const mine = token === this.token;
    if (mine) this.serving.set(request, outcome);
    return {
      done: (answered) => {
        if (mine && this.serving.get(request) === outcome) this.serving.delete(request);
        if (answered && token === this.token) this.remember(request, answered);
        settle(answered);
      },
    };
  }

  get size(): number {
    return this.answers.size;
  }

  /** A reply larger than the whole budget is not kept: a copy is served again (at least once beats never). */
  private remember(request: string, answered: Answered): void {
    const size = answered.reply?.body.byteLength ?? 0;
    if (size > this.maxBytes) return;
    this.forget(request);
    this.answers.set(request, answered);
    this.bytes += size;
    for (const oldest of this.answers.keys()) {
      if (this.answers.size <= this.maxEntries && this.bytes <= this.maxBytes) break;
      this.forget(oldest);
    }
  }

  private forget(request: string): void {
    const old = this.answers.get(request);
    if (!old) return;
    this.bytes -= old.reply?.body.byteLength ?? 0;
    this.answers.delete(request);
  }
}

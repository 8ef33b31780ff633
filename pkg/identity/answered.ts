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
// So the copy gets the very reply the first delivery got (the same bytes and signature: to the
// caller a duplicate message, which its dedupe drops), and is acked.
//
// Kept per term, across the term's responders (a drain that is rolled back logs the same term
// in again with a new responder, while a handler of the old one may still be finishing); a
// later term forgets them (its replies carry its own token, and a copy is answered again).
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
export const storedRequest = (seq: number, storedAtNanos: bigint | number): string =>
  `${seq}@${storedAtNanos}`;

export class AnsweredRequests {
  private token: bigint | undefined;
  private readonly answers = new Map<string, Answered>();
  private bytes = 0;

  constructor(
    private readonly maxEntries = ANSWERED_REMEMBERED,
    private readonly maxBytes = ANSWERED_BYTES,
  ) {}

  /** The answers of `token`'s term: another term's are forgotten first. */
  forTerm(token: bigint): this {
    if (token !== this.token) {
      this.answers.clear();
      this.bytes = 0;
      this.token = token;
    }
    return this;
  }

  get(request: string): Answered | undefined {
    return this.answers.get(request);
  }

  /**
   * Keep what `request` was answered. A reply larger than the whole budget is not kept: a copy
   * of that request is served again (at least once beats never).
   */
  remember(request: string, answered: Answered): void {
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

  get size(): number {
    return this.answers.size;
  }

  private forget(request: string): void {
    const old = this.answers.get(request);
    if (!old) return;
    this.bytes -= old.reply?.body.byteLength ?? 0;
    this.answers.delete(request);
  }
}

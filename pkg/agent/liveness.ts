// The agent's own check of each logged-in service, carried in its heartbeats.
//
// The controller cannot PING 10,000 identities every second; past its PING budget it judges
// an identity from its leader's heartbeat, and PINGs suspects and a rotating sample
// (pkg/controller/probe-plan.ts). So each heartbeat says, per identity this node leads,
// whether the service passed the same check a PING answer is gated on (not stopped, traced
// or a zombie; answering its channel) within the last period. A result is reported only for
// the term it was taken under and only while fresh: a stale "alive" is never sent.

/** Each check's wait, the same as a PING answer's (pkg/identity/responder.ts). */
export const LIVENESS_CHECK_TIMEOUT_MS = 250;
/** Checks in flight at once: each is a /proc read and at most one channel round trip. */
export const LIVENESS_CONCURRENCY = 16;

export interface LivenessSubject {
  identity: string;
  /** The term the check is for (the service may change terms between rounds). */
  token: bigint;
  check(): Promise<boolean>;
}

interface Result {
  token: bigint;
  alive: boolean;
  /** Monotonic ms the check finished. */
  at: number;
}

export class ServiceLiveness {
  private readonly results = new Map<string, Result>();
  private running = false;

  constructor(
    private readonly now: () => number,
    /** A result older than this is not reported (two heartbeat periods). */
    private readonly maxAgeMs: number,
  ) {}

  /**
   * Check every subject, LIVENESS_CONCURRENCY at a time; a round still running when the next
   * is asked for is not doubled (the next heartbeat reports what finished).
   */
  async refresh(subjects: readonly LivenessSubject[]): Promise<void> {
    if (this.running) return;
    this.running = true;
    try {
      const wanted = new Set(subjects.map((s) => s.identity));
      for (const identity of this.results.keys()) if (!wanted.has(identity)) this.results.delete(identity);
      let next = 0;
      const worker = async () => {
        while (next < subjects.length) {
          const s = subjects[next++]!;
          const alive = await s.check().catch(() => false);
          this.results.set(s.identity, { token: s.token, alive, at: this.now() });
        }
      };
      await Promise.all(Array.from({ length: Math.min(LIVENESS_CONCURRENCY, subjects.length) }, worker));
    } finally {
      this.running = false;
    }
  }

  /** The fresh result for this identity's current term, or undefined. */
  report(identity: string, token: bigint | undefined): boolean | undefined {
    const r = this.results.get(identity);
    if (!r || token === undefined || r.token !== token || this.now() - r.at > this.maxAgeMs) return undefined;
    return r.alive;
  }
}

// Errors a retry loop swallows (a tick that cannot read etcd, a fence that cannot be applied
// yet, a probe that cannot run) must still reach an operator: each is logged once when its
// reason changes, once more when it clears, and counted, so a loop that retries every 250 ms
// neither floods the log nor hides a problem that never goes away.
import type { Logger } from 'pino';
import type { Counter } from 'prom-client';

export class LoopTrouble {
  private readonly current = new Map<string, string>();

  constructor(
    private readonly log: Logger,
    /** Counted on every failure, by loop (tick, fences, probe, audit...). */
    private readonly counter?: Counter<'loop'>,
  ) {}

  /**
   * A failure of `loop` (per `subject`, e.g. an identity), with `what` next: logged when its
   * reason differs from the last one reported for that subject.
   */
  failed(loop: string, err: unknown, what: string, subject = ''): void {
    const reason = err instanceof Error ? err.message : String(err);
    this.counter?.inc({ loop });
    const key = `${loop}\u0000${subject}`;
    if (this.current.get(key) === reason) return;
    this.current.set(key, reason);
    this.log.warn({ loop, ...(subject ? { subject } : {}), err: reason }, what);
  }

  /** The loop worked again for `subject`: say so once if it had been failing. */
  recovered(loop: string, subject = ''): void {
    const key = `${loop}\u0000${subject}`;
    if (!this.current.delete(key)) return;
    this.log.info({ loop, ...(subject ? { subject } : {}) }, `${loop} works again`);
  }

  /** The reason `loop` last failed for `subject`, while it still fails. */
  reason(loop: string, subject = ''): string | undefined {
    return this.current.get(`${loop}\u0000${subject}`);
  }
}

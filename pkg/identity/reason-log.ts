// A failure that repeats (a retry loop, a background restart) is logged when its reason begins
// or changes, and once when it clears: an operator sees every distinct cause, and a fault that
// persists for hours does not flood the log with one line per attempt.
import type { Logger } from 'pino';

export class ReasonLog {
  private current: string | undefined;
  private repeats = 0;

  /** `what` names the thing being retried, e.g. 'restarting the lifeline reaper'. */
  constructor(
    private readonly log: Logger,
    private readonly what: string,
    private readonly level: 'warn' | 'error' = 'warn',
  ) {}

  /** The reason now in force (undefined when the last attempt worked). */
  get reason(): string | undefined {
    return this.current;
  }

  /** An attempt failed for `reason`: logged only if that is not already the reason in force. */
  fail(reason: string, fields: Record<string, unknown> = {}): void {
    if (reason === this.current) {
      this.repeats++;
      return;
    }
    const previous = this.current;
    this.current = reason;
    this.repeats = 0;
    this.log[this.level](
      { ...fields, reason, ...(previous !== undefined ? { previous } : {}) },
      `${this.what} failed; retrying (logged again only when the reason changes)`,
    );
  }

  /** An attempt worked: says so once if a failure was in force. */
  ok(): void {
    if (this.current === undefined) return;
    this.log.info({ was: this.current, repeats: this.repeats }, `${this.what} works again`);
    this.current = undefined;
    this.repeats = 0;
  }
}

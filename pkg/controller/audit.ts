// The operator audit trail in etcd history (pkg/history): an action is recorded before it
// takes effect, so an action that cannot be audited is not taken; what happens on its own
// (workflow transitions, a fence applied later) is recorded best effort and a failure to
// record it is reported, not thrown.
import type { Etcd3 } from 'etcd3';
import { ApiError } from '../api/schema.js';
import type { Clock } from '../clock/index.js';
import { recordHistory, type HistoryEntry } from '../history/index.js';
import type { LoopTrouble } from './trouble.js';

export class Audit {
  constructor(
    private readonly etcd: Etcd3,
    /** This controller's name: the `node` of its entries. */
    private readonly name: string,
    private readonly clock: Clock,
    private readonly trouble: LoopTrouble,
  ) {}

  /** Record `entry` or answer `unavailable` (nothing was changed). */
  async record(entry: HistoryEntry): Promise<void> {
    try {
      await recordHistory(this.etcd, entry);
    } catch (err) {
      throw new ApiError(
        'unavailable',
        `cannot write the audit record to etcd (${(err as Error).message}); nothing was changed`,
      );
    }
  }

  /** Record an operator action before it takes effect. */
  action(identity: string, actor: string, reason: string, token?: string): Promise<void> {
    return this.record({
      identity,
      node: this.name,
      at: this.clock.wallMs(),
      kind: 'action',
      actor,
      reason,
      ...(token ? { token } : {}),
    });
  }

  /** Record what already happened; a failure is logged (once per reason) and counted. */
  bestEffort(entry: HistoryEntry): void {
    recordHistory(this.etcd, entry).then(
      () => this.trouble.recovered('audit'),
      (err: unknown) =>
        this.trouble.failed(
          'audit',
          err,
          `a history record could not be written: ${entry.reason ?? entry.to ?? ''}`,
        ),
    );
  }

  /**
   * Audit a change around it: "requested" before (an action that cannot be audited is not
   * taken), the outcome `done` only once it took effect, and a failure as a failure, so
   * history never shows as done what did not happen.
   */
  async around<T>(
    identity: string,
    actor: string,
    what: string,
    done: string,
    change: () => Promise<T>,
  ): Promise<T> {
    await this.action(identity, actor, `${what} requested`);
    let result: T;
    try {
      result = await change();
    } catch (err) {
      await this.action(identity, actor, `${what} failed: ${(err as Error).message}`).catch(() => undefined);
      throw err;
    }
    await this.action(identity, actor, done).catch((err: Error) =>
      this.trouble.failed(
        'audit',
        err,
        `${done}, but the history record of it could not be written`,
        identity,
      ),
    );
    return result;
  }
}

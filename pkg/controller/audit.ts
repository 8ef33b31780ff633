// The operator audit trail in etcd history (pkg/history): an action is recorded before it
// takes effect, so an action that cannot be audited is not taken, and it is recorded under
// the election term like every other controller write, so a deposed controller's refused
// action never shows in history. What happens on its own (workflow transitions, a fence
// applied later) is recorded best effort and a failure to record it is reported, not thrown.
import type { Etcd3 } from 'etcd3';
import { ApiError } from '../api/schema.js';
import type { Clock } from '../clock/index.js';
import { historyPut, recordHistory, type HistoryEntry } from '../history/index.js';
import type { Authority } from '../lease/admin.js';
import type { Cluster } from './cluster.js';
import { NotActiveError, type GuardedWriter } from './store.js';
import type { LoopTrouble } from './trouble.js';

export class Audit {
  constructor(
    private readonly etcd: Etcd3,
    /** This controller's name: the `node` of its entries. */
    private readonly name: string,
    private readonly clock: Clock,
    private readonly trouble: LoopTrouble,
    private readonly writer: GuardedWriter,
    private readonly cluster: Cluster,
  ) {}

  /**
   * Record an operator action before it takes effect, under `term`: `unavailable` when etcd
   * does not take it, `not-active` when the term ended (nothing was changed either way).
   */
  async action(
    term: Authority,
    identity: string,
    actor: string,
    reason: string,
    token?: string,
  ): Promise<void> {
    const entry: HistoryEntry = {
      identity,
      node: this.name,
      at: this.clock.wallMs(),
      kind: 'action',
      actor,
      reason,
      ...(token ? { token } : {}),
    };
    let written: boolean;
    try {
      written = await this.writer.write([historyPut(this.etcd, entry)], term);
    } catch (err) {
      throw new ApiError(
        'unavailable',
        `cannot write the audit record to etcd (${(err as Error).message}); nothing was changed`,
      );
    }
    if (!written) await this.cluster.refusal(new NotActiveError(`audit record '${reason}' not written`));
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
    term: Authority,
    identity: string,
    actor: string,
    what: string,
    done: string,
    change: () => Promise<T>,
  ): Promise<T> {
    await this.action(term, identity, actor, `${what} requested`);
    let result: T;
    try {
      result = await change();
    } catch (err) {
      await this.action(term, identity, actor, `${what} failed: ${(err as Error).message}`).catch(
        () => undefined,
      );
      throw err;
    }
    await this.action(term, identity, actor, done).catch((err: Error) =>
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

// One identity's state directory on this node (spec.state): while leading, snapshot it on a
// schedule, on demand and at a clean logout; while standing by, keep it at the newest snapshot;
// before logging in, catch up with any newer state another node left. One operation at a time,
// so a refresh never swaps the directory under a login, nor a snapshot under a restore.
import { mkdir } from 'node:fs/promises';
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { IdentityDriver } from '../identity/driver.js';
import { decideCatchUp, heldOf, readHeld, writeHeld, type HeldSnapshot } from '../snapshot/held.js';
import { recoverInterruptedSwap } from '../snapshot/restore.js';
import type { PublishOptions, SnapshotRecord, SnapshotStore } from '../snapshot/store.js';
import { stateDirFor, type ServiceState } from '../spec/schema.js';

/**
 * How long a service may take to say its state is consistent on disk (`snapshot-ready`).
 * Past it, it is copied as it runs and the manifest says so: a snapshot must not wait on a
 * service that cannot quiesce.
 */
export const QUIESCE_WAIT_MS = 5_000;

/**
 * Longest a clean logout waits for its snapshot. A switchover carries the newest state only
 * if the old leader publishes it before giving the key up; past this the handover goes on and
 * the successor starts from the last scheduled snapshot (the log says so).
 */
export const LOGOUT_SNAPSHOT_MAX_MS = 30_000;

/** What the keeper uses of the snapshot store (store.ts; tests give a fake). */
export type SnapshotPort = Pick<SnapshotStore, 'publish' | 'list' | 'restoreLatest'>;

export interface StateKeeperDeps {
  identity: string;
  node: string;
  store: SnapshotPort;
  log: Logger;
  clock: Clock;
  /** Who the restored directory belongs to (the service's user, when services run as one). */
  owner?: () => Promise<{ uid: number; gid: number } | undefined>;
}

export class StateKeeper {
  private state: ServiceState | undefined;
  private held: HeldSnapshot | undefined;
  private loadedFor: string | undefined;
  /** The term being led, while it is (no refresh then; scheduled snapshots instead). */
  private leading: { token: bigint; driver: () => IdentityDriver | undefined } | undefined;
  private queue: Promise<unknown> = Promise.resolve();
  private timer: (() => void) | undefined;
  private closed = false;
  /** The last scheduled or refresh failure, for the status and for logging once per change. */
  problem: string | undefined;

  constructor(private readonly deps: StateKeeperDeps) {}

  /** This node's state directory under `state`. */
  private dir(state: ServiceState): string {
    return stateDirFor(state, this.deps.node);
  }

  /** The snapshot this node's directory holds (for heartbeats: drift is judged on it). */
  get holding(): HeldSnapshot | undefined {
    return this.state ? this.held : undefined;
  }

  /** The spec's state section, new or changed (undefined: the identity keeps no state). */
  configure(state: ServiceState | undefined): void {
    // Every spec revision is a new object: an equal state section changes nothing, and the
    // armed timer (which checks it still serves the same section) keeps running.
    if (JSON.stringify(state) === JSON.stringify(this.state)) return;
    this.state = state;
    this.schedule();
    if (!state) return;
    // Say what the directory holds from the first heartbeat, and a standby catches up at once
    // rather than a refresh interval later (until then it is judged drifted).
    void this.serially(async () => {
      await this.load(state);
      if (!this.leading && this.state === state) await this.catchUp(state);
    }).then(
      () => this.report(undefined),
      (err: Error) => this.report(err.message),
    );
  }

  /**
   * A term of this node is about to log in: bring the directory to the newest state first.
   * Rejects when a newer state exists and cannot be restored: a service started on older state
   * would publish it as the newest under its higher token, and every node would then roll back
   * to it (a FIX session's sequence numbers going backwards). The term gives the key back and
   * another node, or this one a little later, tries again.
   */
  beginTerm(token: bigint, driver: () => IdentityDriver | undefined): Promise<string | undefined> {
    this.leading = { token, driver };
    this.schedule();
    return this.serially(async () => {
      const state = this.state;
      if (!state) return undefined;
      try {
        return await this.catchUp(state);
      } catch (err) {
        throw new Error(
          `the state directory ${this.dir(state)} could not be brought up to date before logging in (${(err as Error).message}); not logging in on older state. Check NATS JetStream and the snapshots (understudy snapshots ${this.deps.identity})`,
        );
      }
    });
  }

  /** The term is over (logged out or lost): back to refreshing as a standby. */
  endTerm(): void {
    this.leading = undefined;
    this.schedule();
  }

  /** Snapshot now under `token` (on demand, or at a clean logout with `quiesced` known). */
  snapshot(token: bigint, why: string, opts: { serviceStopped?: boolean } = {}): Promise<SnapshotRecord> {
    return this.serially(() => this.take(token, why, opts.serviceStopped ?? false));
  }

  /**
   * A clean logout: the service is stopped and the key still ours, so this copy is the
   * newest state there is. Waits at most `budgetMs` (what is left of the logout budget: a
   * drain must be confirmed, and an agent stop finished, within it) and LOGOUT_SNAPSHOT_MAX_MS;
   * past that the handover goes on, and the copy still lands if the key is still ours when it
   * is done (the store refuses it otherwise). Never rejects.
   */
  async atLogout(token: bigint, budgetMs: number): Promise<string | undefined> {
    if (!this.state) return undefined;
    const waitMs = Math.max(0, Math.min(budgetMs, LOGOUT_SNAPSHOT_MAX_MS));
    let timedOut = false;
    const taking = this.snapshot(token, 'clean logout', { serviceStopped: true }).then(
      (r) => `published ${r.object} at logout`,
      (err: Error) => `no snapshot at logout: ${err.message}`,
    );
    const timeout = new Promise<string>((resolve) => {
      const cancel = this.deps.clock.after(waitMs, () => {
        timedOut = true;
        resolve(
          `the snapshot at logout did not finish within the ${waitMs} ms left of the logout budget; handing over without waiting for it (the successor starts from the newest snapshot on record)`,
        );
      });
      void taking.finally(cancel);
    });
    const said = await Promise.race([taking, timeout]);
    this.deps.log[said.startsWith('published') ? 'info' : 'warn']({ token: String(token), timedOut }, said);
    return said;
  }

  close(): void {
    this.closed = true;
    this.timer?.();
    this.timer = undefined;
  }

  // ---- inside the queue -------------------------------------------------------------------

  private serially<T>(step: () => Promise<T>): Promise<T> {
    const next = this.queue.then(step, step);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private async load(state: ServiceState): Promise<void> {
    if (this.loadedFor === this.dir(state)) return;
    // An agent that died between the two renames of a restore left the directory aside.
    await recoverInterruptedSwap(this.dir(state));
    this.held = await readHeld(this.dir(state));
    this.loadedFor = this.dir(state);
  }

  private async catchUp(state: ServiceState): Promise<string> {
    await this.load(state);
    const { identity, store, log } = this.deps;
    const newest = (await store.list(identity))[0];
    const decision = decideCatchUp(this.held, newest);
    if (!decision.restore) return decision.reason;
    // Never below what the directory holds: an older snapshot would roll its state back.
    const owner = await this.deps.owner?.();
    const result = await store.restoreLatest(identity, this.dir(state), {
      ...(this.held ? { above: this.held } : {}),
      ...(owner ? { owner } : {}),
    });
    for (const r of result.refused) {
      log.error(
        { object: r.record.object, reason: r.reason },
        'snapshot refused; using the previous good one. Take a new snapshot (understudy snapshot) once the leader is healthy',
      );
    }
    this.held = heldOf(result.record, 'restored');
    await writeHeld(this.dir(state), this.held);
    const said = `${decision.reason}: restored ${result.record.object} (${result.manifest.entries.length} entries)`;
    log.info({ dir: this.dir(state), object: result.record.object, token: result.record.token }, said);
    return said;
  }

  private async take(token: bigint, why: string, serviceStopped: boolean): Promise<SnapshotRecord> {
    const state = this.state;
    if (!state) throw new Error(`${this.deps.identity} has no state directory in its spec (spec.state)`);
    await this.load(state);
    await mkdir(this.dir(state), { recursive: true, mode: 0o700 });
    const driver = serviceStopped ? undefined : this.leading?.driver();
    const release = driver?.quiesce ? await driver.quiesce(QUIESCE_WAIT_MS) : undefined;
    const options: PublishOptions = {
      identity: this.deps.identity,
      node: this.deps.node,
      token,
      dir: this.dir(state),
      quiesced: serviceStopped || release !== undefined,
      keep: state.keep,
      nowMs: this.deps.clock.wallMs(),
    };
    let record: SnapshotRecord;
    try {
      record = await this.deps.store.publish(options);
    } finally {
      release?.();
    }
    this.held = heldOf(record, 'published');
    await writeHeld(this.dir(state), this.held);
    this.deps.log.info(
      { object: record.object, files: record.files, bytes: record.bytes, quiesced: record.quiesced, why },
      'snapshot published',
    );
    return record;
  }

  // ---- timers -----------------------------------------------------------------------------

  /** (Re)arm the one timer: scheduled snapshots while leading, refreshes while standing by. */
  private schedule(): void {
    this.timer?.();
    this.timer = undefined;
    const state = this.state;
    if (!state || this.closed) return;
    const leading = this.leading;
    const every = leading ? state.snapshotEveryMs : state.refreshEveryMs;
    this.timer = this.deps.clock.after(every, () => {
      const step = leading
        ? this.serially(() => this.take(leading.token, 'schedule', false)).then(() => undefined)
        : this.serially(() => (this.leading ? Promise.resolve('') : this.catchUp(state))).then(
            () => undefined,
          );
      void step
        .then(() => this.report(undefined))
        .catch((err: Error) => this.report(err.message))
        .finally(() => {
          if (this.leading === leading && this.state === state) this.schedule();
        });
    });
  }

  private report(problem: string | undefined): void {
    if (problem === this.problem) return;
    this.problem = problem;
    if (problem) {
      this.deps.log.error(
        { problem },
        this.leading
          ? 'scheduled snapshot failed; standbys keep the previous one. Check NATS JetStream and the state directory'
          : 'could not refresh the state directory from the newest snapshot; it keeps what it holds',
      );
    } else {
      this.deps.log.info('snapshots working again');
    }
  }
}

// The maintenance handover's driver: read, decide, act, record, for one identity.
//
// Each round reads the cluster at one revision, captures this controller's election term (an
// Authority), asks step() (workflow-step.ts: the whole state machine, pure) what to do, has
// the effects it names performed under that term (workflow-effects.ts), and records the
// result in etcd. The record is guarded by the same term and by the workflow's revision, so
// two controllers never advance one workflow, and a write cannot land under a later term this
// controller won in the meantime. Each step is safe to run again: a controller that takes
// over mid-way reads the workflow and the leadership keys and carries on from there.
import type { Etcd3, IOperation } from 'etcd3';
import type { Logger } from 'pino';
import { TERMINAL_STATES, type Workflow } from '../api/schema.js';
import { systemClock, type Clock } from '../clock/index.js';
import type { HistoryEntry } from '../history/index.js';
import type { Authority } from '../lease/admin.js';
import type { AgentLink } from './agents.js';
import type { FenceAction } from './fencing.js';
import { isTermEnded, type ClusterSnapshot, type ControllerKeys, type GuardedWriter } from './store.js';
import type { ViewContext } from './view.js';
import { EffectRunner, leaseOperations, type WorkflowOperations } from './workflow-effects.js';
import { step, type Decision, type StepInput } from './workflow-step.js';

export type { SideEffect, WorkflowOperations } from './workflow-effects.js';

/**
 * How often a waiting workflow re-reads the cluster at the latest: handovers are measured in
 * hundreds of ms. It steps sooner when one of its identity's keys changes (ops.changed).
 */
const POLL_MS = 100;
/** After a failed read or step: etcd or an agent is in trouble; asking again at once would not help. */
const RETRY_MS = POLL_MS * 5;
/**
 * Decisions one round may take: each effect whose outcome a rule needs runs at most once a
 * round (the rule then decides again on it), and a round needs at most three (release,
 * undrain, record). Reaching this means a rule ignores the outcome it asked for.
 */
const MAX_DECISIONS_PER_ROUND = 8;

/**
 * Failpoint for tests of controller crashes (like etcd's gofail): with
 * UNDERSTUDY_FAILPOINT=workflow-stall:<state>, the controller stops advancing a workflow
 * right after persisting <state>, so a test can kill it in exactly that state.
 */
const STALL_IN = /^workflow-stall:(.+)$/.exec(process.env.UNDERSTUDY_FAILPOINT ?? '')?.[1];

export interface WorkflowContext {
  name: string;
  etcd: Etcd3;
  keys: ControllerKeys;
  writer: GuardedWriter;
  agents: AgentLink;
  logger: Logger;
  drainTimeoutMs: number;
  loginTimeoutMs: number;
  /** Drains name the target, for the old leader to hand the key over itself (config switchover.handOver). */
  handOver?: boolean;
  fence: FenceAction[];
  viewContext(snap: ClusterSnapshot): ViewContext;
  responders(identity: string, windowMs: number): Promise<Array<{ node: string; token: string }>>;
  history(entry: HistoryEntry): void;
  changed(workflow: Workflow): void;
  alarm(alarm: 'fence-command-failed', identity: string, node: string, message: string): void;
  finished(workflow: Workflow): void;
  isActive(): boolean;
  /** Time for the workflow's deadlines and records (default: the system clock). */
  clock?: Clock;
  /** Operations to use instead of pkg/lease and the agent link (tests; default: none). */
  operations?: Partial<WorkflowOperations>;
}

/** A decision to record, with the writes that land in the same txn and their undo. */
interface ToRecord {
  decision: Decision;
  writes: IOperation[];
  /** Hold-off leases granted this round for the record: released if its compare is lost. */
  undo: Array<{ lease: string }>;
}

/** Says a recurring condition once per change of its reason: a retry loop neither hides nor floods it. */
class OncePerReason {
  private last: string | undefined;
  say(reason: string, log: () => void): void {
    if (reason === this.last) return;
    this.last = reason;
    log();
  }
  clear(): void {
    this.last = undefined;
  }
}

/** Drive one identity's workflow until it is terminal or this controller stops being active. */
export class WorkflowDriver {
  private stopped = false;
  private readonly log: Logger;
  private readonly clock: Clock;
  private readonly ops: WorkflowOperations;
  private readonly effects: EffectRunner;
  private readonly readFailure = new OncePerReason();
  private readonly stepFailure = new OncePerReason();
  private readonly waiting = new OncePerReason();

  constructor(
    private readonly ctx: WorkflowContext,
    readonly identity: string,
  ) {
    this.log = ctx.logger.child({ identity, component: 'workflow' });
    this.clock = ctx.clock ?? systemClock;
    this.ops = { ...leaseOperations(ctx), ...ctx.operations };
    this.effects = new EffectRunner({
      identity,
      ops: this.ops,
      log: this.log,
      wallMs: () => this.clock.wallMs(),
      drainTimeoutMs: ctx.drainTimeoutMs,
      alarm: (node, message) => ctx.alarm('fence-command-failed', identity, node, message),
    });
  }

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    while (!this.stopped && this.ctx.isActive()) {
      let snap: ClusterSnapshot;
      try {
        snap = await this.ops.readSnapshot();
        this.readFailure.clear();
      } catch (err) {
        const message = (err as Error).message;
        this.readFailure.say(message, () =>
          this.log.warn({ err: message }, 'etcd read failed while driving a workflow; retrying'),
        );
        await this.clock.sleep(RETRY_MS);
        continue;
      }
      const entry = snap.workflows.get(this.identity);
      if (!entry || TERMINAL_STATES.has(entry.workflow.state)) return;
      const wf = entry.workflow;
      if (STALL_IN === wf.state) {
        this.log.warn({ state: STALL_IN }, 'failpoint: workflow stalled on purpose');
        await this.clock.sleep(POLL_MS * 10);
        continue;
      }
      let authority: Authority;
      let decided: ToRecord | undefined;
      try {
        authority = this.ctx.writer.authority();
        decided = await this.round(wf, snap, authority);
        this.stepFailure.clear();
      } catch (err) {
        const message = (err as Error).message;
        if (isTermEnded(err)) {
          this.log.warn(
            { err: message, state: wf.state, workflow: wf.id },
            'this controller is no longer the active one: it did not act and leaves the workflow to the active controller',
          );
          return;
        }
        this.stepFailure.say(`${wf.state}: ${message}`, () =>
          this.log.error({ err: message, state: wf.state }, 'workflow step failed; retrying'),
        );
        await this.clock.sleep(RETRY_MS);
        continue;
      }
      if (!decided) {
        await (this.ops.changed?.(POLL_MS) ?? this.clock.sleep(POLL_MS));
        continue;
      }
      await this.persist(wf, entry.revision, decided, authority);
    }
  }

  /**
   * Decide, and perform the effects decided, until a decision is to record or to wait. The
   * snapshot and `now` stay those of the round's start: every re-decision sees the same world
   * plus the outcomes of the effects performed since.
   */
  private async round(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
  ): Promise<ToRecord | undefined> {
    const input: StepInput = {
      identity: this.identity,
      view: this.ctx.viewContext(snap),
      now: this.clock.wallMs(),
      drainTimeoutMs: this.ctx.drainTimeoutMs,
      loginTimeoutMs: this.ctx.loginTimeoutMs,
      handOver: this.ctx.handOver ?? true,
      fenceCommands: this.ops.fenceCommands.length,
      done: {},
    };
    for (let i = 0; i < MAX_DECISIONS_PER_ROUND; i++) {
      const decision = step(wf, input);
      if (decision.next === 'wait') {
        this.waiting.say(decision.note, () =>
          this.log.info({ workflow: wf.id, state: wf.state, note: decision.note }, decision.note),
        );
        return undefined;
      }
      this.waiting.clear();
      if (decision.next === 'again' && decision.effects.every((e) => e.kind in input.done)) {
        throw new Error(`workflow rule at ${wf.state} asks again for what it already has: ${decision.note}`);
      }
      for (const effect of decision.effects) {
        if (effect.kind !== 'hold-off') await this.effects.perform(effect, authority, input.done);
      }
      if (decision.next === 'again') {
        this.log.debug({ workflow: wf.id, state: wf.state, note: decision.note }, decision.note);
        continue;
      }
      const { ops, undo } = this.effects.recordWrites(decision.effects);
      return { decision, writes: ops, undo };
    }
    throw new Error(
      `the workflow's decisions at ${wf.state} did not settle within ${MAX_DECISIONS_PER_ROUND}: a rule ignores the outcome it asked for`,
    );
  }

  private async persist(
    wf: Workflow,
    revision: bigint,
    decided: ToRecord,
    authority: Authority,
  ): Promise<void> {
    const nowMs = this.clock.wallMs();
    const now = new Date(nowMs).toISOString();
    const { decision, writes, undo } = decided;
    const note = decision.note;
    const next: Workflow = {
      ...wf,
      ...decision.change,
      state: decision.state,
      updatedAt: now,
      controller: this.ctx.name,
    };
    const moved = decision.state !== wf.state;
    if (moved) next.steps = [...wf.steps, { state: next.state, at: now, ...(note ? { note } : {}) }];
    let written: bigint | undefined;
    try {
      written = await this.ctx.writer.put(
        this.ctx.keys.workflow(this.identity),
        next,
        revision,
        writes,
        authority,
      );
    } catch (err) {
      // Unknown whether the txn committed: leave everything to the next read.
      this.log.warn({ err: (err as Error).message }, 'could not persist the workflow; re-reading');
      return;
    }
    if (written === undefined) {
      // A lost compare wrote nothing: undo what the step did outside the txn (a fresh
      // hold-off lease no workflow records), or the retried step would leave it behind.
      await this.undo(undo);
      this.log.info({ workflow: wf.id, state: wf.state }, 'the workflow changed meanwhile; re-reading');
      return;
    }
    if (moved) {
      this.log.info(
        { workflow: wf.id, kind: wf.kind, from: wf.state, to: next.state, note },
        `${wf.kind} of ${this.identity}: ${wf.state} → ${next.state}`,
      );
      const token = next.newToken ?? next.from?.token;
      this.ctx.history({
        identity: this.identity,
        node: this.ctx.name,
        at: nowMs,
        kind: 'action',
        from: wf.state,
        to: next.state,
        ...(token ? { token } : {}),
        reason: `${wf.kind} ${wf.id}${next.chosen ? ` to ${next.chosen}` : ''}${note ? `: ${note}` : ''}`,
        actor: wf.actor,
        durationMs: nowMs - Date.parse(wf.steps[wf.steps.length - 1]?.at ?? wf.createdAt),
      });
      if (TERMINAL_STATES.has(next.state)) this.ctx.finished(next);
    } else if (note) {
      this.log.info({ workflow: wf.id, state: wf.state, note }, note);
    }
    this.ctx.changed(next);
  }

  /** Release hold-off leases nothing records; one that cannot be released lapses at its TTL. */
  private async undo(leases: Array<{ lease: string }>): Promise<void> {
    for (const { lease } of leases) {
      await this.ops
        .releaseHoldOff(lease)
        .catch((err: Error) =>
          this.log.warn(
            { lease, err: err.message },
            `could not release hold-off lease ${lease} of a step that lost its compare; it lapses by itself by the workflow's deadline`,
          ),
        );
    }
  }
}

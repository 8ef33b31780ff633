// The maintenance handover, as a workflow persisted in etcd:
//
//   scheduled → requested → draining → logged-out → transferred → logged-in → done
//                   └──────────┴───────────┴──→ aborted (old leader keeps or regains the identity)
//
// Each state records what has been *achieved*, and each step is safe to run again: a
// controller that takes over mid-way reads the workflow and the leadership keys and carries
// on from there. Every write is guarded by the controller's election token and the
// workflow's revision, so two controllers never advance one workflow.
//
// A controller acts only under its own election term (the Authority from GuardedWriter):
// etcd writes compare the election key in the same txn, and what etcd cannot guard (a lease
// grant or revoke, a NATS request to an agent, a fence command) is preceded by a synchronous
// `mayAct()` check. A controller that froze, lost the election and resumed mid-step therefore
// does nothing more: the new active controller owns the workflow. A freeze between that check
// and the send is caught by the agent: every drain and undrain names the term it is sent under
// (the Authority captured when the step began), and the agent refuses a term that is not the
// current one (pkg/control/term.ts).
//
// Safety (S1, S3): the target is never logged in before the old leader is proved out — it
// confirmed its logout (drained: login=false with its token, and the key is then moved in one
// txn that checks it), or its lease was revoked and its self-fence deadline has passed (the
// target's own campaign waits that out too). The old node is held off the identity for the
// whole workflow, so it can never log back in by itself meanwhile.
import type { Etcd3, IOperation } from 'etcd3';
import type { Logger } from 'pino';
import { TERMINAL_STATES, type Workflow, type WorkflowState } from '../api/schema.js';
import type { HistoryEntry } from '../history/index.js';
import {
  grantHoldOffLease,
  holdOffPuts,
  LeaseOperationError,
  releaseHoldOff,
  revokeHolder,
  transfer,
  type Authority,
} from '../lease/admin.js';
import { AgentControlError, type AgentLink } from './agents.js';
import type { FenceAction } from './fencing.js';
import { drainHoldMs, rollbackStep } from './rollback.js';
import {
  NotActiveError,
  readSnapshot,
  type ClusterSnapshot,
  type ControllerKeys,
  type GuardedWriter,
} from './store.js';
import { agentAlive, bestTarget, identityKeys, unfitTarget, type ViewContext } from './view.js';

/** How often a running workflow re-reads etcd: handovers are measured in hundreds of ms. */
const POLL_MS = 100;
/** Margin added to a revoked holder's TTL before it counts as out (clock rate differences). */
const REVOKE_MARGIN_MS = 500;
/** PING window used to confirm the target answers after the transfer. */
const LOGIN_PROBE_WINDOW_MS = 200;
/** Control requests to agents (drain, undrain) are answered within this or treated as unanswered. */
const CONTROL_TIMEOUT_MS = 2_000;

/**
 * Failpoint for tests of controller crashes (like etcd's gofail): with
 * UNDERSTUDY_FAILPOINT=workflow-stall:<state>, the controller stops advancing a workflow
 * right after persisting <state>, so a test can kill it in exactly that state.
 */
const STALL_IN = /^workflow-stall:(.+)$/.exec(process.env.UNDERSTUDY_FAILPOINT ?? '')?.[1];

/** The controller's side effects, each guarded by its election term (and named by failpoints). */
export type SideEffect =
  'hold-off' | 'drain' | 'undrain' | 'revoke' | 'fence-command' | 'release' | 'transfer';

/**
 * Failpoint for tests of a controller frozen mid-step: with
 * UNDERSTUDY_FAILPOINT=workflow-hold-before:<effect>, the controller waits right before its
 * first <effect> (before the term check) until the process gets SIGCONT, so a test can
 * SIGSTOP it exactly there, let it lose its election, and resume it.
 */
const HOLD_BEFORE = /^workflow-hold-before:(.+)$/.exec(process.env.UNDERSTUDY_FAILPOINT ?? '')?.[1];
/**
 * Failpoint for the window the term check cannot close: with
 * UNDERSTUDY_FAILPOINT=workflow-hold-after-check:<effect>, the controller waits right *after*
 * its term check for <effect> (once), until SIGCONT. A controller resumed there acts on a
 * check that is no longer true; only the receiving side (the agent's term check) stops it.
 */
const HOLD_AFTER_CHECK = /^workflow-hold-after-check:(.+)$/.exec(process.env.UNDERSTUDY_FAILPOINT ?? '')?.[1];
let heldOnce = false;

export interface WorkflowContext {
  name: string;
  etcd: Etcd3;
  keys: ControllerKeys;
  writer: GuardedWriter;
  agents: AgentLink;
  logger: Logger;
  drainTimeoutMs: number;
  loginTimeoutMs: number;
  fence: FenceAction[];
  viewContext(snap: ClusterSnapshot): ViewContext;
  responders(identity: string, windowMs: number): Promise<Array<{ node: string; token: string }>>;
  history(entry: HistoryEntry): void;
  changed(workflow: Workflow): void;
  alarm(alarm: 'fence-command-failed', identity: string, node: string, message: string): void;
  finished(workflow: Workflow): void;
  isActive(): boolean;
}

type Update = Partial<Workflow> & {
  state?: WorkflowState;
  note?: string;
  /** etcd writes that take effect only together with this update (same txn). */
  effects?: IOperation[];
  /** Undo what the step did outside etcd's txn, when the update lost its compare. */
  lost?: () => Promise<void>;
};

/** A refusal to act because this controller's term ended: stop driving, do nothing more. */
function isTermEnded(err: unknown): boolean {
  return err instanceof NotActiveError || (err instanceof LeaseOperationError && err.code === 'no-authority');
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Drive one identity's workflow until it is terminal or this controller stops being active. */
export class WorkflowDriver {
  private stopped = false;
  private readonly log: Logger;

  constructor(
    private readonly ctx: WorkflowContext,
    readonly identity: string,
  ) {
    this.log = ctx.logger.child({ identity, component: 'workflow' });
  }

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    while (!this.stopped && this.ctx.isActive()) {
      let snap: ClusterSnapshot;
      try {
        snap = await readSnapshot(this.ctx.etcd, this.ctx.keys);
      } catch (err) {
        this.log.warn({ err: (err as Error).message }, 'etcd read failed while driving a workflow; retrying');
        await sleep(POLL_MS * 5);
        continue;
      }
      const entry = snap.workflows.get(this.identity);
      if (!entry || TERMINAL_STATES.has(entry.workflow.state)) return;
      if (STALL_IN === entry.workflow.state) {
        this.log.warn({ state: STALL_IN }, 'failpoint: workflow stalled on purpose');
        await sleep(POLL_MS * 10);
        continue;
      }
      let update: Update | undefined;
      try {
        update = await this.step(entry.workflow, snap, this.ctx.writer.authority());
      } catch (err) {
        if (isTermEnded(err)) {
          this.log.warn(
            { err: (err as Error).message, state: entry.workflow.state, workflow: entry.workflow.id },
            'this controller is no longer the active one: it did not act and leaves the workflow to the active controller',
          );
          return;
        }
        this.log.error(
          { err: (err as Error).message, state: entry.workflow.state },
          'workflow step failed; retrying',
        );
        await sleep(POLL_MS * 5);
        continue;
      }
      if (!update) {
        await sleep(POLL_MS);
        continue;
      }
      await this.persist(entry.workflow, entry.revision, update);
    }
  }

  private async persist(wf: Workflow, revision: bigint, update: Update): Promise<void> {
    const now = new Date().toISOString();
    const { note, effects, lost, ...fields } = update;
    const next: Workflow = { ...wf, ...fields, updatedAt: now, controller: this.ctx.name };
    const moved = update.state !== undefined && update.state !== wf.state;
    if (moved) next.steps = [...wf.steps, { state: next.state, at: now, ...(note ? { note } : {}) }];
    let written: bigint | undefined;
    try {
      written = await this.ctx.writer.put(this.ctx.keys.workflow(this.identity), next, revision, effects);
      // A lost compare wrote nothing: undo what the step did outside the txn (a fresh
      // hold-off lease no workflow records), or the retried step would leave it behind.
      if (written === undefined) await lost?.().catch(() => undefined);
    } catch (err) {
      // Unknown whether the txn committed: leave everything to the next read.
      this.log.warn({ err: (err as Error).message }, 'could not persist the workflow; re-reading');
      return;
    }
    if (written === undefined) {
      this.log.info({ workflow: wf.id, state: wf.state }, 'the workflow changed meanwhile; re-reading');
      return;
    }
    if (moved) {
      this.log.info(
        { workflow: wf.id, kind: wf.kind, from: wf.state, to: next.state, note },
        `${wf.kind} of ${this.identity}: ${wf.state} → ${next.state}`,
      );
      this.ctx.history({
        identity: this.identity,
        node: this.ctx.name,
        at: Date.now(),
        kind: 'action',
        from: wf.state,
        to: next.state,
        ...((next.newToken ?? next.from?.token) ? { token: next.newToken ?? next.from!.token } : {}),
        reason: `${wf.kind} ${wf.id}${next.chosen ? ` to ${next.chosen}` : ''}${note ? `: ${note}` : ''}`,
        actor: wf.actor,
        durationMs: Date.now() - Date.parse(wf.steps[wf.steps.length - 1]?.at ?? wf.createdAt),
      });
      if (TERMINAL_STATES.has(next.state)) this.ctx.finished(next);
    } else if (note) {
      this.log.info({ workflow: wf.id, state: wf.state, note }, note);
    }
    this.ctx.changed(next);
  }

  // --- the steps ----------------------------------------------------------------------------

  private async step(wf: Workflow, snap: ClusterSnapshot, authority: Authority): Promise<Update | undefined> {
    // An abort in progress: the old leader gets the identity back before anything else.
    if (wf.rollback) return this.rollBack(wf, snap, authority);
    switch (wf.state) {
      case 'scheduled':
        return this.scheduled(wf);
      case 'requested':
        return this.requested(wf, snap, authority);
      case 'draining':
        return this.draining(wf, snap, authority);
      case 'logged-out':
        return this.loggedOut(wf, snap, authority);
      case 'transferred':
        return this.transferred(wf, snap, authority);
      case 'logged-in':
        if (wf.kind !== 'node-fence') await this.release(wf, authority);
        return {
          state: 'done',
          outcome: `${wf.chosen} logged in as ${this.identity} with token ${wf.newToken} in ${
            Date.now() - Date.parse(wf.steps.find((s) => s.state === 'requested')?.at ?? wf.createdAt)
          } ms`,
        };
      default:
        return undefined;
    }
  }

  private scheduled(wf: Workflow): Update | undefined {
    if (wf.cancelRequested)
      return { state: 'aborted', outcome: `cancelled by ${wf.cancelRequested.actor} before it started` };
    if (Date.now() < Date.parse(wf.at!)) return undefined;
    return { state: 'requested', note: 'scheduled time reached' };
  }

  private async requested(wf: Workflow, snap: ClusterSnapshot, authority: Authority): Promise<Update> {
    if (wf.cancelRequested)
      return this.abort(wf, snap, authority, `cancelled by ${wf.cancelRequested.actor}`);
    if (Date.now() > Date.parse(wf.deadline))
      return this.abort(wf, snap, authority, 'deadline passed before it started');
    const view = this.ctx.viewContext(snap);
    const leader = identityKeys(snap, this.identity).leader;
    if (!leader && wf.kind !== 'failover') {
      return this.abort(
        wf,
        snap,
        authority,
        `${this.identity} has no leader to move; it fails over by itself`,
      );
    }
    if (leader && wf.from && String(leader.token) !== wf.from.token) {
      return this.abort(
        wf,
        snap,
        authority,
        `the leader changed (now ${leader.record.node}, token ${leader.token}) before it started`,
      );
    }
    const from = leader ? { node: leader.record.node, token: String(leader.token) } : undefined;
    const chosen = wf.target ?? bestTarget(view, this.identity, from ? [from.node] : []);
    if (!chosen) return this.abort(wf, snap, authority, `no healthy standby can take ${this.identity} over`);
    const unfit = unfitTarget(view, this.identity, chosen);
    if (unfit) return this.abort(wf, snap, authority, unfit);
    // A forced failover holds off everyone but the target: only it may campaign once the
    // old term ends. A switchover holds off only the old leader.
    const nodes =
      wf.kind === 'failover'
        ? [
            ...new Set([
              ...identityKeys(snap, this.identity).candidates.keys(),
              ...(from ? [from.node] : []),
            ]),
          ].filter((n) => n !== chosen)
        : [from!.node];
    await this.failpoint('hold-off');
    const lease = await grantHoldOffLease(this.ctx.etcd, {
      ttlMs: Date.parse(wf.deadline) - Date.now(),
      authority,
    });
    return {
      state: 'draining',
      chosen,
      ...(from ? { from } : {}),
      holdOff: { lease, nodes },
      note: `${nodes.join(', ')} held off ${this.identity}; target ${chosen}`,
      // The hold-off keys are written with the step that records their lease, and the lease
      // is revoked if that step loses its compare: a retry never leaves one behind.
      effects: holdOffPuts(this.ctx.etcd, {
        identity: this.identity,
        nodes,
        record: { reason: `${wf.kind} to ${chosen}`, actor: wf.actor, at: Date.now(), workflow: wf.id },
        leaseId: lease,
        keys: this.ctx.keys.lease,
      }),
      lost: () => releaseHoldOff(this.ctx.etcd, lease),
    };
  }

  private async draining(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
  ): Promise<Update | undefined> {
    const keys = identityKeys(snap, this.identity);
    const leader = keys.leader;
    const now = Date.now();
    const past = now > Date.parse(wf.deadline);
    if (leader && leader.token === BigInt(wf.from?.token ?? -1)) {
      if (keys.login?.loggedIn === false) {
        return {
          state: 'logged-out',
          note: `${leader.record.node} confirmed its logout (term ${leader.token})`,
        };
      }
      if (wf.cancelRequested)
        return this.abort(wf, snap, authority, `cancelled by ${wf.cancelRequested.actor}`);
      if (past)
        return this.abort(wf, snap, authority, `${leader.record.node} did not log out before the deadline`);
      if (!wf.escalation.includes('drain')) {
        if (
          !agentAlive(this.ctx.viewContext(snap), leader.record.node) &&
          (wf.kind === 'failover' || wf.kind === 'probe-failover')
        ) {
          // A forced move does not wait for an agent that cannot hear the request.
          return this.revoke(wf, snap, authority, `${leader.record.node}'s agent sends no heartbeats`);
        }
        await this.sendDrain(wf, leader.record.node, authority);
        return {
          escalation: [...wf.escalation, 'drain'],
          drainSentAt: new Date(now).toISOString(),
          note: `asked ${leader.record.node} to log out`,
        };
      }
      const drainAge = now - Date.parse(wf.drainSentAt ?? wf.updatedAt);
      if (!wf.escalation.includes('revoke') && drainAge > this.ctx.drainTimeoutMs) {
        return this.revoke(
          wf,
          snap,
          authority,
          `${leader.record.node} did not confirm its logout within ${this.ctx.drainTimeoutMs} ms`,
        );
      }
      return undefined;
    }
    if (!leader && wf.kind === 'failover' && !wf.from) {
      return { state: 'logged-out', note: 'no leader: the target may campaign' };
    }
    if (wf.revoked) {
      if (!wf.escalation.includes('fence-command') && this.ctx.fence.length > 0) {
        return this.runFence(wf, authority);
      }
      if (now < Date.parse(wf.revoked.until)) {
        return wf.escalation.includes('self-fence-wait')
          ? undefined
          : {
              escalation: [...wf.escalation, 'self-fence-wait'],
              note: `waiting out ${wf.from?.node}'s self-fence deadline (${wf.revoked.until})`,
            };
      }
      return {
        state: 'logged-out',
        note: `${wf.from?.node} is out: lease revoked and its self-fence deadline passed`,
      };
    }
    // The old term ended without us (the agent died, or a failover): the holder's own
    // deadline is what the successor waits out; the workflow cannot restore it.
    if (leader && leader.record.node === wf.chosen) {
      return {
        state: 'transferred',
        newToken: String(leader.token),
        note: `${wf.chosen} took the key on its own`,
      };
    }
    if (!leader) {
      if (past)
        return this.abort(
          wf,
          snap,
          authority,
          'the old term ended on its own and no one took the key before the deadline',
        );
      return undefined;
    }
    return this.abort(
      wf,
      snap,
      authority,
      `the old term ended on its own; ${leader.record.node} leads now (token ${leader.token})`,
    );
  }

  private async loggedOut(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
  ): Promise<Update | undefined> {
    const keys = identityKeys(snap, this.identity);
    const leader = keys.leader;
    if (leader && leader.record.node === wf.chosen && String(leader.token) !== wf.from?.token) {
      return {
        state: 'transferred',
        newToken: String(leader.token),
        note: `the key is on ${wf.chosen} (token ${leader.token})`,
      };
    }
    const past = Date.now() > Date.parse(wf.deadline);
    if (wf.revoked || !wf.from) {
      // The key is free: the held-off nodes stay out, so the target's campaign takes it.
      if (leader)
        return this.abort(wf, snap, authority, `${leader.record.node} took the key instead of ${wf.chosen}`);
      if (past)
        return this.abort(wf, snap, authority, `${wf.chosen} did not take the key before the deadline`);
      return undefined;
    }
    if (!leader || String(leader.token) !== wf.from.token) {
      return this.abort(wf, snap, authority, 'the leader changed underneath the handover');
    }
    if (wf.cancelRequested)
      return this.abort(wf, snap, authority, `cancelled by ${wf.cancelRequested.actor}`);
    if (past) return this.abort(wf, snap, authority, 'deadline passed before the transfer');
    await this.failpoint('transfer');
    try {
      const token = await transfer(this.ctx.etcd, {
        identity: this.identity,
        target: wf.chosen!,
        expectToken: leader.token,
        actor: wf.actor,
        keys: this.ctx.keys.lease,
        authority,
      });
      return {
        state: 'transferred',
        newToken: String(token),
        note: `key moved to ${wf.chosen} (token ${token})`,
      };
    } catch (err) {
      if (err instanceof LeaseOperationError && err.code === 'changed') return undefined;
      if (err instanceof LeaseOperationError && err.code !== 'no-authority')
        return this.abort(wf, snap, authority, err.message);
      throw err;
    }
  }

  private async transferred(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
  ): Promise<Update | undefined> {
    const keys = identityKeys(snap, this.identity);
    const leader = keys.leader;
    const loginDeadline = Math.min(
      Date.parse(wf.deadline),
      Date.parse(wf.steps.findLast((s) => s.state === 'transferred')?.at ?? wf.updatedAt) +
        this.ctx.loginTimeoutMs,
    );
    if (!leader || String(leader.token) !== wf.newToken) {
      return this.abort(
        wf,
        snap,
        authority,
        `${wf.chosen} lost the key (token ${wf.newToken}) before it logged in`,
      );
    }
    if (keys.login?.loggedIn === true) {
      const responders = await this.ctx.responders(this.identity, LOGIN_PROBE_WINDOW_MS);
      if (
        responders.length === 1 &&
        responders[0]!.node === wf.chosen &&
        responders[0]!.token === wf.newToken
      ) {
        return { state: 'logged-in', note: `${wf.chosen} answers PING with token ${wf.newToken}` };
      }
    }
    if (Date.now() > loginDeadline) {
      return this.abort(
        wf,
        snap,
        authority,
        `${wf.chosen} did not answer as ${this.identity} in time; it fails over by itself`,
      );
    }
    return undefined;
  }

  // --- escalation and rollback ----------------------------------------------------------------

  /**
   * Wait here when the failpoint names `effect` (once per process), then refuse unless this
   * controller still holds the term the step started under: called synchronously right before
   * every side effect etcd cannot guard in a txn.
   */
  private async guardEffect(effect: SideEffect, authority: Authority): Promise<void> {
    await this.failpoint(effect);
    if (!authority.mayAct()) throw new NotActiveError(`${effect} of ${this.identity} not done`);
    await this.failpoint(effect, 'after the term check');
  }

  private async failpoint(effect: SideEffect, where?: 'after the term check'): Promise<void> {
    if ((where ? HOLD_AFTER_CHECK : HOLD_BEFORE) !== effect || heldOnce) return;
    heldOnce = true;
    const at = where ? `${where} for` : 'before';
    this.log.warn({ effect }, `failpoint: holding ${at} ${effect} until SIGCONT`);
    await new Promise((resolve) => process.once('SIGCONT', resolve));
  }

  /**
   * Ask the old leader to log out and keep its key for the transfer. Not awaited: the login
   * record is what the workflow watches; the reply is only logged.
   */
  private async sendDrain(wf: Workflow, node: string, authority: Authority): Promise<void> {
    const holdMs = drainHoldMs(Date.parse(wf.deadline), Date.now());
    await this.guardEffect('drain', authority);
    this.ctx.agents
      .drain(
        node,
        authority.revision,
        { identity: this.identity, actor: wf.actor, holdMs, reason: `${wf.kind} ${wf.id}` },
        this.ctx.drainTimeoutMs,
      )
      .then(
        () => this.log.info({ node }, `${node} drained ${this.identity}`),
        (err: Error) =>
          err instanceof AgentControlError && err.code === 'stale-controller'
            ? this.log.warn(
                { node, err: err.message, term: authority.revision },
                'the agent refused the drain: this controller no longer holds the term it was sent under',
              )
            : this.log.warn(
                { node, err: err.message },
                'drain not confirmed by the agent; the workflow watches the login record',
              ),
      );
  }

  /** Force the old leader out: hold off everyone but the target, then revoke its lease. */
  private async revoke(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
    why: string,
  ): Promise<Update> {
    const keys = identityKeys(snap, this.identity);
    const leader = keys.leader!;
    const others = [...keys.candidates.keys()].filter(
      (n) => n !== wf.chosen && !wf.holdOff?.nodes.includes(n),
    );
    await this.failpoint('revoke');
    if (others.length > 0 && wf.holdOff) {
      // Same lease as the first hold-off: released together. Guarded by this controller's term.
      const held = await this.ctx.writer.write(
        holdOffPuts(this.ctx.etcd, {
          identity: this.identity,
          nodes: others,
          record: { reason: `${wf.kind} to ${wf.chosen}`, actor: wf.actor, at: Date.now(), workflow: wf.id },
          leaseId: wf.holdOff.lease,
          keys: this.ctx.keys.lease,
        }),
      );
      if (!held) throw new NotActiveError(`hold-off of ${others.join(', ')} not written`);
    }
    const at = Date.now();
    const revoked = await revokeHolder(this.ctx.etcd, {
      identity: this.identity,
      expectToken: leader.token,
      actor: wf.actor,
      keys: this.ctx.keys.lease,
      authority,
    }).catch((err: Error) => {
      // Gone or changed meanwhile: the next round sees how the term ended. Waiting out the
      // holder's deadline anyway (below) is only ever too careful.
      if (!(err instanceof LeaseOperationError) || err.code === 'no-authority') throw err;
      this.log.warn(
        { err: err.message, node: wf.from?.node },
        'revocation not done: the term ended or changed first; waiting out its deadline anyway',
      );
      return err;
    });
    const alsoEnded = revoked instanceof Error ? [] : revoked.ended.filter((id) => id !== this.identity);
    return {
      escalation: [...wf.escalation, 'revoke'],
      revoked: {
        at: new Date(at).toISOString(),
        until: new Date(at + leader.record.ttlMs + REVOKE_MARGIN_MS).toISOString(),
      },
      ...(wf.holdOff
        ? { holdOff: { lease: wf.holdOff.lease, nodes: [...wf.holdOff.nodes, ...others] } }
        : {}),
      note:
        revoked instanceof Error
          ? `${why}: nothing revoked (${revoked.message}); waiting out its deadline anyway`
          : `${why}: revoked its lease${alsoEnded.length > 0 ? ` (which also ended its terms of ${alsoEnded.join(', ')}; their successors wait out its deadline)` : ''}`,
    };
  }

  private async runFence(wf: Workflow, authority: Authority): Promise<Update> {
    const target = { node: wf.from!.node, identity: this.identity, token: wf.from!.token };
    const results = [];
    for (const action of this.ctx.fence) {
      await this.guardEffect('fence-command', authority);
      results.push(await action(target));
    }
    for (const r of results.filter((r) => !r.ok))
      this.ctx.alarm('fence-command-failed', this.identity, target.node, r.detail);
    return { escalation: [...wf.escalation, 'fence-command'], note: results.map((r) => r.detail).join('; ') };
  }

  private async release(wf: Workflow, authority: Authority): Promise<void> {
    if (!wf.holdOff) return;
    await this.failpoint('release');
    await releaseHoldOff(this.ctx.etcd, wf.holdOff.lease, authority);
  }

  /**
   * Roll back: release the hold-off, then give the identity back to the old leader if it
   * still holds its term. Past the transfer there is nothing to restore: the identity is left
   * to ordinary failover, which the released hold-off allows.
   */
  private async abort(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
    why: string,
  ): Promise<Update> {
    await this.release(wf, authority);
    const rollback = { reason: why, since: new Date().toISOString() };
    const next = await this.rollBack({ ...wf, rollback }, snap, authority);
    return next ?? { rollback, note: `${why}: giving ${this.identity} back to ${wf.from?.node}` };
  }

  /**
   * One round of giving the identity back (see rollback.ts): undrain the old leader once its
   * drain is recorded, wait while a drain may still complete, finish when nothing is left to
   * give back. The workflow stays open until then, so a drain that completes after the cancel
   * is undone at once instead of holding the identity logged out until its hold expires.
   */
  private async rollBack(
    wf: Workflow,
    snap: ClusterSnapshot,
    authority: Authority,
  ): Promise<Update | undefined> {
    const why = wf.rollback!.reason;
    const keys = identityKeys(snap, this.identity);
    const finish = (outcome: string): Update => ({
      rollback: wf.rollback!,
      state: 'aborted',
      outcome: `${why}; ${outcome}`,
      note: `${why}; ${outcome}`,
    });
    if (!wf.from) return finish('nothing to give back');
    const drainSentAt = wf.escalation.includes('drain')
      ? Date.parse(wf.drainSentAt ?? wf.updatedAt)
      : undefined;
    const beat = this.ctx
      .viewContext(snap)
      .agents.get(wf.from.node)
      ?.heartbeat.identities.find((i) => i.identity === this.identity && i.token === wf.from!.token);
    const decision = rollbackStep({
      identity: this.identity,
      from: wf.from,
      leaderToken: keys.leader ? String(keys.leader.token) : undefined,
      loggedIn: keys.login?.loggedIn,
      agentState: beat?.state,
      drainSentAt,
      drainTimeoutMs: this.ctx.drainTimeoutMs,
      holdEndsAt:
        (drainSentAt ?? Date.now()) + drainHoldMs(Date.parse(wf.deadline), drainSentAt ?? Date.now()),
      now: Date.now(),
    });
    if (decision.kind === 'done') return finish(decision.outcome);
    if (decision.kind === 'wait') {
      this.log.debug({ why: decision.why }, 'rolling back: waiting for the drain to settle');
      return undefined;
    }
    await this.guardEffect('undrain', authority);
    try {
      await this.ctx.agents.undrain(
        wf.from.node,
        authority.revision,
        { identity: this.identity, actor: wf.actor },
        CONTROL_TIMEOUT_MS,
      );
    } catch (err) {
      // Not drained yet (the record is a step ahead of the agent's state), or no answer: the
      // next round asks again, until the hold ends by itself.
      this.log.info(
        { node: wf.from.node, err: (err as Error).message },
        'rolling back: the old leader did not take the undrain yet; asking again',
      );
      return undefined;
    }
    return finish(`rolled back: ${wf.from.node} logs back in`);
  }
}

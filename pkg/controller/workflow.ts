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
// Safety (S1, S3): the target is never logged in before the old leader is proved out — it
// confirmed its logout (drained: login=false with its token, and the key is then moved in one
// txn that checks it), or its lease was revoked and its self-fence deadline has passed (the
// target's own campaign waits that out too). The old node is held off the identity for the
// whole workflow, so it can never log back in by itself meanwhile.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { TERMINAL_STATES, type Workflow, type WorkflowState } from '../api/schema.js';
import type { HistoryEntry } from '../history/index.js';
import { within } from '../lease/etcd.js';
import { holdOff, LeaseOperationError, releaseHoldOff, revokeHolder, transfer } from '../lease/index.js';
import type { AgentLink } from './agents.js';
import type { FenceAction } from './fencing.js';
import { readSnapshot, type ClusterSnapshot, type ControllerKeys, type GuardedWriter } from './store.js';
import { agentAlive, bestTarget, identityKeys, unfitTarget, type ViewContext } from './view.js';

/** How often a running workflow re-reads etcd: handovers are measured in hundreds of ms. */
const POLL_MS = 100;
/**
 * The old leader's drain hold outlasts the hold-off by this much: if no controller ever
 * comes back, the hold-off lapses first and the old leader then logs back in (rollback).
 */
const HOLD_AFTER_HOLD_OFF_MS = 1_500;
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

type Update = Partial<Workflow> & { state?: WorkflowState; note?: string };

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
        update = await this.step(entry.workflow, snap);
      } catch (err) {
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
    const { note, ...fields } = update;
    const next: Workflow = { ...wf, ...fields, updatedAt: now, controller: this.ctx.name };
    const moved = update.state !== undefined && update.state !== wf.state;
    if (moved) next.steps = [...wf.steps, { state: next.state, at: now, ...(note ? { note } : {}) }];
    const written = await this.ctx.writer
      .put(this.ctx.keys.workflow(this.identity), next, revision)
      .catch((err: Error) => {
        this.log.warn({ err: err.message }, 'could not persist the workflow; re-reading');
        return undefined;
      });
    if (written === undefined) return;
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

  private async step(wf: Workflow, snap: ClusterSnapshot): Promise<Update | undefined> {
    switch (wf.state) {
      case 'scheduled':
        return this.scheduled(wf);
      case 'requested':
        return this.requested(wf, snap);
      case 'draining':
        return this.draining(wf, snap);
      case 'logged-out':
        return this.loggedOut(wf, snap);
      case 'transferred':
        return this.transferred(wf, snap);
      case 'logged-in':
        if (wf.kind !== 'node-fence') await this.release(wf);
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

  private async requested(wf: Workflow, snap: ClusterSnapshot): Promise<Update> {
    if (wf.cancelRequested) return this.abort(wf, snap, `cancelled by ${wf.cancelRequested.actor}`);
    if (Date.now() > Date.parse(wf.deadline))
      return this.abort(wf, snap, 'deadline passed before it started');
    const view = this.ctx.viewContext(snap);
    const leader = identityKeys(snap, this.identity).leader;
    if (!leader && wf.kind !== 'failover') {
      return this.abort(wf, snap, `${this.identity} has no leader to move; it fails over by itself`);
    }
    if (leader && wf.from && String(leader.token) !== wf.from.token) {
      return this.abort(
        wf,
        snap,
        `the leader changed (now ${leader.record.node}, token ${leader.token}) before it started`,
      );
    }
    const from = leader ? { node: leader.record.node, token: String(leader.token) } : undefined;
    const chosen = wf.target ?? bestTarget(view, this.identity, from ? [from.node] : []);
    if (!chosen) return this.abort(wf, snap, `no healthy standby can take ${this.identity} over`);
    const unfit = unfitTarget(view, this.identity, chosen);
    if (unfit) return this.abort(wf, snap, unfit);
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
    const lease = await holdOff(this.ctx.etcd, {
      identity: this.identity,
      nodes,
      ttlMs: Date.parse(wf.deadline) - Date.now(),
      record: { reason: `${wf.kind} to ${chosen}`, actor: wf.actor, at: Date.now(), workflow: wf.id },
      keys: this.ctx.keys.lease,
    });
    return {
      state: 'draining',
      chosen,
      ...(from ? { from } : {}),
      holdOff: { lease, nodes },
      note: `${nodes.join(', ')} held off ${this.identity}; target ${chosen}`,
    };
  }

  private async draining(wf: Workflow, snap: ClusterSnapshot): Promise<Update | undefined> {
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
      if (wf.cancelRequested) return this.abort(wf, snap, `cancelled by ${wf.cancelRequested.actor}`);
      if (past) return this.abort(wf, snap, `${leader.record.node} did not log out before the deadline`);
      if (!wf.escalation.includes('drain')) {
        if (
          !agentAlive(this.ctx.viewContext(snap), leader.record.node) &&
          (wf.kind === 'failover' || wf.kind === 'probe-failover')
        ) {
          // A forced move does not wait for an agent that cannot hear the request.
          return this.revoke(wf, snap, `${leader.record.node}'s agent sends no heartbeats`);
        }
        this.sendDrain(wf, leader.record.node);
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
        return this.runFence(wf);
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
          'the old term ended on its own and no one took the key before the deadline',
        );
      return undefined;
    }
    return this.abort(
      wf,
      snap,
      `the old term ended on its own; ${leader.record.node} leads now (token ${leader.token})`,
    );
  }

  private async loggedOut(wf: Workflow, snap: ClusterSnapshot): Promise<Update | undefined> {
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
      if (leader) return this.abort(wf, snap, `${leader.record.node} took the key instead of ${wf.chosen}`);
      if (past) return this.abort(wf, snap, `${wf.chosen} did not take the key before the deadline`);
      return undefined;
    }
    if (!leader || String(leader.token) !== wf.from.token) {
      return this.abort(wf, snap, 'the leader changed underneath the handover');
    }
    if (wf.cancelRequested) return this.abort(wf, snap, `cancelled by ${wf.cancelRequested.actor}`);
    if (past) return this.abort(wf, snap, 'deadline passed before the transfer');
    try {
      const token = await transfer(this.ctx.etcd, {
        identity: this.identity,
        target: wf.chosen!,
        expectToken: leader.token,
        actor: wf.actor,
        keys: this.ctx.keys.lease,
      });
      return {
        state: 'transferred',
        newToken: String(token),
        note: `key moved to ${wf.chosen} (token ${token})`,
      };
    } catch (err) {
      if (err instanceof LeaseOperationError && err.code === 'changed') return undefined;
      if (err instanceof LeaseOperationError) return this.abort(wf, snap, err.message);
      throw err;
    }
  }

  private async transferred(wf: Workflow, snap: ClusterSnapshot): Promise<Update | undefined> {
    const keys = identityKeys(snap, this.identity);
    const leader = keys.leader;
    const loginDeadline = Math.min(
      Date.parse(wf.deadline),
      Date.parse(wf.steps.findLast((s) => s.state === 'transferred')?.at ?? wf.updatedAt) +
        this.ctx.loginTimeoutMs,
    );
    if (!leader || String(leader.token) !== wf.newToken) {
      return this.abort(wf, snap, `${wf.chosen} lost the key (token ${wf.newToken}) before it logged in`);
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
        `${wf.chosen} did not answer as ${this.identity} in time; it fails over by itself`,
      );
    }
    return undefined;
  }

  // --- escalation and rollback ----------------------------------------------------------------

  private sendDrain(wf: Workflow, node: string): void {
    const holdMs = Math.max(
      100,
      Math.ceil((Date.parse(wf.deadline) - Date.now()) / 1000) * 1000 + HOLD_AFTER_HOLD_OFF_MS,
    );
    this.ctx.agents
      .drain(
        node,
        {
          identity: this.identity,
          actor: wf.actor,
          holdMs: Math.min(holdMs, 3_600_000),
          reason: `${wf.kind} ${wf.id}`,
        },
        this.ctx.drainTimeoutMs,
      )
      .then(
        () => this.log.info({ node }, `${node} drained ${this.identity}`),
        (err: Error) =>
          this.log.warn(
            { node, err: err.message },
            'drain not confirmed by the agent; the workflow watches the login record',
          ),
      );
  }

  /** Force the old leader out: hold off everyone but the target, then revoke its lease. */
  private async revoke(wf: Workflow, snap: ClusterSnapshot, why: string): Promise<Update> {
    const keys = identityKeys(snap, this.identity);
    const leader = keys.leader!;
    const others = [...keys.candidates.keys()].filter(
      (n) => n !== wf.chosen && !wf.holdOff?.nodes.includes(n),
    );
    if (others.length > 0 && wf.holdOff) {
      // Same lease as the first hold-off: released together.
      await this.ctx.etcd
        .if(this.ctx.keys.lease.leader(this.identity), 'Create', '>', -1)
        .then(
          ...others.map((n) =>
            this.ctx.etcd
              .put(this.ctx.keys.lease.holdOff(this.identity, n))
              .value(
                JSON.stringify({
                  reason: `${wf.kind} to ${wf.chosen}`,
                  actor: wf.actor,
                  at: Date.now(),
                  workflow: wf.id,
                }),
              )
              .lease(wf.holdOff!.lease),
          ),
        )
        .options(within(2_000))
        .commit();
    }
    const at = Date.now();
    await revokeHolder(this.ctx.etcd, {
      identity: this.identity,
      expectToken: leader.token,
      actor: wf.actor,
      keys: this.ctx.keys.lease,
    }).catch((err: Error) => {
      if (!(err instanceof LeaseOperationError)) throw err;
    });
    return {
      escalation: [...wf.escalation, 'revoke'],
      revoked: {
        at: new Date(at).toISOString(),
        until: new Date(at + leader.record.ttlMs + REVOKE_MARGIN_MS).toISOString(),
      },
      ...(wf.holdOff
        ? { holdOff: { lease: wf.holdOff.lease, nodes: [...wf.holdOff.nodes, ...others] } }
        : {}),
      note: `${why}: revoked its lease`,
    };
  }

  private async runFence(wf: Workflow): Promise<Update> {
    const target = { node: wf.from!.node, identity: this.identity, token: wf.from!.token };
    const results = [];
    for (const action of this.ctx.fence) results.push(await action(target));
    for (const r of results.filter((r) => !r.ok))
      this.ctx.alarm('fence-command-failed', this.identity, target.node, r.detail);
    return { escalation: [...wf.escalation, 'fence-command'], note: results.map((r) => r.detail).join('; ') };
  }

  private async release(wf: Workflow): Promise<void> {
    if (wf.holdOff) await releaseHoldOff(this.ctx.etcd, wf.holdOff.lease);
  }

  /**
   * Roll back: release the hold-off, and if the old leader still holds its drained term, ask
   * it to log back in. Past the transfer there is nothing to restore: the identity is left to
   * ordinary failover, which the released hold-off allows.
   */
  private async abort(wf: Workflow, snap: ClusterSnapshot, why: string): Promise<Update> {
    await this.release(wf);
    const keys = identityKeys(snap, this.identity);
    let outcome = why;
    if (wf.from && keys.leader && String(keys.leader.token) === wf.from.token) {
      if (keys.login?.loggedIn === false) {
        try {
          await this.ctx.agents.undrain(
            wf.from.node,
            { identity: this.identity, actor: wf.actor },
            CONTROL_TIMEOUT_MS,
          );
          outcome = `${why}; rolled back: ${wf.from.node} logs back in`;
        } catch (err) {
          outcome = `${why}; ${wf.from.node} was asked to log back in but did not confirm (${(err as Error).message}); its drain hold expires by itself`;
        }
      } else {
        outcome = `${why}; ${wf.from.node} stays leader`;
      }
    }
    return { state: 'aborted', outcome, note: outcome };
  }
}

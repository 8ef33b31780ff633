// The handover workflow's decisions, as one pure function (table-tested in
// test/unit/workflow-step.test.ts):
//
//   scheduled → requested → draining → logged-out → transferred → logged-in → done
//                   │          └───────────────────↗ (the old leader handed the key over itself)
//                   └──────────┴───────────┴──→ aborted (old leader keeps or regains the identity)
//
// step(workflow, input) reads the workflow, the cluster as one snapshot showed it, the time
// (`now`, read once by the driver) and what the effects asked for earlier in this round
// returned (`done`), and decides the state, a reason sentence and the effects to perform. It
// does no I/O and reads no clock; workflow-effects.ts performs the effects, workflow.ts
// persists the result.
//
// Every state records what has been *achieved*, and each step is safe to run again: a
// controller that takes over mid-way reads the workflow and carries on from there.
//
// Safety (S1, S3): the target is never logged in before the old leader is proved out — it
// confirmed its logout (drained: login=false with its token, and the key is then moved in one
// txn that checks it; or it moved the key itself in the txn that confirms it), or its lease
// was revoked and its self-fence deadline has passed. The
// old node is held off the identity for the whole workflow, so it cannot log back in by itself.
//
// Time: every deadline here (the workflow's deadline, the drain and login timeouts, a revoked
// holder's `until`) is a wall-clock timestamp stored in the workflow, because the standby
// controller that may resume the workflow must read the same deadline. `now` is wall time.
import { TERMINAL_STATES, type Workflow, type WorkflowState } from '../api/schema.js';
import type { HoldOffRecord } from '../lease/keys.js';
import type { FenceOutcome, FenceTarget } from './fencing.js';
import { drainHoldMs, rollbackStep } from './rollback.js';
import { agentAlive, bestTarget, identityKeys, unfitTarget, type ViewContext } from './view.js';

/**
 * Margin added to a revoked holder's TTL before it counts as out: the holder's clock may run
 * slower than ours, and its last keepalive may have been answered just before the revoke.
 */
export const REVOKE_MARGIN_MS = 500;
/** PING window used to confirm the target answers after the transfer. */
export const LOGIN_PROBE_WINDOW_MS = 200;

/** What a workflow's step may do outside its own record. */
export type Effect =
  /** Grant the lease a hold-off's keys will share (outcome: its id). */
  | { kind: 'grant-hold-off'; ttlMs: number }
  /** Hold `nodes` off under `lease`, written in the txn that records the step (undone if it loses). */
  | { kind: 'hold-off'; lease: string; nodes: string[]; record: HoldOffRecord }
  /**
   * Ask the old leader to log out and keep its key, or hand it to `to` as it logs out (not
   * awaited: the login record, or the key on `to`, tells).
   */
  | {
      kind: 'drain';
      node: string;
      actor: string;
      holdMs: number;
      reason: string;
      /** The target, for the old leader to hand the key to, under `workflow`'s hold-off. */
      to?: string;
      workflow?: string;
    }
  /** Hold `extendHoldOff` off too, then revoke the holder's lease (outcome: RevokeOutcome). */
  | {
      kind: 'revoke';
      expectToken: string;
      actor: string;
      extendHoldOff?: { lease: string; nodes: string[]; record: HoldOffRecord };
    }
  /** Run the configured fence commands against the old leader (outcome: their results). */
  | { kind: 'fence-commands'; target: FenceTarget }
  /** Raise the operator alarm for a fence command that failed. */
  | { kind: 'alarm'; node: string; message: string }
  /** Move the key to the target in one checked txn (outcome: TransferOutcome). */
  | { kind: 'transfer'; target: string; expectToken: string; actor: string }
  /** Collect the identity's PING answers (outcome: who answered, with which token). */
  | { kind: 'probe-login'; windowMs: number }
  /** Revoke the hold-off lease: the held-off nodes may campaign and log in again. */
  | { kind: 'release-hold-off'; lease: string }
  /** Ask the drained old leader to log back in (outcome: UndrainOutcome). */
  | { kind: 'undrain'; node: string; actor: string };

export type RevokeOutcome =
  | { at: number; ended: string[] }
  /** Gone or changed before the revoke: the next round sees how the term ended. */
  | { at: number; notDone: string };
export type TransferOutcome = { token: string } | { changed: true } | { refused: string };
export type UndrainOutcome = { ok: true } | { ok: false; why: string };

/** What the effects done earlier in this round returned (each kind at most once a round). */
export interface Outcomes {
  'grant-hold-off'?: string;
  revoke?: RevokeOutcome;
  'fence-commands'?: FenceOutcome[];
  transfer?: TransferOutcome;
  'probe-login'?: Array<{ node: string; token: string }>;
  'release-hold-off'?: true;
  undrain?: UndrainOutcome;
}

export interface StepInput {
  identity: string;
  /** The snapshot (view.snap) and the agents' heartbeats: target choice and liveness. */
  view: ViewContext;
  /** Wall-clock ms, read once at the start of the round. */
  now: number;
  drainTimeoutMs: number;
  loginTimeoutMs: number;
  /** Drains name the target: the old leader moves the key itself as it logs out. */
  handOver: boolean;
  /** How many fence commands are configured (0: the escalation skips them). */
  fenceCommands: number;
  done: Outcomes;
}

/** Fields of the workflow a step may change. */
export type WorkflowChange = Partial<
  Pick<
    Workflow,
    | 'chosen'
    | 'from'
    | 'holdOff'
    | 'escalation'
    | 'drainSentAt'
    | 'revoked'
    | 'newToken'
    | 'outcome'
    | 'rollback'
  >
>;

/**
 * One round's decision: the state after it (the same one when it stays), why, and the effects.
 * `next` says what follows them: 'record' writes `change` (with the state) to etcd; 'again'
 * decides again with the effects' outcomes in `done`; 'wait' writes nothing and reads again.
 */
export interface Decision {
  state: WorkflowState;
  note: string;
  effects: Effect[];
  next: 'record' | 'again' | 'wait';
  change?: WorkflowChange;
}

const wait = (wf: Workflow, note: string): Decision => ({ state: wf.state, note, effects: [], next: 'wait' });
const act = (wf: Workflow, note: string, effect: Effect): Decision => ({
  state: wf.state,
  note,
  effects: [effect],
  next: 'again',
});
const record = (
  state: WorkflowState,
  note: string,
  change: WorkflowChange = {},
  effects: Effect[] = [],
): Decision => ({ state, note, effects, next: 'record', change });
const iso = (ms: number) => new Date(ms).toISOString();

export function step(wf: Workflow, input: StepInput): Decision {
  if (TERMINAL_STATES.has(wf.state)) return wait(wf, `the ${wf.kind} is ${wf.state}: nothing left to do`);
  // An abort in progress: the old leader gets the identity back before anything else.
  if (wf.rollback) return giveBack(wf, input);
  switch (wf.state) {
    case 'scheduled':
      return scheduled(wf, input);
    case 'requested':
      return requested(wf, input);
    case 'draining':
      return draining(wf, input);
    case 'logged-out':
      return loggedOut(wf, input);
    case 'transferred':
      return transferred(wf, input);
    case 'logged-in':
      return loggedIn(wf, input);
    default:
      return wait(wf, `the ${wf.kind} is ${wf.state}: nothing left to do`);
  }
}

function scheduled(wf: Workflow, { now }: StepInput): Decision {
  if (wf.cancelRequested) {
    const outcome = `cancelled by ${wf.cancelRequested.actor} before it started`;
    return record('aborted', outcome, { outcome });
  }
  if (now < Date.parse(wf.at!)) return wait(wf, `waiting for its scheduled time (${wf.at})`);
  return record('requested', 'scheduled time reached');
}

function requested(wf: Workflow, input: StepInput): Decision {
  const { identity, now, view } = input;
  if (wf.cancelRequested) return abort(wf, input, `cancelled by ${wf.cancelRequested.actor}`);
  if (now > Date.parse(wf.deadline)) return abort(wf, input, 'deadline passed before it started');
  const keys = identityKeys(view.snap, identity);
  const leader = keys.leader;
  if (!leader && wf.kind !== 'failover')
    return abort(wf, input, `${identity} has no leader to move; it fails over by itself`);
  if (leader && wf.from && String(leader.token) !== wf.from.token) {
    return abort(
      wf,
      input,
      `the leader changed (now ${leader.record.node}, token ${leader.token}) before it started`,
    );
  }
  const from = leader ? { node: leader.record.node, token: String(leader.token) } : undefined;
  const chosen = wf.target ?? bestTarget(view, identity, from ? [from.node] : []);
  if (!chosen) return abort(wf, input, `no healthy standby can take ${identity} over`);
  const unfit = unfitTarget(view, identity, chosen);
  if (unfit) return abort(wf, input, unfit);
  // A forced failover holds off everyone but the target: only it may campaign once the old
  // term ends. A switchover holds off only the old leader.
  const nodes =
    wf.kind === 'failover'
      ? [...new Set([...keys.candidates.keys(), ...(from ? [from.node] : [])])].filter((n) => n !== chosen)
      : [from!.node];
  const lease = input.done['grant-hold-off'];
  if (lease === undefined) {
    return act(wf, `holding ${nodes.join(', ')} off ${identity}`, {
      kind: 'grant-hold-off',
      ttlMs: Date.parse(wf.deadline) - now,
    });
  }
  // The hold-off keys are written with the step that records their lease, and the lease is
  // revoked if that step loses its compare: a retry never leaves one behind.
  return record(
    'draining',
    `${nodes.join(', ')} held off ${identity}; target ${chosen}`,
    { chosen, ...(from ? { from } : {}), holdOff: { lease, nodes } },
    [{ kind: 'hold-off', lease, nodes, record: holdOffRecord(wf, chosen, now) }],
  );
}

function holdOffRecord(wf: Workflow, chosen: string | undefined, now: number): HoldOffRecord {
  return { reason: `${wf.kind} to ${chosen}`, actor: wf.actor, at: now, workflow: wf.id };
}

function draining(wf: Workflow, input: StepInput): Decision {
  const { identity, now, view } = input;
  const keys = identityKeys(view.snap, identity);
  const leader = keys.leader;
  const past = now > Date.parse(wf.deadline);
  if (leader && leader.token === BigInt(wf.from?.token ?? -1)) {
    const node = leader.record.node;
    if (keys.login?.loggedIn === false)
      return record('logged-out', `${node} confirmed its logout (term ${leader.token})`);
    if (wf.cancelRequested) return abort(wf, input, `cancelled by ${wf.cancelRequested.actor}`);
    if (past) return abort(wf, input, `${node} did not log out before the deadline`);
    if (!wf.escalation.includes('drain')) {
      if (!agentAlive(view, node) && (wf.kind === 'failover' || wf.kind === 'probe-failover')) {
        // A forced move does not wait for an agent that cannot hear the request.
        return revoke(wf, input, `${node}'s agent sends no heartbeats`);
      }
      return record(
        wf.state,
        `asked ${node} to log out`,
        { escalation: [...wf.escalation, 'drain'], drainSentAt: iso(now) },
        [
          {
            kind: 'drain',
            node,
            actor: wf.actor,
            holdMs: drainHoldMs(Date.parse(wf.deadline), now),
            reason: `${wf.kind} ${wf.id}`,
            // The old leader moves the key itself once its service is out: no round of ours
            // between its logout and the target's login. It still checks what transfer does.
            ...(input.handOver && wf.chosen ? { to: wf.chosen, workflow: wf.id } : {}),
          },
        ],
      );
    }
    const drainAge = now - Date.parse(wf.drainSentAt ?? wf.updatedAt);
    if (!wf.escalation.includes('revoke') && drainAge > input.drainTimeoutMs) {
      return revoke(wf, input, `${node} did not confirm its logout within ${input.drainTimeoutMs} ms`);
    }
    return wait(wf, `waiting for ${node} to confirm its logout`);
  }
  if (!leader && wf.kind === 'failover' && !wf.from)
    return record('logged-out', 'no leader: the target may campaign');
  // Handed over as it logged out: done with proof, even if a revocation raced it (which
  // then found nothing to revoke), so no fence command runs against a node that left cleanly.
  const handedOver =
    leader?.record.node === wf.chosen &&
    keys.termEnd?.how === 'transferred' &&
    keys.termEnd.token === wf.from?.token;
  if (handedOver) {
    return record(
      'transferred',
      `${wf.from?.node} logged out and handed the key to ${wf.chosen} (token ${leader!.token})`,
      { newToken: String(leader!.token) },
    );
  }
  if (wf.revoked) {
    if (!wf.escalation.includes('fence-command') && input.fenceCommands > 0) return runFence(wf, input);
    if (now < Date.parse(wf.revoked.until)) {
      const note = `waiting out ${wf.from?.node}'s self-fence deadline (${wf.revoked.until})`;
      return wf.escalation.includes('self-fence-wait')
        ? wait(wf, note)
        : record(wf.state, note, { escalation: [...wf.escalation, 'self-fence-wait'] });
    }
    return record('logged-out', `${wf.from?.node} is out: lease revoked and its self-fence deadline passed`);
  }
  // The old term ended without us (the agent died, or a failover): the holder's own deadline
  // is what the successor waits out; the workflow cannot restore it.
  if (leader && leader.record.node === wf.chosen) {
    return record('transferred', `${wf.chosen} took the key on its own`, { newToken: String(leader.token) });
  }
  if (!leader) {
    if (past) {
      return abort(wf, input, 'the old term ended on its own and no one took the key before the deadline');
    }
    return wait(wf, `the old term ended on its own; waiting for ${wf.chosen} to take the key`);
  }
  return abort(
    wf,
    input,
    `the old term ended on its own; ${leader.record.node} leads now (token ${leader.token})`,
  );
}

function loggedOut(wf: Workflow, input: StepInput): Decision {
  const { identity, now, view } = input;
  const leader = identityKeys(view.snap, identity).leader;
  if (leader && leader.record.node === wf.chosen && String(leader.token) !== wf.from?.token) {
    return record('transferred', `the key is on ${wf.chosen} (token ${leader.token})`, {
      newToken: String(leader.token),
    });
  }
  const past = now > Date.parse(wf.deadline);
  if (wf.revoked || !wf.from) {
    // The key is free: the held-off nodes stay out, so the target's campaign takes it.
    if (leader) return abort(wf, input, `${leader.record.node} took the key instead of ${wf.chosen}`);
    if (past) return abort(wf, input, `${wf.chosen} did not take the key before the deadline`);
    return wait(wf, `the key is free; waiting for ${wf.chosen}'s campaign to take it`);
  }
  if (!leader || String(leader.token) !== wf.from.token)
    return abort(wf, input, 'the leader changed underneath the handover');
  if (wf.cancelRequested) return abort(wf, input, `cancelled by ${wf.cancelRequested.actor}`);
  if (past) return abort(wf, input, 'deadline passed before the transfer');
  const moved = input.done.transfer;
  if (!moved) {
    return act(wf, `moving the key to ${wf.chosen}`, {
      kind: 'transfer',
      target: wf.chosen!,
      expectToken: wf.from.token,
      actor: wf.actor,
    });
  }
  if ('token' in moved) {
    return record('transferred', `key moved to ${wf.chosen} (token ${moved.token})`, {
      newToken: moved.token,
    });
  }
  if ('changed' in moved) return wait(wf, 'the leadership keys changed during the transfer; reading again');
  return abort(wf, input, moved.refused);
}

function transferred(wf: Workflow, input: StepInput): Decision {
  const { identity, now, view } = input;
  const keys = identityKeys(view.snap, identity);
  const leader = keys.leader;
  const transferredAt = Date.parse(wf.steps.findLast((s) => s.state === 'transferred')?.at ?? wf.updatedAt);
  const loginDeadline = Math.min(Date.parse(wf.deadline), transferredAt + input.loginTimeoutMs);
  if (!leader || String(leader.token) !== wf.newToken)
    return abort(wf, input, `${wf.chosen} lost the key (token ${wf.newToken}) before it logged in`);
  if (keys.login?.loggedIn === true) {
    const responders = input.done['probe-login'];
    if (!responders) {
      return act(wf, `${wf.chosen} says it logged in; asking who answers as ${identity}`, {
        kind: 'probe-login',
        windowMs: LOGIN_PROBE_WINDOW_MS,
      });
    }
    const only = responders.length === 1 ? responders[0] : undefined;
    if (only && only.node === wf.chosen && only.token === wf.newToken)
      return record('logged-in', `${wf.chosen} answers PING with token ${wf.newToken}`);
  }
  if (now > loginDeadline)
    return abort(wf, input, `${wf.chosen} did not answer as ${identity} in time; it fails over by itself`);
  return wait(wf, `waiting for ${wf.chosen} to log in as ${identity} with token ${wf.newToken}`);
}

function loggedIn(wf: Workflow, { identity, now }: StepInput): Decision {
  const requestedAt = Date.parse(wf.steps.find((s) => s.state === 'requested')?.at ?? wf.createdAt);
  const outcome = `${wf.chosen} logged in as ${identity} with token ${wf.newToken} in ${now - requestedAt} ms`;
  // A node-fence workflow keeps its node held off: it is being fenced for maintenance.
  const release: Effect[] =
    wf.kind !== 'node-fence' && wf.holdOff ? [{ kind: 'release-hold-off', lease: wf.holdOff.lease }] : [];
  return record('done', outcome, { outcome }, release);
}

// --- escalation and rollback ----------------------------------------------------------------

/** Force the old leader out: hold off everyone but the target, then revoke its lease. */
function revoke(wf: Workflow, input: StepInput, why: string): Decision {
  const keys = identityKeys(input.view.snap, input.identity);
  const leader = keys.leader!;
  const others = [...keys.candidates.keys()].filter((n) => n !== wf.chosen && !wf.holdOff?.nodes.includes(n));
  const revoked = input.done.revoke;
  if (!revoked) {
    return act(wf, `${why}: revoking ${leader.record.node}'s lease`, {
      kind: 'revoke',
      expectToken: String(leader.token),
      actor: wf.actor,
      // Same lease as the first hold-off: released together.
      ...(others.length > 0 && wf.holdOff
        ? {
            extendHoldOff: {
              lease: wf.holdOff.lease,
              nodes: others,
              record: holdOffRecord(wf, wf.chosen, input.now),
            },
          }
        : {}),
    });
  }
  let note: string;
  if ('notDone' in revoked) {
    note = `${why}: nothing revoked (${revoked.notDone}); waiting out its deadline anyway`;
  } else {
    const also = revoked.ended.filter((id) => id !== input.identity);
    note = `${why}: revoked its lease${also.length > 0 ? ` (which also ended its terms of ${also.join(', ')}; their successors wait out its deadline)` : ''}`;
  }
  return record(wf.state, note, {
    escalation: [...wf.escalation, 'revoke'],
    // Waiting out the holder's deadline even when nothing was revoked is only ever too careful.
    revoked: { at: iso(revoked.at), until: iso(revoked.at + leader.record.ttlMs + REVOKE_MARGIN_MS) },
    ...(wf.holdOff ? { holdOff: { lease: wf.holdOff.lease, nodes: [...wf.holdOff.nodes, ...others] } } : {}),
  });
}

function runFence(wf: Workflow, input: StepInput): Decision {
  const target = { node: wf.from!.node, identity: input.identity, token: wf.from!.token };
  const results = input.done['fence-commands'];
  if (!results)
    return act(wf, `running the fence commands against ${target.node}`, { kind: 'fence-commands', target });
  const alarms: Effect[] = results
    .filter((r) => !r.ok)
    .map((r) => ({ kind: 'alarm', node: target.node, message: r.detail }));
  return record(
    wf.state,
    results.map((r) => r.detail).join('; '),
    { escalation: [...wf.escalation, 'fence-command'] },
    alarms,
  );
}

/**
 * Roll back: release the hold-off, then give the identity back to the old leader if it still
 * holds its term. Past the transfer there is nothing to restore: the identity is left to
 * ordinary failover, which the released hold-off allows.
 */
function abort(wf: Workflow, input: StepInput, why: string): Decision {
  if (wf.holdOff && !input.done['release-hold-off']) {
    return act(wf, `${why}: releasing the hold-off`, { kind: 'release-hold-off', lease: wf.holdOff.lease });
  }
  const rollback = { reason: why, since: iso(input.now) };
  const next = giveBack({ ...wf, rollback }, input);
  if (next.next !== 'wait') return next;
  return record(wf.state, `${why}: giving ${input.identity} back to ${wf.from?.node}`, { rollback });
}

/**
 * One round of giving the identity back (rollback.ts): undrain the old leader once its drain
 * is recorded, wait while a drain may still complete, finish when nothing is left to give
 * back. The workflow stays open until then, so a drain that completes after the cancel is
 * undone at once instead of holding the identity logged out until its hold expires.
 */
function giveBack(wf: Workflow, input: StepInput): Decision {
  const { identity, now, view } = input;
  const why = wf.rollback!.reason;
  const finish = (outcome: string) =>
    record('aborted', `${why}; ${outcome}`, { rollback: wf.rollback!, outcome: `${why}; ${outcome}` });
  if (!wf.from) return finish('nothing to give back');
  const from = wf.from;
  const keys = identityKeys(view.snap, identity);
  const drainSentAt = wf.escalation.includes('drain')
    ? Date.parse(wf.drainSentAt ?? wf.updatedAt)
    : undefined;
  const beat = view.agents
    .get(from.node)
    ?.heartbeat.identities.find((i) => i.identity === identity && i.token === from.token);
  const decision = rollbackStep({
    identity,
    from,
    leaderToken: keys.leader ? String(keys.leader.token) : undefined,
    loggedIn: keys.login?.loggedIn,
    agentState: beat?.state,
    drainSentAt,
    drainTimeoutMs: input.drainTimeoutMs,
    holdEndsAt: (drainSentAt ?? now) + drainHoldMs(Date.parse(wf.deadline), drainSentAt ?? now),
    now,
  });
  if (decision.kind === 'done') return finish(decision.outcome);
  if (decision.kind === 'wait')
    return wait(wf, `rolling back: waiting for the drain to settle (${decision.why})`);
  const undrained = input.done.undrain;
  if (!undrained) {
    return act(wf, `rolling back: asking ${from.node} to log back in`, {
      kind: 'undrain',
      node: from.node,
      actor: wf.actor,
    });
  }
  if (undrained.ok) return finish(`rolled back: ${from.node} logs back in`);
  // Not drained yet (the record is a step ahead of the agent's state), or no answer: the next
  // round asks again, until the hold ends by itself.
  return wait(wf, `rolling back: ${from.node} did not take the undrain yet; asking again`);
}

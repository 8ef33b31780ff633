// Performing what a workflow step decided (workflow-step.ts) through injected operations:
// production binds them to pkg/lease (etcd) and the agent link (NATS); tests bind fakes.
//
// A controller acts only under the election term captured when its step began (an Authority
// from GuardedWriter): the lease operations compare the election key in their own txn, and what
// etcd cannot guard (a lease grant or revoke, a request to an agent, a fence command) is
// preceded by a synchronous `mayAct()` check (guardEffect). A controller that froze, lost the
// election and resumed mid-step therefore does nothing more. A freeze between that check and
// the send is caught by the agent: every drain and undrain names the term it is sent under,
// and the agent refuses a term that is not the current one (pkg/control/term.ts).
import type { Etcd3, IOperation } from 'etcd3';
import type { Logger } from 'pino';
import { LeaseOperationError, revokeHolder, transfer, type Authority } from '../lease/admin.js';
import { extendHoldOff, grantHoldOffLease, holdOffPuts, releaseHoldOff } from '../lease/holdoff.js';
import type { HoldOffRecord } from '../lease/keys.js';
import { AgentControlError, type AgentLink } from './agents.js';
import type { FenceAction } from './fencing.js';
import { NotActiveError, readSnapshot, type ClusterSnapshot, type ControllerKeys } from './store.js';
import type { Effect, Outcomes, RevokeOutcome, TransferOutcome, UndrainOutcome } from './workflow-step.js';

/** Control requests to agents (undrain) are answered within this or treated as unanswered. */
const CONTROL_TIMEOUT_MS = 2_000;

/** The controller's side effects, each guarded by its election term (and named by failpoints). */
export type SideEffect =
  'hold-off' | 'drain' | 'undrain' | 'revoke' | 'fence-command' | 'release' | 'transfer';

/** What the workflow does to leases, agents and nodes: injected, so the driver is testable. */
export interface WorkflowOperations {
  /** The whole cluster at one revision (what each round decides on). */
  readSnapshot(): Promise<ClusterSnapshot>;
  /**
   * Wait until the identity's keys change or `withinMs` passes (the driver's poll while it
   * waits); without it, the driver sleeps `withinMs` on its clock.
   */
  changed?(withinMs: number): Promise<unknown>;
  grantHoldOff(ttlMs: number, authority: Authority): Promise<string>;
  /** The hold-off writes, for the txn that records the step (validates the record). */
  holdOffWrites(identity: string, nodes: string[], record: HoldOffRecord, lease: string): IOperation[];
  extendHoldOff(
    identity: string,
    nodes: string[],
    record: HoldOffRecord,
    lease: string,
    authority: Authority,
  ): Promise<void>;
  /** Without `authority`: undoing a lease of our own that nothing records. */
  releaseHoldOff(lease: string, authority?: Authority): Promise<void>;
  revokeHolder(
    identity: string,
    expectToken: bigint,
    actor: string,
    authority: Authority,
  ): Promise<{ ended: string[] }>;
  transfer(
    identity: string,
    target: string,
    expectToken: bigint,
    actor: string,
    authority: Authority,
  ): Promise<bigint>;
  drain: AgentLink['drain'];
  undrain: AgentLink['undrain'];
  fenceCommands: readonly FenceAction[];
  responders(identity: string, windowMs: number): Promise<Array<{ node: string; token: string }>>;
}

/** The production operations: pkg/lease against etcd, the agents over NATS, the configured fences. */
export function leaseOperations(deps: {
  etcd: Etcd3;
  keys: ControllerKeys;
  agents: AgentLink;
  fence: readonly FenceAction[];
  responders: WorkflowOperations['responders'];
}): WorkflowOperations {
  const { etcd, keys } = deps;
  return {
    readSnapshot: () => readSnapshot(etcd, keys),
    grantHoldOff: (ttlMs, authority) => grantHoldOffLease(etcd, { ttlMs, authority }),
    holdOffWrites: (identity, nodes, record, leaseId) =>
      holdOffPuts(etcd, { identity, nodes, record, leaseId, keys: keys.lease }),
    extendHoldOff: (identity, nodes, record, leaseId, authority) =>
      extendHoldOff(etcd, { identity, nodes, record, leaseId, authority, keys: keys.lease }),
    releaseHoldOff: (lease, authority) => releaseHoldOff(etcd, lease, authority),
    revokeHolder: (identity, expectToken, actor, authority) =>
      revokeHolder(etcd, { identity, expectToken, actor, authority, keys: keys.lease }),
    transfer: (identity, target, expectToken, actor, authority) =>
      transfer(etcd, { identity, target, expectToken, actor, authority, keys: keys.lease }),
    drain: (...args) => deps.agents.drain(...args),
    undrain: (...args) => deps.agents.undrain(...args),
    fenceCommands: deps.fence,
    responders: deps.responders,
  };
}

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

export interface EffectDeps {
  identity: string;
  ops: WorkflowOperations;
  log: Logger;
  /** Wall-clock ms: when a revocation was sent is recorded for other controllers to read. */
  wallMs(): number;
  drainTimeoutMs: number;
  alarm(node: string, message: string): void;
}

/** Performs one workflow's effects, each under the term its step captured. */
export class EffectRunner {
  constructor(private readonly d: EffectDeps) {}

  /** Perform `effect` under `authority`; what it returns for the next decision goes into `done`. */
  async perform(effect: Effect, authority: Authority, done: Outcomes): Promise<void> {
    const { identity, ops } = this.d;
    switch (effect.kind) {
      case 'grant-hold-off':
        await this.guard('hold-off', authority);
        done['grant-hold-off'] = await ops.grantHoldOff(effect.ttlMs, authority);
        return;
      case 'hold-off':
        throw new Error('a hold-off is written with the step that records it (recordWrites), not on its own');
      case 'drain':
        return this.drain(effect, authority);
      case 'revoke':
        done.revoke = await this.revoke(effect, authority);
        return;
      case 'fence-commands': {
        const results = [];
        for (const action of ops.fenceCommands) {
          await this.guard('fence-command', authority);
          results.push(await action(effect.target));
        }
        done['fence-commands'] = results;
        return;
      }
      case 'alarm':
        this.d.alarm(effect.node, effect.message);
        return;
      case 'transfer':
        done.transfer = await this.transfer(effect, authority);
        return;
      case 'probe-login':
        done['probe-login'] = await ops.responders(identity, effect.windowMs);
        return;
      case 'release-hold-off':
        await this.guard('release', authority);
        await ops.releaseHoldOff(effect.lease, authority);
        done['release-hold-off'] = true;
        return;
      case 'undrain':
        done.undrain = await this.undrain(effect, authority);
        return;
    }
  }

  /**
   * The etcd writes that land only with the step's record (same txn), and the undo for when
   * that txn loses its compare: the fresh hold-off lease no workflow records is released.
   */
  recordWrites(effects: Effect[]): { ops: IOperation[]; undo: Array<{ lease: string }> } {
    const out: { ops: IOperation[]; undo: Array<{ lease: string }> } = { ops: [], undo: [] };
    for (const e of effects) {
      if (e.kind !== 'hold-off') continue;
      out.ops.push(...this.d.ops.holdOffWrites(this.d.identity, e.nodes, e.record, e.lease));
      out.undo.push({ lease: e.lease });
    }
    return out;
  }

  /**
   * Wait here when the failpoint names `effect` (once per process), then refuse unless this
   * controller still holds the term the step started under: called right before every side
   * effect etcd cannot guard in a txn.
   */
  private async guard(effect: SideEffect, authority: Authority): Promise<void> {
    await this.failpoint(effect);
    if (!authority.mayAct()) throw new NotActiveError(`${effect} of ${this.d.identity} not done`);
    await this.failpoint(effect, 'after the term check');
  }

  private async failpoint(effect: SideEffect, where?: 'after the term check'): Promise<void> {
    if ((where ? HOLD_AFTER_CHECK : HOLD_BEFORE) !== effect || heldOnce) return;
    heldOnce = true;
    const at = where ? `${where} for` : 'before';
    // Listen before telling: a test SIGSTOPs on seeing the line, and a SIGCONT that comes
    // before the listener is consumed by the default action (continue) and never seen.
    const resumed = new Promise((resolve) => process.once('SIGCONT', resolve));
    this.d.log.warn({ effect }, `failpoint: holding ${at} ${effect} until SIGCONT`);
    await resumed;
  }

  /** Not awaited: the login record is what the workflow watches; the reply is only logged. */
  private async drain(effect: Extract<Effect, { kind: 'drain' }>, authority: Authority): Promise<void> {
    const { node } = effect;
    await this.guard('drain', authority);
    const req = {
      identity: this.d.identity,
      actor: effect.actor,
      holdMs: effect.holdMs,
      reason: effect.reason,
      ...(effect.to ? { to: effect.to, workflow: effect.workflow } : {}),
    };
    this.d.ops.drain(node, authority.revision, req, this.d.drainTimeoutMs).then(
      () => this.d.log.info({ node }, `${node} drained ${this.d.identity}`),
      (err: Error) => {
        const code = err instanceof AgentControlError ? err.code : undefined;
        const fields = { node, err: err.message, term: authority.revision };
        if (code === 'stale-controller') {
          this.d.log.warn(
            fields,
            'the agent refused the drain: this controller no longer holds the term it was sent under',
          );
        } else if (code === 'unauthenticated') {
          // A deposed controller's key goes with its session: the agent refuses it as unknown
          // before it compares the term. Or the agent pins keys and this one is not among them.
          this.d.log.warn(
            fields,
            "the agent refused the drain as not signed by the active controller: this controller was deposed, or the agent's controllerKeys do not list its key",
          );
        } else {
          this.d.log.warn(
            { node, err: err.message },
            'drain not confirmed by the agent; the workflow watches the login record',
          );
        }
      },
    );
  }

  private async revoke(
    effect: Extract<Effect, { kind: 'revoke' }>,
    authority: Authority,
  ): Promise<RevokeOutcome> {
    const { identity, ops } = this.d;
    await this.guard('revoke', authority);
    const more = effect.extendHoldOff;
    if (more) await ops.extendHoldOff(identity, more.nodes, more.record, more.lease, authority);
    // Read right before the revoke: the holder is out by this plus its TTL, not by the round's start.
    const at = this.d.wallMs();
    try {
      const { ended } = await ops.revokeHolder(identity, BigInt(effect.expectToken), effect.actor, authority);
      return { at, ended };
    } catch (err) {
      // Gone or changed meanwhile: the next round sees how the term ended.
      if (!(err instanceof LeaseOperationError) || err.code === 'no-authority') throw err;
      this.d.log.warn(
        { err: err.message, token: effect.expectToken },
        'revocation not done: the term ended or changed first; waiting out its deadline anyway',
      );
      return { at, notDone: err.message };
    }
  }

  private async transfer(
    effect: Extract<Effect, { kind: 'transfer' }>,
    authority: Authority,
  ): Promise<TransferOutcome> {
    await this.guard('transfer', authority);
    try {
      const token = await this.d.ops.transfer(
        this.d.identity,
        effect.target,
        BigInt(effect.expectToken),
        effect.actor,
        authority,
      );
      return { token: String(token) };
    } catch (err) {
      if (err instanceof LeaseOperationError && err.code === 'changed') return { changed: true };
      if (err instanceof LeaseOperationError && err.code !== 'no-authority') return { refused: err.message };
      throw err;
    }
  }

  private async undrain(
    effect: Extract<Effect, { kind: 'undrain' }>,
    authority: Authority,
  ): Promise<UndrainOutcome> {
    await this.guard('undrain', authority);
    try {
      const req = { identity: this.d.identity, actor: effect.actor };
      await this.d.ops.undrain(effect.node, authority.revision, req, CONTROL_TIMEOUT_MS);
      return { ok: true };
    } catch (err) {
      this.d.log.info(
        { node: effect.node, err: (err as Error).message },
        'rolling back: the old leader did not take the undrain yet; asking again',
      );
      return { ok: false, why: (err as Error).message };
    }
  }
}

// The handover workflow's decisions (pkg/controller/workflow-step.ts), one row per state and
// situation: the state it moves to, what follows (record, decide again on an effect's
// outcome, or wait) and the sentence that says why (as Patroni's tests assert run_cycle()'s).
import { expect } from 'chai';
import { WORKFLOW_STATES, type Workflow } from '../../pkg/api/schema.js';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import { drainHoldMs } from '../../pkg/controller/rollback.js';
import { emptySnapshot, type ClusterSnapshot } from '../../pkg/controller/store.js';
import { step, type Decision, type Outcomes, type StepInput } from '../../pkg/controller/workflow-step.js';
import { A_LEADS, identityKeys, switchover, TERM_TTL_MS, type IdentityState } from '../support/switchover.js';

const NOW = Date.parse('2026-03-01T12:00:00.000Z');
const iso = (ms: number) => new Date(ms).toISOString();
const DRAIN_TIMEOUT_MS = 5_000;
const LOGIN_TIMEOUT_MS = 5_000;

/** A switchover of `bot` from a (term 42) to b, requested a second ago, due in 30 s. */
function workflow(over: Partial<Workflow> = {}): Workflow {
  return switchover({ requestedAt: NOW - 1_000, dueAt: NOW + 30_000 }, over);
}

/** The same switchover further along: target b chosen, a held off under lease L. */
const under = (state: Workflow['state'], over: Partial<Workflow> = {}) =>
  workflow({ state, chosen: 'b', holdOff: { lease: 'L', nodes: ['a'] }, ...over });
const drainSent = (agoMs: number): Partial<Workflow> => ({
  escalation: ['drain'],
  drainSentAt: iso(NOW - agoMs),
});

/** The identity's keys, and the cluster around them. */
interface World extends IdentityState {
  /** Nodes whose agent sends heartbeats (default: every candidate), and what they report. */
  agents?: Record<string, string>;
  fenced?: string[];
}

function input(world: World, done: Outcomes = {}, fenceCommands = 0, handOver = true): StepInput {
  const snap: ClusterSnapshot = {
    ...emptySnapshot(100n),
    identities: new Map([['bot', identityKeys(world)]]),
    fences: new Map((world.fenced ?? []).map((n) => [n, { reason: 'maintenance', actor: 'op', at: 0 }])),
  };
  const agents = new Map<string, SeenAgent>();
  const alive =
    world.agents ?? Object.fromEntries(Object.keys(world.candidates ?? {}).map((n) => [n, 'standby']));
  for (const [node, state] of Object.entries(alive)) {
    const token = world.leader?.[0] === node ? String(world.leader[1]) : undefined;
    agents.set(node, {
      receivedAt: NOW,
      heartbeat: {
        v: 2,
        node,
        at: NOW,
        fenced: false,
        identities: [{ identity: 'bot', state, ...(token ? { token } : {}) }],
      },
    });
  }
  // An agent known once but silent for a minute: dead.
  for (const node of Object.keys(world.candidates ?? {})) {
    if (!agents.has(node)) {
      agents.set(node, {
        receivedAt: NOW - 60_000,
        heartbeat: { v: 2, node, at: NOW - 60_000, fenced: false, identities: [] },
      });
    }
  }
  return {
    identity: 'bot',
    view: { snap, agents, heartbeatTimeoutMs: 10_000, now: NOW, startedAt: NOW - 3_600_000 },
    now: NOW,
    drainTimeoutMs: DRAIN_TIMEOUT_MS,
    loginTimeoutMs: LOGIN_TIMEOUT_MS,
    handOver,
    fenceCommands,
    done,
  };
}

interface Row {
  name: string;
  wf: Workflow;
  world: World;
  done?: Outcomes;
  fenceCommands?: number;
  /** The controller's switchover.handOver (default true). */
  handOver?: boolean;
  /** [state, next, note], and the kinds of the effects asked for. */
  expect: [Workflow['state'], Decision['next'], string, string[]?];
  /** Anything else about the decision this row is about. */
  also?: (d: Decision) => void;
}

const CANCEL = { cancelRequested: { actor: 'op', at: iso(NOW - 100) } };
const PAST_DEADLINE = { deadline: iso(NOW - 1) };

const rows: Row[] = [
  // --- scheduled
  {
    name: 'scheduled, cancelled before its time: aborted',
    wf: workflow({ state: 'scheduled', at: iso(NOW + 60_000), ...CANCEL }),
    world: A_LEADS,
    expect: ['aborted', 'record', 'cancelled by op before it started'],
    also: (d) => expect(d.change?.outcome).to.equal('cancelled by op before it started'),
  },
  {
    name: 'scheduled, before its time: waits',
    wf: workflow({ state: 'scheduled', at: iso(NOW + 60_000) }),
    world: A_LEADS,
    expect: ['scheduled', 'wait', `waiting for its scheduled time (${iso(NOW + 60_000)})`],
  },
  {
    name: 'scheduled, its time reached: requested',
    wf: workflow({ state: 'scheduled', at: iso(NOW) }),
    world: A_LEADS,
    expect: ['requested', 'record', 'scheduled time reached'],
  },
  // --- requested
  {
    name: 'requested, cancelled: aborted, the old leader stays',
    wf: workflow(CANCEL),
    world: A_LEADS,
    expect: ['aborted', 'record', 'cancelled by op; a stays leader'],
  },
  {
    name: 'requested, past its deadline: aborted',
    wf: workflow(PAST_DEADLINE),
    world: A_LEADS,
    expect: ['aborted', 'record', 'deadline passed before it started; a stays leader'],
  },
  {
    name: 'requested, a switchover with no leader: aborted, left to failover',
    wf: workflow(),
    world: { candidates: { a: 0, b: 0 } },
    expect: [
      'aborted',
      'record',
      "bot has no leader to move; it fails over by itself; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  {
    name: 'requested, the leader changed since the request: aborted',
    wf: workflow(),
    world: { ...A_LEADS, leader: ['a', 57] },
    expect: [
      'aborted',
      'record',
      "the leader changed (now a, token 57) before it started; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  {
    name: 'requested, no target given and no healthy standby: aborted',
    wf: workflow({ target: undefined }),
    world: { ...A_LEADS, candidates: { a: 0 } },
    expect: ['aborted', 'record', 'no healthy standby can take bot over; a stays leader'],
  },
  {
    name: 'requested, the target is fenced: aborted with the reason',
    wf: workflow(),
    world: { ...A_LEADS, fenced: ['b'] },
    expect: ['aborted', 'record', 'b is fenced (maintenance); unfence it first; a stays leader'],
  },
  {
    name: 'requested, all set: grants the hold-off lease first',
    wf: workflow(),
    world: A_LEADS,
    expect: ['requested', 'again', 'holding a off bot', ['grant-hold-off']],
    also: (d) => expect(d.effects[0]).to.deep.equal({ kind: 'grant-hold-off', ttlMs: 30_000 }),
  },
  {
    name: 'requested, lease granted: draining, the hold-off written with the record',
    wf: workflow(),
    world: A_LEADS,
    done: { 'grant-hold-off': 'L' },
    expect: ['draining', 'record', 'a held off bot; target b', ['hold-off']],
    also: (d) => {
      expect(d.change).to.deep.equal({
        chosen: 'b',
        from: { node: 'a', token: '42' },
        holdOff: { lease: 'L', nodes: ['a'] },
      });
      expect(d.effects[0]).to.deep.equal({
        kind: 'hold-off',
        lease: 'L',
        nodes: ['a'],
        record: { reason: 'switchover to b', actor: 'op', at: NOW, workflow: 'switchover-bot-1' },
      });
    },
  },
  {
    name: 'requested, a failover: holds off every candidate but the target',
    wf: workflow({ kind: 'failover' }),
    world: { ...A_LEADS, candidates: { a: 0, b: 0, c: 0 } },
    done: { 'grant-hold-off': 'L' },
    expect: ['draining', 'record', 'a, c held off bot; target b', ['hold-off']],
  },
  {
    name: 'requested, no target given: the highest-priority healthy standby',
    wf: workflow({ target: undefined }),
    world: { ...A_LEADS, candidates: { a: 9, b: 1, c: 5 } },
    done: { 'grant-hold-off': 'L' },
    expect: ['draining', 'record', 'a held off bot; target c', ['hold-off']],
  },
  // --- draining
  {
    name: 'draining, the old leader confirmed its logout: logged-out',
    wf: under('draining', drainSent(1_000)),
    world: { ...A_LEADS, loggedIn: false },
    expect: ['logged-out', 'record', 'a confirmed its logout (term 42)'],
  },
  {
    name: 'draining, cancelled: releases the hold-off first',
    wf: under('draining', { ...drainSent(1_000), ...CANCEL }),
    world: A_LEADS,
    expect: ['draining', 'again', 'cancelled by op: releasing the hold-off', ['release-hold-off']],
  },
  {
    name: 'draining, cancelled, hold-off released, drain in flight: rolls back, records why',
    wf: under('draining', { ...drainSent(1_000), ...CANCEL }),
    world: A_LEADS,
    done: { 'release-hold-off': true },
    expect: ['draining', 'record', 'cancelled by op: giving bot back to a'],
    also: (d) => expect(d.change).to.deep.equal({ rollback: { reason: 'cancelled by op', since: iso(NOW) } }),
  },
  {
    name: 'draining, past the deadline before any drain: aborted, the old leader stays',
    wf: under('draining', PAST_DEADLINE),
    world: A_LEADS,
    done: { 'release-hold-off': true },
    expect: ['aborted', 'record', 'a did not log out before the deadline; a stays leader'],
  },
  {
    name: 'draining, nothing sent yet: asks the old leader to log out and hand the key to the target',
    wf: under('draining'),
    world: A_LEADS,
    expect: ['draining', 'record', 'asked a to log out', ['drain']],
    also: (d) => {
      expect(d.effects[0]).to.deep.equal({
        kind: 'drain',
        node: 'a',
        actor: 'op',
        holdMs: drainHoldMs(NOW + 30_000, NOW),
        reason: 'switchover switchover-bot-1',
        to: 'b',
        workflow: 'switchover-bot-1',
      });
      expect(d.change).to.deep.equal({ escalation: ['drain'], drainSentAt: iso(NOW) });
    },
  },
  {
    name: 'draining, nothing sent yet, hand-over turned off: asks the old leader only to log out',
    wf: under('draining'),
    world: A_LEADS,
    handOver: false,
    expect: ['draining', 'record', 'asked a to log out', ['drain']],
    also: (d) => expect(d.effects[0]).to.not.have.property('to'),
  },
  {
    name: 'draining, a failover whose old leader is silent: revokes without a drain',
    wf: under('draining', { kind: 'failover' }),
    world: { ...A_LEADS, candidates: { a: 0, b: 0, c: 0 }, agents: { b: 'standby', c: 'standby' } },
    expect: ['draining', 'again', "a's agent sends no heartbeats: revoking a's lease", ['revoke']],
    also: (d) =>
      expect(d.effects[0]).to.deep.equal({
        kind: 'revoke',
        expectToken: '42',
        actor: 'op',
        extendHoldOff: {
          lease: 'L',
          nodes: ['c'],
          record: { reason: 'failover to b', actor: 'op', at: NOW, workflow: 'switchover-bot-1' },
        },
      }),
  },
  {
    name: 'draining, a switchover whose old leader is silent: still asks it to log out',
    wf: under('draining'),
    world: { ...A_LEADS, agents: { b: 'standby' } },
    expect: ['draining', 'record', 'asked a to log out', ['drain']],
  },
  {
    name: 'draining, revoked: records when the holder is out, and the wider hold-off',
    wf: under('draining', { kind: 'failover' }),
    world: { ...A_LEADS, candidates: { a: 0, b: 0, c: 0 }, agents: { b: 'standby', c: 'standby' } },
    done: { revoke: { at: NOW + 7, ended: ['bot', 'other'] } },
    expect: [
      'draining',
      'record',
      "a's agent sends no heartbeats: revoked its lease (which also ended its terms of other; their successors wait out its deadline)",
    ],
    also: (d) =>
      expect(d.change).to.deep.equal({
        escalation: ['revoke'],
        revoked: { at: iso(NOW + 7), until: iso(NOW + 7 + TERM_TTL_MS + 500) },
        holdOff: { lease: 'L', nodes: ['a', 'c'] },
      }),
  },
  {
    name: 'draining, the revocation found nothing to revoke: waits out the deadline anyway',
    wf: under('draining', drainSent(6_000)),
    world: A_LEADS,
    done: { revoke: { at: NOW, notDone: 'leader changed' } },
    expect: [
      'draining',
      'record',
      'a did not confirm its logout within 5000 ms: nothing revoked (leader changed); waiting out its deadline anyway',
    ],
  },
  {
    name: 'draining, drain sent within its timeout: waits',
    wf: under('draining', drainSent(1_000)),
    world: A_LEADS,
    expect: ['draining', 'wait', 'waiting for a to confirm its logout'],
  },
  {
    name: 'draining, drain unconfirmed past its timeout: revokes',
    wf: under('draining', drainSent(DRAIN_TIMEOUT_MS + 1)),
    world: A_LEADS,
    expect: [
      'draining',
      'again',
      "a did not confirm its logout within 5000 ms: revoking a's lease",
      ['revoke'],
    ],
    also: (d) => expect(d.effects[0]).to.deep.equal({ kind: 'revoke', expectToken: '42', actor: 'op' }),
  },
  {
    name: 'draining, revoked and a fence command configured: runs it',
    wf: under('draining', {
      escalation: ['drain', 'revoke'],
      revoked: { at: iso(NOW), until: iso(NOW + 4_500) },
    }),
    world: { candidates: { a: 0, b: 0 } },
    fenceCommands: 1,
    expect: ['draining', 'again', 'running the fence commands against a', ['fence-commands']],
  },
  {
    name: 'draining, a fence command failed: recorded, and the operator alarmed',
    wf: under('draining', {
      escalation: ['drain', 'revoke'],
      revoked: { at: iso(NOW), until: iso(NOW + 4_500) },
    }),
    world: { candidates: { a: 0, b: 0 } },
    fenceCommands: 2,
    done: {
      'fence-commands': [
        { ok: false, detail: 'power-off exited 1' },
        { ok: true, detail: 'pod deleted' },
      ],
    },
    expect: ['draining', 'record', 'power-off exited 1; pod deleted', ['alarm']],
    also: (d) => {
      expect(d.change).to.deep.equal({ escalation: ['drain', 'revoke', 'fence-command'] });
      expect(d.effects[0]).to.deep.equal({ kind: 'alarm', node: 'a', message: 'power-off exited 1' });
    },
  },
  {
    name: "draining, revoked: starts waiting out the holder's self-fence deadline",
    wf: under('draining', {
      escalation: ['drain', 'revoke'],
      revoked: { at: iso(NOW), until: iso(NOW + 4_500) },
    }),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['draining', 'record', `waiting out a's self-fence deadline (${iso(NOW + 4_500)})`],
  },
  {
    name: "draining, revoked, waiting out the holder's deadline: waits",
    wf: under('draining', {
      escalation: ['drain', 'revoke', 'self-fence-wait'],
      revoked: { at: iso(NOW), until: iso(NOW + 4_500) },
    }),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['draining', 'wait', `waiting out a's self-fence deadline (${iso(NOW + 4_500)})`],
  },
  {
    name: "draining, revoked and the holder's deadline passed: logged-out",
    wf: under('draining', {
      escalation: ['drain', 'revoke', 'self-fence-wait'],
      revoked: { at: iso(NOW - 5_000), until: iso(NOW - 1) },
    }),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['logged-out', 'record', 'a is out: lease revoked and its self-fence deadline passed'],
  },
  {
    name: 'draining, a failover of an identity without a leader: logged-out at once',
    wf: under('draining', { kind: 'failover', from: undefined }),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['logged-out', 'record', 'no leader: the target may campaign'],
  },
  {
    name: 'draining, the target took the key on its own: transferred',
    wf: under('draining', drainSent(1_000)),
    world: { leader: ['b', 60], candidates: { a: 0, b: 0 } },
    expect: ['transferred', 'record', 'b took the key on its own'],
    also: (d) => expect(d.change).to.deep.equal({ newToken: '60' }),
  },
  {
    name: 'draining, the old leader handed the key to the target as it logged out: transferred',
    wf: under('draining', drainSent(1_000)),
    world: {
      leader: ['b', 60],
      candidates: { a: 0, b: 0 },
      termEnd: { node: 'a', token: 42, how: 'transferred' },
    },
    expect: ['transferred', 'record', 'a logged out and handed the key to b (token 60)'],
    also: (d) => expect(d.change).to.deep.equal({ newToken: '60' }),
  },
  {
    name: 'draining, a revocation raced the hand-over and found nothing: transferred, no fence command runs',
    wf: under('draining', {
      escalation: ['drain', 'revoke'],
      revoked: { at: iso(NOW), until: iso(NOW + 4_500) },
    }),
    world: {
      leader: ['b', 60],
      candidates: { a: 0, b: 0 },
      termEnd: { node: 'a', token: 42, how: 'transferred' },
    },
    fenceCommands: 1,
    expect: ['transferred', 'record', 'a logged out and handed the key to b (token 60)'],
  },
  {
    name: 'draining, the old term ended on its own, key free: waits for the target',
    wf: under('draining', drainSent(1_000)),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['draining', 'wait', 'the old term ended on its own; waiting for b to take the key'],
  },
  {
    name: 'draining, the old term ended and nobody took the key by the deadline: aborted',
    wf: under('draining', { ...drainSent(1_000), ...PAST_DEADLINE }),
    world: { candidates: { a: 0, b: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "the old term ended on its own and no one took the key before the deadline; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  {
    name: 'draining, another node took the key: aborted',
    wf: under('draining', drainSent(1_000)),
    world: { leader: ['c', 60], candidates: { a: 0, b: 0, c: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "the old term ended on its own; c leads now (token 60); a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  // --- logged-out
  {
    name: 'logged-out, the key is on the target already: transferred',
    wf: under('logged-out', drainSent(1_000)),
    world: { leader: ['b', 60], candidates: { a: 0, b: 0 } },
    expect: ['transferred', 'record', 'the key is on b (token 60)'],
  },
  {
    name: 'logged-out, the old leader out and holding its key: moves the key',
    wf: under('logged-out', drainSent(1_000)),
    world: { ...A_LEADS, loggedIn: false },
    expect: ['logged-out', 'again', 'moving the key to b', ['transfer']],
    also: (d) =>
      expect(d.effects[0]).to.deep.equal({ kind: 'transfer', target: 'b', expectToken: '42', actor: 'op' }),
  },
  {
    name: 'logged-out, the key moved: transferred',
    wf: under('logged-out', drainSent(1_000)),
    world: { ...A_LEADS, loggedIn: false },
    done: { transfer: { token: '60' } },
    expect: ['transferred', 'record', 'key moved to b (token 60)'],
    also: (d) => expect(d.change).to.deep.equal({ newToken: '60' }),
  },
  {
    name: 'logged-out, the keys changed during the transfer: reads again',
    wf: under('logged-out', drainSent(1_000)),
    world: { ...A_LEADS, loggedIn: false },
    done: { transfer: { changed: true } },
    expect: ['logged-out', 'wait', 'the leadership keys changed during the transfer; reading again'],
  },
  {
    name: 'logged-out, the transfer was refused: aborted with its reason, the old leader undrained',
    wf: under('logged-out', drainSent(1_000)),
    world: { ...A_LEADS, loggedIn: false },
    done: { transfer: { refused: 'b is fenced: unfence it first' }, 'release-hold-off': true },
    expect: ['logged-out', 'again', 'rolling back: asking a to log back in', ['undrain']],
  },
  {
    name: 'logged-out, the transfer was refused, the old leader took the undrain: aborted, saying why',
    wf: under('logged-out', drainSent(1_000)),
    world: { ...A_LEADS, loggedIn: false },
    done: {
      transfer: { refused: 'b is fenced: unfence it first' },
      'release-hold-off': true,
      undrain: { ok: true },
    },
    expect: ['aborted', 'record', 'b is fenced: unfence it first; rolled back: a logs back in'],
  },
  {
    name: 'logged-out, the leader changed underneath: aborted',
    wf: under('logged-out', drainSent(1_000)),
    world: { leader: ['a', 57], loggedIn: true, candidates: { a: 0, b: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "the leader changed underneath the handover; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  {
    name: 'logged-out, cancelled before the transfer: rolls back',
    wf: under('logged-out', { ...drainSent(1_000), ...CANCEL }),
    world: { ...A_LEADS, loggedIn: false },
    done: { 'release-hold-off': true, undrain: { ok: true } },
    expect: ['aborted', 'record', 'cancelled by op; rolled back: a logs back in'],
  },
  {
    name: 'logged-out, past the deadline before the transfer: rolls back',
    wf: under('logged-out', { ...drainSent(1_000), ...PAST_DEADLINE }),
    world: { ...A_LEADS, loggedIn: false },
    done: { 'release-hold-off': true },
    expect: ['logged-out', 'again', 'rolling back: asking a to log back in', ['undrain']],
  },
  {
    name: 'logged-out after a revocation, key free: waits for the target to take it',
    wf: under('logged-out', { revoked: { at: iso(NOW - 5_000), until: iso(NOW - 1) } }),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['logged-out', 'wait', "the key is free; waiting for b's campaign to take it"],
  },
  {
    name: 'logged-out after a revocation, another node took the key: aborted',
    wf: under('logged-out', { revoked: { at: iso(NOW - 5_000), until: iso(NOW - 1) } }),
    world: { leader: ['c', 60], candidates: { a: 0, b: 0, c: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "c took the key instead of b; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  {
    name: 'logged-out after a revocation, nobody took the key by the deadline: aborted',
    wf: under('logged-out', { revoked: { at: iso(NOW - 5_000), until: iso(NOW - 1) }, ...PAST_DEADLINE }),
    world: { candidates: { a: 0, b: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "b did not take the key before the deadline; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  // --- transferred
  {
    name: 'transferred, the target lost the key: aborted',
    wf: under('transferred', { newToken: '60' }),
    world: { candidates: { a: 0, b: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "b lost the key (token 60) before it logged in; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  {
    name: 'transferred, the target says it logged in: asks who answers',
    wf: under('transferred', { newToken: '60' }),
    world: { leader: ['b', 60], loggedIn: true, candidates: { a: 0, b: 0 } },
    expect: ['transferred', 'again', 'b says it logged in; asking who answers as bot', ['probe-login']],
  },
  {
    name: 'transferred, only the target answers, with the new token: logged-in',
    wf: under('transferred', { newToken: '60' }),
    world: { leader: ['b', 60], loggedIn: true, candidates: { a: 0, b: 0 } },
    done: { 'probe-login': [{ node: 'b', token: '60' }] },
    expect: ['logged-in', 'record', 'b answers PING with token 60'],
  },
  {
    name: 'transferred, two answer: waits (and never calls it logged in)',
    wf: under('transferred', { newToken: '60' }),
    world: { leader: ['b', 60], loggedIn: true, candidates: { a: 0, b: 0 } },
    done: {
      'probe-login': [
        { node: 'a', token: '42' },
        { node: 'b', token: '60' },
      ],
    },
    expect: ['transferred', 'wait', 'waiting for b to log in as bot with token 60'],
  },
  {
    name: 'transferred, no login by the login timeout: aborted, left to failover',
    wf: under('transferred', {
      newToken: '60',
      steps: [{ state: 'transferred', at: iso(NOW - LOGIN_TIMEOUT_MS - 1) }],
    }),
    world: { leader: ['b', 60], loggedIn: false, candidates: { a: 0, b: 0 } },
    done: { 'release-hold-off': true },
    expect: [
      'aborted',
      'record',
      "b did not answer as bot in time; it fails over by itself; a's term 42 ended meanwhile; bot fails over by itself",
    ],
  },
  // --- logged-in
  {
    name: 'logged-in: done, the hold-off released',
    wf: under('logged-in', { newToken: '60' }),
    world: { leader: ['b', 60], loggedIn: true, candidates: { a: 0, b: 0 } },
    expect: ['done', 'record', 'b logged in as bot with token 60 in 1000 ms', ['release-hold-off']],
  },
  {
    name: 'logged-in, a node fence: done, its node stays held off',
    wf: under('logged-in', { newToken: '60', kind: 'node-fence' }),
    world: { leader: ['b', 60], loggedIn: true, candidates: { a: 0, b: 0 } },
    expect: ['done', 'record', 'b logged in as bot with token 60 in 1000 ms', []],
  },
  // --- rolling back (an abort in progress)
  {
    name: 'rolling back, the old leader is drained: asks it to log back in',
    wf: under('draining', { ...drainSent(1_000), rollback: { reason: 'cancelled by op', since: iso(NOW) } }),
    world: { ...A_LEADS, loggedIn: false },
    expect: ['draining', 'again', 'rolling back: asking a to log back in', ['undrain']],
  },
  {
    name: 'rolling back, the undrain was taken: aborted',
    wf: under('draining', { ...drainSent(1_000), rollback: { reason: 'cancelled by op', since: iso(NOW) } }),
    world: { ...A_LEADS, loggedIn: false },
    done: { undrain: { ok: true } },
    expect: ['aborted', 'record', 'cancelled by op; rolled back: a logs back in'],
  },
  {
    name: 'rolling back, the undrain was not taken: asks again next round',
    wf: under('draining', { ...drainSent(1_000), rollback: { reason: 'cancelled by op', since: iso(NOW) } }),
    world: { ...A_LEADS, loggedIn: false },
    done: { undrain: { ok: false, why: 'no answer' } },
    expect: ['draining', 'wait', 'rolling back: a did not take the undrain yet; asking again'],
  },
  {
    name: 'rolling back, a drain still in flight: waits for it to settle',
    wf: under('draining', { ...drainSent(1_000), rollback: { reason: 'cancelled by op', since: iso(NOW) } }),
    world: A_LEADS,
    expect: [
      'draining',
      'wait',
      'rolling back: waiting for the drain to settle (the drain sent to a may still complete)',
    ],
  },
  {
    name: 'rolling back with no old leader: aborted, nothing to give back',
    wf: under('draining', { kind: 'failover', from: undefined, rollback: { reason: 'x', since: iso(NOW) } }),
    world: { candidates: { a: 0, b: 0 } },
    expect: ['aborted', 'record', 'x; nothing to give back'],
  },
  // --- finished
  {
    name: 'done: nothing left to do',
    wf: under('done'),
    world: A_LEADS,
    expect: ['done', 'wait', 'the switchover is done: nothing left to do'],
  },
  {
    name: 'aborted: nothing left to do',
    wf: under('aborted'),
    world: A_LEADS,
    expect: ['aborted', 'wait', 'the switchover is aborted: nothing left to do'],
  },
];

describe('workflow step: state × situation → next state and why', () => {
  for (const row of rows) {
    it(row.name, () => {
      const d = step(row.wf, input(row.world, row.done, row.fenceCommands, row.handOver));
      const [state, next, note, effects] = row.expect;
      expect([d.state, d.next, d.note]).to.deep.equal([state, next, note]);
      if (effects) expect(d.effects.map((e) => e.kind)).to.deep.equal(effects);
      row.also?.(d);
    });
  }

  it('covers every state of the workflow', () => {
    const covered = new Set(rows.map((r) => r.wf.state));
    expect(WORKFLOW_STATES.filter((s) => !covered.has(s))).to.deep.equal([]);
  });

  it('reads no clock: the same input decides the same, whenever it runs', () => {
    const wf = under('draining', drainSent(DRAIN_TIMEOUT_MS - 1));
    const first = step(wf, input(A_LEADS));
    expect(first.next).to.equal('wait');
    // One millisecond later on the injected clock, the drain timeout has passed.
    const later = step(wf, { ...input(A_LEADS), now: NOW + 2 });
    expect(later.effects.map((e) => e.kind)).to.deep.equal(['revoke']);
  });
});

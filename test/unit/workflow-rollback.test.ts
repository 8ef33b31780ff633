// The workflow's pure decisions: giving an identity back on abort, the drain hold, the
// bounds of a scheduled switchover and of the API's durations, and what a revocation records.
import { expect } from 'chai';
import {
  FailoverBody,
  MAX_SCHEDULE_AHEAD_MS,
  scheduledAtProblem,
  SwitchoverBody,
} from '../../pkg/api/schema.js';
import { drainHoldMs, rollbackStep, type RollbackInput } from '../../pkg/controller/rollback.js';
import { identityOfLeaderKey, revokedTermEnd } from '../../pkg/lease/admin.js';
import { Keys } from '../../pkg/lease/keys.js';

/** Node timers hold at most this (larger values fire at once, with a warning). */
const NODE_TIMER_MAX_MS = 2 ** 31 - 1;

describe('workflow rollback: giving the identity back on abort', () => {
  const NOW = 1_000_000;
  const base: RollbackInput = {
    identity: 'bot',
    from: { node: 'a', token: '42' },
    leaderToken: '42',
    loggedIn: true,
    agentState: 'leader',
    drainSentAt: NOW - 1_000,
    drainTimeoutMs: 5_000,
    holdEndsAt: NOW + 30_000,
    now: NOW,
  };
  const cases: Array<[string, Partial<RollbackInput>, string]> = [
    // The bug this fixes: logged in as far as etcd shows, but the drain is still in flight.
    ['drain sent, logout not recorded yet: wait', {}, 'wait'],
    ['drain confirmed (login false): undrain', { loggedIn: false }, 'undrain'],
    [
      'drained but the agent did not take the undrain: ask again',
      { loggedIn: false, agentState: 'drained' },
      'undrain',
    ],
    ['no drain was ever sent: the old leader stays', { drainSentAt: undefined }, 'done'],
    // Not ours to undo, and with no hold of ours ending, asking would never stop.
    [
      'logged out, but never drained by this workflow: left as it is',
      { drainSentAt: undefined, loggedIn: false, agentState: 'drained' },
      'done',
    ],
    [
      'drain window over and the agent says leader: it stays',
      { drainSentAt: NOW - 6_000, agentState: 'leader' },
      'done',
    ],
    [
      'drain window over but the agent still logs out: wait',
      { drainSentAt: NOW - 6_000, agentState: 'logging-out' },
      'wait',
    ],
    [
      'drain window over, the agent reports drained before the record: wait',
      { drainSentAt: NOW - 6_000, agentState: 'drained' },
      'wait',
    ],
    ['the old term ended: nothing to give back', { leaderToken: undefined }, 'done'],
    ['another term leads: nothing to give back', { leaderToken: '57', loggedIn: false }, 'done'],
    ['the hold ended: the agent logs back in by itself', { loggedIn: false, holdEndsAt: NOW }, 'done'],
    [
      'the hold ended while the agent still logs out: stop waiting',
      { drainSentAt: NOW - 6_000, agentState: 'logging-out', holdEndsAt: NOW - 1 },
      'done',
    ],
  ];
  for (const [name, input, kind] of cases) {
    it(name, () => {
      expect(rollbackStep({ ...base, ...input }).kind).to.equal(kind);
    });
  }

  it('says why it ended', () => {
    expect(rollbackStep({ ...base, drainSentAt: undefined })).to.deep.equal({
      kind: 'done',
      outcome: 'a stays leader',
    });
    expect(rollbackStep({ ...base, leaderToken: '57' })).to.deep.equal({
      kind: 'done',
      outcome: "a's term 42 ended meanwhile; bot fails over by itself",
    });
  });
});

describe('workflow: the drain hold', () => {
  const cases: Array<[string, number, number]> = [
    ['outlasts the deadline (rounded up to a second) by 1.5 s', 10_200, 12_500],
    ['a deadline long passed: the least the agent accepts', -5_000, 100],
    ['never above what the agent accepts (an hour)', 7 * 24 * 3_600_000, 3_600_000],
  ];
  for (const [name, untilDeadline, expected] of cases) {
    it(name, () => {
      expect(drainHoldMs(1_000_000 + untilDeadline, 1_000_000)).to.equal(expected);
    });
  }
});

describe('switchover schedule and API durations', () => {
  const NOW = Date.parse('2026-03-01T12:00:00Z');
  const cases: Array<[string, string, RegExp | undefined]> = [
    ['now', '2026-03-01T12:00:00Z', undefined],
    ['half a second ago (clock skew)', '2026-03-01T11:59:59.500Z', undefined],
    ['an hour ago', '2026-03-01T11:00:00Z', /in the past; leave it out/],
    ['in 6 days', '2026-03-07T12:00:00Z', undefined],
    ['exactly 7 days ahead', '2026-03-08T12:00:00Z', undefined],
    [
      '7 days and a second ahead',
      '2026-03-08T12:00:01Z',
      /more than 7 days ahead \(latest 2026-03-08T12:00:00.000Z\)/,
    ],
    ['the end of time', '9999-12-31T00:00:00Z', /more than 7 days ahead/],
  ];
  for (const [name, at, problem] of cases) {
    it(`at ${name}: ${problem ? 'refused' : 'accepted'}`, () => {
      const found = scheduledAtProblem(at, NOW);
      if (problem) expect(found).to.match(problem);
      else expect(found).to.equal(undefined);
    });
  }

  it('the body schema refuses an `at` past the bound, naming the field', () => {
    const parsed = SwitchoverBody.safeParse({ at: '9999-12-31T00:00:00Z' });
    expect(parsed.success).to.equal(false);
    expect(parsed.error!.issues[0]!.path).to.deep.equal(['at']);
    expect(parsed.error!.issues[0]!.message).to.match(/at most 7 days ahead/);
    expect(
      SwitchoverBody.safeParse({ at: new Date(Date.now() + MAX_SCHEDULE_AHEAD_MS - 60_000).toISOString() })
        .success,
    ).to.equal(true);
  });

  for (const [name, schema] of [
    ['switchover', SwitchoverBody],
    ['failover', FailoverBody],
  ] as const) {
    it(`${name} deadlineMs has a maximum a Node timer can hold, and says so`, () => {
      const max = schema.shape.deadlineMs.unwrap().maxValue!;
      expect(max).to.be.at.most(NODE_TIMER_MAX_MS);
      const parsed = schema.safeParse({ to: 'b', deadlineMs: NODE_TIMER_MAX_MS + 1 });
      expect(parsed.success).to.equal(false);
      expect(parsed.error!.issues[0]!.path).to.deep.equal(['deadlineMs']);
      expect(parsed.error!.issues[0]!.message).to.equal('deadlineMs must be at most 3600000 ms (60 min)');
      expect(schema.safeParse({ to: 'b', deadlineMs: 1.5e3 }).error!.issues[0]!.message).to.equal(
        'deadlineMs must be at least 2000 ms',
      );
    });
  }
});

describe('revocation records', () => {
  const record = { node: 'a', leaseId: '77', ttlMs: 4_000, mustBeOutByMs: 3_600, since: 0 };
  const login = (token: string, loggedIn: boolean) => ({
    node: 'a',
    token,
    loggedIn,
    at: 0,
    leaseId: '77',
    ttlMs: 4_000,
  });
  const cases: Array<[string, ReturnType<typeof login> | undefined, boolean]> = [
    ['its own login record says logged out: logged out', login('42', false), true],
    ['its own login record says logged in: not logged out', login('42', true), false],
    ['no login record: not logged out', undefined, false],
    // The login record outlives its term: one of an earlier term proves nothing about this one.
    ['an earlier term logged out: not logged out', login('41', false), false],
  ];
  for (const [name, loginRecord, loggedOut] of cases) {
    it(name, () => {
      const end = revokedTermEnd({ identity: 'bot', token: 42n, record, login: loginRecord }, 'ctl', 5);
      expect(end).to.deep.equal({
        token: '42',
        node: 'a',
        leaseId: '77',
        how: 'revoked',
        loggedOut,
        holderTtlMs: 4_000,
        at: 5,
        actor: 'ctl',
      });
    });
  }

  it('finds leader keys among the keys bound to a lease', () => {
    const keys = new Keys('us');
    expect(identityOfLeaderKey('us/identities/bot/leader', keys)).to.equal('bot');
    expect(identityOfLeaderKey('us/identities/bot/candidates/a', keys)).to.equal(undefined);
    expect(identityOfLeaderKey('us/identities/bot/login', keys)).to.equal(undefined);
    expect(identityOfLeaderKey('us/controllers/identities/active/leader', keys)).to.equal(undefined);
    expect(identityOfLeaderKey('other/identities/bot/leader', keys)).to.equal(undefined);
    expect(identityOfLeaderKey('us/identities//leader', keys)).to.equal(undefined);
  });
});

// The agent's decisions, one table per decision: each row is a situation, and asserts the
// state it leads to and the sentence the operator reads. A rule changed in decide.ts fails a row.
import { expect } from 'chai';
import {
  decideAbandonTerm,
  decideAfterLogout,
  decideCampaignEnd,
  decideCampaignStart,
  decideCampaignView,
  decideDrained,
  decideEndOfLead,
  decideGiveBack,
  decideIdle,
  decideLogin,
  ineligibility,
  type Decision,
  type OutsideFacts,
} from '../../pkg/agent/decide.js';
import { canMove, type IdentityState } from '../../pkg/agent/states.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

/** A row: what is known, where it leads (undefined: stays), and the sentence it must say. */
type Row<F> = [situation: string, facts: F, next: IdentityState | undefined, reason: RegExp | string];

function check<F>(
  rows: Row<F>[],
  decide: (f: F) => Decision & { then?: string },
  extra?: (d: Decision & { then?: string }, row: Row<F>) => void,
) {
  for (const row of rows) {
    const [situation, facts, next, reason] = row;
    const d = decide(facts);
    expect(d.next, `${situation}: next state`).to.equal(next);
    if (typeof reason === 'string') expect(d.reason, `${situation}: reason`).to.equal(reason);
    else expect(d.reason, `${situation}: reason`).to.match(reason);
    extra?.(d, row);
  }
}

const calm: OutsideFacts = { stopping: false };
const fenced: OutsideFacts = { stopping: false, fenceReason: 'disk replacement' };
const stopping: OutsideFacts = { stopping: true };

describe('agent decisions', function () {
  it('after giving a term back: stopped when stopping, fenced when fenced, standby otherwise', function () {
    check<OutsideFacts>(
      [
        ['nothing special', calm, 'standby', 'leadership lost (session)'],
        [
          'the node is fenced',
          fenced,
          'fenced',
          'leadership lost (session); staying out while fenced: disk replacement',
        ],
        ['the agent is stopping', stopping, 'stopped', 'leadership lost (session)'],
        [
          'stopping and fenced: stopping wins',
          { ...fenced, stopping: true },
          'stopped',
          'leadership lost (session)',
        ],
      ],
      (f) => decideGiveBack(f, 'leadership lost (session)'),
    );
  });

  it('before a campaign: ineligible stands by, fenced stays fenced, unfenced passes through standby', function () {
    const then: Record<string, string | undefined> = {};
    check<Parameters<typeof decideIdle>[0]>(
      [
        [
          'no spec',
          { state: 'standby', ineligible: 'no spec for the identity in etcd' },
          'standby',
          'no spec for the identity in etcd',
        ],
        [
          'ineligible and fenced: ineligible first',
          { state: 'fenced', ineligible: 'nofailover', fenceReason: 'x' },
          'standby',
          'nofailover',
        ],
        ['fenced', { state: 'standby', fenceReason: 'disk replacement' }, 'fenced', 'disk replacement'],
        ['just unfenced', { state: 'fenced' }, 'standby', 'unfenced'],
        [
          'refused by the allow-list',
          { state: 'campaigning', refused: "service.command 'sh' is not in allow.commands" },
          'standby',
          "not campaigning: service.command 'sh' is not in allow.commands",
        ],
        [
          'refused and fenced: fenced first',
          { state: 'standby', refused: 'x', fenceReason: 'disk replacement' },
          'fenced',
          'disk replacement',
        ],
        ['eligible standby', { state: 'standby' }, undefined, /campaigning/],
        ['eligible, campaign interrupted', { state: 'campaigning' }, undefined, /campaigning/],
      ],
      decideIdle,
      (d, [situation]) => (then[situation] = d.then),
    );
    expect(then).to.deep.include({
      'no spec': 'wait',
      fenced: 'wait',
      'just unfenced': 'campaign',
      'refused by the allow-list': 'recheck',
      'eligible standby': 'campaign',
    });
  });

  it('a campaign starts as campaigning; an unhealthy node says it ranks last', function () {
    check(
      [
        ['healthy', { healthy: true }, 'campaigning', 'competing for the leader key'],
        ['recently failed', { healthy: false }, 'campaigning', 'ranked last: recently failed'],
      ],
      decideCampaignStart,
    );
  });

  it('while campaigning, the leader key shows another leader as standby and a free key as campaigning', function () {
    const base = { node: 'a', inCampaign: true };
    check<Parameters<typeof decideCampaignView>[0]>(
      [
        [
          'b leads while campaigning',
          { ...base, state: 'campaigning', leaderNode: 'b' },
          'standby',
          'b leads',
        ],
        ['key freed while standby', { ...base, state: 'standby' }, 'campaigning', 'no leader'],
        [
          'this node holds the key (just won)',
          { ...base, state: 'standby', leaderNode: 'a' },
          'campaigning',
          'no leader',
        ],
        ['b still leads', { ...base, state: 'standby', leaderNode: 'b' }, undefined, 'b still leads'],
        [
          'outside a campaign nothing moves',
          { ...base, inCampaign: false, state: 'waiting-out', leaderNode: 'b' },
          undefined,
          /not campaigning/,
        ],
      ],
      decideCampaignView,
    );
  });

  it("a campaign's end: a won term waits out the previous one, ineligible stands by, abandoned starts over", function () {
    check<Parameters<typeof decideCampaignEnd>[0]>(
      [
        ['won a fresh identity', { kind: 'won' }, 'waiting-out', 'no previous term seen'],
        [
          'won after b',
          { kind: 'won', previous: { node: 'b', token: 40n, transferred: false } },
          'waiting-out',
          'previous term 40 on b',
        ],
        [
          'transferred from b',
          { kind: 'won', previous: { node: 'b', token: 40n, transferred: true } },
          'waiting-out',
          'previous term 40 on b (transferred)',
        ],
        [
          'not eligible',
          { kind: 'not-eligible', message: 'tagged nofailover' },
          'standby',
          'tagged nofailover',
        ],
        [
          'abandoned',
          { kind: 'abandoned', message: 'spec changed' },
          undefined,
          'campaign interrupted (spec changed): starting over',
        ],
      ],
      decideCampaignEnd,
    );
  });

  it('after waiting out: logs in only when cleared, eligible, unfenced and not stopping', function () {
    check<Parameters<typeof decideLogin>[0]>(
      [
        [
          'cleared',
          { ...calm, cleared: 'no earlier term' },
          'logging-in',
          'login gate open: no earlier term',
        ],
        ['the term ended first', { ...calm }, 'standby', 'term ended while waiting out the previous one'],
        [
          'the term ended first while stopping',
          { ...stopping },
          'stopped',
          'term ended while waiting out the previous one',
        ],
        [
          'cleared but fenced',
          { ...fenced, cleared: 'ok' },
          'fenced',
          /^not logged in: giving the term back \(fenced\); staying out while fenced/,
        ],
        [
          'cleared but stopping',
          { ...stopping, cleared: 'ok' },
          'stopped',
          'not logged in: giving the term back (stopping)',
        ],
        [
          'cleared but spec deleted',
          { ...calm, cleared: 'ok', ineligible: 'no spec' },
          'standby',
          'not logged in: giving the term back (no spec)',
        ],
      ],
      decideLogin,
    );
  });

  it('the end of leading always logs out first, saying why', function () {
    check<Parameters<typeof decideEndOfLead>[0]>(
      [
        ['key lost', { kind: 'lost', reason: 'key-deleted' }, 'logging-out', 'leadership lost (key-deleted)'],
        [
          'service failed',
          { kind: 'failed', reason: 'exited 3 times' },
          'logging-out',
          'service failed: exited 3 times',
        ],
        ['drain', { kind: 'drain', holdMs: 5_000, actor: 'ops' }, 'logging-out', 'drain requested by ops'],
        ['fenced', { kind: 'fenced' }, 'logging-out', 'node fenced'],
        [
          'respec',
          { kind: 'respec', reason: 'the service definition changed' },
          'logging-out',
          'the service definition changed: handing over so it takes effect',
        ],
        ['stop', { kind: 'stop' }, 'logging-out', 'agent stopping'],
      ],
      decideEndOfLead,
    );
  });

  it('after logging out: holds the key only for a drain confirmed out on a live term', function () {
    const drain = { kind: 'drain', holdMs: 5_000, actor: 'ops' } as const;
    const then: Record<string, string | undefined> = {};
    check<Parameters<typeof decideAfterLogout>[0]>(
      [
        [
          'drain, confirmed, live',
          { ...calm, why: drain, confirmed: true, mayAct: true },
          'drained',
          'for ops; logging back in after 5000 ms unless transferred',
        ],
        [
          'drain, not confirmed out',
          { ...calm, why: drain, confirmed: false, mayAct: true },
          'standby',
          'drain requested by ops',
        ],
        [
          'drain, term lost meanwhile',
          { ...calm, why: drain, confirmed: true, mayAct: false },
          'standby',
          'drain requested by ops',
        ],
        [
          'fenced',
          { ...fenced, why: { kind: 'fenced' }, confirmed: true, mayAct: true },
          'fenced',
          'node fenced; staying out while fenced: disk replacement',
        ],
        [
          'stop',
          { ...stopping, why: { kind: 'stop' }, confirmed: true, mayAct: true },
          'stopped',
          'agent stopping',
        ],
      ],
      decideAfterLogout,
      (d, [situation]) => (then[situation] = d.then),
    );
    expect(then['drain, confirmed, live']).to.equal('hold');
    expect(then['drain, not confirmed out']).to.equal('give-back');
  });

  it('while drained: transferred, given back, logging back in, or waiting', function () {
    const base = { ...calm, ended: false, undrainRequested: false, holdLeftMs: 1_000 };
    const then: Record<string, string | undefined> = {};
    check<Parameters<typeof decideDrained>[0]>(
      [
        ['key transferred away', { ...base, ended: true }, 'standby', 'leadership transferred'],
        [
          'transferred while fenced: still just transferred',
          { ...base, ...fenced, ended: true },
          'standby',
          'leadership transferred',
        ],
        [
          'fenced',
          { ...base, ...fenced },
          'fenced',
          'drained term given back; staying out while fenced: disk replacement',
        ],
        ['stopping', { ...base, stopping: true }, 'stopped', 'drained term given back'],
        ['spec deleted', { ...base, ineligible: 'no spec' }, 'standby', 'drained term given back (no spec)'],
        ['undrain', { ...base, undrainRequested: true }, undefined, 'drain aborted: logging back in'],
        [
          'hold expired',
          { ...base, holdLeftMs: 0 },
          undefined,
          'drain hold expired without a transfer: logging back in',
        ],
        ['hold running', base, undefined, 'holding the key for a transfer'],
      ],
      decideDrained,
      (d, [situation]) => (then[situation] = d.then),
    );
    expect(then).to.deep.equal({
      'key transferred away': 'done',
      'transferred while fenced: still just transferred': 'done',
      fenced: 'give-back',
      stopping: 'give-back',
      'spec deleted': 'give-back',
      undrain: 'relogin',
      'hold expired': 'relogin',
      'hold running': 'wait',
    });
  });

  it('an unexpected error logs out first only where the service may run, then gives the term back', function () {
    const rows: Array<[IdentityState, OutsideFacts, IdentityState | undefined, IdentityState]> = [
      ['leader', calm, 'logging-out', 'standby'],
      ['logging-in', fenced, 'logging-out', 'fenced'],
      ['waiting-out', calm, undefined, 'standby'],
      ['drained', stopping, undefined, 'stopped'],
      ['logging-out', calm, undefined, 'standby'],
    ];
    for (const [state, facts, logout, after] of rows) {
      const d = decideAbandonTerm({ ...facts, state, error: 'boom' });
      expect(d.logout?.next, state).to.equal(logout);
      if (d.logout) expect(d.logout.reason).to.equal('unexpected error: boom');
      expect(d.giveBack.next, state).to.equal(after);
      expect(d.giveBack.reason).to.match(/^term abandoned after an unexpected error/);
      // Every path it takes is in the table.
      const path = [state, ...(logout ? [logout] : []), after];
      for (let i = 1; i < path.length; i++)
        expect(canMove(path[i - 1]!, path[i]!), path.join(' → ')).to.equal(true);
    }
  });

  it('eligibility: a spec, a place in its candidates, and no nofailover tag', function () {
    const spec = (candidates?: IdentitySpec['candidates']) => ({ candidates }) as unknown as IdentitySpec;
    const config = { priority: 1, nofailover: false };
    const rows: Array<[string, IdentitySpec | undefined, typeof config, string | undefined]> = [
      ['no spec', undefined, config, 'no spec for the identity in etcd'],
      ['no candidates list: anyone', spec(undefined), config, undefined],
      ['listed', spec({ a: { priority: 2, nofailover: false } }), config, undefined],
      [
        'not listed',
        spec({ b: { priority: 1, nofailover: false } }),
        config,
        "the spec's candidates do not include a",
      ],
      ['nofailover in config', spec(undefined), { ...config, nofailover: true }, /nofailover/.source],
      ['nofailover in spec', spec({ a: { priority: 1, nofailover: true } }), config, /nofailover/.source],
    ];
    for (const [situation, s, c, expected] of rows) {
      const got = ineligibility(s, 'a', c);
      if (expected === undefined) expect(got, situation).to.equal(undefined);
      else expect(got, situation).to.match(new RegExp(expected));
    }
  });

  it('every move a decision can make is in the table from the states it is made in', function () {
    // decideGiveBack is reached from waiting-out, logging-out and drained.
    for (const from of ['waiting-out', 'logging-out', 'drained'] as const) {
      for (const f of [calm, fenced, stopping]) {
        const to = decideGiveBack(f, 'x').next;
        expect(canMove(from, to), `${from} → ${to}`).to.equal(true);
      }
    }
    // A campaign may be won while the observer shows another leader (standby).
    for (const from of ['campaigning', 'standby'] as const)
      expect(canMove(from, 'waiting-out')).to.equal(true);
  });
});

// The state machine applies decisions and refuses moves outside the table of states.ts: a
// refused move throws, changes nothing and records nothing.
import { expect } from 'chai';
import { ManualClock } from '../../pkg/clock/index.js';
import { IdentityStateMachine, TransitionRefusedError } from '../../pkg/agent/machine.js';

describe('identity state machine: moves', function () {
  it('moves along the table, timing each state on the monotonic clock and stamping it on the wall clock', async function () {
    const clock = new ManualClock();
    const m = new IdentityStateMachine(clock, 'waiting for the identity spec in etcd');
    expect(m.state).to.equal('standby');
    expect(m.detail).to.equal('waiting for the identity spec in etcd');
    await clock.advance(1_500);
    const move = m.move({ next: 'campaigning', reason: 'competing for the leader key' });
    expect(move).to.deep.include({
      from: 'standby',
      to: 'campaigning',
      durationMs: 1_500,
      at: clock.wallMs(),
    });
    expect(m.state).to.equal('campaigning');
    expect(m.detail).to.equal('competing for the leader key');
    expect(m.since).to.equal(clock.wallMs());
  });

  it('staying records nothing; staying in the same state with a reason updates only the detail', function () {
    const m = new IdentityStateMachine(new ManualClock(), 'x');
    expect(m.move({ reason: 'eligible and not fenced: campaigning' })).to.equal(undefined);
    expect(m.detail).to.equal('x');
    expect(m.move({ next: 'standby', reason: 'no spec for the identity in etcd' })).to.equal(undefined);
    expect(m.detail).to.equal('no spec for the identity in etcd');
    expect(m.state).to.equal('standby');
  });

  it('refuses a move outside the table: throws a programming error and changes nothing', function () {
    const clock = new ManualClock();
    const m = new IdentityStateMachine(clock, 'before');
    const refused: Array<[string, () => void]> = [
      [
        'standby → leader (a login that skipped waiting out)',
        () => m.move({ next: 'leader', reason: 'bug' }),
      ],
      ['standby → logging-in', () => m.move({ next: 'logging-in', reason: 'bug' })],
      ['standby → drained', () => m.move({ next: 'drained', reason: 'bug' })],
    ];
    for (const [what, attempt] of refused) {
      expect(attempt, what).to.throw(TransitionRefusedError, /not in the table of pkg\/agent\/states\.ts/);
      expect(m.state, what).to.equal('standby');
      expect(m.detail, what).to.equal('before');
    }
    m.move({ next: 'campaigning', reason: 'go' });
    m.move({ next: 'waiting-out', reason: 'won' });
    m.move({ next: 'logging-in', reason: 'cleared' });
    m.move({ next: 'leader', reason: 'elected' });
    try {
      m.move({ next: 'standby', reason: 'skipping logout' });
      expect.fail('a leader must not leave except through logging-out');
    } catch (err) {
      expect(err).to.be.instanceOf(TransitionRefusedError);
      expect((err as TransitionRefusedError).from).to.equal('leader');
      expect((err as TransitionRefusedError).to).to.equal('standby');
    }
    expect(m.state).to.equal('leader');
  });
});

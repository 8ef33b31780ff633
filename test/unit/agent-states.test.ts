// The per-identity state machine's table: the safety-relevant moves exist, the unsafe ones do not.
import { expect } from 'chai';
import { canMove, IDENTITY_STATES, LOGGED_IN_STATES, TRANSITIONS } from '../../pkg/agent/states.js';

describe('identity state machine', () => {
  it('walks the documented cycle standby → campaigning → waiting-out → logging-in → leader → logging-out → standby', () => {
    const cycle = [
      'standby',
      'campaigning',
      'waiting-out',
      'logging-in',
      'leader',
      'logging-out',
      'standby',
    ] as const;
    for (let i = 1; i < cycle.length; i++)
      expect(canMove(cycle[i - 1]!, cycle[i]!), `${cycle[i - 1]} → ${cycle[i]}`).to.equal(true);
  });

  it('never reaches leader without logging in, and never leaves a logged-in state except through logging-out', () => {
    for (const from of IDENTITY_STATES) {
      if (from !== 'logging-in')
        expect(canMove(from, 'leader'), `${from} → leader`).to.equal(from === 'leader');
    }
    expect(TRANSITIONS.leader).to.deep.equal(['logging-out']);
    for (const to of TRANSITIONS['logging-in']) expect(['leader', 'logging-out']).to.include(to);
  });

  it('logs in only after waiting out the previous term, or again from drained (same term)', () => {
    const into = IDENTITY_STATES.filter((s) => TRANSITIONS[s].includes('logging-in'));
    expect(into.sort()).to.deep.equal(['drained', 'waiting-out']);
  });

  it('a fenced node leaves fenced only to standby (S4), and stopped is terminal', () => {
    expect(TRANSITIONS.fenced).to.deep.equal(['standby', 'stopped']);
    expect(TRANSITIONS.stopped).to.deep.equal([]);
    // A fenced leader first logs out: only logging-out may lead to fenced among logged-in states.
    for (const s of LOGGED_IN_STATES)
      expect(canMove(s, 'fenced'), `${s} → fenced`).to.equal(s === 'logging-out');
  });
});

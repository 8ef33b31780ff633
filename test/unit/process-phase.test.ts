// The life of one service process as a table: every phase × event, the phase it leads to (or
// the refusal) and why; what an exit means; and the restart rules under a term.
import { expect } from 'chai';
import {
  canMoveProcess,
  decideExit,
  LOGIN_PHASES,
  nextPhase,
  PHASE_TRANSITIONS,
  PROCESS_EVENTS,
  PROCESS_PHASES,
  type ExitFacts,
  type ExitOutcome,
  type ProcessEvent,
  type ProcessPhase,
} from '../../pkg/identity/process-phase.js';
import { decideStandbyCrash, decideTermCrash } from '../../pkg/identity/restart-policy.js';

const R = undefined; // refused

/** Expected next phase for each phase (row) × event (column, in PROCESS_EVENTS order). */
const TABLE: Record<ProcessPhase, Record<ProcessEvent, ProcessPhase | undefined>> = {
  //              ready       login-sent    login-confirmed logout-sent    logout-confirmed stop        exit
  starting: row('standby', R, R, R, R, 'stopping', 'exited'),
  standby: row(R, 'logging-in', R, R, R, 'stopping', 'exited'),
  'logging-in': row(R, R, 'serving', 'logging-out', R, 'stopping', 'exited'),
  serving: row(R, R, R, 'logging-out', R, 'stopping', 'exited'),
  'logging-out': row(R, R, R, R, 'standby', 'stopping', 'exited'),
  stopping: row(R, R, R, R, R, R, 'exited'),
  exited: row(R, R, R, R, R, R, R),
};

function row(...next: Array<ProcessPhase | undefined>): Record<ProcessEvent, ProcessPhase | undefined> {
  return Object.fromEntries(PROCESS_EVENTS.map((e, i) => [e, next[i]])) as Record<
    ProcessEvent,
    ProcessPhase | undefined
  >;
}

describe('service process phases', function () {
  describe('phase × event', function () {
    for (const phase of PROCESS_PHASES) {
      for (const event of PROCESS_EVENTS) {
        const expected = TABLE[phase][event];
        it(`${phase} + ${event} → ${expected ?? 'refused'}`, function () {
          const step = nextPhase(phase, event);
          expect(step.reason, 'every step says why').to.be.a('string').and.not.equal('');
          if (expected === undefined) {
            expect(step.ok).to.equal(false);
            expect(step.reason).to.include(`${event} refused in ${phase}`);
          } else {
            expect(step).to.include({ ok: true, next: expected });
            expect(canMoveProcess(phase, expected), 'the move is in the table').to.equal(true);
          }
        });
      }
    }
  });

  it('the table holds exactly the moves the events can make', function () {
    for (const from of PROCESS_PHASES) {
      const reachable = new Set(PROCESS_EVENTS.map((e) => TABLE[from][e]).filter((p) => p !== undefined));
      expect([...reachable].sort(), from).to.deep.equal([...PHASE_TRANSITIONS[from]].sort());
    }
  });

  it('a login is sent only to a ready standby, and serving is reached only by a confirmed login', function () {
    const into = (to: ProcessPhase) => PROCESS_PHASES.filter((p) => PHASE_TRANSITIONS[p].includes(to));
    expect(into('logging-in')).to.deep.equal(['standby']);
    expect(into('serving')).to.deep.equal(['logging-in']);
  });

  it('a process that may be logged in leaves only by a logout, a stop or its exit (S1)', function () {
    for (const phase of LOGIN_PHASES) {
      for (const to of PHASE_TRANSITIONS[phase]) {
        expect(['serving', 'logging-out', 'standby', 'stopping', 'exited'], `${phase} → ${to}`).to.include(
          to,
        );
      }
    }
    // Back to standby (not logged in) only through a confirmed logout.
    expect(PROCESS_PHASES.filter((p) => LOGIN_PHASES.has(p) && canMoveProcess(p, 'standby'))).to.deep.equal([
      'logging-out',
    ]);
    expect(PHASE_TRANSITIONS.stopping).to.deep.equal(['exited']);
    expect(PHASE_TRANSITIONS.exited).to.deep.equal([]);
  });

  describe('what an exit means', function () {
    const base: ExitFacts = {
      phase: 'serving',
      purpose: 'term',
      warm: true,
      closed: false,
      termHeld: true,
      standbyAfterStop: false,
    };
    const rows: Array<[string, Partial<ExitFacts>, { kind: ExitOutcome['kind']; startStandby?: boolean }]> = [
      ['stopped by us', { phase: 'stopping' }, { kind: 'stopped', startStandby: false }],
      [
        'stopped by us, a fresh standby asked for, no term held',
        { phase: 'stopping', standbyAfterStop: true, termHeld: false },
        { kind: 'stopped', startStandby: true },
      ],
      [
        'stopped by us, a fresh standby asked for, but a term is held',
        { phase: 'stopping', standbyAfterStop: true },
        { kind: 'stopped', startStandby: false },
      ],
      [
        'closed driver: never a crash, never a standby',
        { phase: 'serving', closed: true, standbyAfterStop: true, termHeld: false },
        { kind: 'stopped', startStandby: false },
      ],
      ['a crash under the term', {}, { kind: 'term-crash' }],
      ['a crash of a cold service under the term', { warm: false }, { kind: 'term-crash' }],
      ['a crash while restarting under the term', { phase: 'starting' }, { kind: 'term-crash' }],
      [
        'a crash during a logout (the term already let go)',
        { phase: 'logging-out', termHeld: false },
        { kind: 'standby-crash' },
      ],
      [
        'a warm standby died',
        { phase: 'standby', purpose: 'standby', termHeld: false },
        { kind: 'standby-crash' },
      ],
      [
        'a warm process died while login() logs it in',
        { phase: 'logging-in', purpose: 'login', termHeld: false },
        { kind: 'standby-crash' },
      ],
      [
        'a cold service died while login() logs it in',
        { phase: 'logging-in', purpose: 'login', warm: false, termHeld: false },
        { kind: 'none' },
      ],
      [
        'the standby left by an abandoned restart died under the term',
        { phase: 'standby', purpose: 'standby' },
        { kind: 'none' },
      ],
    ];
    for (const [what, facts, expected] of rows) {
      it(what, function () {
        const outcome = decideExit({ ...base, ...facts });
        expect(outcome).to.include(expected);
        expect(outcome.reason).to.be.a('string').and.not.equal('');
      });
    }
  });

  describe('a crash under a term', function () {
    const policy = { maxAttempts: 2, backoffMs: 100, maxBackoffMs: 150, resetAfterMs: 1_000 };
    const rows: Array<[string, Parameters<typeof decideTermCrash>[0], object, RegExp]> = [
      [
        'first crash: restart 1',
        { previous: 0, ranMs: 10, termMayAct: true, crash: 'exited with code 3' },
        { action: 'restart', attempt: 1, delayMs: 100, crashes: 1 },
        /^exited with code 3; restart 1 of 2 under the same term in 100 ms$/,
      ],
      [
        'second crash: restart 2, backoff capped',
        { previous: 1, ranMs: 10, termMayAct: true, crash: 'killed by SIGKILL' },
        { action: 'restart', attempt: 2, delayMs: 150, crashes: 2 },
        /restart 2 of 2/,
      ],
      [
        'third crash in a row: give up',
        { previous: 2, ranMs: 10, termMayAct: true, crash: 'exited with code 3' },
        { action: 'give-up', crashes: 3 },
        /gave up after 3 crashes in a row \(service\.restart\.maxAttempts 2\)/,
      ],
      [
        'a crash after a healthy run starts the count over',
        { previous: 2, ranMs: 1_000, termMayAct: true, crash: 'exited with code 3' },
        { action: 'restart', attempt: 1, crashes: 1 },
        /restart 1 of 2/,
      ],
      [
        'a crash after the term ended: not restarted, not a give-up, and not counted',
        { previous: 2, ranMs: 10, termMayAct: false, crash: 'killed by SIGKILL' },
        { action: 'term-ended', crashes: 2 },
        /not restarted: the term has ended/,
      ],
    ];
    for (const [what, crash, expected, reason] of rows) {
      it(what, function () {
        const decision = decideTermCrash(crash, policy);
        expect(decision).to.include(expected);
        expect(decision.reason).to.match(reason);
      });
    }

    it('a standby is always started again, with the same backoff', function () {
      expect(decideStandbyCrash(0, 10, policy)).to.include({ crashes: 1, delayMs: 100 });
      expect(decideStandbyCrash(5, 10, policy)).to.include({ crashes: 6, delayMs: 150 });
      expect(decideStandbyCrash(5, 1_000, policy).reason).to.match(
        /crash 1 in a row: starting it again in 100 ms/,
      );
    });
  });
});

// The life of one service process, in one place: its phases, the moves allowed between them,
// and what its exit means. ServiceProcess.move() (service-process.ts) is the only way a
// process changes phase; it asks nextPhase() and refuses any move outside PHASE_TRANSITIONS.
// Everything here is pure: the driver feeds in facts and acts on the answer.
//
//   warm:  starting → standby → logging-in → serving → logging-out → standby
//   cold:             (spawned) logging-in → serving → stopping → exited
//   any live phase → stopping → exited;  any live phase → exited (it died on its own)
//
// "Logged in" is a property of phases, not a flag: a process in LOGIN_PHASES may run under the
// shared name, so logging it out means something (S1: never two logins at once).

export const PROCESS_PHASES = [
  /** Warm: spawned, not yet `ready`. */
  'starting',
  /** Warm: ready and not logged in; the only phase a login may be sent in. */
  'standby',
  /** Told to log in (the login message sent, or the token in a cold service's environment). */
  'logging-in',
  /** Login confirmed: requests go to it. */
  'serving',
  /** Warm: told to log out, waiting for it to confirm. */
  'logging-out',
  /** Being stopped by us: its exit is expected, not a crash. */
  'stopping',
  /** Gone; terminal. */
  'exited',
] as const;
export type ProcessPhase = (typeof PROCESS_PHASES)[number];

export const PHASE_TRANSITIONS: Readonly<Record<ProcessPhase, readonly ProcessPhase[]>> = {
  starting: ['standby', 'stopping', 'exited'],
  standby: ['logging-in', 'stopping', 'exited'],
  // A logout may overtake a login still on its way: it is logged out like a logged-in one.
  'logging-in': ['serving', 'logging-out', 'stopping', 'exited'],
  serving: ['logging-out', 'stopping', 'exited'],
  // Confirmed: back to standby (the warm process stays up); not confirmed: stopped.
  'logging-out': ['standby', 'stopping', 'exited'],
  stopping: ['exited'],
  exited: [],
};

/** Phases in which the process may be running under the shared name (a logout must reach it). */
export const LOGIN_PHASES: ReadonlySet<ProcessPhase> = new Set(['logging-in', 'serving', 'logging-out']);

export function canMoveProcess(from: ProcessPhase, to: ProcessPhase): boolean {
  return PHASE_TRANSITIONS[from].includes(to);
}

/** What happened to a process, as the driver reports it. */
export const PROCESS_EVENTS = [
  'ready',
  'login-sent',
  'login-confirmed',
  'logout-sent',
  'logout-confirmed',
  'stop',
  'exit',
] as const;
export type ProcessEvent = (typeof PROCESS_EVENTS)[number];

export type PhaseStep = { ok: true; next: ProcessPhase; reason: string } | { ok: false; reason: string };

/**
 * The phase `event` leads to from `phase`, or why it may not happen there. A move the rules
 * below propose but the table does not hold is refused too: the table has the last word.
 */
export function nextPhase(phase: ProcessPhase, event: ProcessEvent): PhaseStep {
  const step = proposePhase(phase, event);
  if (step.ok && !canMoveProcess(phase, step.next)) {
    return { ok: false, reason: `${event} refused in ${phase}: ${phase} → ${step.next} is not in the table` };
  }
  return step;
}

function proposePhase(phase: ProcessPhase, event: ProcessEvent): PhaseStep {
  const refuse = (why: string): PhaseStep => ({ ok: false, reason: `${event} refused in ${phase}: ${why}` });
  if (phase === 'exited') return refuse('the process is gone');
  switch (event) {
    case 'ready':
      return phase === 'starting'
        ? { ok: true, next: 'standby', reason: 'the warm process reported ready' }
        : refuse('only a starting process reports ready');
    case 'login-sent':
      return phase === 'standby'
        ? { ok: true, next: 'logging-in', reason: 'told to log in' }
        : refuse('a login goes only to a ready standby');
    case 'login-confirmed':
      return phase === 'logging-in'
        ? { ok: true, next: 'serving', reason: 'it confirmed the login under the expected token' }
        : refuse('no login is on its way');
    case 'logout-sent':
      return LOGIN_PHASES.has(phase) && phase !== 'logging-out'
        ? { ok: true, next: 'logging-out', reason: 'told to log out' }
        : refuse('it is not logged in');
    case 'logout-confirmed':
      return phase === 'logging-out'
        ? { ok: true, next: 'standby', reason: 'it confirmed the logout; the warm process stays up' }
        : refuse('no logout is on its way');
    case 'stop':
      return phase === 'stopping'
        ? refuse('already stopping')
        : { ok: true, next: 'stopping', reason: 'stopped by the driver (SIGTERM, then SIGKILL)' };
    case 'exit':
      return {
        ok: true,
        next: 'exited',
        reason: phase === 'stopping' ? 'it exited as asked' : 'it exited on its own',
      };
  }
}

/** What a process is for; decides what its unexpected exit means. */
export type Purpose =
  /** Warm, standing by (or starting to): a crash starts it again warm, with backoff. */
  | 'standby'
  /** Being logged in by login(): login() reports a failure; it is not restarted under a term. */
  | 'login'
  /** Under a term (logged in, or being restarted under it): a crash counts towards give-up. */
  | 'term';

export interface ExitFacts {
  /** The phase it was in when it exited. */
  phase: ProcessPhase;
  purpose: Purpose;
  warm: boolean;
  /** The driver was closed: nothing starts again. */
  closed: boolean;
  /** The driver is logged in under a term (a crash may be restarted under it). */
  termHeld: boolean;
  /** Asked of a stop: start a fresh standby once it is gone. */
  standbyAfterStop: boolean;
}

export type ExitOutcome =
  /** Stopped on purpose; `startStandby`: start a fresh warm process now. */
  | { kind: 'stopped'; startStandby: boolean; reason: string }
  /** A crash under the term: counted, restarted under it or given up (restart-policy.ts). */
  | { kind: 'term-crash'; reason: string }
  /** A warm process not logged in died: start it again with backoff. */
  | { kind: 'standby-crash'; reason: string }
  /** Nothing to do here (login() reports its own failure; a logout is on its way). */
  | { kind: 'none'; reason: string };

/** What the driver does when a process exits. */
export function decideExit(f: ExitFacts): ExitOutcome {
  if (f.phase === 'stopping' || f.closed) {
    const startStandby = f.standbyAfterStop && !f.closed && !f.termHeld;
    return {
      kind: 'stopped',
      startStandby,
      reason: f.closed
        ? 'the driver is closed'
        : startStandby
          ? 'stopped on purpose; a fresh standby replaces it'
          : 'stopped on purpose',
    };
  }
  if (f.purpose === 'term' && f.termHeld)
    return { kind: 'term-crash', reason: 'it crashed under the term it was logged in for' };
  if (!f.warm) {
    return {
      kind: 'none',
      reason: 'no term to restart it under: a cold service failing its login is reported by login()',
    };
  }
  if (f.termHeld) {
    return {
      kind: 'none',
      reason: 'a standby left over from an abandoned restart: the term is being logged out',
    };
  }
  return { kind: 'standby-crash', reason: 'the warm process died while not logged in' };
}

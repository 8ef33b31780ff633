// The current state of one identity and the only way to change it: move() applies a decision
// (decide.ts) if the table in states.ts allows it, and refuses it otherwise.
//
// A refused move is a bug in the runner, never an operational condition. It throws
// TransitionRefusedError and leaves the state as it was; the runner treats the throw like any
// unexpected error: it stops the service if one may run and gives the term back. Because
// logging-in is entered only through move(), a refused move can never lead to a login.
import type { Clock } from '../clock/index.js';
import type { Decision } from './decide.js';
import { canMove, type IdentityState } from './states.js';

export class TransitionRefusedError extends Error {
  constructor(
    readonly from: IdentityState,
    readonly to: IdentityState,
    readonly reason: string,
  ) {
    super(
      `state machine refused ${from} → ${to} (${reason}): the move is not in the table of ` +
        `pkg/agent/states.ts. This is a bug in the agent; report it with this log`,
    );
    this.name = 'TransitionRefusedError';
  }
}

/** One move that happened, for the log, history and metrics. */
export interface Move {
  from: IdentityState;
  to: IdentityState;
  reason: string;
  /** Wall-clock ms of the move (others read it). */
  at: number;
  /** Time spent in `from`, on the monotonic clock. */
  durationMs: number;
}

export class IdentityStateMachine {
  private current: IdentityState = 'standby';
  private sinceWall: number;
  private sinceMono: number;
  private why: string | undefined;

  constructor(
    private readonly clock: Clock,
    detail?: string,
  ) {
    this.sinceWall = clock.wallMs();
    this.sinceMono = clock.monotonicMs();
    this.why = detail;
  }

  get state(): IdentityState {
    return this.current;
  }

  /** Wall-clock ms the current state began. */
  get since(): number {
    return this.sinceWall;
  }

  /** The reason of the latest decision that moved the identity or explained where it stays. */
  get detail(): string | undefined {
    return this.why;
  }

  /**
   * Applies a decision. No `next`: nothing changes. `next` equal to the current state: only
   * the detail takes the new reason (no move is recorded). Otherwise the move happens if the
   * table allows it, or throws TransitionRefusedError with nothing changed. Returns the move
   * made, if any.
   */
  move(d: Decision): Move | undefined {
    if (d.next === undefined) return undefined;
    const from = this.current;
    if (d.next === from) {
      this.why = d.reason;
      return undefined;
    }
    if (!canMove(from, d.next)) throw new TransitionRefusedError(from, d.next, d.reason);
    const at = this.clock.wallMs();
    const mono = this.clock.monotonicMs();
    const durationMs = Math.round(mono - this.sinceMono);
    this.current = d.next;
    this.sinceWall = at;
    this.sinceMono = mono;
    this.why = d.reason;
    return { from, to: d.next, reason: d.reason, at, durationMs };
  }
}

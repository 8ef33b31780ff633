// Spawns take turns on the event loop. Spawning a service blocks the agent's main thread until
// the child has exec'd: a fork of the whole agent, 5–10 ms on a 2-core VM whose forks are slow
// (1 ms on a faster one). Logins admitted together (admission.ts) reach their spawns together,
// when their etcd answers arrive in one batch, and ran back to back: the scale bench's profile
// showed stretches of 300–400 spawns with no turn of the loop between them (5 s on a starved
// host). Nothing else ran meanwhile: not the heartbeat the renewal thread watches for, not the
// renewals' pushes of the lifeline deadline — and the lifeline killed the services it protects.
//
// Here each spawn waits for a turn of its own: one per pass of the event loop, so timers and
// I/O (a renewal acknowledged, a deadline pushed back) run between any two spawns. The total
// cost is the same; what changes is that nothing waits behind more than one spawn.

/** How a waiter gets the next pass of the loop (injected by tests that count passes). */
export type NextPass = (run: () => void) => void;

/** setImmediate scheduled from a check phase runs on the loop's next pass, after its timers and I/O. */
const nextPass: NextPass = (run) => setImmediate(run);

export class SpawnTurns {
  private readonly waiting: Array<() => void> = [];
  private scheduled = false;

  constructor(private readonly pass: NextPass = nextPass) {}

  /** Waiters in line (for metrics and tests). */
  get queued(): number {
    return this.waiting.length;
  }

  /**
   * Resolves on a pass of the loop that no other waiter has: the caller spawns right after
   * (no await between this and its spawn, or the turn is lost to whatever runs meanwhile).
   */
  turn(): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiting.push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.waiting.length === 0) return;
    this.scheduled = true;
    this.pass(() => {
      this.scheduled = false;
      // The waiter's continuation runs in this pass's microtasks; the next waiter's pass is
      // scheduled now, so it comes after the loop has gone round once more.
      this.waiting.shift()?.();
      this.schedule();
    });
  }
}

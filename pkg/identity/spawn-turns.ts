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
// cost is the same; what changes is that nothing waits behind more than one spawn. A spawn
// under a term (a login, a restart of a logged-in service) goes before every standby waiting:
// an agent starting a thousand warm standbys must not hold a failover's login back behind them.

/** How a waiter gets the next pass of the loop (injected by tests that count passes). */
export type NextPass = (run: () => void) => void;

/** setImmediate scheduled from a check phase runs on the loop's next pass, after its timers and I/O. */
const nextPass: NextPass = (run) => setImmediate(run);

/** Who spawns: a service under a term goes first; a standby (nobody logged in) after. */
export type SpawnFor = 'term' | 'standby';

export class SpawnTurns {
  private readonly waiting: Record<SpawnFor, Array<() => void>> = { term: [], standby: [] };
  private scheduled = false;

  constructor(private readonly pass: NextPass = nextPass) {}

  /** Waiters in line (for metrics and tests). */
  get queued(): number {
    return this.waiting.term.length + this.waiting.standby.length;
  }

  /**
   * Resolves on a pass of the loop that no other waiter has, terms before standbys and each
   * in the order asked: the caller spawns right after (no await between this and its spawn,
   * or the turn is lost to whatever runs meanwhile).
   */
  turn(spawnFor: SpawnFor): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiting[spawnFor].push(resolve);
      this.schedule();
    });
  }

  private schedule(): void {
    if (this.scheduled || this.queued === 0) return;
    this.scheduled = true;
    this.pass(() => {
      this.scheduled = false;
      // The waiter's continuation runs in this pass's microtasks; the next waiter's pass is
      // scheduled now, so it comes after the loop has gone round once more.
      (this.waiting.term.shift() ?? this.waiting.standby.shift())?.();
      this.schedule();
    });
  }
}

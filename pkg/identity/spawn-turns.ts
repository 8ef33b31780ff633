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
//
// Warm logins go first too. A host that takes over a warm and a cold identity at once forked
// for the cold one while the warm service was logging in: the fork held the agent's loop and
// the new runtime's boot took the cores the warm login needed. In 2026-12-05's failover bench
// (T = 5 s) the warm login, from its gate opening to the service in, took 105 ms in median
// (p90 166) with the cold spawn inside it, 55 (p90 100) without; at T = 10 s 92 / 163, max 458,
// against 52 / 84. Held until the warm service was in, the spawn then landed on the next step,
// the responder's subscription (500 ms once). A warm login answers in tens of milliseconds; a
// cold service takes hundreds to start whatever we do. So while a login that starts no process
// is under way (the agent's term says so, from its admission until its responder is open),
// spawns wait for it, each for at most WARM_LOGINS_FIRST_MS from when it asked: a storm of
// warm logins delays the spawns once, not once per spawn.

/** How a waiter gets the next pass of the loop (injected by tests that count passes). */
export type NextPass = (run: () => void) => void;

/** setImmediate scheduled from a check phase runs on the loop's next pass, after its timers and I/O. */
const nextPass: NextPass = (run) => setImmediate(run);

/**
 * Longest a spawn waits for warm logins under way. A warm login took 20–160 ms on 2026-12-05's
 * saturated 2-core bench, a cold service's fork and boot several hundred: 300 ms covers a slow
 * warm login and costs a cold one less than its own start.
 */
export const WARM_LOGINS_FIRST_MS = 300;

/** Timers and the time they read (injected by tests). */
export interface TurnClock {
  /** Monotonic milliseconds. */
  now(): number;
  /** Run `run` after `ms`; returns what cancels it. */
  after(ms: number, run: () => void): () => void;
}

const realClock: TurnClock = {
  now: () => performance.now(),
  after: (ms, run) => {
    const timer = setTimeout(run, ms);
    return () => clearTimeout(timer);
  },
};

interface Waiter {
  resolve: () => void;
  askedAt: number;
}

/** Who spawns: a service under a term goes first; a standby (nobody logged in) after. */
export type SpawnFor = 'term' | 'standby';

export class SpawnTurns {
  private readonly waiting: Record<SpawnFor, Waiter[]> = { term: [], standby: [] };
  private scheduled = false;
  private readonly warmLogins = new Set<Promise<unknown>>();
  /** Cancels the timer that ends the current hold for warm logins (set while held). */
  private release: (() => void) | undefined;

  constructor(
    private readonly pass: NextPass = nextPass,
    private readonly clock: TurnClock = realClock,
  ) {}

  /** Waiters in line (for metrics and tests). */
  get queued(): number {
    return this.waiting.term.length + this.waiting.standby.length;
  }

  /**
   * Resolves on a pass of the loop that no other waiter has, terms before standbys and each
   * in the order asked, after the warm logins under way (at most WARM_LOGINS_FIRST_MS): the
   * caller spawns right after (no await between this and its spawn, or the turn is lost to
   * whatever runs meanwhile).
   */
  turn(spawnFor: SpawnFor): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiting[spawnFor].push({ resolve, askedAt: this.clock.now() });
      this.schedule();
    });
  }

  /**
   * A login that starts no process is under way until `login` settles (in, or failed):
   * spawns wait for it. Returns `login` itself.
   */
  warmLogin<T>(login: Promise<T>): Promise<T> {
    this.warmLogins.add(login);
    const done = () => {
      this.warmLogins.delete(login);
      if (this.warmLogins.size === 0 && this.release) this.endHold();
    };
    login.then(done, done);
    return login;
  }

  private schedule(): void {
    if (this.scheduled || this.release || this.queued === 0) return;
    this.scheduled = true;
    this.pass(() => {
      this.scheduled = false;
      const line = this.waiting.term.length > 0 ? this.waiting.term : this.waiting.standby;
      const first = line[0];
      if (!first) return;
      const heldFor = this.clock.now() - first.askedAt;
      if (this.warmLogins.size > 0 && heldFor < WARM_LOGINS_FIRST_MS) {
        // Later waiters asked later: none of them is due before the first.
        this.release = this.clock.after(WARM_LOGINS_FIRST_MS - heldFor, () => this.endHold());
        return;
      }
      // The waiter's continuation runs in this pass's microtasks; the next waiter's pass is
      // scheduled now, so it comes after the loop has gone round once more.
      line.shift()!.resolve();
      this.schedule();
    });
  }

  private endHold(): void {
    this.release?.();
    this.release = undefined;
    this.schedule();
  }
}

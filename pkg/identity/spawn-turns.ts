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
// is under way (the agent's term says so, from its admission until its responder is open), a
// cold login's spawn waits for it. Only those: a standby's start may be what a warm login
// itself waits for, and a crashed service's restart under a term gains nothing by waiting.
// The wait is bounded once per stretch of warm logins: it ends WARM_LOGINS_FIRST_MS after the
// first held spawn asked, and no spawn is held again until no warm login is under way, so a
// storm of warm logins (which hold admission slots meanwhile) delays the cold ones once.

/** How a waiter gets the next pass of the loop (injected by tests that count passes). */
export type NextPass = (run: () => void) => void;

/** setImmediate scheduled from a check phase runs on the loop's next pass, after its timers and I/O. */
const nextPass: NextPass = (run) => setImmediate(run);

/**
 * Longest cold logins' spawns wait for a stretch of warm logins. A warm login took 20–160 ms on
 * 2026-12-05's saturated 2-core bench, a cold service's fork and boot several hundred: 300 ms
 * covers a slow warm login and costs a cold one less than its own start.
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

/** Who spawns: a service under a term goes first; a standby (nobody logged in) after. */
export type SpawnFor = 'term' | 'standby';

interface Waiter {
  resolve: () => void;
  askedAt: number;
  /** A cold login's spawn: it lets the warm logins under way go first. */
  afterWarmLogins: boolean;
}

export class SpawnTurns {
  private readonly waiting: Record<SpawnFor, Waiter[]> = { term: [], standby: [] };
  private scheduled = false;
  private readonly warmLogins = new Set<Promise<unknown>>();
  /**
   * While warm logins are under way: when the hold of this stretch of them ends (set by its
   * first held spawn; cleared once none is under way). Past it nothing is held.
   */
  private holdEndsAt: number | undefined;
  /** Cancels the timer that ends the current hold (set while spawns are held). */
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
   * in the order asked; a cold login's spawn (`afterWarmLogins`) lets the warm logins under
   * way go first (at most WARM_LOGINS_FIRST_MS per stretch of them). The caller spawns right
   * after (no await between this and its spawn, or the turn is lost to whatever runs meanwhile).
   */
  turn(spawnFor: SpawnFor, opts: { afterWarmLogins?: boolean } = {}): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiting[spawnFor].push({
        resolve,
        askedAt: this.clock.now(),
        afterWarmLogins: opts.afterWarmLogins ?? false,
      });
      this.schedule();
    });
  }

  /**
   * A login that starts no process is under way until `login` settles (in, or failed): cold
   * logins' spawns wait for it. Returns `login` itself.
   */
  warmLogin<T>(login: Promise<T>): Promise<T> {
    this.warmLogins.add(login);
    const done = () => {
      this.warmLogins.delete(login);
      if (this.warmLogins.size > 0) return;
      this.holdEndsAt = undefined;
      if (this.release) this.endHold();
    };
    login.then(done, done);
    return login;
  }

  private schedule(): void {
    if (this.scheduled || this.release || this.queued === 0) return;
    this.scheduled = true;
    this.pass(() => {
      this.scheduled = false;
      const now = this.clock.now();
      const holding = this.warmLogins.size > 0 && (this.holdEndsAt === undefined || now < this.holdEndsAt);
      const free = (w: Waiter) => !(holding && w.afterWarmLogins);
      const line = [this.waiting.term, this.waiting.standby].find((l) => l.some(free));
      if (!line) {
        // Everyone waiting lets the warm logins go first: until they are in, or the hold ends.
        const first = this.waiting.term[0] ?? this.waiting.standby[0];
        if (!first) return;
        this.holdEndsAt ??= first.askedAt + WARM_LOGINS_FIRST_MS;
        this.release = this.clock.after(Math.max(0, this.holdEndsAt - now), () => this.endHold());
        return;
      }
      // The waiter's continuation runs in this pass's microtasks; the next waiter's pass is
      // scheduled now, so it comes after the loop has gone round once more.
      line.splice(line.findIndex(free), 1)[0]!.resolve();
      this.schedule();
    });
  }

  private endHold(): void {
    this.release?.();
    this.release = undefined;
    this.schedule();
  }
}

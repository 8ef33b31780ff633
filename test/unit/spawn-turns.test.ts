// Spawn turns (pkg/identity/spawn-turns.ts): logins that reach their spawns together take one
// pass of the event loop each, so what fell due meanwhile (the heartbeat the renewal thread
// watches, a renewal's push of the lifeline deadline) runs between any two spawns.
import { expect } from 'chai';
import { deferred } from '../support/wait.js';
import {
  SpawnTurns,
  WARM_LOGINS_FIRST_MS,
  type NextPass,
  type TurnClock,
} from '../../pkg/identity/spawn-turns.js';

/** A spawn holds the thread for a while (a fork and exec); a timer set before it is due after. */
function holdThread(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    /* the fork of a large process, as the main thread sees it */
  }
}

describe('spawn turns', function () {
  it('runs a timer that fell due during one spawn before the next spawn starts', async function () {
    const turns = new SpawnTurns();
    const order: string[] = [];
    const timersDone: Array<Promise<void>> = [];
    await Promise.all(
      [0, 1, 2].map(async (i) => {
        await turns.turn('standby');
        order.push(`spawn ${i}`);
        timersDone.push(
          new Promise((resolve) => setTimeout(() => resolve(void order.push(`timer ${i}`)), 0)),
        );
        holdThread(5); // the 0 ms timer (really 1 ms) is due when this ends
      }),
    );
    await Promise.all(timersDone);
    expect(order).to.deep.equal(['spawn 0', 'timer 0', 'spawn 1', 'timer 1', 'spawn 2', 'timer 2']);
  });

  it('gives every waiter a pass of its own, in the order they asked', async function () {
    const passes: Array<() => void> = [];
    const manual: NextPass = (run) => passes.push(run);
    const turns = new SpawnTurns(manual);
    const got: number[] = [];
    const all = [0, 1, 2].map((i) => turns.turn('standby').then(() => got.push(i)));
    expect(turns.queued).to.equal(3);
    expect(passes, 'one pass asked for at a time').to.have.length(1);
    for (let pass = 0; pass < 3; pass++) {
      passes.shift()!();
      await Promise.resolve(); // the waiter's continuation
      expect(got).to.deep.equal([0, 1, 2].slice(0, pass + 1));
    }
    await Promise.all(all);
    expect(passes, 'nothing left to schedule').to.have.length(0);
    expect(turns.queued).to.equal(0);
  });

  it('lets a spawn under a term go before every standby waiting, each kind in the order asked', async function () {
    const passes: Array<() => void> = [];
    const turns = new SpawnTurns((run) => passes.push(run));
    const got: string[] = [];
    const all = [
      turns.turn('standby').then(() => got.push('standby 1')),
      turns.turn('standby').then(() => got.push('standby 2')),
      turns.turn('term').then(() => got.push('term 1')),
      turns.turn('term').then(() => got.push('term 2')),
    ];
    while (passes.length > 0) {
      passes.shift()!();
      await Promise.resolve();
    }
    await Promise.all(all);
    expect(got).to.deep.equal(['term 1', 'term 2', 'standby 1', 'standby 2']);
  });

  it('needs no pass of its own for a later lone waiter to get one', async function () {
    const turns = new SpawnTurns();
    await turns.turn('term');
    await turns.turn('standby'); // would hang if the first pass left `scheduled` set
    expect(turns.queued).to.equal(0);
  });

  describe("a cold login's spawn lets the warm logins go first", function () {
    /** Passes run by hand, and a clock whose timers fire only when the test moves it. */
    function harness() {
      const passes: Array<() => void> = [];
      let now = 0;
      const timers: Array<{ at: number; run: () => void; cancelled: boolean }> = [];
      const clock: TurnClock = {
        now: () => now,
        after: (ms, run) => {
          const timer = { at: now + ms, run, cancelled: false };
          timers.push(timer);
          return () => void (timer.cancelled = true);
        },
      };
      const turns = new SpawnTurns((run) => passes.push(run), clock);
      const got: string[] = [];
      /** Run every pass asked for, and the continuations they release, until none is left. */
      const settle = async () => {
        for (let i = 0; i < 10; i++) await Promise.resolve();
        while (passes.length > 0) {
          passes.shift()!();
          for (let i = 0; i < 10; i++) await Promise.resolve();
        }
      };
      const advance = async (ms: number) => {
        now += ms;
        for (const timer of timers.splice(0)) {
          if (timer.cancelled) continue;
          if (timer.at <= now) timer.run();
          else timers.push(timer);
        }
        await settle();
      };
      const login = () => {
        const { promise, resolve, reject } = deferred<boolean>();
        return { promise, done: resolve, failed: reject };
      };
      return { turns, got, settle, advance, login, pendingTimers: () => timers.filter((t) => !t.cancelled) };
    }

    const cold = { afterWarmLogins: true };

    it('waits while a warm login is under way, and goes once the service is in', async function () {
      const h = harness();
      const warm = h.login();
      void h.turns.warmLogin(warm.promise);
      const spawned = h.turns.turn('term', cold).then(() => h.got.push('cold spawn'));
      await h.settle();
      await h.advance(WARM_LOGINS_FIRST_MS / 2);
      expect(h.got, 'no spawn while the warm service logs in').to.deep.equal([]);
      warm.done(true);
      await h.settle();
      await spawned;
      expect(h.got).to.deep.equal(['cold spawn']);
      expect(h.pendingTimers(), 'the hold timer is cancelled').to.have.length(0);
    });

    it('goes when the warm login fails, too', async function () {
      const h = harness();
      const warm = h.login();
      h.turns.warmLogin(warm.promise).catch(() => undefined);
      const spawned = h.turns.turn('term', cold).then(() => h.got.push('cold spawn'));
      await h.settle();
      warm.failed(new Error('the service did not log in'));
      await h.settle();
      await spawned;
      expect(h.got).to.deep.equal(['cold spawn']);
    });

    it(`waits for a slow warm login at most ${WARM_LOGINS_FIRST_MS} ms from when it asked`, async function () {
      const h = harness();
      void h.turns.warmLogin(h.login().promise); // never settles
      const spawned = h.turns.turn('term', cold).then(() => h.got.push('cold spawn'));
      await h.settle();
      await h.advance(WARM_LOGINS_FIRST_MS - 1);
      expect(h.got).to.deep.equal([]);
      await h.advance(1);
      await spawned;
      expect(h.got, 'the warm login is still under way').to.deep.equal(['cold spawn']);
    });

    it('is held once per stretch of warm logins, however many come and however long it lasts', async function () {
      const h = harness();
      void h.turns.warmLogin(h.login().promise); // never settles
      const first = [1, 2, 3].map((i) => h.turns.turn('term', cold).then(() => h.got.push(`spawn ${i}`)));
      await h.settle();
      await h.advance(WARM_LOGINS_FIRST_MS / 2);
      void h.turns.warmLogin(h.login().promise); // a second warm login, also never settling
      await h.advance(WARM_LOGINS_FIRST_MS / 2);
      await Promise.all(first);
      expect(h.got).to.deep.equal(['spawn 1', 'spawn 2', 'spawn 3']);
      // Still within the same stretch: a cold login asking now is not held again.
      const later = h.turns.turn('term', cold).then(() => h.got.push('spawn 4'));
      void h.turns.warmLogin(h.login().promise);
      await h.settle();
      await later;
      expect(h.got).to.deep.equal(['spawn 1', 'spawn 2', 'spawn 3', 'spawn 4']);
    });

    it('is held again in a new stretch, once no warm login was under way', async function () {
      const h = harness();
      const one = h.login();
      void h.turns.warmLogin(one.promise);
      const first = h.turns.turn('term', cold).then(() => h.got.push('spawn 1'));
      await h.settle();
      await h.advance(WARM_LOGINS_FIRST_MS);
      await first;
      one.done(true);
      await h.settle();
      void h.turns.warmLogin(h.login().promise);
      const second = h.turns.turn('term', cold).then(() => h.got.push('spawn 2'));
      await h.settle();
      expect(h.got, 'held in the new stretch').to.deep.equal(['spawn 1']);
      await h.advance(WARM_LOGINS_FIRST_MS);
      await second;
      expect(h.got).to.deep.equal(['spawn 1', 'spawn 2']);
    });

    it("never holds a standby's start or a restart under a term, even behind a held cold login", async function () {
      const h = harness();
      void h.turns.warmLogin(h.login().promise); // never settles
      const coldSpawn = h.turns.turn('term', cold).then(() => h.got.push('cold login'));
      const restart = h.turns.turn('term').then(() => h.got.push('restart under a term'));
      // A warm login whose standby must start first waits for this one.
      const standby = h.turns.turn('standby').then(() => h.got.push('standby start'));
      await h.settle();
      await Promise.all([restart, standby]);
      expect(h.got).to.deep.equal(['restart under a term', 'standby start']);
      await h.advance(WARM_LOGINS_FIRST_MS);
      await coldSpawn;
      expect(h.got).to.deep.equal(['restart under a term', 'standby start', 'cold login']);
    });

    it('holds nothing when no warm login is under way', async function () {
      const h = harness();
      const warm = h.login();
      void h.turns.warmLogin(warm.promise);
      warm.done(true);
      await h.settle();
      const spawned = h.turns.turn('term', cold).then(() => h.got.push('cold spawn'));
      await h.settle();
      await spawned;
      expect(h.got).to.deep.equal(['cold spawn']);
      expect(h.pendingTimers()).to.have.length(0);
    });
  });
});

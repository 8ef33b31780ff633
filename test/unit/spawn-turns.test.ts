// Spawn turns (pkg/identity/spawn-turns.ts): logins that reach their spawns together take one
// pass of the event loop each, so what fell due meanwhile (the heartbeat the renewal thread
// watches, a renewal's push of the lifeline deadline) runs between any two spawns.
import { expect } from 'chai';
import { SpawnTurns, type NextPass } from '../../pkg/identity/spawn-turns.js';

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
});

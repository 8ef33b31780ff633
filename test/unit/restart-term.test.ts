// A crash restart is decided by pure rules: nothing restarts once the term may no longer act
// (its session past the self-fence deadline, its key lost, its logout begun).
import { expect } from 'chai';
import { termMayAct, type LoginContext } from '../../pkg/identity/driver.js';
import { restartDecision } from '../../pkg/identity/process.js';

const policy = { maxAttempts: 3, backoffMs: 200, maxBackoffMs: 1_000, resetAfterMs: 60_000 };
const base: LoginContext = { identity: 'msggateway', node: 'a', token: 7n };

describe('restart under a term', function () {
  it('restarts only while the term may act; a crash after its end is neither restarted nor a give-up', function () {
    const table: Array<[crashes: number, mayAct: boolean, expected: ReturnType<typeof restartDecision>]> = [
      [1, true, { action: 'restart', attempt: 1, delayMs: 200 }],
      [3, true, { action: 'restart', attempt: 3, delayMs: 800 }],
      [4, true, { action: 'give-up', crashes: 4 }],
      [1, false, { action: 'term-ended' }],
      [4, false, { action: 'term-ended' }],
    ];
    for (const [crashes, mayAct, expected] of table) {
      expect(restartDecision(crashes, policy, mayAct), `${crashes} crashes, mayAct ${mayAct}`).to.deep.equal(
        expected,
      );
    }
  });

  it('a term may act unless its predicate says no or its logout began (signal aborted)', function () {
    const aborted = new AbortController();
    aborted.abort();
    const live = new AbortController();
    let asked = 0;
    const counting = () => (++asked, true);
    const table: Array<[string, LoginContext, boolean]> = [
      ['no predicate, no signal (tests, fixtures)', base, true],
      ['predicate true', { ...base, mayAct: () => true }, true],
      ['predicate false', { ...base, mayAct: () => false }, false],
      ['signal live, predicate true', { ...base, mayAct: () => true, signal: live.signal }, true],
      ['signal aborted, predicate true', { ...base, mayAct: counting, signal: aborted.signal }, false],
      ['signal aborted, no predicate', { ...base, signal: aborted.signal }, false],
    ];
    for (const [what, ctx, expected] of table) expect(termMayAct(ctx), what).to.equal(expected);
    expect(asked, 'an aborted term does not even ask its predicate').to.equal(0);
  });
});

// Retries are visible: a reason is reported once when it begins or changes and once when it
// clears, not once per attempt, and the detail shows every reason in force.
import { expect } from 'chai';
import {
  describeRetry,
  RetryBoard,
  RetryStreak,
  SHARED_RETRY_WINDOW_MS,
  SharedRetryLog,
  type RetryChange,
} from '../../pkg/agent/retries.js';

describe('agent retries', function () {
  it('reports a reason once per change, not per attempt', function () {
    const changes: RetryChange[] = [];
    const board = new RetryBoard((c) => changes.push(c));
    const at = { since: 1_000 };
    board.report('campaign', { what: 'reading the leader key', error: 'timeout', attempts: 1, ...at });
    board.report('campaign', { what: 'reading the leader key', error: 'timeout', attempts: 2, ...at });
    board.report('campaign', { what: 'reading the leader key', error: 'timeout', attempts: 3, ...at });
    expect(changes).to.have.length(1);
    expect(board.describe()).to.match(/^retrying reading the leader key: timeout \(3 attempts since /);
    // Only the figures differ (each timed-out call says how long it waited): the same reason.
    board.report('campaign', {
      what: 'reading the leader key',
      error: 'timeout after 2.001s',
      attempts: 4,
      ...at,
    });
    board.report('campaign', {
      what: 'reading the leader key',
      error: 'timeout after 2.013s',
      attempts: 5,
      ...at,
    });
    expect(changes).to.have.length(2);
    expect(board.describe()).to.match(/timeout after 2\.013s \(5 attempts since /);
    board.report('campaign', {
      what: 'reading the leader key',
      error: 'permission denied',
      attempts: 6,
      ...at,
    });
    expect(changes).to.have.length(3);
    board.report('loop', { what: 'the identity loop', error: 'no handler', attempts: 1, ...at });
    expect(board.describe()).to.match(
      /permission denied.*; retrying the identity loop: no handler \(1 attempt since/,
    );
    board.report('campaign', undefined);
    board.report('campaign', undefined);
    expect(changes.map((c) => [c.source, c.retry?.error])).to.deep.equal([
      ['campaign', 'timeout'],
      ['campaign', 'timeout after 2.001s'],
      ['campaign', 'permission denied'],
      ['loop', 'no handler'],
      ['campaign', undefined],
    ]);
    expect(board.retrying).to.equal(true);
    board.report('loop', undefined);
    expect(board.retrying).to.equal(false);
    expect(board.describe()).to.equal(undefined);
  });

  it("a streak counts attempts from its first failure's time until reset", function () {
    let now = 5_000;
    const streak = new RetryStreak('opening an etcd session', () => now);
    expect(streak.failed(new Error('refused'))).to.deep.equal({
      what: 'opening an etcd session',
      error: 'refused',
      since: 5_000,
      attempts: 1,
    });
    now = 6_000;
    expect(streak.failed('down')).to.include({ since: 5_000, attempts: 2, error: 'down' });
    streak.reset();
    expect(streak.failed(new Error('x'))).to.include({ since: 6_000, attempts: 1 });
    expect(describeRetry({ what: 'w', error: 'e', since: 0, attempts: 1 })).to.equal(
      'retrying w: e (1 attempt since 1970-01-01T00:00:00.000Z)',
    );
  });
});

describe('retries of a fault many identities share', function () {
  /** A logger that keeps each line's level and message. */
  function recorder() {
    const lines: Array<[string, string]> = [];
    const at = (level: string) => (_obj: unknown, msg: string) => void lines.push([level, msg]);
    const log = {
      warn: at('warn'),
      error: at('error'),
      info: at('info'),
      debug: at('debug'),
      isLevelEnabled: () => true,
    };
    return { log: log as unknown as Parameters<SharedRetryLog['log']>[0], lines };
  }
  const change = (error: string): RetryChange => ({
    source: 'campaign',
    retry: { what: "watching other nodes' sessions", error, since: 0, attempts: 1 },
    previous: undefined,
  });

  it('is logged in full by the first identity, at debug by the others within the window', function () {
    let now = 0;
    const shared = new SharedRetryLog(() => now);
    const { log, lines } = recorder();
    for (let i = 0; i < 200; i++) shared.log(log, change('etcd did not create a watch within 2000 ms'));
    expect(lines.filter(([level]) => level === 'warn')).to.have.length(1);
    expect(lines.filter(([level]) => level === 'debug')).to.have.length(199);
    now += SHARED_RETRY_WINDOW_MS;
    shared.log(log, change('etcd did not create a watch within 2000 ms'));
    expect(
      lines.filter(([level]) => level === 'warn'),
      'again once the window passed',
    ).to.have.length(2);
  });

  it('a different fault is logged as it comes; a recovery many identities share is said once', function () {
    const shared = new SharedRetryLog(() => 0);
    const { log, lines } = recorder();
    shared.log(log, change('deadline exceeded after 2.1 s'));
    shared.log(log, change('deadline exceeded after 3.4 s')); // the same, numbers aside
    shared.log(log, change('permission denied'));
    shared.log(log, { source: 'campaign', retry: undefined, previous: change('x').retry });
    shared.log(log, { source: 'campaign', retry: undefined, previous: change('x').retry });
    expect(lines.map(([level]) => level)).to.deep.equal(['warn', 'debug', 'warn', 'info', 'debug']);
  });

  it("takes the identity's name out of the reason: the same fault of two identities is one", function () {
    const shared = new SharedRetryLog(() => 0);
    const { log, lines } = recorder();
    const of = (identity: string): RetryChange => ({
      source: 'campaign',
      retry: { what: `reading ${identity}'s leader key`, error: 'deadline exceeded', since: 0, attempts: 1 },
      previous: undefined,
    });
    shared.log(log, of('s00042'), 's00042');
    shared.log(log, of('s00043'), 's00043');
    expect(lines).to.deep.equal([
      ['warn', "retrying reading s00042's leader key: deadline exceeded"],
      ['debug', "retrying reading s00043's leader key"],
    ]);
  });
});

// The chaos checker proves it can fail: a history of a safe run passes, and the history each
// unsafe behaviour leaves (an agent ignoring its self-fence deadline, one logging in after a
// revoke without waiting, one answering PING after logout, a stale write accepted, a fenced
// node logging in, a lost or doubled request, a slow failover, a late switchover) is caught,
// naming the invariant and printing the events that prove it.
import { spawnSync } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { check, formatReport, loginSpans, type Invariant } from '../../chaos/checker.js';
import { HISTORY_VERSION, parseHistory, type HistoryEvent } from '../../chaos/history.js';
import { repoRoot } from '../support/paths.js';

const TTL_MS = 4_000;
const CONFIG: HistoryEvent = {
  kind: 'config',
  t: 0,
  v: HISTORY_VERSION,
  seed: 7,
  ttlMs: TTL_MS,
  failoverMarginMs: 300,
  switchoverSlackMs: 500,
  observeSlackMs: 100,
};

const witness = (t: number, node: string, token: string, what: 'login' | 'alive' | 'logout' | 'exit') =>
  ({ kind: 'witness', t, identity: 'bot', node, token, what }) as const;
const leader = (t: number, node?: string, token?: string) =>
  ({ kind: 'leader', t, identity: 'bot', ...(node ? { node } : {}), ...(token ? { token } : {}) }) as const;
const ping = (t: number, ...responders: [string, string][]) =>
  ({
    kind: 'ping',
    t,
    identity: 'bot',
    responders: responders.map(([node, token]) => ({ node, token })),
  }) as const;

/**
 * A safe run: a leads under token 5; a switchover moves bot to b (token 9) within its deadline;
 * b's host is killed and a takes over under token 12 within T + margin; requests are each
 * answered once.
 */
function safeRun(): HistoryEvent[] {
  return [
    CONFIG,
    { kind: 'clock', t: 1, source: 'witness-a', reading: 1.2 },
    leader(100, 'a', '5'),
    witness(150, 'a', '5', 'login'),
    ping(500, ['a', '5']),
    { kind: 'request', t: 600, identity: 'bot', id: 'r1', what: 'send', durable: true },
    { kind: 'request', t: 620, identity: 'bot', id: 'r1', what: 'reply', node: 'a', token: '5' },
    { kind: 'write', t: 630, identity: 'bot', token: '5', accepted: true },
    { kind: 'workflow', t: 1_000, identity: 'bot', id: 'wf-1', state: 'requested', deadline: 31_000 },
    { kind: 'workflow', t: 1_010, identity: 'bot', id: 'wf-1', state: 'draining' },
    witness(1_100, 'a', '5', 'logout'),
    leader(1_150, 'b', '9'),
    witness(1_300, 'b', '9', 'login'),
    { kind: 'workflow', t: 1_400, identity: 'bot', id: 'wf-1', state: 'done' },
    { kind: 'write', t: 1_500, identity: 'bot', token: '5', accepted: false },
    ping(2_000, ['b', '9']),
    { kind: 'nemesis', t: 10_000, id: 'f1', action: 'kill', targets: ['b'], phase: 'start' },
    witness(10_050, 'b', '9', 'exit'),
    { kind: 'request', t: 11_000, identity: 'bot', id: 'r2', what: 'send', durable: true },
    leader(14_000),
    leader(14_050, 'a', '12'),
    witness(14_100, 'a', '12', 'login'),
    { kind: 'request', t: 14_200, identity: 'bot', id: 'r2', what: 'reply', node: 'a', token: '12' },
    { kind: 'nemesis', t: 14_500, id: 'f1', action: 'kill', targets: ['b'], phase: 'end' },
    { kind: 'fence', t: 15_000, node: 'b', fenced: true },
    { kind: 'transition', t: 15_100, identity: 'bot', node: 'b', from: 'stopped', to: 'fenced' },
    { kind: 'fence', t: 16_000, node: 'b', fenced: false },
    { kind: 'transition', t: 16_100, identity: 'bot', node: 'b', from: 'fenced', to: 'campaigning' },
    ping(17_000, ['a', '12']),
  ];
}

/** The safe run with some events replaced or added (kept in time order by the parser's sort). */
function variant(change: (events: HistoryEvent[]) => HistoryEvent[]): HistoryEvent[] {
  return change(safeRun()).sort((a, b) => a.t - b.t);
}

const without = (events: HistoryEvent[], drop: (e: HistoryEvent) => boolean) =>
  events.filter((e) => !drop(e));

function violations(events: HistoryEvent[], invariant: Invariant) {
  return check(events).violations.filter((v) => v.invariant === invariant);
}

describe('chaos checker: a safe run passes', function () {
  it('finds no violation, and reports the failover and the switchover it timed', function () {
    const report = check(safeRun());
    expect(report.violations).to.deep.equal([]);
    expect(report.failovers).to.deep.equal([{ action: 'kill', identity: 'bot', ms: 4_100 }]);
    expect(report.switchovers).to.deep.equal([{ action: 'done', identity: 'bot', ms: 400 }]);
    expect(report.faults.get('kill')).to.equal(1);
    expect(formatReport(report)).to.contain('no violation of S1-S5, L1, L2');
  });

  it('a login is a span from the witness login to its logout or exit; one never closed stays open', function () {
    const spans = loginSpans(variant((e) => without(e, (x) => x.kind === 'witness' && x.what === 'exit')));
    expect(spans.map((s) => [s.node, s.token, s.from, s.to])).to.deep.equal([
      ['a', '5', 150, 1_100],
      ['b', '9', 1_300, Infinity],
      ['a', '12', 14_100, Infinity],
    ]);
  });
});

describe('chaos checker: each unsafe behaviour is caught, with the events that prove it', function () {
  it('S1: an agent that ignores its self-fence deadline keeps its service logged in past the successor\u2019s login', function () {
    // b froze past T; its service ran on and logged out only when b resumed, after a logged in.
    const events = variant((e) => [
      ...without(e, (x) => x.kind === 'witness' && x.what === 'exit'),
      witness(15_000, 'b', '9', 'logout'),
    ]);
    const [v, ...rest] = violations(events, 'S1');
    expect(rest).to.deep.equal([]);
    expect(v!.message).to.equal(
      'bot: a (token 12) logged in at 14.100 s while b (token 9) was logged in since 1.300 s until logout at 15.000 s',
    );
    expect(v!.events).to.deep.equal([
      witness(1_300, 'b', '9', 'login'),
      witness(14_100, 'a', '12', 'login'),
      witness(15_000, 'b', '9', 'logout'),
    ]);
  });

  it('S1: a login no record ever closes overlaps every later one (absence of evidence is not proof)', function () {
    const events = variant((e) => without(e, (x) => x.kind === 'witness' && x.what === 'exit'));
    const [v] = violations(events, 'S1');
    expect(v!.message).to.contain(
      'b (token 9) was logged in since 1.300 s and no record shows it ever logged out',
    );
  });

  it('S1: an agent that logs in after a revoke without waiting overlaps the revoked holder', function () {
    const events = variant((e) => [
      ...without(e, (x) => x.kind === 'witness' && x.node === 'a' && x.token === '12'),
      witness(10_020, 'a', '12', 'login'),
    ]);
    expect(violations(events, 'S1').map((v) => v.message)).to.deep.equal([
      'bot: a (token 12) logged in at 10.020 s while b (token 9) was logged in since 1.300 s until exit at 10.050 s',
    ]);
  });

  it('S1: an agent that answers PING after logout shows two responders', function () {
    const events = variant((e) => [...e, ping(1_350, ['a', '5'], ['b', '9'])]);
    const [v] = violations(events, 'S1');
    expect(v!.message).to.equal('bot: 2 nodes answered one PING at 1.350 s: a (token 5), b (token 9)');
    expect(v!.events).to.deep.equal([ping(1_350, ['a', '5'], ['b', '9'])]);
  });

  it('S2: a write under a stale token accepted, and a leader key that went back', function () {
    const events = variant((e) => [
      ...without(e, (x) => x.kind === 'write' && !x.accepted),
      { kind: 'write', t: 1_500, identity: 'bot', token: '5', accepted: true },
      leader(2_500, 'a', '7'),
    ]);
    expect(violations(events, 'S2').map((v) => v.message)).to.deep.equal([
      'bot: the leader key went back to token 7 at 2.500 s after token 9 at 1.150 s',
      'bot: a write under the stale token 5 was accepted at 1.500 s while the leader key had token 9 (since 1.150 s)',
    ]);
  });

  it('S2: an older term logging in after a newer one did', function () {
    const events = variant((e) => [...e, witness(16_500, 'b', '9', 'login')]);
    const messages = violations(events, 'S2').map((v) => v.message);
    expect(messages).to.deep.equal([
      'bot: a service logged in under the older token 9 at 16.500 s after token 12 at 14.100 s',
    ]);
  });

  it('S3: a login under a token the leader key never had, and one after the term ended', function () {
    const never = variant((e) => [
      ...e,
      witness(16_600, 'c', '13', 'login'),
      witness(16_700, 'c', '13', 'logout'),
    ]);
    expect(violations(never, 'S3').map((v) => v.message)).to.deep.equal([
      'bot: c logged in under token 13 at 16.600 s, but the leader key never had that token by then',
    ]);
    const late = variant((e) => [
      ...without(e, (x) => x.kind === 'witness' && x.node === 'b' && x.what === 'login'),
      leader(1_200, 'a', '10'),
      witness(1_400, 'b', '9', 'login'),
    ]);
    const [v] = violations(late, 'S3');
    expect(v!.message).to.equal(
      "bot: b logged in under token 9 at 1.400 s, after its term had ended (the key was a's, token 10 at 1.200 s)",
    );
    expect(v!.events.map((x) => x.t)).to.deep.equal([1_150, 1_200, 1_400]);
  });

  it('S3: a service that starts with no login record for its term (when the run watched them)', function () {
    const watched = (events: HistoryEvent[]) =>
      events.map((x) => (x.kind === 'config' ? { ...x, loginRecordsObserved: true } : x));
    const records = (events: HistoryEvent[]) => [
      ...events,
      { kind: 'login-record', t: 140, identity: 'bot', node: 'a', token: '5', loggedIn: true } as const,
      { kind: 'login-record', t: 1_290, identity: 'bot', node: 'b', token: '9', loggedIn: true } as const,
    ];
    // Every login follows its record but a's second term (token 12), which never wrote one.
    const missing = variant((e) => watched(records(e)));
    expect(violations(missing, 'S3').map((v) => v.message)).to.deep.equal([
      "bot: a's service logged in under token 12 at 14.100 s with no login record for that term written before it: a successor that did not see the term could not wait it out",
    ]);
    const complete = variant((e) => [
      ...watched(records(e)),
      { kind: 'login-record', t: 14_080, identity: 'bot', node: 'a', token: '12', loggedIn: true },
    ]);
    expect(violations(complete, 'S3')).to.deep.equal([]);
    // A run that did not watch the records is not held to the rule.
    expect(violations(variant(records), 'S3')).to.deep.equal([]);
  });

  it('S1: a service that thaws with its frozen host and acts on is caught; one gone at the thaw is a thaw', function () {
    // b's whole host froze at 10 s for 6 s (past T): a took over at 14.1 s; b's service thawed
    // with it, wrote one beat, and was killed 20 ms later.
    const frozen = (afterThaw: HistoryEvent[]) =>
      variant((e) => [
        ...without(e, (x) => x.kind === 'nemesis' || (x.kind === 'witness' && x.what === 'exit')),
        { kind: 'nemesis', t: 10_000, id: 'f1', action: 'host-freeze', targets: ['b'], phase: 'start' },
        witness(9_990, 'b', '9', 'alive'),
        { kind: 'nemesis', t: 16_020, id: 'f1', action: 'host-freeze', targets: ['b'], phase: 'end' },
        ...afterThaw,
      ]);
    const thawed = check(frozen([witness(16_000, 'b', '9', 'alive'), witness(16_020, 'b', '9', 'exit')]));
    expect(thawed.violations.filter((v) => v.invariant === 'S1')).to.deep.equal([]);
    expect(thawed.thaws).to.deep.equal([
      { identity: 'bot', node: 'b', token: '9', successor: 'a', livedMs: 20 },
    ]);
    expect(formatReport(thawed)).to.contain('bot on b (token 9), a leading: 20 ms');
    // The same service still beating 400 ms after the thaw: the lifeline did not end it.
    const lived = check(
      frozen([
        witness(16_000, 'b', '9', 'alive'),
        witness(16_400, 'b', '9', 'alive'),
        witness(16_420, 'b', '9', 'exit'),
      ]),
    );
    expect(lived.violations.filter((v) => v.invariant === 'S1').map((v) => v.message)).to.deep.equal([
      'bot: a (token 12) logged in at 14.100 s while b (token 9) was logged in since 1.300 s until exit at 16.420 s',
    ]);
    expect(lived.thaws).to.deep.equal([]);
  });

  it('S1: a thaw is told by when the unpause began, not by when docker answered it', function () {
    // The unpause began at 16.0 s; docker answered only 400 ms later, and the thawed service
    // was gone 100 ms after its first beat.
    const frozen = (liftFrom: number | undefined, afterThaw: HistoryEvent[]) =>
      variant((e) => [
        ...without(e, (x) => x.kind === 'nemesis' || (x.kind === 'witness' && x.what === 'exit')),
        { kind: 'nemesis', t: 10_000, id: 'f1', action: 'host-freeze', targets: ['b'], phase: 'start' },
        witness(9_990, 'b', '9', 'alive'),
        {
          kind: 'nemesis',
          t: 16_400,
          id: 'f1',
          action: 'host-freeze',
          targets: ['b'],
          phase: 'end',
          ...(liftFrom !== undefined ? { liftFrom } : {}),
        },
        ...afterThaw,
      ]);
    const thawedEarly = [witness(16_050, 'b', '9', 'alive'), witness(16_150, 'b', '9', 'exit')];
    const told = check(frozen(16_000, thawedEarly));
    expect(told.violations.filter((v) => v.invariant === 'S1')).to.deep.equal([]);
    expect(told.thaws.map((t) => t.livedMs)).to.deep.equal([100]);
    // Without the instant the unpause began, a beat 350 ms before docker's answer reads as
    // the host never frozen then: an overlap.
    expect(
      check(frozen(undefined, thawedEarly)).violations.filter((v) => v.invariant === 'S1'),
    ).to.have.length(1);
    // A beat before the unpause began is no thaw whatever docker said.
    const beforeLift = [witness(15_900, 'b', '9', 'alive'), witness(15_950, 'b', '9', 'exit')];
    expect(check(frozen(16_000, beforeLift)).violations.filter((v) => v.invariant === 'S1')).to.have.length(
      1,
    );
  });

  it('S4: a fenced node that campaigns or logs in', function () {
    const events = variant((e) => [
      ...e,
      { kind: 'transition', t: 15_200, identity: 'bot', node: 'b', from: 'fenced', to: 'campaigning' },
    ]);
    const [v] = violations(events, 'S4');
    expect(v!.message).to.equal('bot: b went campaigning at 15.200 s while fenced since 15.000 s');
    expect(v!.events[0]).to.deep.equal({ kind: 'fence', t: 15_000, node: 'b', fenced: true });
  });

  it('S5: a request never answered, and a durable request served twice', function () {
    const events = variant((e) => [
      ...without(e, (x) => x.kind === 'request' && x.id === 'r2' && x.what === 'reply'),
      { kind: 'request', t: 900, identity: 'bot', id: 'r1', what: 'reply', node: 'a', token: '5' },
    ]);
    expect(violations(events, 'S5').map((v) => v.message)).to.deep.equal([
      'bot: request r1 was served 2 times (a token 5, a token 5)',
      'bot: request r2 sent at 11.000 s was neither answered nor refused',
    ]);
    // Answered by two terms (the old leader's ack lost in a handover): the stale-reply gate's
    // case, not a term serving it twice.
    const twoTerms = variant((e) => [
      ...e,
      { kind: 'request', t: 1_320, identity: 'bot', id: 'r1', what: 'reply', node: 'b', token: '9' },
    ]);
    expect(violations(twoTerms, 'S5')).to.deep.equal([]);
  });

  it("S5: one term's reply seen twice, serve id and all, is one answer sent again; two different ones are two", function () {
    const signed = (t: number, serve: string) =>
      ({
        kind: 'request',
        t,
        identity: 'bot',
        id: 'r1',
        what: 'reply',
        node: 'a',
        token: '5',
        serve,
      }) as const;
    const withSignatures = (second: string) =>
      variant((e) => [
        ...e.map((x) =>
          x.kind === 'request' && x.id === 'r1' && x.what === 'reply' ? { ...x, serve: 's1' } : x,
        ),
        signed(900, second),
      ]);
    expect(violations(withSignatures('s1'), 'S5'), 'a second delivery given the first reply').to.deep.equal(
      [],
    );
    expect(violations(withSignatures('s2'), 'S5').map((v) => v.message)).to.deep.equal([
      'bot: request r1 was served 2 times (a token 5, a token 5)',
    ]);
  });

  it('S5: a request still within its wait at the end of the history is in flight, not lost', function () {
    const timed = (events: HistoryEvent[]) =>
      events.map((x) => (x.kind === 'config' ? { ...x, requestTimeoutMs: 3_000 } : x));
    const core = { kind: 'request', identity: 'bot', what: 'send' } as const;
    // The safe run ends at 17 s: r3 (16 s) may still be answered; r4 (12 s) is lost; a durable
    // request may also wait out a failover (T 4 s + margin), so r5 (11 s) is still owed.
    const events = variant((e) => [
      ...timed(e),
      { ...core, t: 16_000, id: 'r3' },
      { ...core, t: 12_000, id: 'r4' },
      { ...core, t: 11_000, id: 'r5', durable: true },
    ]);
    expect(violations(events, 'S5').map((v) => v.message)).to.deep.equal([
      'bot: request r4 sent at 12.000 s was neither answered nor refused',
    ]);
  });

  it('L1: a failover slower than T + margin, and none at all', function () {
    const slow = variant((e) => [
      ...without(e, (x) => x.kind === 'witness' && x.token === '12'),
      witness(14_400, 'a', '12', 'login'),
    ]);
    expect(violations(slow, 'L1').map((v) => v.message)).to.deep.equal([
      'bot: kill of b at 10.000 s: the next login took 4400 ms (bound: T 4000 + margin 300 ms)',
    ]);
    const none = variant((e) => without(e, (x) => x.kind === 'witness' && x.token === '12'));
    expect(violations(none, 'L1')[0]!.message).to.contain('no other node ever logged in');
  });

  it('L1 for a service that keeps no record (the kit): the first PING another node answers alone', function () {
    const run = (after: HistoryEvent[]) =>
      [
        CONFIG,
        leader(100, 'a', '5'),
        ping(500, ['a', '5']),
        { kind: 'nemesis', t: 1_000, id: 'f1', action: 'kill', targets: ['a'], phase: 'start' },
        { kind: 'nemesis', t: 1_010, id: 'f1', action: 'kill', targets: ['a'], phase: 'end' },
        ...after,
      ] as HistoryEvent[];
    const report = check(run([ping(2_000), leader(5_000, 'b', '9'), ping(5_200, ['b', '9'])]));
    expect(report.violations).to.deep.equal([]);
    expect(report.failovers).to.deep.equal([{ action: 'kill', identity: 'bot', ms: 4_200 }]);
    expect(violations(run([ping(2_000)]), 'L1').map((v) => v.message)).to.deep.equal([
      'bot: kill of a at 1.000 s: no other node ever logged in (bound: T 4000 + margin 300 ms)',
    ]);
  });

  it('L1 runs no clock for a freeze shorter than T (nothing should move)', function () {
    const events = variant((e) => [
      ...e,
      { kind: 'nemesis', t: 18_000, id: 'f2', action: 'freeze', targets: ['a'], phase: 'start' },
      { kind: 'nemesis', t: 19_000, id: 'f2', action: 'freeze', targets: ['a'], phase: 'end' },
    ]);
    expect(violations(events, 'L1')).to.deep.equal([]);
  });

  it('L2: a workflow that ends past its deadline, or never', function () {
    const late = variant((e) => [
      ...without(e, (x) => x.kind === 'workflow' && x.state === 'done'),
      { kind: 'workflow', t: 31_600, identity: 'bot', id: 'wf-1', state: 'aborted' },
    ]);
    expect(violations(late, 'L2').map((v) => v.message)).to.deep.equal([
      'bot: workflow wf-1 ended (aborted) at 31.600 s, past its deadline 31.000 s + 500 ms',
    ]);
    const never = variant((e) => [
      ...without(e, (x) => x.kind === 'workflow' && x.state === 'done'),
      ping(40_000, ['a', '12']),
    ]);
    expect(violations(never, 'L2')[0]!.message).to.contain('never ended');
  });

  it('a process whose monotonic clock is not the harness\u2019s makes the history untrustworthy', function () {
    const events = variant((e) => [...e, { kind: 'clock', t: 2, source: 'witness-c', reading: 900 }]);
    expect(violations(events, 'clock')[0]!.message).to.match(
      /^witness-c reads the monotonic clock 898 ms off/,
    );
  });

  it('the report counts violations per fault and prints each violation\u2019s events', function () {
    const events = variant((e) => without(e, (x) => x.kind === 'witness' && x.what === 'exit'));
    const report = check(events);
    // Counted under the fault it happened in: the overlap began at a's login after b's kill.
    expect(report.violationsByFault.get('kill')).to.equal(1);
    expect(report.violationsByFault.get('none')).to.equal(undefined);
    const text = formatReport(report);
    expect(text).to.contain('1 violation(s):');
    expect(text).to.contain(JSON.stringify(witness(1_300, 'b', '9', 'login')));
  });
});

describe('chaos checker: reading a saved history', function () {
  let dir: string;
  before(async () => (dir = await mkdtemp(join(tmpdir(), 'understudy-history-'))));
  after(() => rm(dir, { recursive: true, force: true }));

  it('a bad line is refused naming the line and the field', function () {
    const text = `${JSON.stringify(CONFIG)}\n{"kind":"witness","t":1,"identity":"bot","node":"a","token":"x","what":"login"}\n`;
    expect(() => parseHistory(text)).to.throw('history line 2: token: Invalid string');
  });

  it('as a command: exit 1 with the proof and the seed to replay; 0 on a safe run', async function () {
    this.timeout(20_000);
    const write = async (name: string, events: HistoryEvent[]) => {
      const file = join(dir, name);
      await writeFile(file, events.map((e) => JSON.stringify(e)).join('\n'));
      return file;
    };
    const run = (file: string) =>
      spawnSync(process.execPath, ['--import', 'tsx', 'chaos/checker.ts', file], {
        cwd: repoRoot,
        encoding: 'utf8',
      });
    const unsafe = run(
      await write(
        'unsafe.jsonl',
        variant((e) => [...e, ping(1_350, ['a', '5'], ['b', '9'])]),
      ),
    );
    expect(unsafe.status, unsafe.stderr).to.equal(1);
    expect(unsafe.stdout).to.contain('S1: bot: 2 nodes answered one PING at 1.350 s');
    expect(unsafe.stdout).to.contain('replay: npm run chaos -- --seed 7');
    const safe = run(await write('safe.jsonl', safeRun()));
    expect(safe.status, safe.stdout).to.equal(0);
    // An empty file is no proof of safety.
    const empty = run(await write('empty.jsonl', []));
    expect(empty.status).to.equal(2);
    expect(empty.stderr).to.contain('no config event');
  });
});

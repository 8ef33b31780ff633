// Probing on a manual clock with PING faked: probes run at the spec's interval, a leader that
// stops answering is alarmed once and failed over to the best standby after its budget of
// misses, and a probe that cannot run is logged once per reason.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { pino } from 'pino';
import type { ApiEvent } from '../../pkg/api/schema.js';
import { ManualClock } from '../../pkg/clock/index.js';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import type { Responder } from '../../pkg/controller/probe-rules.js';
import { emptySnapshot, type ClusterSnapshot } from '../../pkg/controller/store.js';
import { parseSpec } from '../../pkg/spec/store.js';
import { fakeProber } from '../support/prober.js';

const INTERVAL_MS = 500;

function setup(opts: { paused?: boolean } = {}) {
  const clock = new ManualClock();
  const lines: Array<{ level: number; msg: string; loop?: string; err?: string }> = [];
  const log = pino(
    { level: 'info' },
    new Writable({
      write(chunk: Buffer, _enc, done) {
        for (const l of chunk.toString().split('\n').filter(Boolean)) lines.push(JSON.parse(l));
        done();
      },
    }),
  );
  const now = clock.wallMs();
  const spec = parseSpec({
    name: 'bot',
    service: { driver: 'nats-service', handler: 'h' },
    probe: { intervalMs: INTERVAL_MS, timeoutMs: 100, failures: 3 },
  });
  const record = { leaseId: '1', ttlMs: 5_000, mustBeOutByMs: 4_500 };
  const snap: ClusterSnapshot = {
    ...emptySnapshot(10n),
    specs: new Map([['bot', { spec, revision: 5n }]]),
    identities: new Map([
      [
        'bot',
        {
          leader: { record: { node: 'a', since: now, ...record }, token: 7n },
          login: { node: 'a', token: '7', loggedIn: true, at: now, leaseId: '1', ttlMs: 5_000 },
          candidates: new Map([
            ['a', { node: 'a', priority: 0, healthy: true, ...record }],
            ['b', { node: 'b', priority: 5, healthy: true, ...record }],
            ['c', { node: 'c', priority: 1, healthy: true, ...record }],
          ]),
          holdOffs: new Map(),
        },
      ],
    ]),
    paused: new Map(opts.paused ? [['bot', { reason: 'maintenance', actor: 'ops', at: now }]] : []),
  };
  const agents = new Map<string, SeenAgent>(
    ['a', 'b', 'c'].map((node) => [
      node,
      {
        heartbeat: {
          v: 1,
          node,
          at: now,
          fenced: false,
          identities: [
            {
              identity: 'bot',
              state: node === 'a' ? 'leader' : 'standby',
              ...(node === 'a' ? { token: '7' } : {}),
            },
          ],
        },
        // Kept fresh: the test moves the clock by seconds at most.
        get receivedAt() {
          return clock.wallMs();
        },
      },
    ]),
  );
  let answer: () => Promise<Responder[]> = async () => [{ node: 'a', token: '7', lease: '1' }];
  let pings = 0;
  const { prober, rounds, started, events } = fakeProber({
    clock,
    log,
    snap,
    agents,
    ping: () => {
      pings++;
      return answer();
    },
  });
  const alarms: string[] = [];
  events.subscribe((e: ApiEvent) => {
    if (e.type === 'alarm') alarms.push(e.alarm);
  });
  return {
    clock,
    prober,
    rounds,
    lines,
    started,
    alarms,
    pings: () => pings,
    answer: (fn: () => Promise<Responder[]>) => (answer = fn),
  };
}

describe('controller probes (manual clock, PING faked)', () => {
  it('probes at the spec interval, not at every round', async () => {
    const t = setup();
    await t.rounds(2_000);
    expect(t.pings()).to.equal(4);
    expect(t.prober.state('bot')?.failures).to.equal(0);
  });

  it('a silent leader is alarmed once and failed over to the best standby after 3 misses', async () => {
    const t = setup();
    t.answer(async () => []);
    await t.rounds(1_000);
    expect(t.prober.state('bot')?.failures).to.equal(2);
    expect(t.started).to.deep.equal([]);
    await t.rounds(2_000);
    expect(t.alarms).to.deep.equal(['leader-unresponsive']);
    expect(t.started).to.have.length(1);
    expect(t.started[0]).to.deep.include({ kind: 'probe-failover', target: 'b', actor: 'controller:c1' });
    expect(t.started[0]!.reason).to.equal(`a stopped answering (3 probes × ${INTERVAL_MS} ms)`);
    expect(t.lines.some((l) => /failing over to b: b is the fit standby/.test(l.msg))).to.equal(true);
  });

  it("a leader whose only answers are not its term's (another session's key) is failed over like a silent one", async () => {
    const t = setup();
    t.answer(async () => [{ node: 'a', token: '7', lease: '2' }]);
    await t.rounds(3_000);
    expect(t.alarms).to.deep.equal(['leader-unresponsive']);
    expect(t.started).to.have.length(1);
  });

  it('a probe its own controller ended late (a busy event loop) is not counted as a miss', async () => {
    const t = setup();
    // Timeout 100 ms; the answer-less PING ends 300 ms after it, as when the loop was held up.
    t.answer(async () => {
      await t.clock.sleep(400);
      return [];
    });
    await t.rounds(5_000);
    expect(t.prober.state('bot')?.failures).to.equal(0);
    expect(t.alarms).to.deep.equal([]);
    expect(t.started).to.deep.equal([]);
    // The same silence on time is a miss.
    t.answer(async () => {
      await t.clock.sleep(100);
      return [];
    });
    await t.rounds(3_000);
    expect(t.alarms).to.deep.equal(['leader-unresponsive']);
  });

  it('paused: the alarm says so and nothing moves', async () => {
    const t = setup({ paused: true });
    t.answer(async () => []);
    await t.rounds(3_000);
    expect(t.alarms).to.deep.equal(['probe-failover-paused']);
    expect(t.started).to.deep.equal([]);
  });

  it('a probe that cannot run is logged once per reason, and its recovery once', async () => {
    const t = setup();
    t.answer(async () => {
      throw new Error('NATS: connection closed');
    });
    await t.rounds(2_000);
    const failed = t.lines.filter((l) => l.loop === 'probe' && l.level === 40);
    expect(failed.map((l) => l.err)).to.deep.equal(['NATS: connection closed']);
    t.answer(async () => [{ node: 'a', token: '7', lease: '1' }]);
    await t.rounds(1_000);
    expect(t.lines.filter((l) => l.msg === 'probe works again')).to.have.length(1);
  });
});

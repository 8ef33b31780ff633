// Probing past the PING budget (manual clock, PING faked): PINGs stay within
// probes.maxPingsPerSecond, identities the leader's heartbeat vouches for are judged from it,
// and a service its agent reports not responding is PINGed at its interval and failed over
// after its budget of misses, as if there were no budget.
import { expect } from 'chai';
import { pino } from 'pino';
import { ManualClock } from '../../pkg/clock/index.js';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import type { Responder } from '../../pkg/controller/probe-rules.js';
import { emptySnapshot, type ClusterSnapshot } from '../../pkg/controller/store.js';
import { parseSpec } from '../../pkg/spec/store.js';
import { fakeProber } from '../support/prober.js';

const INTERVAL_MS = 500;
const IDENTITIES = Array.from({ length: 20 }, (_, i) => `id${String(i).padStart(2, '0')}`);
const PINGS_PER_SECOND = 4;
const FROZEN = 'id07';

function setup(opts: { heartbeatEveryMs?: number } = {}) {
  const clock = new ManualClock();
  const log = pino({ level: 'silent' });
  const now = clock.wallMs();
  const record = { leaseId: '1', ttlMs: 5_000, mustBeOutByMs: 4_500 };
  const snap: ClusterSnapshot = { ...emptySnapshot(10n) };
  for (const name of IDENTITIES) {
    const spec = parseSpec({
      name,
      service: { driver: 'nats-service', handler: 'h' },
      probe: { intervalMs: INTERVAL_MS, timeoutMs: 100, failures: 3 },
    });
    snap.specs.set(name, { spec, revision: 5n });
    snap.identities.set(name, {
      leader: { record: { node: 'a', since: now, ...record }, token: 7n },
      login: { node: 'a', token: '7', loggedIn: true, at: now, leaseId: '1', ttlMs: 5_000 },
      candidates: new Map([
        ['a', { node: 'a', priority: 0, healthy: true, ...record }],
        ['b', { node: 'b', priority: 5, healthy: true, ...record }],
      ]),
      holdOffs: new Map(),
    });
  }
  const beat = (node: string): SeenAgent => ({
    heartbeat: {
      v: 1,
      node,
      at: now,
      ...(opts.heartbeatEveryMs !== undefined ? { everyMs: opts.heartbeatEveryMs } : {}),
      fenced: false,
      identities: IDENTITIES.map((identity) =>
        node === 'a'
          ? { identity, state: 'leader', token: '7', alive: identity !== FROZEN }
          : { identity, state: 'standby' },
      ),
    },
    get receivedAt() {
      return clock.wallMs();
    },
  });
  const agents = new Map<string, SeenAgent>([
    ['a', beat('a')],
    ['b', beat('b')],
  ]);
  const pings = new Map<string, number>();
  const { prober, rounds, started, metrics } = fakeProber({
    clock,
    log,
    snap,
    agents,
    probes: { maxPingsPerSecond: PINGS_PER_SECOND },
    ping: async (identity): Promise<Responder[]> => {
      pings.set(identity, (pings.get(identity) ?? 0) + 1);
      // The frozen service's agent keeps its lease but does not answer for it.
      return identity === FROZEN ? [] : [{ node: 'a', token: '7', lease: '1' }];
    },
  });
  const total = () => [...pings.values()].reduce((a, b) => a + b, 0);
  return { prober, rounds, pings, total, started, metrics };
}

describe('controller probes past the PING budget (manual clock, PING faked)', () => {
  it('sends at most the budget of PINGs and judges the rest from the leaders heartbeats', async () => {
    const t = setup({ heartbeatEveryMs: 1_000 });
    await t.rounds(4_000);
    // One second of burst, then the rate: 20 identities at 2 probes/s would be 160 PINGs.
    expect(t.total()).to.be.at.most(PINGS_PER_SECOND * 5);
    for (const id of IDENTITIES) {
      expect(t.prober.state(id)?.at, `${id} judged`).to.be.a('number');
      if (id !== FROZEN) expect(t.prober.state(id)?.failures, id).to.equal(0);
    }
    const judged = await t.metrics.probeRounds.get();
    const byHeartbeat = judged.values.find((v) => v.labels.judged === 'heartbeat')?.value ?? 0;
    expect(byHeartbeat).to.be.greaterThan(100);
  });

  it('a service its agent reports not responding is PINGed at its interval and failed over after 3 misses', async () => {
    const t = setup({ heartbeatEveryMs: 1_000 });
    await t.rounds(2_000);
    expect(t.pings.get(FROZEN)).to.be.at.least(3);
    expect(t.started.map((s) => s.identity)).to.deep.equal([FROZEN]);
    expect(t.started[0]).to.deep.include({ kind: 'probe-failover', target: 'b' });
  });

  it('heartbeats that do not say how often they come (an older agent) vouch for nothing: every judgement is a PING', async () => {
    const t = setup();
    await t.rounds(4_000);
    const judged = await t.metrics.probeRounds.get();
    expect(judged.values.find((v) => v.labels.judged === 'heartbeat')?.value ?? 0).to.equal(0);
    expect(t.total()).to.be.at.most(PINGS_PER_SECOND * 5);
  });
});

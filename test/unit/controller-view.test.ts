// Who may take an identity over, read from a cluster snapshot: pure rules, no I/O.
import { expect } from 'chai';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import { emptySnapshot, type ClusterSnapshot } from '../../pkg/controller/store.js';
import { agentAlive, bestTarget, unfitTarget, type ViewContext } from '../../pkg/controller/view.js';
import { parseSpec } from '../../pkg/spec/store.js';

const NOW = 1_800_000_000_000;
const HEARTBEAT_TIMEOUT_MS = 6_000;

function candidate(node: string, priority: number, healthy = true) {
  return { node, leaseId: '1', ttlMs: 5_000, mustBeOutByMs: 4_500, priority, healthy };
}

function beat(node: string, ageMs: number): [string, SeenAgent] {
  return [
    node,
    { heartbeat: { v: 1, node, at: NOW - ageMs, fenced: false, identities: [] }, receivedAt: NOW - ageMs },
  ];
}

function context(opts: {
  candidates: ReturnType<typeof candidate>[];
  agents: Array<[string, SeenAgent]>;
  fenced?: string[];
  heldOff?: string[];
  startedAt?: number;
}): ViewContext {
  const spec = parseSpec({ name: 'demo', service: { driver: 'nats-service', handler: 'h' } });
  const snap: ClusterSnapshot = {
    ...emptySnapshot(10n),
    specs: new Map([['demo', { spec, revision: 5n }]]),
    identities: new Map([
      [
        'demo',
        {
          leader: {
            record: { node: 'a', leaseId: '1', ttlMs: 5_000, mustBeOutByMs: 4_500, since: NOW },
            token: 7n,
          },
          candidates: new Map(opts.candidates.map((c) => [c.node, c])),
          holdOffs: new Map((opts.heldOff ?? []).map((n) => [n, { reason: 'r', actor: 'x', at: NOW }])),
        },
      ],
    ]),
    fences: new Map((opts.fenced ?? []).map((n) => [n, { reason: 'maintenance', actor: 'ops', at: NOW }])),
  };
  return {
    snap,
    agents: new Map(opts.agents),
    heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS,
    now: NOW,
    startedAt: opts.startedAt ?? NOW - 60_000,
  };
}

describe('controller view: choosing a target', () => {
  it('picks the healthy standby with the highest priority, never the leader', () => {
    const ctx = context({
      candidates: [candidate('a', 50), candidate('b', 1), candidate('c', 9)],
      agents: [beat('a', 0), beat('b', 0), beat('c', 0)],
    });
    expect(bestTarget(ctx, 'demo', ['a'])).to.equal('c');
    expect(unfitTarget(ctx, 'demo', 'a')).to.match(/already leads/);
  });

  it('passes over fenced, held-off, unhealthy and silent nodes, saying why for each', () => {
    const ctx = context({
      candidates: [
        candidate('a', 0),
        candidate('b', 9),
        candidate('c', 8),
        candidate('d', 7, false),
        candidate('e', 6),
        candidate('f', 1),
      ],
      agents: [
        beat('a', 0),
        beat('b', 0),
        beat('c', 0),
        beat('d', 0),
        beat('e', HEARTBEAT_TIMEOUT_MS + 1),
        beat('f', 0),
      ],
      fenced: ['b'],
      heldOff: ['c'],
    });
    expect(unfitTarget(ctx, 'demo', 'b')).to.match(/b is fenced \(maintenance\); unfence it first/);
    expect(unfitTarget(ctx, 'demo', 'c')).to.match(/held off/);
    expect(unfitTarget(ctx, 'demo', 'd')).to.match(/not healthy/);
    expect(unfitTarget(ctx, 'demo', 'e')).to.match(/not healthy/);
    expect(unfitTarget(ctx, 'demo', 'z')).to.match(/not a live candidate/);
    expect(bestTarget(ctx, 'demo', ['a'])).to.equal('f');
  });

  it('trusts a live candidate key it has no heartbeat from only during its first heartbeat timeout', () => {
    const fresh = context({ candidates: [candidate('b', 0)], agents: [], startedAt: NOW - 1_000 });
    expect(agentAlive(fresh, 'b')).to.equal(true);
    const settled = context({ candidates: [candidate('b', 0)], agents: [] });
    expect(agentAlive(settled, 'b')).to.equal(false);
    // A node heard from and then silent is dead even right after start.
    const stale = context({
      candidates: [candidate('b', 0)],
      agents: [beat('b', HEARTBEAT_TIMEOUT_MS + 1)],
      startedAt: NOW - 1_000,
    });
    expect(agentAlive(stale, 'b')).to.equal(false);
  });
});

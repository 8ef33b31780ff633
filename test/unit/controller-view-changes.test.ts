// Which views the controller rebuilds in a round: those whose inputs changed. Records are
// compared by reference (the mirror keeps an unchanged key's record), heartbeats by what they
// say of each identity, and anything node-wide rebuilds every view.
import { expect } from 'chai';
import type { Heartbeat } from '../../pkg/control/protocol.js';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import { emptySnapshot, type ClusterSnapshot } from '../../pkg/controller/store.js';
import {
  ALL,
  FULL_REBUILD_MS,
  heartbeatChanges,
  snapshotChanges,
  ViewInputs,
} from '../../pkg/controller/view-changes.js';
import type { ViewContext } from '../../pkg/controller/view.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

const spec = { spec: {} as IdentitySpec, revision: 1n };
const leaderOf = (node: string) => ({
  record: { node, leaseId: '1', ttlMs: 5000, mustBeOutByMs: 4000, since: 0 },
  token: 7n,
});
const LEADER_A = leaderOf('n1');

/** A snapshot of identities x and y; `edit` changes the new one. */
function snap(edit: (s: ClusterSnapshot) => void = () => undefined): ClusterSnapshot {
  const s = emptySnapshot(1n);
  for (const id of ['x', 'y']) {
    s.specs.set(id, spec);
    s.identities.set(id, { leader: LEADER_A, candidates: new Map(), holdOffs: new Map() });
  }
  edit(s);
  return s;
}

const beat = (node: string, entries: Array<[string, string, string?]>): Heartbeat => ({
  v: 1,
  node,
  at: 0,
  everyMs: 1000,
  fenced: false,
  identities: entries.map(([identity, state, token]) => ({ identity, state, ...(token ? { token } : {}) })),
});

describe('controller views: which changed since the last round', () => {
  const rows: Array<[string, (s: ClusterSnapshot) => void, string[] | typeof ALL]> = [
    ['the same records in a new snapshot: none', () => undefined, []],
    ['a new leader record of y: y', (s) => (s.identities.get('y')!.leader = leaderOf('n2')), ['y']],
    ['a spec rewritten (new revision): x', (s) => s.specs.set('x', { ...spec, revision: 2n }), ['x']],
    ['a spec deleted: x', (s) => s.specs.delete('x'), ['x']],
    ['a new identity: z', (s) => s.specs.set('z', spec), ['z']],
    ['a pause of y: y', (s) => s.paused.set('y', { reason: 'r', actor: 'ops', at: 0 }), ['y']],
    [
      'a candidate registered for x: x',
      (s) =>
        s.identities.get('x')!.candidates.set('n3', {
          node: 'n3',
          leaseId: '3',
          ttlMs: 5000,
          mustBeOutByMs: 4000,
          priority: 0,
          healthy: true,
        }),
      ['x'],
    ],
    ['a node fenced: every identity', (s) => s.fences.set('n1', { reason: 'r', actor: 'ops', at: 0 }), ALL],
  ];
  for (const [name, edit, want] of rows) {
    it(name, () => {
      const got = snapshotChanges(snap(), snap(edit));
      expect(got === ALL ? ALL : [...got].sort()).to.deep.equal(want);
    });
  }

  it('nothing known of the last round: every identity', () => {
    expect(snapshotChanges(undefined, snap())).to.equal(ALL);
  });

  it('a heartbeat changes the identities it says something new of, and those it no longer lists', () => {
    const before = beat('n1', [
      ['x', 'leader', '7'],
      ['y', 'standby'],
      ['z', 'standby'],
    ]);
    const after = beat('n1', [
      ['x', 'leader', '7'],
      ['y', 'logging-in', '9'],
      ['w', 'standby'],
    ]);
    expect([...heartbeatChanges(before, after)].sort()).to.deep.equal(['w', 'y', 'z']);
    expect([
      ...heartbeatChanges(
        before,
        beat('n1', [
          ...before.identities.map((i) => [i.identity, i.state, i.token] as [string, string, string?]),
        ]),
      ),
    ]).to.deep.equal([]);
  });
});

describe('controller views: the inputs tracked across rounds', () => {
  const HEARTBEAT_TIMEOUT_MS = 6_000;
  function context(s: ClusterSnapshot, agents: Map<string, SeenAgent>, now: number): ViewContext {
    return { snap: s, agents, heartbeatTimeoutMs: HEARTBEAT_TIMEOUT_MS, now, startedAt: 0 };
  }

  it('first round everything; at rest nothing; a new heartbeat its node and what it changed; a silent agent everything', () => {
    const inputs = new ViewInputs();
    const records = snap();
    const agents = new Map<string, SeenAgent>([
      ['n1', { heartbeat: beat('n1', [['x', 'leader', '7']]), receivedAt: 10_000 }],
    ]);
    const at = (now: number, probes: string[] = []) =>
      inputs.changes(context(records, agents, now), probes, now);
    expect(at(10_000)).to.deep.equal({ identities: ALL, nodes: ALL });
    expect(at(10_250)).to.deep.equal({ identities: new Set(), nodes: new Set() });
    expect(at(10_500, ['y']), 'a probe outcome the prober reports').to.deep.equal({
      identities: new Set(['y']),
      nodes: new Set(),
    });
    agents.set('n1', {
      heartbeat: beat('n1', [
        ['x', 'leader', '7'],
        ['y', 'standby'],
      ]),
      receivedAt: 11_000,
    });
    expect(at(11_000)).to.deep.equal({ identities: new Set(['y']), nodes: new Set(['n1']) });
    // n1's beat is now older than the heartbeat timeout: it counts as dead in every view.
    expect(at(11_000 + HEARTBEAT_TIMEOUT_MS + 1)).to.deep.equal({ identities: ALL, nodes: ALL });
    expect(at(11_000 + HEARTBEAT_TIMEOUT_MS + 251).identities).to.deep.equal(new Set());
  });

  it('the start-up grace ending (unheard agents no longer presumed alive) rebuilds everything', () => {
    const inputs = new ViewInputs();
    const records = snap();
    const at = (now: number) => inputs.changes(context(records, new Map(), now), [], now);
    at(0);
    expect(at(HEARTBEAT_TIMEOUT_MS - 1).identities).to.deep.equal(new Set());
    expect(at(HEARTBEAT_TIMEOUT_MS).identities).to.equal(ALL);
  });

  it('everything again after FULL_REBUILD_MS, whatever changed', () => {
    const inputs = new ViewInputs();
    const records = snap();
    const at = (now: number) => inputs.changes(context(records, new Map(), now), [], now).identities;
    at(HEARTBEAT_TIMEOUT_MS); // past the start-up grace
    expect(at(HEARTBEAT_TIMEOUT_MS + FULL_REBUILD_MS - 1)).to.deep.equal(new Set());
    expect(at(HEARTBEAT_TIMEOUT_MS + FULL_REBUILD_MS)).to.equal(ALL);
  });
});

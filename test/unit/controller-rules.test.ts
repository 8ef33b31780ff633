// The controller's pure rules, one table row per situation: split brain, a blind controller,
// a leader that missed an answer, whether to fail it over and to which node, when a node
// fence is due, and access-list edits. Each rule also says why; the rows check the sentence.
import { expect } from 'chai';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import { changedAccess } from '../../pkg/controller/access-lists.js';
import { fenceDue } from '../../pkg/controller/fence-reconciler.js';
import {
  blindness,
  lateness,
  leaderMissed,
  probeVerdict,
  splitBrain,
  type FailoverPolicy,
  type LeaderObservation,
  type LinkState,
  type ProbeMemory,
  type ProbeOutcome,
} from '../../pkg/controller/probe-rules.js';
import { emptySnapshot, type ClusterSnapshot } from '../../pkg/controller/store.js';
import { newWorkflow } from '../../pkg/controller/supervisor.js';
import { chooseTarget, type ViewContext } from '../../pkg/controller/view.js';
import { parseSpec } from '../../pkg/spec/store.js';
import type { Workflow } from '../../pkg/api/schema.js';

const NOW = 1_800_000_000_000;

describe('controller rules: split brain', () => {
  const rows: Array<{ situation: string; responders: string[]; split: boolean; reason: RegExp }> = [
    { situation: 'nobody answers', responders: [], split: false, reason: /no responder/ },
    { situation: 'the leader alone answers', responders: ['a@7'], split: false, reason: /one responder/ },
    {
      situation: 'two nodes answer',
      responders: ['a@7', 'b@9'],
      split: true,
      reason: /2 nodes answer PING \(a@7, b@9\)/,
    },
    {
      situation: 'one node answers twice (two tokens)',
      responders: ['a@7', 'a@8'],
      split: true,
      reason: /2 nodes/,
    },
  ];
  for (const row of rows) {
    it(row.situation, () => {
      const responders = row.responders.map((r) => ({ node: r.split('@')[0]!, token: r.split('@')[1]! }));
      const d = splitBrain('bot', responders);
      expect(d.splitBrain).to.equal(row.split);
      expect(d.reason).to.match(row.reason);
    });
  }
});

describe('controller rules: can the controller trust an empty probe (blindness)', () => {
  const up: LinkState = { natsUp: true, linkSteadyDuringProbe: true, agentsKnown: 3, agentsAlive: 2 };
  const rows: Array<{ situation: string; link: Partial<LinkState>; blind: boolean; reason: RegExp }> = [
    { situation: 'link up, agents heard', link: {}, blind: false, reason: /hears the agents/ },
    {
      situation: 'no agent ever heard (fresh cluster)',
      link: { agentsKnown: 0, agentsAlive: 0 },
      blind: false,
      reason: /up/,
    },
    { situation: 'NATS connection down', link: { natsUp: false }, blind: true, reason: /connection is down/ },
    {
      situation: 'link dropped during the probe',
      link: { linkSteadyDuringProbe: false },
      blind: true,
      reason: /during the probe/,
    },
    {
      situation: 'every known agent silent',
      link: { agentsAlive: 0 },
      blind: true,
      reason: /hears none of the 3 agents/,
    },
  ];
  for (const row of rows) {
    it(row.situation, () => {
      const d = blindness({ ...up, ...row.link });
      expect(d.blind).to.equal(row.blind);
      expect(d.reason).to.match(row.reason);
    });
  }
});

describe('controller rules: did the leader miss an answer it owed', () => {
  const base: LeaderObservation = {
    identity: 'bot',
    leader: { node: 'a', token: '7' },
    loggedIn: true,
    serving: true,
    agentAlive: true,
    responders: [],
  };
  const rows: Array<{ situation: string; o: Partial<LeaderObservation>; missed: boolean; reason: RegExp }> = [
    { situation: 'no leader', o: { leader: undefined }, missed: false, reason: /no leader/ },
    {
      situation: 'the leader answered',
      o: { responders: [{ node: 'a', token: '7' }] },
      missed: false,
      reason: /answered/,
    },
    {
      situation: 'an answer under an old token does not count',
      o: { responders: [{ node: 'a', token: '6' }] },
      missed: true,
      reason: /did not answer/,
    },
    {
      situation: 'an answer signed under the session holding the leader key counts',
      o: {
        leader: { node: 'a', token: '7', lease: '11' },
        responders: [{ node: 'a', token: '7', lease: '11' }],
      },
      missed: false,
      reason: /answered/,
    },
    {
      situation: "an answer signed with the node's key under another session does not count",
      o: {
        leader: { node: 'a', token: '7', lease: '11' },
        responders: [{ node: 'a', token: '7', lease: '12' }],
      },
      missed: true,
      reason: /did not answer/,
    },
    {
      situation: 'an answer with an error does not count',
      o: { responders: [{ node: 'a', token: '7', error: 'busy' }] },
      missed: true,
      reason: /did not answer/,
    },
    { situation: 'not logged in yet', o: { loggedIn: false }, missed: false, reason: /not logged in yet/ },
    {
      situation: 'its agent is alive but does not report it serving yet',
      o: { serving: false },
      missed: false,
      reason: /does not report it serving/,
    },
    {
      situation: 'its agent is silent too (cut from NATS)',
      o: { serving: false, agentAlive: false },
      missed: true,
      reason: /logged in under token 7 but did not answer/,
    },
    { situation: 'serving and silent on PING', o: {}, missed: true, reason: /did not answer PING/ },
  ];
  for (const row of rows) {
    it(row.situation, () => {
      const d = leaderMissed({ ...base, ...row.o });
      expect(d.missed).to.equal(row.missed);
      expect(d.reason).to.match(row.reason);
    });
  }
});

describe('controller rules: should the leader be failed over', () => {
  const miss = { missed: true, reason: 'a did not answer PING' };
  const answered = { missed: false, reason: 'a answered' };
  const seeing = { blind: false, reason: 'link up' };
  const policy: FailoverPolicy = {
    identity: 'bot',
    leaderNode: 'a',
    probe: { failures: 3, intervalMs: 500 },
    active: true,
    failoverEnabled: true,
    workflowRunning: false,
    target: { target: 'b', reason: 'b is the fit standby with the highest priority (5)' },
  };
  const rows: Array<{
    situation: string;
    memory: ProbeMemory;
    missed?: typeof miss;
    blind?: boolean;
    policy?: Partial<FailoverPolicy>;
    outcome: ProbeOutcome;
    failures: number;
    alarm?: string;
    target?: string;
    reason: RegExp;
  }> = [
    {
      situation: 'an answer resets the count',
      memory: { failures: 2, alarmed: true },
      missed: answered,
      outcome: 'answered',
      failures: 0,
      reason: /answered/,
    },
    {
      situation: 'a first miss is counted',
      memory: { failures: 0, alarmed: false },
      outcome: 'counting',
      failures: 1,
      reason: /1 of 3 misses/,
    },
    {
      situation: 'a blind controller does not count a miss',
      memory: { failures: 2, alarmed: false },
      blind: true,
      outcome: 'not-counted',
      failures: 2,
      reason: /blind/,
    },
    {
      situation: 'the budget spent: alarm and fail over to the chosen target',
      memory: { failures: 2, alarmed: false },
      outcome: 'failover',
      failures: 3,
      alarm: 'leader-unresponsive',
      target: 'b',
      reason: /does not answer \(3 probes × 500 ms\); failing over to b/,
    },
    {
      situation: 'already alarmed for this run: nothing more',
      memory: { failures: 5, alarmed: true },
      outcome: 'already-alarmed',
      failures: 6,
      reason: /already alarmed/,
    },
    {
      situation: 'paused: a paused alarm, nothing moves',
      memory: { failures: 2, alarmed: false },
      policy: { pausedBy: 'ops' },
      outcome: 'paused',
      failures: 3,
      alarm: 'probe-failover-paused',
      reason: /paused by ops, so nothing moves/,
    },
    {
      situation: 'a standby controller alarms but leaves it to the active one',
      memory: { failures: 2, alarmed: false },
      policy: { active: false },
      outcome: 'standby',
      failures: 3,
      alarm: 'leader-unresponsive',
      reason: /standby/,
    },
    {
      situation: 'probe-driven failover turned off',
      memory: { failures: 2, alarmed: false },
      policy: { failoverEnabled: false },
      outcome: 'failover-off',
      failures: 3,
      alarm: 'leader-unresponsive',
      reason: /probes.failover/,
    },
    {
      situation: 'a workflow already running',
      memory: { failures: 2, alarmed: false },
      policy: { workflowRunning: true },
      outcome: 'workflow-running',
      failures: 3,
      alarm: 'leader-unresponsive',
      reason: /already running/,
    },
    {
      situation: 'no fit target',
      memory: { failures: 2, alarmed: false },
      policy: { target: { reason: 'no standby can take bot over: b is fenced' } },
      outcome: 'no-target',
      failures: 3,
      alarm: 'leader-unresponsive',
      reason: /no failover: no standby can take bot over: b is fenced/,
    },
    {
      situation: 'no spec: misses counted, never judged',
      memory: { failures: 9, alarmed: false },
      policy: { probe: undefined },
      outcome: 'counting',
      failures: 10,
      reason: /did not answer/,
    },
  ];
  for (const row of rows) {
    it(row.situation, () => {
      const v = probeVerdict(
        row.memory,
        row.missed ?? miss,
        row.blind ? { blind: true, reason: 'link down' } : seeing,
        {
          ...policy,
          ...row.policy,
        },
      );
      expect(v.outcome).to.equal(row.outcome);
      expect(v.failures).to.equal(row.failures);
      expect(v.alarm?.alarm).to.equal(row.alarm);
      expect(v.failover?.target).to.equal(row.target);
      expect(v.reason).to.match(row.reason);
      if (row.target) expect(v.failover?.reason).to.equal('a stopped answering (3 probes × 500 ms)');
    });
  }
});

function snapshot(over: Partial<ClusterSnapshot> = {}): ClusterSnapshot {
  return { ...emptySnapshot(10n), ...over };
}

const leaderRecord = (node: string) => ({
  node,
  leaseId: '1',
  ttlMs: 5_000,
  mustBeOutByMs: 4_500,
  since: NOW,
});
const candidate = (node: string, priority: number, healthy = true) => ({
  node,
  leaseId: '1',
  ttlMs: 5_000,
  mustBeOutByMs: 4_500,
  priority,
  healthy,
});
const heard = (node: string): [string, SeenAgent] => [
  node,
  { heartbeat: { v: 1, node, at: NOW, fenced: false, identities: [] }, receivedAt: NOW },
];

describe('controller rules: which target', () => {
  function ctx(candidates: ReturnType<typeof candidate>[], fenced: string[] = []): ViewContext {
    const spec = parseSpec({ name: 'bot', service: { driver: 'nats-service', handler: 'h' } });
    return {
      snap: snapshot({
        specs: new Map([['bot', { spec, revision: 5n }]]),
        identities: new Map([
          [
            'bot',
            {
              leader: { record: leaderRecord('a'), token: 7n },
              candidates: new Map(candidates.map((c) => [c.node, c])),
              holdOffs: new Map(),
            },
          ],
        ]),
        fences: new Map(fenced.map((n) => [n, { reason: 'maintenance', actor: 'ops', at: NOW }])),
      }),
      agents: new Map(candidates.map((c) => heard(c.node))),
      heartbeatTimeoutMs: 6_000,
      now: NOW,
      startedAt: NOW - 60_000,
    };
  }
  const rows: Array<{
    situation: string;
    candidates: ReturnType<typeof candidate>[];
    fenced?: string[];
    target?: string;
    reason: RegExp;
  }> = [
    {
      situation: 'the highest priority wins',
      candidates: [candidate('a', 9), candidate('b', 1), candidate('c', 5)],
      target: 'c',
      reason: /c is the fit standby with the highest priority \(5\)/,
    },
    {
      situation: 'a tie goes to the first name',
      candidates: [candidate('c', 5), candidate('b', 5)],
      target: 'b',
      reason: /b is the fit/,
    },
    {
      situation: 'a fenced node is passed over',
      candidates: [candidate('b', 9), candidate('c', 1)],
      fenced: ['b'],
      target: 'c',
      reason: /c is the fit/,
    },
    {
      situation: 'an unhealthy node is passed over',
      candidates: [candidate('b', 9, false), candidate('c', 1)],
      target: 'c',
      reason: /c is the fit/,
    },
    {
      situation: 'nobody fit: every reason named',
      candidates: [candidate('b', 9, false)],
      fenced: [],
      reason: /no standby can take bot over: b is not healthy/,
    },
    { situation: 'no standby at all', candidates: [], reason: /no standby is known for bot/ },
  ];
  for (const row of rows) {
    it(row.situation, () => {
      const choice = chooseTarget(ctx(row.candidates, row.fenced), 'bot', ['a']);
      expect(choice.target).to.equal(row.target);
      expect(choice.reason).to.match(row.reason);
    });
  }
});

describe('controller rules: when a node fence is due', () => {
  const wf = (id: string, state: Workflow['state']) => ({
    workflow: { id, state } as Workflow,
    revision: 1n,
  });
  const intent = { reason: 'disk swap', actor: 'ops', at: NOW, workflows: ['w1', 'w2'] };
  const rows: Array<{
    situation: string;
    workflows: Array<ReturnType<typeof wf>>;
    leads?: string[];
    due: boolean;
    reason: RegExp;
  }> = [
    {
      situation: 'a handover still runs',
      workflows: [wf('w1', 'done'), wf('w2', 'draining')],
      due: false,
      reason: /waits for w2/,
    },
    {
      situation: 'every handover done',
      workflows: [wf('w1', 'done'), wf('w2', 'done')],
      due: true,
      reason: /every handover away from n1 ended/,
    },
    {
      situation: 'a handover aborted: fenced anyway, saying what fails over',
      workflows: [wf('w1', 'done'), wf('w2', 'aborted')],
      leads: ['bot'],
      due: true,
      reason: /although it still leads bot/,
    },
  ];
  for (const row of rows) {
    it(row.situation, () => {
      const snap = snapshot({
        workflows: new Map(row.workflows.map((w, i) => [`id${i}`, w])),
        identities: new Map(
          (row.leads ?? []).map((id) => [
            id,
            { leader: { record: leaderRecord('n1'), token: 3n }, candidates: new Map(), holdOffs: new Map() },
          ]),
        ),
      });
      const d = fenceDue(snap, 'n1', intent);
      expect(d.due).to.equal(row.due);
      expect(d.reason).to.match(row.reason);
    });
  }
});

describe('controller rules: access-list edits', () => {
  const nkey = (c: string) => `U${c.repeat(55)}`;
  const access = parseSpec({
    name: 'bot',
    service: { driver: 'nats-service', handler: 'h' },
    access: { open: false, authorized: [{ name: 'carol', nkey: nkey('C') }], blocked: [{ nkey: nkey('B') }] },
  }).access;
  it('adding a caller replaces an entry of the same name', () => {
    const next = changedAccess('bot', access, {
      op: 'add',
      list: 'authorized',
      caller: { name: 'carol', nkey: nkey('N') },
    });
    expect(next.authorized).to.deep.equal([{ name: 'carol', nkey: nkey('N') }]);
    expect(access.authorized[0]!.nkey, 'the stored lists are not changed in place').to.equal(nkey('C'));
  });
  it('removing by key works for a caller blocked by key', () => {
    expect(
      changedAccess('bot', access, { op: 'remove', list: 'blocked', name: nkey('B') }).blocked,
    ).to.deep.equal([]);
  });
  it('removing a caller not listed says so', () => {
    expect(() => changedAccess('bot', access, { op: 'remove', list: 'authorized', name: 'dave' })).to.throw(
      /dave is not on bot's authorized list/,
    );
  });
  it('open switches the flag only', () => {
    expect(changedAccess('bot', access, { op: 'open', open: true })).to.deep.include({ open: true });
  });
});

describe('controller rules: a new workflow record', () => {
  it('a scheduled switchover starts scheduled, its deadline counted from its start', () => {
    const snap = snapshot({
      identities: new Map([
        [
          'bot',
          { leader: { record: leaderRecord('a'), token: 7n }, candidates: new Map(), holdOffs: new Map() },
        ],
      ]),
    });
    const at = new Date(NOW + 60_000).toISOString();
    const wf = newWorkflow(
      snap,
      'bot',
      { kind: 'switchover', actor: 'ops', at, deadlineMs: 30_000 },
      'c1',
      NOW,
    );
    expect(wf).to.deep.include({ state: 'scheduled', from: { node: 'a', token: '7' }, controller: 'c1', at });
    expect(wf.deadline).to.equal(new Date(NOW + 90_000).toISOString());
    expect(wf.id).to.equal(`switchover-bot-${NOW.toString(36)}`);
  });
});

describe('controller rules: a probe its own controller ended late', () => {
  for (const [lateMs, blind] of [
    [-5, false],
    [0, false],
    [100, false],
    [101, true],
    [2_000, true],
  ] as const) {
    it(`${lateMs} ms after its timeout → ${blind ? 'proves nothing' : 'counts'}`, () => {
      const verdict = lateness(lateMs);
      expect(verdict.blind).to.equal(blind);
      if (blind) expect(verdict.reason).to.include(`${lateMs} ms late`);
    });
  }
});

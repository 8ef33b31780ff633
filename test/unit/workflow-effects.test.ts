// Performing a workflow step's effects (pkg/controller/workflow-effects.ts) through fake
// operations: each under the term its step captured, and each outcome as the next decision
// needs it.
import { expect } from 'chai';
import type { Logger } from 'pino';
import { AgentControlError } from '../../pkg/controller/agents.js';
import { NotActiveError } from '../../pkg/controller/store.js';
import { EffectRunner, type WorkflowOperations } from '../../pkg/controller/workflow-effects.js';
import type { Outcomes } from '../../pkg/controller/workflow-step.js';
import { LeaseOperationError, type Authority } from '../../pkg/lease/admin.js';
import { waitFor } from '../support/wait.js';

const RECORD = { reason: 'failover to b', actor: 'op', at: 1, workflow: 'w1' };

function setup(over: Partial<WorkflowOperations> = {}) {
  const calls: string[] = [];
  const logged: Array<[string, string]> = [];
  const log = (level: string) => (_fields: unknown, msg: string) => void logged.push([level, msg]);
  const logger = { warn: log('warn'), info: log('info'), debug: log('debug') } as unknown as Logger;
  let wall = 5_000;
  const ops: WorkflowOperations = {
    readSnapshot: async () => {
      throw new Error('not read by effects');
    },
    grantHoldOff: async (ttlMs) => (calls.push(`grant ${ttlMs}`), 'L'),
    holdOffWrites: (identity, nodes, _record, lease) => (
      calls.push(`writes ${identity} ${nodes.join(',')} ${lease}`),
      []
    ),
    extendHoldOff: async (_identity, nodes) => void calls.push(`extend ${nodes.join(',')} at ${wall}`),
    releaseHoldOff: async (lease) => void calls.push(`release ${lease}`),
    revokeHolder: async (_identity, token) => {
      calls.push(`revoke ${token} at ${wall}`);
      return { ended: ['bot', 'other'] };
    },
    transfer: async (_identity, target, token) => (calls.push(`transfer ${target} ${token}`), 60n),
    drain: async (node, term, req) => void calls.push(`drain ${node} term ${term} hold ${req.holdMs}`),
    undrain: async (node, term) => void calls.push(`undrain ${node} term ${term}`),
    fenceCommands: [],
    responders: async () => [{ node: 'b', token: '60' }],
    ...over,
  };
  const runner = new EffectRunner({
    identity: 'bot',
    ops,
    log: logger,
    wallMs: () => (wall += 10),
    drainTimeoutMs: 5_000,
    alarm: (node, message) => void calls.push(`alarm ${node} ${message}`),
  });
  let holds = true;
  const authority: Authority = { key: 'election', revision: '7', mayAct: () => holds };
  return { runner, calls, logged, authority, endTerm: () => (holds = false) };
}

describe('workflow effects: performed under the step’s term', () => {
  const effects = [
    { kind: 'grant-hold-off', ttlMs: 30_000 },
    { kind: 'drain', node: 'a', actor: 'op', holdMs: 31_500, reason: 'switchover w1' },
    { kind: 'revoke', expectToken: '42', actor: 'op' },
    { kind: 'transfer', target: 'b', expectToken: '42', actor: 'op' },
    { kind: 'release-hold-off', lease: 'L' },
    { kind: 'undrain', node: 'a', actor: 'op' },
  ] as const;
  for (const effect of effects) {
    it(`${effect.kind}: refused, and nothing sent, once the term ended`, async () => {
      const { runner, calls, authority, endTerm } = setup();
      endTerm();
      const refused = await runner.perform(effect, authority, {}).catch((err: Error) => err);
      expect(refused).to.be.instanceOf(NotActiveError);
      expect(calls).to.deep.equal([]);
    });
  }

  it('a drain names the term it is sent under, and is not awaited', async () => {
    const { runner, calls, authority } = setup({ drain: () => new Promise(() => undefined) });
    await runner.perform(effects[1], authority, {});
    const sent = setup();
    await sent.runner.perform(effects[1], sent.authority, {});
    expect(calls).to.deep.equal([]);
    expect(sent.calls).to.deep.equal(['drain a term 7 hold 31500']);
  });

  it('a drain the agent refuses as stale is reported as such', async () => {
    const { runner, logged, authority } = setup({
      drain: async () => {
        throw new AgentControlError('a', 'stale-controller', 'controller term 7 is no longer current');
      },
    });
    await runner.perform(effects[1], authority, {});
    // The drain is not awaited: wait for its refusal to be logged.
    await waitFor(() => logged.length > 0, {
      what: 'the refusal to be logged',
      timeoutMs: 2_000,
      intervalMs: 1,
    });
    expect(logged).to.deep.include([
      'warn',
      'the agent refused the drain: this controller no longer holds the term it was sent under',
    ]);
  });

  it('a revocation extends the hold-off first and records when it was sent', async () => {
    const { runner, calls, authority } = setup();
    const done: Outcomes = {};
    await runner.perform(
      { ...effects[2], extendHoldOff: { lease: 'L', nodes: ['c'], record: RECORD } },
      authority,
      done,
    );
    expect(calls).to.deep.equal(['extend c at 5000', 'revoke 42 at 5010']);
    expect(done.revoke).to.deep.equal({ at: 5_010, ended: ['bot', 'other'] });
  });

  const revokeFailures: Array<[string, Error, 'not done' | 'thrown']> = [
    [
      'the term changed first: nothing revoked',
      new LeaseOperationError('leader changed', 'changed'),
      'not done',
    ],
    ['no leader any more: nothing revoked', new LeaseOperationError('no leader', 'no-leader'), 'not done'],
    ['our own term ended: stop', new LeaseOperationError('deposed', 'no-authority'), 'thrown'],
    ['etcd failed: the step fails and is retried', new Error('deadline exceeded'), 'thrown'],
  ];
  for (const [name, error, expected] of revokeFailures) {
    it(`a revocation that fails, ${name}`, async () => {
      const { runner, authority } = setup({
        revokeHolder: async () => {
          throw error;
        },
      });
      const done: Outcomes = {};
      const thrown = await runner.perform(effects[2], authority, done).catch((err: Error) => err);
      if (expected === 'thrown') expect(thrown).to.equal(error);
      else expect(done.revoke).to.deep.equal({ at: 5_010, notDone: error.message });
    });
  }

  const transfers: Array<[string, Error | undefined, Outcomes['transfer'] | 'thrown']> = [
    ['moved: the new token', undefined, { token: '60' }],
    ['the keys changed: read again', new LeaseOperationError('changed', 'changed'), { changed: true }],
    [
      'refused: why',
      new LeaseOperationError('b is fenced: unfence it first', 'target-fenced'),
      { refused: 'b is fenced: unfence it first' },
    ],
    ['our own term ended: stop', new LeaseOperationError('deposed', 'no-authority'), 'thrown'],
  ];
  for (const [name, error, expected] of transfers) {
    it(`a transfer, ${name}`, async () => {
      const { runner, authority } = setup(
        error
          ? {
              transfer: async () => {
                throw error;
              },
            }
          : {},
      );
      const done: Outcomes = {};
      const thrown = await runner.perform(effects[3], authority, done).catch((err: Error) => err);
      if (expected === 'thrown') expect(thrown).to.equal(error);
      else expect(done.transfer).to.deep.equal(expected);
    });
  }

  it('an undrain not taken is an outcome (asked again next round), and logged', async () => {
    const { runner, logged, authority } = setup({
      undrain: async () => {
        throw new Error('no answer');
      },
    });
    const done: Outcomes = {};
    await runner.perform(effects[5], authority, done);
    expect(done.undrain).to.deep.equal({ ok: false, why: 'no answer' });
    expect(logged).to.deep.include([
      'info',
      'rolling back: the old leader did not take the undrain yet; asking again',
    ]);
  });

  it('fence commands run one by one, each only while the term holds', async () => {
    const ran: string[] = [];
    let endTerm = () => undefined as unknown;
    const { runner, authority, ...rest } = setup({
      fenceCommands: [
        async (t) => (ran.push(`first ${t.node}`), endTerm(), { ok: true, detail: 'powered off' }),
        async () => (ran.push('second'), { ok: true, detail: 'pod deleted' }),
      ],
    });
    endTerm = rest.endTerm;
    const target = { node: 'a', identity: 'bot', token: '42' };
    const thrown = await runner
      .perform({ kind: 'fence-commands', target }, authority, {})
      .catch((e: Error) => e);
    expect(thrown).to.be.instanceOf(NotActiveError);
    expect(ran).to.deep.equal(['first a']);
  });

  it('a hold-off is written with the record, and undone with its lease if that write loses', () => {
    const { runner, calls } = setup();
    const writes = runner.recordWrites([
      { kind: 'hold-off', lease: 'L', nodes: ['a'], record: RECORD },
      { kind: 'drain', node: 'a', actor: 'op', holdMs: 100, reason: 'x' },
    ]);
    expect(calls).to.deep.equal(['writes bot a L']);
    expect(writes.undo).to.deep.equal([{ lease: 'L' }]);
  });
});

// The workflow driver (pkg/controller/workflow.ts) with every operation faked and time on a
// ManualClock: it records under the term its round captured, undoes a hold-off whose record
// lost its compare, tells an operator what keeps failing (once per reason), stops when
// deposed, and reads its deadlines from the injected clock.
import { expect } from 'chai';
import type { Etcd3, IOperation } from 'etcd3';
import type { Logger } from 'pino';
import type { Workflow } from '../../pkg/api/schema.js';
import { ManualClock } from '../../pkg/clock/index.js';
import type { AgentLink } from '../../pkg/controller/agents.js';
import {
  ControllerKeys,
  emptySnapshot,
  NotActiveError,
  type ClusterSnapshot,
  type GuardedWriter,
} from '../../pkg/controller/store.js';
import { WorkflowDriver, type WorkflowOperations } from '../../pkg/controller/workflow.js';
import type { Authority } from '../../pkg/lease/admin.js';
import { A_LEADS, identityKeys, switchover } from '../support/switchover.js';

const TERM: Authority = { key: 'election', revision: '7', mayAct: () => true };
const HOLD_OFF_WRITES = [{ sentinel: 'hold-off puts' }] as unknown as IOperation[];

interface Fixture {
  clock: ManualClock;
  logs: Array<[string, string]>;
  calls: string[];
  puts: Array<{ value: Workflow; revision: bigint; ops: IOperation[]; term: Authority | undefined }>;
  driver: WorkflowDriver;
  running: Promise<void>;
}

function start(opts: {
  workflow: Partial<Workflow>;
  ops?: Partial<WorkflowOperations>;
  put?: () => Promise<bigint | undefined>;
  authority?: () => Authority;
}): Fixture {
  const clock = new ManualClock({ wallMs: Date.parse('2026-03-01T12:00:00.000Z') });
  const now = clock.wallMs();
  const logs: Array<[string, string]> = [];
  const calls: string[] = [];
  const puts: Fixture['puts'] = [];
  const at = (level: string) => (_fields: unknown, msg: string) => void logs.push([level, msg]);
  const logger = {
    warn: at('warn'),
    info: at('info'),
    error: at('error'),
    debug: at('debug'),
    child: () => logger,
  } as unknown as Logger;
  const wf = switchover({ requestedAt: now, dueAt: now + 30_000 }, opts.workflow);
  const snap: ClusterSnapshot = {
    ...emptySnapshot(5n),
    identities: new Map([['bot', identityKeys(A_LEADS)]]),
    workflows: new Map([['bot', { workflow: wf, revision: 5n }]]),
  };
  const writer = {
    authority: opts.authority ?? (() => TERM),
    put: async (_key: string, value: Workflow, revision: bigint, ops: IOperation[], term?: Authority) => {
      puts.push({ value, revision, ops, term });
      driver.stop(); // one record is all each test looks at
      return opts.put ? opts.put() : 6n;
    },
  } as unknown as GuardedWriter;
  const driver = new WorkflowDriver(
    {
      name: 'c1',
      etcd: {} as Etcd3,
      keys: new ControllerKeys('t'),
      writer,
      agents: {} as AgentLink,
      logger,
      drainTimeoutMs: 5_000,
      loginTimeoutMs: 5_000,
      fence: [],
      viewContext: (s) => ({ snap: s, agents: new Map(), heartbeatTimeoutMs: 10_000, now, startedAt: now }),
      responders: async () => [],
      history: () => undefined,
      changed: () => undefined,
      alarm: () => undefined,
      finished: () => undefined,
      isActive: () => true,
      clock,
      operations: {
        // A real read yields to the event loop; so does this one, or a round that records
        // and reads again at once would never let the clock's timers run.
        readSnapshot: () => new Promise((resolve) => setImmediate(() => resolve(snap))),
        grantHoldOff: async () => (calls.push('grant'), 'L'),
        holdOffWrites: () => HOLD_OFF_WRITES,
        releaseHoldOff: async (lease, term) =>
          void calls.push(`release ${lease}${term ? ' under the term' : ''}`),
        revokeHolder: async () => (calls.push('revoke'), { ended: ['bot'] }),
        drain: async () => void calls.push('drain'),
        ...opts.ops,
      },
    },
    'bot',
  );
  return { clock, logs, calls, puts, driver, running: driver.run() };
}

async function stop(f: Fixture): Promise<void> {
  f.driver.stop();
  await f.clock.advance(1_000);
  await f.running;
}

describe('workflow driver: read, decide, act, record', () => {
  it('records under the term its round captured, with the hold-off in the same txn', async () => {
    const f = start({ workflow: {} });
    await f.clock.advance(0);
    await stop(f);
    const first = f.puts[0]!;
    expect(first.value.state).to.equal('draining');
    expect(first.value.holdOff).to.deep.equal({ lease: 'L', nodes: ['a'] });
    expect(first.revision).to.equal(5n);
    expect(first.ops).to.deep.equal(HOLD_OFF_WRITES);
    expect(first.term).to.equal(TERM);
    expect(first.value.steps.at(-1)).to.deep.equal({
      state: 'draining',
      at: new Date(f.clock.wallMs() - 1_000).toISOString(),
      note: 'a held off bot; target b',
    });
  });

  it('a record that lost its compare releases its fresh hold-off lease, and says so when it cannot', async () => {
    const f = start({
      workflow: {},
      put: async () => undefined,
      ops: {
        releaseHoldOff: async (lease, term) => {
          f.calls.push(`release ${lease}${term ? ' under the term' : ''}`);
          throw new Error('etcd unavailable');
        },
      },
    });
    await f.clock.advance(0);
    await stop(f);
    // Not under the term: the lease is this round's own, recorded nowhere.
    expect(f.calls.slice(0, 2)).to.deep.equal(['grant', 'release L']);
    expect(f.logs).to.deep.include([
      'warn',
      "could not release hold-off lease L of a step that lost its compare; it lapses by itself by the workflow's deadline",
    ]);
  });

  it('a step that keeps failing is logged once per reason, not once per retry', async () => {
    let reason = 'etcd unavailable';
    const f = start({
      workflow: {},
      ops: {
        grantHoldOff: async () => {
          throw new Error(reason);
        },
      },
    });
    await f.clock.advance(5_000); // about ten retries
    reason = 'etcd: no leader';
    await f.clock.advance(5_000);
    await stop(f);
    const failures = f.logs.filter(([, msg]) => msg === 'workflow step failed; retrying');
    expect(failures).to.have.length(2);
    expect(f.puts).to.deep.equal([]);
  });

  it('a deposed controller stops without acting', async () => {
    const f = start({
      workflow: {},
      authority: () => {
        throw new NotActiveError();
      },
    });
    await f.clock.advance(0);
    await f.running;
    expect(f.calls).to.deep.equal([]);
    expect(f.logs.map(([, msg]) => msg)).to.include(
      'this controller is no longer the active one: it did not act and leaves the workflow to the active controller',
    );
  });

  it('the drain timeout runs on the injected clock', async () => {
    const f = start({
      workflow: {
        state: 'draining',
        chosen: 'b',
        holdOff: { lease: 'L', nodes: ['a'] },
        escalation: ['drain'],
        drainSentAt: '2026-03-01T12:00:00.000Z',
      },
      put: async () => undefined,
    });
    await f.clock.advance(4_900);
    expect(f.calls).to.deep.equal([]);
    expect(f.logs).to.deep.include(['info', 'waiting for a to confirm its logout']);
    // Said once, though it waited about fifty rounds.
    expect(f.logs.filter(([, msg]) => msg === 'waiting for a to confirm its logout')).to.have.length(1);
    await f.clock.advance(300);
    await stop(f);
    expect(f.calls[0]).to.equal('revoke');
  });
});

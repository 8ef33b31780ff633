// A term run against fakes (no etcd, no NATS): the I/O happens in the order the decisions ask,
// a drain holds the key and logs back in when the hold expires (on a manual clock), and a move
// the table refuses ends in a given-back term, never in a login.
import { EventEmitter } from 'node:events';
import { expect } from 'chai';
import { pino } from 'pino';
import { ManualClock } from '../../pkg/clock/index.js';
import type { Decision } from '../../pkg/agent/decide.js';
import { IdentityStateMachine, TransitionRefusedError } from '../../pkg/agent/machine.js';
import type { LoginPort } from '../../pkg/agent/port.js';
import type { IdentityState } from '../../pkg/agent/states.js';
import { Term, type TermHost } from '../../pkg/agent/term.js';
import { Wakeup } from '../../pkg/agent/wakeup.js';
import type { IdentityDriver } from '../../pkg/identity/driver.js';
import type { Leadership } from '../../pkg/lease/index.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

/** What happened, in order, across the fakes. */
type Calls = string[];

/** How the fake takes a hand-over: moved, or refused (a guard did not hold); who the best live standby is. */
interface HandOverFake {
  accepts?: boolean;
  successor?: string;
  /** How often the term asked for its best standby. */
  successorReads?: number;
}

function fakeLeadership(calls: Calls, handOver: HandOverFake = {}) {
  let ended = false;
  let lost!: (e: { reason: string; at: number }) => void;
  const whenLost = new Promise<{ reason: string; at: number }>((r) => (lost = r));
  const end = (reason: string) => {
    ended = true;
    lost({ reason, at: 0 });
  };
  const session = Object.assign(new EventEmitter(), {
    timing: { logoutBudgetMs: 1_000, mustBeOutByMs: 3_000, selfFenceMs: 2_000 },
    state: 'alive',
    msUntilSelfFence: () => 1_500,
  });
  const leadership = Object.assign(new EventEmitter(), {
    token: 7n,
    previous: undefined,
    session,
    mayAct: () => !ended,
    whenLost: () => whenLost,
    clearance: async () => 'no earlier term',
    setLoggedIn: async (v: boolean) => void calls.push(`login record ${v}`),
    resign: async (o: { loggedOut: boolean }) => {
      calls.push(`resign loggedOut=${o.loggedOut}`);
      end('resigned');
      return true;
    },
    readHandOver: async (node: string, _workflow: string, authority: { revision: string }) => ({
      kind: 'drain',
      target: { node, revision: '5' },
      heldOffAt: '4',
      authority,
    }),
    readSuccessor: async () => {
      handOver.successorReads = (handOver.successorReads ?? 0) + 1;
      return handOver.successor
        ? { kind: 'leave', target: { node: handOver.successor, revision: '5' } }
        : undefined;
    },
    handOver: async (plan: { target: { node: string }; authority?: { revision: string } }) => {
      const under = plan.authority ? ` under controller term ${plan.authority.revision}` : '';
      calls.push(`hand over to ${plan.target.node}${under}`);
      if (!handOver.accepts) return false;
      end('key-moved');
      return true;
    },
  });
  // A getter, not a copy: Object.assign would copy its value once.
  Object.defineProperty(leadership, 'isEnded', { get: () => ended });
  return { leadership: leadership as unknown as Leadership, end };
}

function fakeDriver(calls: Calls, loginFails?: string, logoutUnconfirmed?: boolean): IdentityDriver {
  return Object.assign(new EventEmitter(), {
    mode: 'cold' as const,
    pid: undefined,
    prepare: async () => undefined,
    login: async () => {
      calls.push('service login');
      if (loginFails) throw new Error(loginFails);
    },
    logout: async () => (calls.push('service logout'), !logoutUnconfirmed),
    handle: async () => ({ ok: true }),
    status: async () => ({}),
    close: async () => undefined,
    armDeadline: (ms: number | undefined) => void calls.push(ms === undefined ? 'disarm' : 'arm'),
  }) as unknown as IdentityDriver;
}

function harness(
  start: IdentityState,
  opts: {
    durable?: boolean;
    inboxRefused?: string;
    loginFails?: string;
    logoutUnconfirmed?: boolean;
    service?: { driver: 'process'; mode: 'warm' | 'cold' } | { driver: 'nats-service' };
    /** Record when the agent's spawns are asked to wait for this login, and when they go on. */
    watchSpawns?: boolean;
  } = {},
) {
  const calls: Calls = [];
  const clock = new ManualClock();
  const machine = new IdentityStateMachine(clock);
  // Reach the starting state through the table, as the runner would.
  const path: IdentityState[] = start === 'waiting-out' ? ['campaigning', 'waiting-out'] : [];
  for (const next of path) machine.move({ next, reason: 'setup' });
  const moves: string[] = [];
  const driver = fakeDriver(calls, opts.loginFails, opts.logoutUnconfirmed);
  const port: LoginPort = {
    fetchCredential: async () => undefined,
    removeCredential: async () => undefined,
    ensureInbox: async () => {
      calls.push('inbox check');
      if (opts.inboxRefused) throw new Error(opts.inboxRefused);
    },
    subscribeResponder: async () => (
      calls.push('responder subscribe'),
      {
        requestsServed: 0,
        open: () => void calls.push('responder open'),
        stop: async () => void calls.push('responder stop'),
      }
    ),
    recordPending: async () => true,
    observeLeader: async () => ({ close: async () => undefined }),
  };
  const stop = new AbortController();
  const host: TermHost = {
    identity: 'msggateway',
    node: 'a',
    log: pino({ level: 'silent' }),
    clock,
    port,
    changed: new Wakeup(clock),
    stopSignal: stop.signal,
    state: () => machine.state,
    outside: () => ({ stopping: stop.signal.aborted }),
    ineligible: () => undefined,
    spec: () =>
      ({
        name: 'msggateway',
        inbox: { durable: opts.durable ?? false },
        service: opts.service ?? { driver: 'process', mode: 'warm' },
      }) as unknown as IdentitySpec,
    ensureDriver: async () => driver,
    driver: () => driver,
    move: (d: Decision) => {
      const m = machine.move(d);
      if (m) moves.push(`${m.to}: ${m.reason}`);
    },
    failed: () => undefined,
    inboxRefused: (refused: boolean) => void calls.push(`inbox refused ${refused}`),
    responderContext: () => ({}) as never,
    requestsServed: () => 0,
    setRequestsServed: () => undefined,
    admit: async () => () => undefined,
    warmLogin: (until: Promise<void>) => {
      if (!opts.watchSpawns) return;
      calls.push('spawns wait');
      void until.then(() => calls.push('spawns go on'));
    },
    tookOver: () => undefined,
  };
  return { calls, clock, machine, moves, host, stop };
}

/** Lets queued promise callbacks run. */
const settle = async () => {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
};

/** A term that leads, then its agent stops (SIGTERM): resolves once the term is over. */
async function stopWhileLeading(
  h: ReturnType<typeof harness>,
  { leadership }: ReturnType<typeof fakeLeadership>,
): Promise<void> {
  const term = new Term(leadership, h.host);
  const running = term.run();
  await settle();
  h.stop.abort();
  term.end({ kind: 'stop' });
  await running;
}

describe('a term, against fakes', function () {
  it('logs in in order, drains, holds the key, and logs back in when the hold expires', async function () {
    const h = harness('waiting-out');
    const { leadership, end } = fakeLeadership(h.calls);
    const term = new Term(leadership, h.host);
    const running = term.run();
    await settle();
    expect(h.machine.state).to.equal('leader');
    // Subscribed before the login, so NATS's confirmation overlaps it; answering only once in.
    expect(h.calls).to.deep.equal([
      'responder subscribe',
      'login record true',
      'arm',
      'service login',
      'responder open',
    ]);

    const drained = term.drain(1_000, 'ops');
    expect(await drained).to.equal(7n);
    expect(h.machine.state).to.equal('drained');
    expect(h.calls.slice(5)).to.deep.equal([
      'responder stop',
      'service logout',
      'disarm',
      'login record false',
    ]);

    await h.clock.advance(999);
    expect(h.machine.state, 'still holding before the hold expires').to.equal('drained');
    await h.clock.advance(1);
    await settle();
    expect(h.machine.state).to.equal('leader');

    end('key-moved');
    await running;
    expect(h.moves).to.deep.equal([
      'logging-in: login gate open: no earlier term',
      'leader: elected',
      'logging-out: drain requested by ops',
      'drained: for ops; logging back in after 1000 ms unless transferred',
      'logging-in: drain hold expired without a transfer: logging back in',
      'leader: elected',
      'logging-out: leadership lost (key-moved)',
      'standby: leadership lost (key-moved)',
    ]);
  });

  it('a drain that names its target hands the key over in the step that records the logout', async function () {
    const h = harness('waiting-out');
    const { leadership } = fakeLeadership(h.calls, { accepts: true });
    const term = new Term(leadership, h.host);
    const running = term.run();
    await settle();
    expect(await term.drain(1_000, 'ops', { to: 'b', term: '9', workflow: 'switchover-1' })).to.equal(7n);
    await running;
    // Out first, then one step: no separate "logged out" record, no hold.
    expect(h.calls.slice(5)).to.deep.equal([
      'responder stop',
      'service logout',
      'disarm',
      'hand over to b under controller term 9',
    ]);
    expect(h.moves.slice(-2)).to.deep.equal([
      'drained: for ops; logging back in after 1000 ms unless transferred',
      'standby: leadership transferred',
    ]);
  });

  it('a drain whose hand-over is refused records the logout and holds the key, as any drain', async function () {
    const h = harness('waiting-out');
    const { leadership, end } = fakeLeadership(h.calls, { accepts: false });
    const term = new Term(leadership, h.host);
    const running = term.run();
    await settle();
    expect(await term.drain(1_000, 'ops', { to: 'b', term: '9', workflow: 'switchover-1' })).to.equal(7n);
    expect(h.calls.slice(-2)).to.deep.equal(['hand over to b under controller term 9', 'login record false']);
    expect(h.machine.state).to.equal('drained');
    end('key-moved');
    await running;
  });

  for (const { successor, accepts, expected } of [
    { successor: 'b', accepts: true, expected: ['hand over to b'] },
    { successor: 'b', accepts: false, expected: ['hand over to b', 'resign loggedOut=true'] },
    { successor: undefined, accepts: true, expected: ['resign loggedOut=true'] },
  ]) {
    const what = !successor
      ? 'resigns the term when no live healthy standby is there'
      : accepts
        ? 'hands the term to its best standby once the service is out'
        : 'resigns the term when the hand-over is refused';
    it(`a leader whose agent stops ${what}`, async function () {
      const h = harness('waiting-out');
      await stopWhileLeading(h, fakeLeadership(h.calls, { accepts, ...(successor ? { successor } : {}) }));
      expect(h.calls.slice(5)).to.deep.equal(['responder stop', 'service logout', 'disarm', ...expected]);
      expect(h.machine.state).to.equal('stopped');
    });
  }

  it('a leader whose agent stops with its service not confirmed out never hands the term over: the session bounds the service', async function () {
    const h = harness('waiting-out', { logoutUnconfirmed: true });
    await stopWhileLeading(h, fakeLeadership(h.calls, { accepts: true, successor: 'b' }));
    expect(h.calls.slice(5)).to.deep.equal(['responder stop', 'service logout', 'resign loggedOut=false']);
  });

  for (const why of [
    { kind: 'fenced' },
    { kind: 'failed', reason: 'crashed 3 times' },
    { kind: 'ineligible', reason: 'the identity spec was deleted' },
  ] as const) {
    it(`a term ended for another reason than a stop (${why.kind}) never looks for a standby to hand it to`, async function () {
      const h = harness('waiting-out');
      const fake: HandOverFake = { accepts: true, successor: 'b' };
      const { leadership } = fakeLeadership(h.calls, fake);
      const term = new Term(leadership, h.host);
      const running = term.run();
      await settle();
      term.end(why);
      await settle();
      expect(fake.successorReads ?? 0).to.equal(0);
      expect(h.calls.filter((c) => c.startsWith('hand over'))).to.deep.equal([]);
      h.stop.abort();
      term.end({ kind: 'stop' });
      await running;
    });
  }

  it('a move the table refuses ends the term given back, and the service is never logged in', async function () {
    // The term believes it waited out, but the identity is still in standby: a bug. The move
    // to logging-in is refused; nothing may start.
    const h = harness('standby');
    const { leadership } = fakeLeadership(h.calls);
    const term = new Term(leadership, h.host);
    let error: unknown;
    await term.run().catch((err: unknown) => (error = err));
    expect(error).to.be.instanceOf(TransitionRefusedError);
    expect(h.calls).to.not.include('service login');
    expect(h.calls).to.not.include('login record true');
    expect(h.calls.at(-1)).to.equal('resign loggedOut=true');
    expect(h.machine.state).to.equal('standby');
    expect(term.token).to.equal(undefined);
  });

  it('a durable inbox that is not what the spec says refuses the login before the service starts', async function () {
    const h = harness('waiting-out', { durable: true, inboxRefused: 'duplicate window 1s is under 60s' });
    const { leadership, end } = fakeLeadership(h.calls);
    const term = new Term(leadership, h.host);
    const running = term.run();
    await settle();
    expect(h.calls.slice(0, 2)).to.deep.equal(['inbox check', 'inbox refused true']);
    expect(h.calls).to.not.include('login record true');
    expect(h.calls).to.not.include('service login');
    expect(h.moves.join('\n')).to.match(/login failed: duplicate window 1s is under 60s/);
    end('test over');
    await h.clock.advance(60_000);
    await running;
  });

  it('a login that fails takes back the subscription it made, never opened', async function () {
    const h = harness('waiting-out', { loginFails: 'the service exited during login' });
    const { leadership, end } = fakeLeadership(h.calls);
    const term = new Term(leadership, h.host);
    const running = term.run();
    await settle();
    expect(h.calls).to.include('responder subscribe');
    expect(h.calls).to.include('responder stop');
    expect(h.calls).to.not.include('responder open');
    expect(h.moves.join('\n')).to.match(/login failed: the service exited during login/);
    end('test over');
    await h.clock.advance(60_000);
    await running;
  });

  it('a spec without a durable inbox does not check one', async function () {
    const h = harness('waiting-out');
    const { leadership, end } = fakeLeadership(h.calls);
    const term = new Term(leadership, h.host);
    const running = term.run();
    await settle();
    expect(h.calls).to.not.include('inbox check');
    expect(h.calls).to.include('service login');
    end('test over');
    await running;
  });

  describe("the agent's spawns wait for a login that starts no process", function () {
    for (const service of [{ driver: 'process', mode: 'warm' }, { driver: 'nats-service' }] as const) {
      it(`from its admission until its responder is open (${service.driver}${'mode' in service ? `, ${service.mode}` : ''})`, async function () {
        const h = harness('waiting-out', { service, watchSpawns: true });
        const { leadership, end } = fakeLeadership(h.calls);
        const running = new Term(leadership, h.host).run();
        await settle();
        expect(h.calls).to.deep.equal([
          'spawns wait',
          'responder subscribe',
          'login record true',
          'arm',
          'service login',
          'responder open',
          'spawns go on',
        ]);
        end('key-moved');
        await running;
      });
    }

    it('and no longer once the login failed', async function () {
      const h = harness('waiting-out', { loginFails: 'the service did not log in', watchSpawns: true });
      const { leadership, end } = fakeLeadership(h.calls);
      const running = new Term(leadership, h.host).run();
      await settle();
      expect(h.calls.slice(0, 5)).to.deep.equal([
        'spawns wait',
        'responder subscribe',
        'login record true',
        'arm',
        'service login',
      ]);
      expect(h.calls, 'released after the failure').to.include('spawns go on');
      expect(h.calls.indexOf('spawns go on')).to.be.greaterThan(h.calls.indexOf('service login'));
      expect(h.calls, 'never opened').to.not.include('responder open');
      end('test over');
      await h.clock.advance(60_000);
      await running;
    });

    it('not for a cold process service: its login is a spawn itself', async function () {
      const h = harness('waiting-out', { service: { driver: 'process', mode: 'cold' }, watchSpawns: true });
      const { leadership, end } = fakeLeadership(h.calls);
      const running = new Term(leadership, h.host).run();
      await settle();
      expect(h.machine.state).to.equal('leader');
      expect(h.calls).to.not.include('spawns wait');
      end('key-moved');
      await running;
    });
  });
});

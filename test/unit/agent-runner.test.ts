// The runner without etcd or NATS (its LoginPort and session keeper faked, time on a manual
// clock): a fault it retries shows in the identity's detail and in one report per reason,
// not one per attempt, and clears when the retry gets through.
import { EventEmitter } from 'node:events';
import { expect } from 'chai';
import { pino } from 'pino';
import { ManualClock } from '../../pkg/clock/index.js';
import type { LoginPort } from '../../pkg/agent/port.js';
import { IdentityRunner, type RunnerDeps } from '../../pkg/agent/runner.js';
import { guardCredentialRead } from '../../pkg/agent/spec-policy.js';
import type { IdentityDriver } from '../../pkg/identity/driver.js';
import type { Session } from '../../pkg/lease/index.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

const spec = {
  name: 'msggateway',
  service: { driver: 'nats-service', handler: 'gw' },
  credential: { source: 'none' },
  inbox: { durable: false },
} as unknown as IdentitySpec;

const port: LoginPort = {
  fetchCredential: async () => undefined,
  removeCredential: async () => undefined,
  ensureInbox: async () => undefined,
  subscribeResponder: async () => ({ requestsServed: 0, open: () => undefined, stop: async () => undefined }),
  recordPending: async () => true,
  observeLeader: async () => ({ close: async () => undefined }),
};

/** Never opens a session: the runner waits there until stopped. */
const noSessionYet: RunnerDeps['sessions'] = {
  alive: undefined,
  current: (signal?: AbortSignal) =>
    new Promise<Session>((_, reject) =>
      signal?.addEventListener('abort', () => reject(new Error('agent a is shutting down'))),
    ),
};

/** A node that lets every spec run. */
const allowAll: RunnerDeps['policy'] = {
  check: async () => ({ ok: true }),
  credential: async () => ({ ok: true }),
};

function runner(
  makeDriver: RunnerDeps['makeDriver'],
  sessions = noSessionYet,
  loginPort: LoginPort = port,
  policy = allowAll,
) {
  const clock = new ManualClock();
  const retries: Array<{ source: string; error: string | undefined; retrying: boolean }> = [];
  const refused: string[] = [];
  const logged: string[] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void logged.push(JSON.parse(line).msg) });
  const r = new IdentityRunner('msggateway', {
    node: 'a',
    sessions,
    fence: { fenced: undefined },
    history: { record: () => undefined },
    logger,
    port: loginPort,
    settings: { priority: 1, nofailover: false },
    makeDriver,
    policy,
    clock,
    onRetry: (c) => retries.push({ source: c.source, error: c.retry?.error, retrying: c.retrying }),
    onRefused: (c) => refused.push(`${c.identity} ${c.what} ${c.refused}`),
  });
  return { r, clock, retries, logged, refused };
}

function driver(prepare: () => Promise<void>): IdentityDriver {
  return Object.assign(new EventEmitter(), {
    mode: 'warm',
    pid: undefined,
    prepare,
    close: async () => undefined,
  }) as unknown as IdentityDriver;
}

describe('identity runner: retries are visible', function () {
  it('a loop error is in the detail, reported and logged once while it persists, with a growing pause', async function () {
    let attempts = 0;
    const { r, clock, retries, logged } = runner(() => {
      attempts++;
      throw new Error("no handler 'gw' registered with this agent");
    });
    r.updateSpec(spec);
    r.start();
    await clock.advance(0);
    expect(attempts).to.equal(1);
    expect(r.status().detail).to.match(/retrying the identity loop: no handler 'gw' .*\(1 attempt since/);
    // Pauses of 1 s, 2 s, 4 s: three more attempts within 7 s, none before the first pause ends.
    await clock.advance(999);
    expect(attempts).to.equal(1);
    await clock.advance(6_001);
    expect(attempts).to.equal(4);
    expect(r.status().detail).to.match(/\(4 attempts since/);
    expect(retries).to.deep.equal([
      { source: 'loop', error: "no handler 'gw' registered with this agent", retrying: true },
    ]);
    expect(logged.filter((m) => m.startsWith('retrying the identity loop'))).to.have.length(1);
    await r.stop(100);
    expect(r.state).to.equal('stopped');
  });

  it('a warm service that does not start is shown until it does, beside other retries', async function () {
    let fail = true;
    const etcdAway: RunnerDeps['sessions'] = {
      alive: undefined,
      current: () => Promise.reject(new Error('etcd does not answer')),
    };
    const { r, clock, retries, logged } = runner(
      () =>
        driver(async () => {
          if (fail) throw new Error('exited with code 1');
        }),
      etcdAway,
    );
    r.updateSpec(spec);
    r.start();
    await clock.advance(0);
    expect(r.status().healthy, 'a warm service that is down ranks the node last').to.equal(false);
    expect(r.status().detail).to.match(
      /retrying starting the warm service .*: exited with code 1 .*; retrying the identity loop: etcd does not answer/,
    );
    fail = false;
    await clock.advance(1_000); // the loop's pause: the next step prepares the service again
    expect(r.status().healthy).to.equal(true);
    expect(r.status().detail).to.not.match(/warm service/);
    expect(r.status().detail).to.match(/retrying the identity loop: etcd does not answer \(2 attempts/);
    expect(retries).to.deep.equal([
      { source: 'warm-service', error: 'exited with code 1', retrying: true },
      { source: 'loop', error: 'etcd does not answer', retrying: true },
      { source: 'warm-service', error: undefined, retrying: true },
    ]);
    expect(logged).to.include(
      'no longer retrying starting the warm service (this node ranks last until it does)',
    );
    await r.stop(100);
  });

  it('a leader view that cannot be kept current is shown until a fresh read gets through', async function () {
    let trouble: ((err: Error | undefined) => void) | undefined;
    const watching: LoginPort = {
      ...port,
      observeLeader: async (_onChange, onTrouble) => {
        trouble = onTrouble;
        return { close: async () => undefined };
      },
    };
    const { r, clock, retries, logged } = runner(() => driver(async () => undefined), noSessionYet, watching);
    r.updateSpec(spec);
    r.start();
    await clock.advance(0);
    trouble!(new Error('etcdserver: permission denied'));
    trouble!(new Error('etcdserver: permission denied'));
    expect(r.status().detail).to.match(
      /retrying watching who leads this identity \(the leader shown may be stale\): etcdserver: permission denied \(2 attempts/,
    );
    trouble!(undefined);
    expect(r.status().detail ?? '').to.not.match(/who leads/);
    expect(retries.filter((c) => c.source === 'leader-observer')).to.deep.equal([
      { source: 'leader-observer', error: 'etcdserver: permission denied', retrying: true },
      { source: 'leader-observer', error: undefined, retrying: false },
    ]);
    expect(logged.filter((m) => m.startsWith('retrying watching who leads'))).to.have.length(1);
    await r.stop(100);
  });
});

describe('identity runner: what this node refuses to run', function () {
  it('a refused spec is shown and logged once, nothing is made or campaigned for, and it is looked at again', async function () {
    let refuse = true;
    let checks = 0;
    let made = 0;
    let sessionsAsked = 0;
    const policy: RunnerDeps['policy'] = {
      check: async () => {
        checks++;
        return refuse
          ? { ok: false, field: 'service.command', reason: "service.command 'evil' is not in allow.commands" }
          : { ok: true };
      },
      credential: async () => ({ ok: true }),
    };
    const counting: RunnerDeps['sessions'] = {
      alive: undefined,
      current: (signal) => {
        sessionsAsked++;
        return noSessionYet.current(signal);
      },
    };
    const { r, clock, logged, refused } = runner(
      () => {
        made++;
        return driver(async () => undefined);
      },
      counting,
      port,
      policy,
    );
    r.updateSpec(spec);
    r.start();
    await clock.advance(0);
    expect(r.state).to.equal('standby');
    expect(r.status().detail).to.equal("not campaigning: service.command 'evil' is not in allow.commands");
    expect(made, 'no driver (no warm process) for a refused spec').to.equal(0);
    expect(sessionsAsked, 'no campaign for a refused spec').to.equal(0);
    await clock.advance(30_000);
    expect(checks, 'looked at again after the recheck pause').to.equal(2);
    expect(logged.filter((m) => m.startsWith('accepting the spec on this node'))).to.have.length(1);
    // The metric follows every check (understudy_identity_refused{what="spec"}).
    expect(refused.at(-1)).to.equal('msggateway spec true');
    refuse = false;
    await clock.advance(30_000);
    expect(refused.at(-1)).to.equal('msggateway spec false');
    expect(made).to.equal(1);
    expect(sessionsAsked).to.equal(1);
    expect(logged.filter((m) => m.includes('works again'))).to.have.length(1);
    await r.stop(100);
  });

  it('a credential file the allow-list refuses is not read at login', async function () {
    let read = 0;
    const reading: LoginPort = {
      ...port,
      fetchCredential: async () => {
        read++;
        return '/run/x';
      },
    };
    const policy: RunnerDeps['policy'] = {
      check: async () => ({ ok: true }),
      credential: async (path) => ({
        ok: false,
        field: 'credential.path',
        reason: `credential.path '${path}' is not in allow.credentialPaths`,
      }),
    };
    const guarded = guardCredentialRead(reading, policy);
    const fileSpec = { ...spec, credential: { source: 'file', path: '/etc/shadow' } } as IdentitySpec;
    let error: Error | undefined;
    await guarded.fetchCredential(fileSpec, 1n).catch((e: Error) => (error = e));
    expect(error?.message).to.equal(
      "credential not read: credential.path '/etc/shadow' is not in allow.credentialPaths",
    );
    expect(read).to.equal(0);
    expect(await guarded.fetchCredential(spec, 1n)).to.equal('/run/x');
    expect(read, 'a spec without a credential file goes through').to.equal(1);
  });
});

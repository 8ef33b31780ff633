// The agent embedded as a library (in-process handlers), against real etcd and NATS: the
// nats-service driver, credentials, history in etcd, health and metrics, and fencing over
// the control subject.
import { expect } from 'chai';
import { mkdtemp, readFile, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import type { Etcd3 } from 'etcd3';
import { connect, type NatsConnection } from 'nats';
import { Agent } from '../../pkg/agent/agent.js';
import { AgentConfig } from '../../pkg/config/agent.js';
import { readHistory } from '../../pkg/history/index.js';
import { collectResponders, IdentityClient } from '../../pkg/identity/client.js';
import type { NatsServiceHandlers } from '../../pkg/identity/nats-service.js';
import { connectEtcd } from '../../pkg/lease/index.js';
import { createLogger } from '../../pkg/log/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import { Harness, type EtcdMember, type NatsServer } from '../support/harness.js';
import { TestAuthority } from '../support/control.js';
import { waitFor } from '../support/wait.js';

const SECRET = 'hunter2-do-not-log';

describe('agent as a library (real etcd and NATS)', function () {
  this.timeout(120_000);
  let harness: Harness;
  let etcd: EtcdMember;
  let nats: NatsServer;
  let nc: NatsConnection;
  let client: Etcd3;
  const running: Agent[] = [];
  const logs: string[] = [];
  /** Where the node's provisioned credential files are (allow.credentialPaths lists it). */
  let credentialDir: string;

  before(async () => {
    harness = await Harness.create();
    [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
    nc = await connect({ servers: nats.hostUrl });
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    credentialDir = await mkdtemp(join(tmpdir(), 'understudy-lib-'));
  });

  afterEach(async () => {
    await Promise.all(running.splice(0).map((a) => a.shutdown('test over')));
  });

  after(async () => {
    await nc?.close();
    client?.close();
    await harness?.close();
  });

  async function start(
    node: string,
    identity: string,
    handlers: Record<string, NatsServiceHandlers>,
    /** Executables process services may run here (allow.commands); as root, as these tests run. */
    commands: string[] = [],
  ) {
    const config = AgentConfig.parse({
      node,
      etcd: { endpoints: [etcd.hostEndpoint] },
      nats: { servers: [nats.hostUrl] },
      lease: { ttlSeconds: 3 },
      identities: { [identity]: null },
      health: { listen: '127.0.0.1:0' },
      allow: { credentialPaths: [`${credentialDir}/`], commands },
      ...(commands.length > 0 ? { service: { allowRoot: true } } : {}),
      priority: node === 'a' ? 10 : 0,
    });
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        logs.push(chunk.toString());
        done();
      },
    });
    const agent = await Agent.start({
      config,
      handlers,
      logger: createLogger({ name: 'agent', level: 'debug', base: { node }, destination }),
    });
    running.push(agent);
    return agent;
  }

  const stateOf = (agent: Agent, identity: string) => agent.runnerState(identity)?.state;
  const until = (agent: Agent, identity: string, state: string) =>
    waitFor(() => stateOf(agent, identity) === state, {
      what: `${agent.node}: ${identity} → ${state} (now ${stateOf(agent, identity)})`,
      timeoutMs: 20_000,
    });

  it('serves an in-process handler with the term token, hands it a 0600 credential file, and records every transition', async () => {
    // credential.source etcd needs a controller (test/integration/credentials.test.ts); a file
    // provisioned on the node is copied to the term's 0600 file the same way.
    const provisioned = join(credentialDir, 'secret');
    await writeFile(provisioned, SECRET, { mode: 0o600 });
    await putSpec(client, {
      name: 'lib',
      service: { driver: 'nats-service', handler: 'echo' },
      credential: { source: 'file', path: provisioned },
      access: { open: true },
    });
    let credential: { path: string; mode: number; content: string } | undefined;
    const agent = await start('a', 'lib', {
      echo: {
        handle: (req) => `echo ${req.command} as term ${req.token}`,
        login: async (ctx) => {
          const path = ctx.credentialFile!;
          credential = { path, mode: (await stat(path)).mode & 0o777, content: await readFile(path, 'utf8') };
        },
      },
    });
    await until(agent, 'lib', 'leader');

    const caller = new IdentityClient(nc, { identity: 'lib' });
    const reply = await caller.requestOk('HELLO there');
    caller.close();
    expect(reply.body).to.equal(`echo HELLO there as term ${reply.token}`);
    expect(reply.node).to.equal('a');
    expect(credential).to.include({ mode: 0o600, content: SECRET });

    const health = await fetch(`http://127.0.0.1:${agent.healthPort}/healthz`);
    expect(health.status).to.equal(200);
    const metrics = await (await fetch(`http://127.0.0.1:${agent.healthPort}/metrics`)).text();
    expect(metrics).to.include('understudy_identity_state{identity="lib",state="leader"} 1');

    await agent.shutdown('test');
    running.splice(running.indexOf(agent), 1);
    expect(await collectResponders(nc, 'lib', 200)).to.deep.equal([]);
    const gone = await stat(credential!.path).then(
      () => false,
      () => true,
    );
    expect(gone, 'credential file removed at logout').to.equal(true);
    expect(logs.join('')).to.not.include(SECRET);

    const history = await waitFor(
      async () => {
        const h = await readHistory(client, 'lib');
        return h.some((e) => e.to === 'stopped') ? h : undefined;
      },
      { what: 'the history of lib to reach stopped', timeoutMs: 5_000 },
    );
    const path = history.filter((e) => e.node === 'a').map((e) => e.to);
    expect(path).to.include.ordered.members([
      'campaigning',
      'waiting-out',
      'logging-in',
      'leader',
      'logging-out',
    ]);
    expect(path[path.length - 1]).to.equal('stopped');
    const leaderEntry = history.find((e) => e.to === 'leader')!;
    expect(leaderEntry.token).to.equal(String(reply.token));
  });

  it('a fence over the control subject logs the leader out, the standby takes over, and the node stays out until unfenced', async () => {
    await putSpec(client, {
      name: 'fenceable',
      service: { driver: 'nats-service', handler: 'h' },
      access: { open: true },
    });
    const handlers = { h: { handle: () => 'ok' } };
    let a = await start('a', 'fenceable', handlers);
    await until(a, 'fenceable', 'leader');
    const b = await start('b', 'fenceable', handlers);
    await until(b, 'fenceable', 'standby');

    const authority = await TestAuthority.start(client, nc);
    try {
      const control = (node: string, body: Record<string, unknown>) => authority.send(node, body);
      const fenced = await control('a', { op: 'fence', actor: 'test', reason: 'maintenance' });
      expect(fenced, JSON.stringify(fenced)).to.include({ ok: true });
      await until(a, 'fenceable', 'fenced');
      await until(b, 'fenceable', 'leader');
      expect((await collectResponders(nc, 'fenceable', 200)).map((r) => r.node)).to.deep.equal(['b']);

      // Across a restart of its agent, a fenced node neither campaigns nor logs in (S4).
      await a.shutdown('restart');
      running.splice(running.indexOf(a), 1);
      a = await start('a', 'fenceable', handlers);
      await until(a, 'fenceable', 'fenced');
      expect(a.status().fenced).to.equal(true);

      expect(await control('a', { op: 'unfence', actor: 'test' })).to.include({ ok: true });
      await until(a, 'fenceable', 'standby');
      expect((await collectResponders(nc, 'fenceable', 200)).map((r) => r.node)).to.deep.equal(['b']);
    } finally {
      await authority.stop();
    }
  });

  it("answers a load balancer's check: 200 with the token only while logged in, 503 while logging in or out, as standby, and for a name it does not host", async () => {
    await putSpec(client, {
      name: 'lb',
      service: { driver: 'nats-service', handler: 'gated' },
      access: { open: true },
    });
    // The first login and the first logout wait until the test lets them go on.
    let letLoginGo!: () => void;
    let letLogoutGo!: () => void;
    const loginGate = new Promise<void>((resolve) => (letLoginGo = resolve));
    const logoutGate = new Promise<void>((resolve) => (letLogoutGo = resolve));
    let logins = 0;
    let logouts = 0;
    const handlers = {
      gated: {
        handle: () => 'ok',
        login: async () => {
          if (logins++ === 0) await loginGate;
        },
        logout: async () => {
          if (logouts++ === 0) await logoutGate;
        },
      },
    };
    const check = async (agent: Agent, identity = 'lb', method = 'GET') => {
      const res = await fetch(`http://127.0.0.1:${agent.healthPort}/identities/${identity}/leader`, {
        method,
      });
      const body = method === 'GET' ? ((await res.json()) as Record<string, unknown>) : {};
      return { status: res.status, token: res.headers.get('x-understudy-token'), body };
    };
    const a = await start('a', 'lb', handlers);
    await until(a, 'lb', 'logging-in');
    expect((await check(a)).status, 'logging in: not yet').to.equal(503);
    letLoginGo();
    await until(a, 'lb', 'leader');
    const b = await start('b', 'lb', handlers);
    await until(b, 'lb', 'standby');

    const key = (await client.get('understudy/identities/lb/leader').exec()).kvs[0]!;
    const leading = await check(a);
    expect(leading.status).to.equal(200);
    expect(leading.token, "the token header is the leader key's revision").to.equal(key.mod_revision);
    expect(leading.body).to.include({ identity: 'lb', leader: true, token: key.mod_revision });
    expect((await check(a, 'lb', 'HEAD')).status, 'HEAD, as HAProxy checks').to.equal(200);
    const standby = await check(b);
    expect(standby.status).to.equal(503);
    expect(standby.token).to.equal(null);
    expect(standby.body.reason).to.match(/b does not answer for lb: it is standby/);
    const unknown = await check(a, 'no-such-identity');
    expect(unknown.status).to.equal(503);
    expect(unknown.body.reason).to.match(/does not host no-such-identity/);

    const leaving = a.shutdown('test');
    running.splice(running.indexOf(a), 1);
    await until(a, 'lb', 'logging-out');
    expect((await check(a)).status, 'logging out: no longer').to.equal(503);
    letLogoutGo();
    await leaving;
    await until(b, 'lb', 'leader');
    const next = await check(b);
    expect(next.status).to.equal(200);
    expect(BigInt(next.token!) > BigInt(leading.token!), 'a later term, a larger token').to.equal(true);
  });

  it("says 503 while the leader's service is frozen, and 200 again once it serves", async () => {
    const sleep = '/usr/bin/sleep';
    await putSpec(client, {
      name: 'lb-proc',
      service: { driver: 'process', mode: 'cold', command: [sleep, '600'] },
      access: { open: true },
    });
    const a = await start('a', 'lb-proc', {}, [sleep]);
    await until(a, 'lb-proc', 'leader');
    const status = async () =>
      (await fetch(`http://127.0.0.1:${a.healthPort}/identities/lb-proc/leader`)).status;
    expect(await status()).to.equal(200);
    const pid = a.runnerState('lb-proc')!.pid!;
    process.kill(pid, 'SIGSTOP');
    try {
      // A sleeping process enters the stopped state only once the kernel schedules it: on a
      // loaded machine that is not at once. Ask once /proc says it is stopped.
      await waitFor(async () => /^\d+ \(.*\) [Tt] /.test(await readFile(`/proc/${pid}/stat`, 'utf8')), {
        what: `service ${pid} to be stopped`,
        timeoutMs: 5_000,
        intervalMs: 10,
      });
      const frozen = await fetch(`http://127.0.0.1:${a.healthPort}/identities/lb-proc/leader`);
      expect(frozen.status, 'a stopped service is not served to').to.equal(503);
      expect(((await frozen.json()) as { reason: string }).reason).to.match(/its service is not serving/);
      expect(stateOf(a, 'lb-proc'), 'the agent still holds the term').to.equal('leader');
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    expect(await status()).to.equal(200);
  });
});

// The agent, end to end: real etcd and NATS (containers), agents as separate processes on
// the host, the demo rate bot as their service. Each test uses its own identity.
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import { generateCallerKey } from '../../pkg/identity/access.js';
import { collectResponders, IdentityClient, NoResponderError } from '../../pkg/identity/client.js';
import { subjects } from '../../pkg/identity/wire.js';
import { listPending, approvePending, putSpec } from '../../pkg/spec/store.js';
import { IntegrationCluster } from '../support/cluster.js';
import { pidDead } from '../support/processes.js';
import { PingSampler } from '../support/sampler.js';
import { rateBotSpec } from '../support/specs.js';
import { TestAuthority } from '../support/control.js';
import { waitFor, withTimeout } from '../support/wait.js';

/** Window in which a PING collects every responder (two would be a split brain). */
const RESPONDER_WINDOW_MS = 300;

const rateBot = rateBotSpec;

describe('agent: the winner logs in under the shared name', function () {
  this.timeout(240_000);
  let cluster: IntegrationCluster;
  let nc: NatsConnection;
  let client: Etcd3;
  /** Stands in for the active controller: control requests are signed by it. */
  let authority: TestAuthority;

  before(async () => {
    cluster = await IntegrationCluster.start({ connect: true });
    ({ nc, client } = cluster);
    authority = await TestAuthority.start(client, nc);
  });

  afterEach(function () {
    return cluster.afterTest(this.currentTest);
  });

  after(async () => {
    await authority?.stop();
    await cluster?.close();
  });

  /** Two agents for `identity`: a (priority 10, leads first) and b (standby). */
  async function startPair(identity: string, ttlSeconds = 4) {
    const a = await cluster.startAgent({
      node: 'a',
      identities: { [identity]: { priority: 10 } },
      ttlSeconds,
    });
    await a.waitForState(identity, 'leader');
    const b = await cluster.startAgent({ node: 'b', identities: { [identity]: null }, ttlSeconds });
    await b.waitForStarted();
    await b.waitForState(identity, 'standby');
    return { a, b };
  }

  async function controlStatus(node: string) {
    return (await authority.send(node, { op: 'status' }, { timeoutMs: 3_000 })) as unknown as {
      ok: boolean;
      result: { identities: Array<{ identity: string; state: string; pid?: number; token?: string }> };
    };
  }

  /** Until someone answers PING: the node and token, and ms waited. */
  async function untilAnswered(identity: string, node: string, timeoutMs: number) {
    const started = performance.now();
    const pong = await waitFor(
      async () => {
        const responders = await collectResponders(nc, identity, 100);
        return responders.find((r) => r.node === node);
      },
      { what: `${identity} answered by ${node}`, timeoutMs, intervalMs: 10 },
    );
    return { ...pong, waitedMs: performance.now() - started };
  }

  it('exactly one of two agents answers PING; SIGTERM hands over well below the TTL', async () => {
    const ttlSeconds = 6;
    await putSpec(client, rateBot('term'));
    const { a } = await startPair('term', ttlSeconds);

    const responders = await collectResponders(nc, 'term', RESPONDER_WINDOW_MS);
    expect(responders.map((r) => r.node)).to.deep.equal(['a']);
    const before = responders[0]!.token;

    const sigtermAt = performance.now();
    a.kill('SIGTERM');
    const pong = await untilAnswered('term', 'b', ttlSeconds * 1000);
    const handoverMs = performance.now() - sigtermAt;
    console.log(
      `      SIGTERM handover: standby answered ${handoverMs.toFixed(0)} ms after SIGTERM (TTL ${ttlSeconds} s)`,
    );
    // The leader handed over (or resigned): the standby did not wait for the lease to expire.
    expect(handoverMs).to.be.below((ttlSeconds * 1000) / 2);
    expect(pong.token > before).to.equal(true);
    expect((await a.exited).code).to.equal(0);
    expect(await collectResponders(nc, 'term', RESPONDER_WINDOW_MS)).to.have.length(1);
  });

  it('SIGKILL of the leader agent: its service dies with it and the standby logs in only after the lease expires', async () => {
    const ttlSeconds = 4;
    await putSpec(client, rateBot('kill'));
    const { a } = await startPair('kill', ttlSeconds);
    const status = await controlStatus('a');
    const servicePid = status.result.identities.find((i) => i.identity === 'kill')?.pid;
    expect(servicePid, 'the leader reports its service pid').to.be.a('number');

    const killedAt = performance.now();
    a.kill('SIGKILL');
    await waitFor(() => pidDead(servicePid!), {
      what: `service pid ${servicePid} to die with its agent`,
      timeoutMs: 5_000,
    });
    const diedMs = performance.now() - killedAt;
    const pong = await untilAnswered('kill', 'b', ttlSeconds * 3000);
    const takeoverMs = performance.now() - killedAt;
    console.log(
      `      SIGKILL: service gone after ${diedMs.toFixed(0)} ms, standby answered after ${takeoverMs.toFixed(0)} ms (TTL ${ttlSeconds} s)`,
    );
    // The last keepalive was sent at most T/3 before the kill: etcd holds the lease ≥ 2T/3.
    expect(takeoverMs).to.be.above(((2 * ttlSeconds) / 3) * 1000 - 100);
    expect(pong.node).to.equal('b');
  });

  it('a frozen leader agent: the lifeline deadline kills its service before the standby logs in; resumed, it stands by', async () => {
    const ttlSeconds = 4;
    await putSpec(client, rateBot('frozen'));
    const { a } = await startPair('frozen', ttlSeconds);
    const servicePid = (await controlStatus('a')).result.identities.find((i) => i.identity === 'frozen')?.pid;
    expect(servicePid).to.be.a('number');
    const mark = a.records.length;
    const frozenAt = performance.now();
    a.kill('SIGSTOP');
    try {
      const [diedMs, answered] = await Promise.all([
        waitFor(async () => (await pidDead(servicePid!)) && performance.now() - frozenAt, {
          what: `service ${servicePid} of the frozen agent to be killed`,
          timeoutMs: ttlSeconds * 3000,
          intervalMs: 10,
        }),
        untilAnswered('frozen', 'b', ttlSeconds * 3000).then(() => performance.now() - frozenAt),
      ]);
      console.log(
        `      frozen leader: service killed after ${diedMs.toFixed(0)} ms, standby answered after ${answered.toFixed(0)} ms`,
      );
      expect(diedMs, 'the old service is gone before the standby answers').to.be.below(answered);
    } finally {
      a.kill('SIGCONT');
    }
    // Resumed, it finds its term over: it logs out (without acting) and stands by.
    await a.waitForState('frozen', 'standby', { from: mark });
    expect((await collectResponders(nc, 'frozen', RESPONDER_WINDOW_MS)).map((r) => r.node)).to.deep.equal([
      'b',
    ]);
  });

  it('while failovers are forced repeatedly, no PING ever sees two responders or a token going down', async () => {
    await putSpec(client, rateBot('sampled'));
    let { a, b } = await startPair('sampled', 4);
    const sampler = new PingSampler(nc, 'sampled', { everyMs: 5 }).start();
    try {
      await waitFor(() => sampler.answered > 0, {
        what: 'the sampler to see the first term',
        timeoutMs: 5_000,
      });
      // Four handovers: SIGTERM the leader, bring it back as the new standby.
      for (let round = 0; round < 4; round++) {
        const [leader, standby] = round % 2 === 0 ? [a, b] : [b, a];
        const mark = standby.records.length;
        leader.kill('SIGTERM');
        await withTimeout(leader.exited, 15_000, `${leader.node} to exit`);
        await standby.waitForState('sampled', 'leader', { from: mark });
        cluster.forget(leader);
        const again = await cluster.startAgent({
          node: leader.node,
          identities: { sampled: null },
          ttlSeconds: 4,
        });
        await again.waitForState('sampled', 'standby');
        if (leader === a) a = again;
        else b = again;
      }
    } finally {
      await sampler.close();
    }
    expect(sampler.violations(), 'two responders to one PING, or a token going down').to.deep.equal([]);
    expect(sampler.terms().length, 'distinct terms seen by the sampler').to.be.at.least(5);
    console.log(
      `      sampler: ${sampler.sent} PINGs, ${sampler.answered} replies, ${sampler.terms().length} terms`,
    );
  });

  it('access lists: blocked callers get nothing, STATUS is for contacts, an approved request works on any leader', async () => {
    const admin = generateCallerKey();
    const mallory = generateCallerKey();
    const carol = generateCallerKey();
    await putSpec(
      client,
      rateBot('guarded', {
        access: {
          open: false,
          contacts: [{ name: 'admin', nkey: admin.publicKey }],
          blocked: [{ name: 'mallory', nkey: mallory.publicKey }],
        },
      }),
    );
    const { a } = await startPair('guarded');
    const as = (name: string, seed: string) =>
      new IdentityClient(nc, { identity: 'guarded', caller: { name, seed }, timeoutMs: 2_000 });
    const adminClient = as('admin', admin.seed);
    const malloryClient = as('mallory', mallory.seed);
    const carolClient = as('carol', carol.seed);
    try {
      // Blocked: no reply at all (a timeout, not a refusal).
      const blocked = await malloryClient.request('RATE USD').then(
        () => 'answered',
        (err: Error) => err.name,
      );
      expect(blocked).to.equal('IdentityTimeoutError');

      const status = await adminClient.request('STATUS');
      expect(status.error).to.equal(undefined);
      expect(JSON.parse(status.body)).to.include({ identity: 'guarded', node: 'a' });

      const refused = await carolClient.request('STATUS');
      expect(refused.error).to.equal('not-a-contact');
      expect(refused.body).to.match(/contacts/);

      const unauthorized = await carolClient.request('RATE USD');
      expect(unauthorized.error).to.equal('not-authorized');
      expect(unauthorized.body).to.match(/pending/);
      const pending = await waitFor(
        async () => (await listPending(client, 'guarded')).find((p) => p.name === 'carol'),
        { what: "carol's pending request in etcd", timeoutMs: 5_000 },
      );
      expect(pending.nkey).to.equal(carol.publicKey);

      await approvePending(client, 'guarded', 'carol');
      const rate = await waitFor(
        async () => {
          const r = await carolClient.request('RATE USD');
          return r.error ? undefined : r;
        },
        { what: 'the approval to reach the leader', timeoutMs: 5_000 },
      );
      expect(rate.body).to.match(/USD/);

      // The standby enforces the same lists the moment it logs in.
      a.kill('SIGTERM');
      await untilAnswered('guarded', 'b', 10_000);
      const onB = await carolClient.request('RATE USD');
      expect(onB).to.include({ node: 'b' });
      expect(onB.error).to.equal(undefined);
      const stillBlocked = await malloryClient.request('PING').then(
        () => 'answered',
        (err: Error) => err.name,
      );
      expect(stillBlocked).to.equal('IdentityTimeoutError');
    } finally {
      for (const c of [adminClient, malloryClient, carolClient]) c.close();
    }
  });

  it('durable inbox: 1,000 requests sent across a forced failover are all answered exactly once', async () => {
    await putSpec(client, rateBot('queued', { inbox: { durable: true, ackWaitMs: 2_000 } }));
    const { a } = await startPair('queued');
    const sender = new IdentityClient(nc, { identity: 'queued', timeoutMs: 10_000 });
    const answers = new Map<string, number>();
    const byNode = new Map<string, number>();
    // Count raw deliveries on the reply subject, before the client's own dedupe.
    const raw = nc.subscribe(sender.replySubject, {
      callback: (_e, m) => {
        const id = m.headers?.get('Understudy-Request-Id') ?? '?';
        answers.set(id, (answers.get(id) ?? 0) + 1);
        const node = m.headers?.get('Understudy-Node') ?? '?';
        byNode.set(node, (byNode.get(node) ?? 0) + 1);
      },
    });
    const ids: string[] = [];
    try {
      const total = 1_000;
      for (let i = 0; i < total; i++) {
        if (i === 300) a.kill('SIGTERM');
        ids.push((await sender.send(`RATE ${['USD', 'GBP', 'JPY'][i % 3]}`)).requestId);
      }
      await waitFor(() => ids.every((id) => answers.has(id)), {
        what: `answers to all ${total} requests`,
        timeoutMs: 60_000,
      });
      await nc.flush();
      const twice = [...answers.entries()].filter(([, count]) => count > 1);
      expect(twice, 'requests answered more than once').to.deep.equal([]);
      expect(byNode.get('b') ?? 0, 'answers from the new leader').to.be.greaterThan(0);
      console.log(`      durable inbox: answers by node ${JSON.stringify(Object.fromEntries(byNode))}`);
    } finally {
      raw.unsubscribe();
      sender.close();
    }
  });

  it('a crashing service makes the node resign after the configured attempts, and the standby takes over', async () => {
    // A cold service that crashes on node a soon after its login is confirmed (0.6 s, past the
    // cold start's settle window) and runs on b.
    await putSpec(client, {
      name: 'crashy',
      service: {
        driver: 'process',
        command: ['sh', '-c', 'if [ "$UNDERSTUDY_NODE" = a ]; then sleep 0.6; exit 3; fi; exec sleep 1000'],
        mode: 'cold',
        restart: { maxAttempts: 2, backoffMs: 50, maxBackoffMs: 100 },
      },
      access: { open: true },
    });
    const a = await cluster.startAgent({ node: 'a', identities: { crashy: { priority: 10 } } });
    const gaveUp = await a.waitForRecord(
      (r) => r.identity === 'crashy' && r.to === 'logging-out' && /service failed/.test(String(r.reason)),
      'resign after repeated crashes',
      { timeoutMs: 20_000 },
    );
    await cluster.startAgent({ node: 'b', identities: { crashy: null } });
    const pong = await untilAnswered('crashy', 'b', 30_000);
    expect(pong.node).to.equal('b');
    const restarts = a.records
      .slice(0, a.records.indexOf(gaveUp))
      .filter((r) => r.identity === 'crashy' && /restarting it under the same term/.test(r.msg)).length;
    expect(restarts, 'restarts before giving up').to.equal(2);
  });

  it('refuses malformed config with the field named, and survives malformed control messages', async () => {
    const bad = await cluster.startAgent({
      node: 'bad',
      identities: { x: null },
      rawConfig:
        'node: Not_A_Name\netcd:\n  endpoints: [localhost:2379]\nnats:\n  servers: [nats://127.0.0.1:4222]\nlease:\n  ttlSeconds: 1\nidentities: {x: null}\n',
    });
    const exit = await withTimeout(bad.exited, 30_000, 'agent with bad config to exit');
    expect(exit.code).to.equal(2);
    const text = bad.output();
    expect(text).to.match(/node \(.*agent\.yaml:1\)/);
    expect(text).to.match(/etcd\.endpoints\.0 \(.*agent\.yaml:3\)/);
    expect(text).to.match(/lease\.ttlSeconds \(.*agent\.yaml:7\)/);

    // The spec comes from the agent's bootstrap file this time (written to etcd when absent).
    const specFile = join(bad.dir, 'specs.yaml');
    await writeFile(specFile, stringify([rateBot('sturdy')]));
    const good = await cluster.startAgent({
      node: 'c',
      identities: { sturdy: null },
      bootstrapSpecs: specFile,
    });
    await good.waitForState('sturdy', 'leader');
    const ask = async (body: string) =>
      JSON.parse(
        new TextDecoder().decode((await nc.request(subjects.control('c'), body, { timeout: 3_000 })).data),
      ) as {
        ok: boolean;
        v: number;
        error?: { code: string; message: string; field?: string };
      };
    expect((await ask('not json')).error).to.include({ code: 'bad-request' });
    expect((await ask('{"op":"status"}')).error).to.include({ code: 'bad-request', field: 'v' });
    const future = await ask('{"v":9,"op":"status"}');
    expect(future.error).to.include({ code: 'incompatible-version', field: 'v' });
    expect(future.error!.message).to.match(/speaks control protocol/);
    expect((await ask('{"v":1,"op":"explode"}')).error).to.include({ code: 'bad-request' });
    expect((await ask('{"v":1,"op":"drain","identity":"sturdy"}')).error).to.include({ code: 'bad-request' });
    // Well-formed but unsigned: refused before anything else is looked at.
    expect(
      (await ask('{"v":2,"op":"drain","identity":"nope","actor":"t","holdMs":1000,"term":"1"}')).error,
    ).to.include({
      code: 'unauthenticated',
    });
    const signed = await authority.send('c', { op: 'drain', identity: 'nope', actor: 't', holdMs: 1000 });
    expect(signed.ok ? undefined : signed.error).to.include({ code: 'unknown-identity' });
    // Still alive and still leading.
    expect((await authority.send('c', { op: 'status' })).ok).to.equal(true);
    expect((await collectResponders(nc, 'sturdy', RESPONDER_WINDOW_MS)).map((r) => r.node)).to.deep.equal([
      'c',
    ]);
  });

  it('drain logs out and keeps the key; undrain logs back in under the same term', async () => {
    await putSpec(client, rateBot('drainy'));
    const a = await cluster.startAgent({ node: 'a', identities: { drainy: null } });
    await a.waitForState('drainy', 'leader');
    const { token } = (await collectResponders(nc, 'drainy', RESPONDER_WINDOW_MS))[0]!;
    const drain = (await authority.send('a', {
      op: 'drain',
      identity: 'drainy',
      actor: 'test',
      holdMs: 60_000,
    })) as unknown as { ok: boolean; result: { token: string; loggedOut: boolean } };
    expect(drain.ok).to.equal(true);
    expect(drain.result).to.include({ token: String(token), loggedOut: true });
    expect(await collectResponders(nc, 'drainy', RESPONDER_WINDOW_MS)).to.deep.equal([]);
    expect((await authority.send('a', { op: 'undrain', identity: 'drainy', actor: 'test' })).ok).to.equal(
      true,
    );
    const back = await untilAnswered('drainy', 'a', 10_000);
    expect(back.token).to.equal(token);
    const sender = new IdentityClient(nc, { identity: 'drainy' });
    await sender.ping().then(
      (p) => expect(p.node).to.equal('a'),
      (err: Error) => expect.fail(err instanceof NoResponderError ? 'no responder' : err.message),
    );
    sender.close();
  });
});

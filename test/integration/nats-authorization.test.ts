// Issue 12 point 1, acceptance: with the shipped NATS configuration (one nkey user per role,
// per-node agent users scoped to their identities, no anonymous access: what `npm start`
// runs), a client user's attempts at what the table denies are refused by the server and
// change nothing, while the client may still PING and call the identity, and the agents and
// the controller work normally under their own users (an agent's user also keeps snapshot
// archives in the object store, which a client may not touch).
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import {
  createInbox,
  ErrorCode,
  headers,
  NatsError,
  type NatsConnection,
  type ObjectStore,
  type Status,
} from 'nats';
import { randomBytes } from 'node:crypto';
import type { IdentityView, NodeView } from '../../pkg/api/identities.js';
import { AgentConfig } from '../../pkg/config/agent.js';
import { PROTOCOL_VERSION } from '../../pkg/control/protocol.js';
import { collectResponders, IdentityClient } from '../../pkg/identity/client.js';
import { inboxStream, INBOX_CONSUMER, subjects } from '../../pkg/identity/wire.js';
import { REPLAY_BUCKET, SNAPSHOT_BUCKET } from '../../pkg/natsauth/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import type { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import { runCli } from '../support/cli.js';
import type { ControllerProcess } from '../support/controllers.js';
import type { NatsServer } from '../support/harness.js';
import { connectAs } from '../support/nats-auth.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

const ID = 'rates';
/** Window in which a PING collects every responder. */
const RESPONDER_WINDOW_MS = 500;
/**
 * Agents run the rate bot as root here; where the agent config has the spec-policy sections
 * (issue 12 point 6), the test allows that explicitly, as the test topologies do.
 */
const SPEC_POLICY =
  'allow' in AgentConfig.shape ? { allow: { unrestricted: true }, service: { allowRoot: true } } : {};

type Refusal = { operation: string; subject: string };

/** Every permissions violation the server reports to `nc`, as nats.js surfaces it (status events). */
function watchRefusals(nc: NatsConnection): Refusal[] {
  const seen: Refusal[] = [];
  void (async () => {
    for await (const s of nc.status()) {
      const ctx = (s as Status & { permissionContext?: Refusal }).permissionContext;
      if (s.type === 'error' && s.data === ErrorCode.PermissionsViolation && ctx) seen.push(ctx);
    }
  })();
  return seen;
}

/** `data` as the web stream nats.js's object store put reads (as pkg/snapshot/store.ts gives it). */
function streamOf(data: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    pull(c) {
      c.enqueue(data);
      c.close();
    },
  });
}

/** An object's bytes as os.get streams them, after nats.js checked their digest. */
async function readObject(os: ObjectStore, name: string): Promise<Buffer | null> {
  const got = await os.get(name);
  if (!got) return null;
  const chunks: Uint8Array[] = [];
  const reader = got.data.getReader();
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    chunks.push(value);
  }
  const err = await got.error;
  if (err) throw err;
  return Buffer.concat(chunks);
}

describe('NATS authorization: the shipped role users (issue 12 point 1)', function () {
  this.timeout(300_000);
  let cluster: IntegrationCluster;
  let nats: NatsServer;
  let etcdClient: Etcd3;
  let a: AgentProcess;
  let b: AgentProcess;
  let controller: ControllerProcess;
  let client: NatsConnection;
  let clientRefusals: Refusal[];
  let token: bigint;

  before(async () => {
    cluster = await IntegrationCluster.start({
      // Exactly what scripts/run-local runs: per-node agents for the hosted identity, no observer.
      nats: { auth: { nodes: ['a', 'b'], identities: [ID], observer: false } },
    });
    ({ nats, client: etcdClient } = cluster);
    await putSpec(etcdClient, rateBotSpec(ID, { inbox: { durable: true } }));
    a = await cluster.startAgent({ node: 'a', identities: { [ID]: { priority: 10 } }, extra: SPEC_POLICY });
    await a.waitForState(ID, 'leader');
    b = await cluster.startAgent({ node: 'b', identities: { [ID]: null }, extra: SPEC_POLICY });
    await b.waitForState(ID, 'standby');
    controller = await cluster.startController({ name: 'c1' });
    await controller.waitForActive();
    client = await connectAs(nats.hostUrl, 'client');
    clientRefusals = watchRefusals(client);
  });

  after(async () => {
    await client?.close();
    await cluster?.close();
  });

  // The agents and the controller serve every test: reported after a failure, stopped at the end.
  afterEach(function () {
    cluster.reportFailure(this.currentTest);
  });

  /** The identity as the controller sees it once its probe shows `node` answering. */
  const identityView = (node: string) =>
    waitFor(
      async () => {
        const v = (await controller.api('viewer').get<IdentityView>(`/v1/identities/${ID}`)).body;
        return (
          v.leader === node && v.health === 'ok' && v.responders.length === 1 && v.standbys.length === 1 && v
        );
      },
      {
        what: `the controller to see ${ID} led by ${node}, healthy, with one standby`,
        timeoutMs: 60_000,
        intervalMs: 200,
      },
    );

  const refusedBy = async (what: Refusal) =>
    waitFor(() => clientRefusals.find((r) => r.operation === what.operation && r.subject === what.subject), {
      what: `the server to refuse the client's ${what.operation} to ${what.subject}`,
      timeoutMs: 10_000,
    });

  /** A request the server refuses: nats.js rejects it with PERMISSIONS_VIOLATION. */
  async function expectRequestRefused(subject: string, body: string): Promise<void> {
    const err = await client.request(subject, body, { timeout: 5_000 }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err, `request to ${subject}`).to.be.instanceOf(NatsError);
    expect((err as NatsError).code, (err as Error).message).to.equal(ErrorCode.PermissionsViolation);
    await refusedBy({ operation: 'publish', subject });
  }

  it('lets the client PING and call the identity, core and durable, under the client user', async () => {
    const responders = await collectResponders(client, ID, RESPONDER_WINDOW_MS);
    expect(responders.map((r) => r.node)).to.deep.equal(['a']);
    token = responders[0]!.token;
    const rates = new IdentityClient(client, { identity: ID, timeoutMs: 10_000 });
    try {
      expect((await rates.request('RATE USD')).body).to.match(/USD/);
      expect((await rates.requestDurable('RATE USD', 20_000)).body).to.match(/USD/);
    } finally {
      rates.close();
    }
    const view = await identityView('a');
    expect(view.token).to.equal(String(token));
  });

  it('refuses the client drain, fence and unfence (publishing to a control subject)', async () => {
    const drain = { v: PROTOCOL_VERSION, op: 'drain', identity: ID, actor: 'mallory', holdMs: 20_000 };
    await expectRequestRefused(subjects.control('a'), JSON.stringify(drain));
    await expectRequestRefused(
      subjects.control('b'),
      JSON.stringify({ v: PROTOCOL_VERSION, op: 'fence', actor: 'mallory', reason: 'forged' }),
    );
    await expectRequestRefused(
      subjects.control('a'),
      JSON.stringify({ v: PROTOCOL_VERSION, op: 'unfence', actor: 'mallory' }),
    );
  });

  it('refuses the client a heartbeat, and answering PING: no identity subscription, no publishing to a reply inbox', async () => {
    client.publish(subjects.heartbeat('a'), JSON.stringify({ v: PROTOCOL_VERSION, node: 'a', fenced: true }));
    await refusedBy({ operation: 'publish', subject: subjects.heartbeat('a') });

    // Subscribing to the identity subject: the subscription is refused and closed.
    let subErr: NatsError | undefined;
    const sub = client.subscribe(subjects.identity(ID), { callback: (err) => (subErr = err ?? subErr) });
    await refusedBy({ operation: 'subscription', subject: subjects.identity(ID) });
    expect(subErr?.code).to.equal(ErrorCode.PermissionsViolation);
    expect(sub.isClosed()).to.equal(true);

    // A forged PONG sent straight to someone's reply inbox never reaches them.
    const victim = await connectAs(nats.hostUrl, 'client');
    try {
      const inbox = createInbox();
      const got: string[] = [];
      victim.subscribe(inbox, { callback: (_, msg) => got.push(msg.string()) });
      await victim.flush();
      const h = headers();
      h.set('Understudy-Node', 'mallory');
      h.set('Understudy-Token', '999999999999');
      client.publish(inbox, 'PONG mallory 999999999999', { headers: h });
      await refusedBy({ operation: 'publish', subject: inbox });
      // The server refused the publish before routing it; a round trip on each side proves
      // nothing was queued for the victim.
      await client.flush();
      await victim.flush();
      expect(got).to.deep.equal([]);
    } finally {
      await victim.close();
    }
  });

  it('refuses the client the credential subject, the replay cache and the inbox internals', async () => {
    await expectRequestRefused(
      `understudy.credential.${ID}`,
      JSON.stringify({ identity: ID, node: 'mallory' }),
    );

    // The replay cache: neither through the KV API nor by a raw publish to its subjects.
    const kvErr = await client
      .jetstream()
      .views.kv(REPLAY_BUCKET)
      .then(
        () => undefined,
        (e: unknown) => e as NatsError,
      );
    expect(kvErr?.code, kvErr?.message).to.equal(ErrorCode.PermissionsViolation);
    client.publish(`$KV.${REPLAY_BUCKET}.forged-nonce`, 'x');
    await refusedBy({ operation: 'publish', subject: `$KV.${REPLAY_BUCKET}.forged-nonce` });

    // Taking or deleting durable requests, or reading them with a plain subscription.
    await expectRequestRefused(
      `$JS.API.CONSUMER.MSG.NEXT.${inboxStream(ID)}.${INBOX_CONSUMER}`,
      '{"batch":1}',
    );
    await expectRequestRefused(`$JS.API.STREAM.DELETE.${inboxStream(ID)}`, '');
    client.subscribe(subjects.inbox(ID));
    await refusedBy({ operation: 'subscription', subject: subjects.inbox(ID) });

    // The agent's user sees no forged nonce in the bucket (and may use it: it is the agents').
    const agentConn = await connectAs(nats.hostUrl, 'agent', { node: 'a' });
    try {
      const kv = await agentConn.jetstream().views.kv(REPLAY_BUCKET, { history: 1 });
      expect(await kv.get('forged-nonce')).to.equal(null);
    } finally {
      await agentConn.close();
    }
  });

  it('keeps each agent user to its own node', async () => {
    const agentA = await connectAs(nats.hostUrl, 'agent', { node: 'a' });
    const refusals = watchRefusals(agentA);
    try {
      agentA.publish(subjects.heartbeat('b'), '{}');
      agentA.subscribe(subjects.control('b'));
      agentA.publish(subjects.control('b'), '{}');
      await waitFor(() => refusals.length >= 3 && refusals, {
        what: "the server to refuse agent a's user b's subjects",
        timeoutMs: 10_000,
      });
      expect(refusals).to.deep.include.members([
        { operation: 'publish', subject: subjects.heartbeat('b'), queue: undefined },
        { operation: 'subscription', subject: subjects.control('b'), queue: undefined },
        { operation: 'publish', subject: subjects.control('b'), queue: undefined },
      ]);
    } finally {
      await agentA.close();
    }
  });

  it('lets an agent user keep snapshot archives in the object store, and refuses the client', async () => {
    const agentA = await connectAs(nats.hostUrl, 'agent', { node: 'a' });
    const refusals = watchRefusals(agentA);
    try {
      // A few hundred KB (three chunks); and one large enough that the download runs under
      // the server's flow control (it starts at about 1 MB).
      const small = randomBytes(384 * 1024);
      const large = randomBytes(3 * 1024 * 1024);
      const names = [`${ID}/1-${Date.now()}`, `${ID}/2-${Date.now()}`];
      const os = await agentA.jetstream().views.os(SNAPSHOT_BUCKET);
      expect((await os.put({ name: names[0]! }, streamOf(small), { timeout: 10_000 })).size).to.equal(
        small.length,
      );
      await os.put({ name: names[1]! }, streamOf(large), { timeout: 10_000 });

      // The client can neither open the bucket, nor write, purge or read its subjects.
      const osErr = await client
        .jetstream()
        .views.os(SNAPSHOT_BUCKET)
        .then(
          () => undefined,
          (e: unknown) => e as NatsError,
        );
      expect(osErr?.code, osErr?.message).to.equal(ErrorCode.PermissionsViolation);
      // nats.js names an object's metadata subject by its name in padded URL-safe base64.
      const padded = Buffer.from(names[0]!).toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
      const meta = `$O.${SNAPSHOT_BUCKET}.M.${padded}`;
      client.publish(meta, JSON.stringify({ name: names[0], deleted: true }));
      await refusedBy({ operation: 'publish', subject: meta });
      await expectRequestRefused(`$JS.API.STREAM.PURGE.OBJ_${SNAPSHOT_BUCKET}`, '{}');
      client.subscribe(`$O.${SNAPSHOT_BUCKET}.C.>`);
      await refusedBy({ operation: 'subscription', subject: `$O.${SNAPSHOT_BUCKET}.C.>` });

      // The agent gets both back identical, lists and deletes them.
      expect((await readObject(os, names[0]!))?.equals(small), 'the small archive read back').to.equal(true);
      expect((await readObject(os, names[1]!))?.equals(large), 'the large archive read back').to.equal(true);
      expect((await os.list()).map((i) => i.name)).to.include.members(names);
      for (const name of names) await os.delete(name);
      expect(await os.get(names[0]!)).to.equal(null);
      const left = (await os.list()).map((i) => i.name).filter((n) => names.includes(n));
      expect(left, 'archives listed after their deletion').to.deep.equal([]);
      await agentA.flush();
      expect(refusals, "the server's refusals of the agent user").to.deep.equal([]);
    } finally {
      await agentA.close();
    }
  });

  it('changed nothing: a still answers with the same token, nobody is drained or fenced', async () => {
    const responders = await collectResponders(client, ID, RESPONDER_WINDOW_MS);
    expect(responders.map((r) => [r.node, r.token])).to.deep.equal([['a', token]]);
    const view = await identityView('a');
    expect(view.token).to.equal(String(token));
    expect(view.fencedNodes).to.deep.equal([]);
    expect(view.workflow).to.equal(undefined);
    const nodes = (await controller.api('viewer').get<{ nodes: NodeView[] }>('/v1/nodes')).body.nodes;
    expect(nodes.map((n) => [n.node, n.alive, n.fenced ?? null])).to.deep.equal([
      ['a', true, null],
      ['b', true, null],
    ]);
    const rates = new IdentityClient(client, { identity: ID, timeoutMs: 10_000 });
    try {
      expect((await rates.request('RATE USD')).body).to.match(/USD/);
    } finally {
      rates.close();
    }
  });

  it("runs the tour's NATS commands with --nats-nkey-file, and says what to pass without it", async () => {
    const seed = nats.auth!.seedFile('client');
    const alias = ['--nats', nats.hostUrl, '--nats-nkey-file', seed, '--controller', controller.url];
    const ping = await runCli([...alias, 'ping', ID]);
    expect(ping.code, ping.stderr).to.equal(0);
    expect(ping.stdout).to.include(`${ID}: PONG from a, token ${token}`);
    const call = await runCli([...alias, 'call', ID, 'RATE', 'USD']);
    expect(call.code, call.stderr).to.equal(0);
    expect(call.stdout).to.match(/USD/);
    const agent = await runCli([...alias, 'agent', 'b']);
    expect(agent.code, agent.stderr).to.equal(0);
    expect(agent.stdout).to.match(/^node b /);

    const anonymous = await runCli(['--nats', nats.hostUrl, 'ping', ID]);
    expect(anonymous.code).to.equal(1);
    expect(anonymous.stderr).to.match(/Authorization Violation.*pass --nats-nkey-file/);
  });

  it('lets the controller and the agents work under their users: a switchover, with no refusal logged', async () => {
    const res = await controller.api('operator').post(`/v1/identities/${ID}/switchover`, { to: 'b' });
    expect(res.status, JSON.stringify(res.body)).to.equal(202);
    await b.waitForState(ID, 'leader', { timeoutMs: 60_000 });
    const view = await identityView('b');
    expect(BigInt(view.token!) > token).to.equal(true);
    const responders = await collectResponders(client, ID, RESPONDER_WINDOW_MS);
    expect(responders.map((r) => r.node)).to.deep.equal(['b']);
    // Every NATS call the real components made was allowed (connect.ts logs each refusal).
    for (const p of [a, b, controller]) {
      expect(
        p.records.filter((r) => r.nats === 'permissions-violation'),
        `${p.name}'s refused NATS calls`,
      ).to.deep.equal([]);
    }
  });
});

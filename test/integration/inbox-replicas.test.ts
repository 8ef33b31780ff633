// The durable inbox keeps as many JetStream copies as inbox.replicas says: created so, scaled
// to it when the spec changes, and refused with the field named when NATS cannot keep them.
// Real NATS servers: a JetStream cluster of three, and a single server.
import { expect } from 'chai';
import { connect, type NatsConnection } from 'nats';
import { ensureInbox } from '../../pkg/identity/inbox.js';
import { inboxStream, subjects } from '../../pkg/identity/wire.js';
import { Inbox } from '../../pkg/spec/schema.js';
import { Harness } from '../support/harness.js';
import { waitFor } from '../support/wait.js';

describe('durable inbox replicas (real NATS)', function () {
  this.timeout(180_000);
  let harness: Harness;
  let cluster: NatsConnection;
  let single: NatsConnection;

  before(async () => {
    harness = await Harness.create();
    const [servers, alone] = await Promise.all([
      harness.startNatsCluster(3, { auth: false }),
      harness.startNats('alone', { auth: false }),
    ]);
    cluster = await connect({ servers: servers.map((s) => s.hostUrl) });
    single = await connect({ servers: alone.hostUrl });
  });

  after(async () => {
    await cluster?.close();
    await single?.close();
    await harness?.close();
  });

  const replicasOf = async (nc: NatsConnection, identity: string) =>
    (await (await nc.jetstreamManager()).streams.info(inboxStream(identity))).config.num_replicas;

  it('creates the inbox with inbox.replicas copies on a cluster', async () => {
    await ensureInbox(cluster, 'three', Inbox.parse({ durable: true, replicas: 3 }));
    expect(await replicasOf(cluster, 'three')).to.equal(3);
  });

  it('scales an existing inbox to the spec, keeping its waiting requests', async () => {
    await ensureInbox(cluster, 'grows', Inbox.parse({ durable: true }));
    expect(await replicasOf(cluster, 'grows')).to.equal(1);
    await cluster.jetstream().publish(subjects.inbox('grows'), 'waiting');
    await ensureInbox(cluster, 'grows', Inbox.parse({ durable: true, replicas: 3 }));
    await waitFor(async () => (await replicasOf(cluster, 'grows')) === 3, {
      what: 'three copies',
      timeoutMs: 30_000,
    });
    const info = await (await cluster.jetstreamManager()).streams.info(inboxStream('grows'));
    expect(info.state.messages).to.equal(1);
  });

  it('on a single server, refuses more than one copy and names inbox.replicas', async () => {
    let error: unknown;
    try {
      await ensureInbox(single, 'too-many', Inbox.parse({ durable: true, replicas: 3 }));
    } catch (err) {
      error = err;
    }
    expect((error as Error)?.message).to.match(/inbox\.replicas/);
  });
});

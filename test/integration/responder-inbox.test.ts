// A term serves each durable request once, against a real NATS server with JetStream: when
// JetStream hands the same request to the same leader again (here its ack wait runs out while
// the service is still at it), the copy gets the same reply again and the service is not
// asked a second time.
import { expect } from 'chai';
import { connect, type NatsConnection } from 'nats';
import type { IdentityDriver } from '../../pkg/identity/driver.js';
import { IdentityClient } from '../../pkg/identity/client.js';
import { ensureInbox, INBOX_FETCH_EXPIRES_MS, Responder } from '../../pkg/identity/responder.js';
import { headers as H, inboxStream, INBOX_CONSUMER } from '../../pkg/identity/wire.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';
import { parseSpec } from '../../pkg/spec/store.js';
import { Harness, type NatsServer } from '../support/harness.js';
import { responderContext } from '../support/responders.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

/** The shortest ack wait a spec accepts: the copy comes quickly. */
const ACK_WAIT_MS = 500;
/** How long the slow service waits at most for JetStream to hand its request out again. */
const REDELIVERY_TIMEOUT_MS = 10_000;

describe('a term serves each durable request once, however often JetStream delivers it', function () {
  this.timeout(120_000);
  let harness: Harness;
  let nats: NatsServer;
  let nc: NatsConnection;
  let caller: NatsConnection;
  const signer = userSigner(generateCallerKey().seed);

  before(async () => {
    harness = await Harness.create();
    nats = await harness.startNats();
    [nc, caller] = await Promise.all([
      connect({ servers: nats.hostUrl }),
      connect({ servers: nats.hostUrl }),
    ]);
  });

  after(async () => {
    await Promise.all([nc?.close(), caller?.close()]);
    await harness?.close();
  });

  it('the copy can reach the busy responder: its pull is still open when the ack wait runs out', function () {
    // The inbox loop pulls again only after the service answers; a copy comes only to a pull
    // that is open, so the test below needs the first pull to outlast the ack wait.
    expect(INBOX_FETCH_EXPIRES_MS).to.be.at.least(ACK_WAIT_MS + 300);
  });

  it('a request whose service outlasts the ack wait is served once, and its copy gets the same reply', async () => {
    const identity = 'slow-inbox';
    const spec = parseSpec(rateBotSpec(identity, { inbox: { durable: true, ackWaitMs: ACK_WAIT_MS } }));
    await ensureInbox(nc, identity, spec.inbox);
    const jsm = await nc.jetstreamManager();
    // The service is not what is under test: a handler that counts what it is asked and is
    // still at it when the ack wait runs out — it returns once JetStream has handed the
    // request out again.
    const handled: string[] = [];
    const driver = {
      alive: async () => true,
      handle: async (req: { command: string }) => {
        handled.push(req.command);
        // Returns either way: with no copy the assertions below say so.
        await waitFor(
          async () => (await jsm.consumers.info(inboxStream(identity), INBOX_CONSUMER)).num_redelivered > 0,
          {
            what: 'JetStream to hand the request out again',
            timeoutMs: REDELIVERY_TIMEOUT_MS,
            intervalMs: 50,
          },
        ).catch(() => undefined);
        return { body: `done ${req.command}` };
      },
    } as unknown as IdentityDriver;
    const context = responderContext(spec, { token: 7n, driver });

    const sender = new IdentityClient(caller, { identity, timeoutMs: 30_000 });
    // Every reply that reaches the caller, before the client's own dedupe.
    const replies: Array<{ id: string; body: string; signature: string; serve: string }> = [];
    const raw = caller.subscribe(sender.replySubject, {
      callback: (_err, m) =>
        replies.push({
          id: m.headers?.get(H.requestId) ?? '?',
          body: new TextDecoder().decode(m.data),
          signature: m.headers?.get(H.replySignature) ?? '?',
          serve: m.headers?.get(H.serve) ?? '?',
        }),
    });
    const r = await Responder.subscribe(nc, context, 0, { signer });
    try {
      r.open();
      const { requestId } = await sender.send('RATE USD');
      // Done when both deliveries were dealt with (two replies, or the service asked twice) and
      // the inbox holds nothing, waiting or unacknowledged.
      await waitFor(
        async () => {
          if (replies.length < 2 && handled.length < 2) return false;
          const info = await jsm.consumers.info(inboxStream(identity), INBOX_CONSUMER);
          return info.num_pending === 0 && info.num_ack_pending === 0;
        },
        { what: 'the request and its copy answered and acknowledged', timeoutMs: 30_000, intervalMs: 100 },
      );
      await caller.flush();
      expect(handled, 'the service was asked once').to.deep.equal(['RATE USD']);
      expect(replies.length, 'the copy got a reply too').to.equal(2);
      const [first, again] = replies;
      expect(first).to.include({ id: requestId, body: 'done RATE USD' });
      expect(first!.serve, 'a serve id').to.not.equal('?');
      expect(again, 'the same reply, signature and serve id and all').to.deep.equal(first);
      expect(r.redeliveriesAnswered).to.equal(1);
    } finally {
      raw.unsubscribe();
      sender.close();
      await r.stop(1_000);
    }
  });
});

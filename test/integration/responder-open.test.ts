// A responder subscribed while its service logs in, against a real NATS server: nothing is
// answered before the service is in (responders ⊆ logged-in nodes), the requests that came
// meanwhile are answered the moment it is opened, and a subscription taken back unopened
// answers nothing at all.
import { expect } from 'chai';
import { connect, type NatsConnection } from 'nats';
import type { IdentityDriver } from '../../pkg/identity/driver.js';
import { Responder } from '../../pkg/identity/responder.js';
import { subjects } from '../../pkg/identity/wire.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';
import { parseSpec } from '../../pkg/spec/store.js';
import { Harness, type NatsServer } from '../support/harness.js';
import { responderContext } from '../support/responders.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

describe('a responder subscribed during the login answers only once opened', function () {
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

  function context(identity: string, token: bigint) {
    // The service itself is not what is under test: a driver whose service is alive.
    const driver = { alive: async () => true } as unknown as IdentityDriver;
    return responderContext(parseSpec(rateBotSpec(identity)), { token, driver });
  }

  /** A PING; resolves with the answer, or 'no answer' when none came in `ms`. */
  async function ping(identity: string, ms: number): Promise<string> {
    try {
      const reply = await caller.request(subjects.identity(identity), 'PING', { timeout: ms });
      return new TextDecoder().decode(reply.data);
    } catch {
      return 'no answer';
    }
  }

  /** Until the responder holds `count` requests: they reached it, and wait for the login. */
  const untilHeld = (r: Responder, count: number) =>
    waitFor(() => r.heldRequests === count, { what: `${count} held request(s)`, timeoutMs: 10_000 });

  it('holds a PING sent while the service logs in and answers it when opened', async () => {
    const r = await Responder.subscribe(nc, context('held', 5n), 0, { signer });
    try {
      let answered: string | undefined;
      const early = ping('held', 30_000).then((a) => (answered = a));
      await untilHeld(r, 1);
      expect(answered, 'nothing is answered before the service is in').to.equal(undefined);
      r.open();
      expect(await early).to.equal('PONG a 5');
      expect(r.heldRequests).to.equal(0);
      expect(await ping('held', 10_000)).to.equal('PONG a 5');
    } finally {
      await r.stop(1_000);
    }
  });

  it('taken back unopened (the login failed), it answers nothing, held or new', async () => {
    const r = await Responder.subscribe(nc, context('dropped', 6n), 0, { signer });
    const early = ping('dropped', 3_000);
    await untilHeld(r, 1);
    await r.stop(0);
    r.open(); // too late: a stopped responder never opens
    expect(await early).to.equal('no answer');
    // Unsubscribed: NATS says at once that no one answers.
    expect(await ping('dropped', 10_000)).to.equal('no answer');
  });
});

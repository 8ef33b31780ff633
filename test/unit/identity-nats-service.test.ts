// The in-process driver's logout budget and request timeout run on the injected clock, and a
// logout handler that fails is reported, not swallowed.
import { expect } from 'chai';
import { pino } from 'pino';
import { ManualClock } from '../../pkg/clock/index.js';
import { NatsServiceDriver } from '../../pkg/identity/nats-service.js';

const ctx = { identity: 'msggateway', node: 'a', token: 7n };

describe('in-process (nats-service) driver', function () {
  it('gives up a logout that does not finish within its budget, on the injected clock', async function () {
    const clock = new ManualClock();
    const d = new NatsServiceDriver(
      { handle: () => 'ok', logout: () => new Promise<void>(() => undefined) },
      { clock },
    );
    await d.login(ctx);
    let outcome: boolean | undefined;
    const logout = d.logout(1_000).then((ok) => (outcome = ok));
    await clock.advance(999);
    expect(outcome, 'not before the budget').to.equal(undefined);
    await clock.advance(1);
    await logout;
    expect(outcome).to.equal(false);
  });

  it('reports a logout handler that throws, and says the service may still be logged in', async function () {
    const records: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => records.push(JSON.parse(line)) });
    const d = new NatsServiceDriver(
      {
        handle: () => 'ok',
        logout: () => {
          throw new Error('session close failed');
        },
      },
      { logger },
    );
    await d.login(ctx);
    expect(await d.logout(1_000)).to.equal(false);
    expect(records).to.have.length(1);
    expect(records[0]).to.include({ level: 50, err: 'session close failed' });
    expect(records[0]!.msg).to.match(/possibly still logged in/);
  });

  it('answers unavailable when the handler does not answer in time', async function () {
    const clock = new ManualClock();
    const d = new NatsServiceDriver(() => new Promise<string>(() => undefined), { clock });
    await d.login(ctx);
    const reply = d.handle({ id: 'r1', command: 'RATE USD' }, 300);
    await clock.advance(300);
    expect(await reply).to.deep.equal({ body: 'no answer within 300 ms', error: 'unavailable' });
  });
});

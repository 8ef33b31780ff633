import { expect } from 'chai';
import { waitFor, WaitTimeoutError, withTimeout } from '../support/wait.js';

describe('waitFor (harness waits are bounded and explain themselves)', function () {
  it('returns the first truthy value of the condition', async function () {
    let calls = 0;
    const value = await waitFor(() => (++calls >= 3 ? `after ${calls}` : false), {
      what: 'three calls',
      timeoutMs: 2_000,
      intervalMs: 1,
    });
    expect(value).to.equal('after 3');
  });

  it('gives up after its timeout, naming what it waited for and the last error', async function () {
    const err = await waitFor(
      () => {
        throw new Error('connection refused');
      },
      { what: 'etcd to answer', timeoutMs: 50, intervalMs: 5 },
    ).catch((e: unknown) => e);
    expect(err).to.be.instanceOf(WaitTimeoutError);
    expect((err as Error).message)
      .to.match(/etcd to answer/)
      .and.match(/connection refused/);
  });

  it('withTimeout rejects a promise that never settles', async function () {
    const err = await withTimeout(new Promise(() => undefined), 20, 'a frozen call').catch((e: unknown) => e);
    expect((err as Error).message).to.match(/a frozen call/);
  });
});

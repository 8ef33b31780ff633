// A session that renews from a thread of its own keeps its self-fence deadline however long
// the main thread is busy, up to a TTL; one that renews in the main thread does not (the
// collapse seen at a few hundred identities). A main thread that stops for longer than a TTL
// is taken as wedged: renewals stop, and its identities can fail over.
import { expect } from 'chai';
import { readdir, readFile } from 'node:fs/promises';
import type { Etcd3 } from 'etcd3';
import { connectEtcd, Session } from '../../pkg/lease/index.js';
import { Harness, type EtcdMember } from '../support/harness.js';
import { waitFor } from '../support/wait.js';

/** Hold the main thread for `ms` without yielding, as a burst of process spawns does. */
function blockMainThread(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

describe('renewals from a thread of their own (real etcd)', function () {
  this.timeout(60_000);
  let h: Harness;
  let etcd: EtcdMember;
  let client: Etcd3;
  const sessions: Session[] = [];
  before(async function () {
    h = await Harness.create();
    etcd = await h.startEtcd('etcd-renewal-thread');
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
  });
  after(async function () {
    await Promise.all(sessions.map((s) => s.close()));
    client?.close();
    await h?.close();
  });

  // T = 3 s: D = 2.1 s, and a block of 2.6 s lies between D and T.
  const timing = { ttlSeconds: 3 };
  const BLOCK_MS = 2_600;

  async function open(thread: boolean): Promise<Session> {
    const s = await Session.open(client, {
      node: thread ? 'threaded' : 'inline',
      timing,
      ...(thread ? { renewalThread: { endpoints: [etcd.hostEndpoint] } } : {}),
    });
    sessions.push(s);
    // Renewing steadily before the block (the test's timeout bounds the wait).
    await new Promise((resolve) => s.once('renewed', resolve));
    return s;
  }

  it('a main thread busy past the self-fence deadline (but under T) does not fence a threaded session', async function () {
    const s = await open(true);
    blockMainThread(BLOCK_MS);
    expect(s.mayAct(), 'the worker renewed while the main thread was held').to.equal(true);
    expect(s.state).to.equal('alive');
  });

  it('renews at a raised priority where the agent may raise it (root or CAP_SYS_NICE), and says which', async function () {
    const s = await open(true);
    if (process.getuid?.() !== 0) {
      expect(s.renewals).to.match(/^renewal thread \((nice -10|not raised: .+)\)$/);
      return;
    }
    expect(s.renewals).to.equal('renewal thread (nice -10)');
    // One thread of this process runs at nice -10: field 19 of /proc/<pid>/task/<tid>/stat.
    const tasks = await readdir(`/proc/${process.pid}/task`);
    const nices = await Promise.all(
      tasks.map(async (tid) => {
        const stat = await readFile(`/proc/${process.pid}/task/${tid}/stat`, 'utf8').catch(() => '');
        return Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      }),
    );
    expect(nices).to.include(-10);
  });

  it('the same block fences a session that renews in the main thread (the rule the thread exists for)', async function () {
    const s = await open(false);
    blockMainThread(BLOCK_MS);
    expect(s.mayAct()).to.equal(false);
    expect((await s.stopped()).reason).to.equal('keepalive-timeout');
  });

  it('a main thread stopped for longer than T is taken as wedged: renewals stop and the session must stop', async function () {
    const s = await open(true);
    blockMainThread(3_000 + 600);
    // The worker stopped renewing once the main thread had been silent for T; by now no
    // renewal has been acknowledged for at least D.
    const stop = await waitFor(
      () => (s.state !== 'alive' ? s.stopped() : s.mayAct() ? undefined : s.stopped()),
      {
        what: 'the session to stop',
        timeoutMs: 10_000,
      },
    );
    expect(stop.reason).to.equal('keepalive-timeout');
    expect(stop.lastError).to.match(/main thread has not run/);
  });

  // Last: it freezes the etcd every session here renews with.
  it('a fence of a threaded session lists the renewal attempts that failed, timed from the last acknowledged one', async function () {
    const s = await open(true);
    await etcd.pause();
    let stop;
    try {
      stop = await s.stopped();
    } finally {
      await etcd.unpause();
    }
    expect(stop.reason).to.equal('keepalive-timeout');
    const attempts = (stop.failedRenewals ?? '').split('; ');
    expect(attempts.length, stop.failedRenewals).to.be.at.least(3);
    for (const a of attempts) {
      const m = /^(write|keepalive) to endpoint 1 at \+(\d+) ms failed after (\d+) ms: /.exec(a);
      expect(m, a).to.not.equal(null);
      // Sent after the last acknowledged renewal and before the deadline (D = 2.1 s), on the
      // session's own clock: the thread's clock was translated, not taken as is.
      expect(Number(m![2]), a).to.be.within(0, 2_100);
    }
  });
});

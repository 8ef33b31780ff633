// The harness is the ground truth for every integration and chaos test, so each fault helper
// is proven here against a real server: it must do what it says, and undo it.
import { expect } from 'chai';
import { Etcd3 } from 'etcd3';
import { docker, LABEL_KIT, LABEL_OWNER_PID, LABEL_OWNER_START, LABEL_RUN } from '../support/docker.js';
import { Harness, type EtcdMember } from '../support/harness.js';
import { images } from '../support/images.js';
import { etcdAnswers, natsAnswers, PROBE_CALL_MS } from '../support/probes.js';
import { reapOrphans } from '../support/reaper.js';
import { waitFor } from '../support/wait.js';

/** etcd's default election timeout is 1 s; allow for a loaded 2-core machine. */
const ELECTION_BOUND_MS = 15_000;

async function put(endpoints: string[], key: string, value: string): Promise<void> {
  const client = new Etcd3({ hosts: endpoints });
  try {
    await client
      .put(key)
      .value(value)
      .options({ deadline: Date.now() + 5_000 });
  } finally {
    client.close();
  }
}

async function get(endpoints: string[], key: string): Promise<string | null> {
  const client = new Etcd3({ hosts: endpoints });
  try {
    return await client
      .get(key)
      .options({ deadline: Date.now() + 5_000 })
      .string();
  } finally {
    client.close();
  }
}

async function containersOfRun(run: string): Promise<number> {
  const engine = await docker();
  const list = await engine.listContainers({
    all: true,
    filters: JSON.stringify({ label: [`${LABEL_RUN}=${run}`] }),
  });
  return list.length;
}

describe('test harness (real Docker, etcd, NATS)', function () {
  describe('single etcd', function () {
    let h: Harness;
    let etcd: EtcdMember;
    before(async function () {
      h = await Harness.create();
      etcd = await h.startEtcd();
    });
    after(async function () {
      await h?.close();
    });

    it('starts only once etcd answers a read', async function () {
      await etcdAnswers(etcd.hostEndpoint);
    });

    it('pause freezes etcd: calls time out; unpause makes it answer again', async function () {
      await etcd.pause();
      expect(await etcd.state()).to.equal('paused');
      const started = Date.now();
      const frozen = await etcdAnswers(etcd.hostEndpoint).then(
        () => 'answered',
        (err: Error) => err.name,
      );
      expect(frozen).to.not.equal('answered');
      // It timed out rather than being refused: the process is alive but frozen.
      expect(Date.now() - started).to.be.greaterThanOrEqual(PROBE_CALL_MS);
      await etcd.unpause();
      await etcdAnswers(etcd.hostEndpoint);
    });

    it('kill (SIGKILL) leaves etcd gone; start brings it back at the same endpoint with its data', async function () {
      await put([etcd.hostEndpoint], 'survives', 'yes');
      await etcd.kill();
      expect(await etcd.state()).to.equal('exited');
      const dead = await etcdAnswers(etcd.hostEndpoint).then(
        () => 'answered',
        () => 'refused',
      );
      expect(dead).to.equal('refused');
      await etcd.start();
      expect(await get([etcd.hostEndpoint], 'survives')).to.equal('yes');
    });

    it('stop is graceful and start resumes; restart keeps the endpoint', async function () {
      await etcd.stop();
      expect(await etcd.state()).to.equal('exited');
      await etcd.start();
      await etcd.restart();
      expect(await etcd.state()).to.equal('running');
      expect(await get([etcd.hostEndpoint], 'survives')).to.equal('yes');
    });
  });

  describe('partition of a Node program from etcd', function () {
    let h: Harness;
    after(async function () {
      await h?.close();
    });

    it('a disconnected container cannot reach etcd, and can again after reconnect', async function () {
      h = await Harness.create();
      const etcd = await h.startEtcd();
      const probe = await h.startNodeProgram({
        script: 'test/fixtures/etcd-reachability.ts',
        args: [etcd.networkEndpoint],
      });
      await probe.waitForLine(/^reachable$/);

      await probe.disconnect();
      await probe.waitForLine(/^unreachable/, { from: probe.lines.length });
      // Still cut off: the next reports are failures too, not a lucky retry.
      const mark = probe.lines.length;
      await probe.waitForLine(/^unreachable/, { from: mark + 1 });
      expect(probe.lines.slice(mark)).to.not.include('reachable');

      await probe.reconnect();
      await probe.waitForLine(/^reachable$/, { from: probe.lines.length });
    });
  });

  describe('3-member etcd cluster', function () {
    let h: Harness;
    after(async function () {
      await h?.close();
    });

    it('keeps serving reads and writes with one member killed', async function () {
      h = await Harness.create();
      const cluster = await h.startEtcdCluster(3);
      await put(cluster.hostEndpoints, 'before', '1');

      const [victim, ...survivors] = cluster.members;
      await victim!.kill();
      expect(await victim!.state()).to.equal('exited');
      const refused = await etcdAnswers(victim!.hostEndpoint).then(
        () => 'answered',
        () => 'refused',
      );
      expect(refused).to.equal('refused');

      // If the victim was the raft leader, writes wait for a new election (about 1-2 s):
      // the cluster must come back to serving by itself, within a bound.
      const live = survivors.map((m) => m.hostEndpoint);
      await waitFor(() => put(live, 'after', '2').then(() => true), {
        what: 'the two surviving members to accept a write',
        timeoutMs: ELECTION_BOUND_MS,
      });
      expect(await get(live, 'before')).to.equal('1');
      expect(await get(live, 'after')).to.equal('2');

      await victim!.start();
      expect(await get([victim!.hostEndpoint], 'after')).to.equal('2');
    });
  });

  describe('NATS with JetStream', function () {
    let h: Harness;
    after(async function () {
      await h?.close();
    });

    it('answers with JetStream, is gone when stopped, and answers again at the same URL', async function () {
      h = await Harness.create();
      const nats = await h.startNats();
      await natsAnswers(nats.hostUrl);
      await nats.stop();
      const stopped = await natsAnswers(nats.hostUrl).then(
        () => 'answered',
        () => 'refused',
      );
      expect(stopped).to.equal('refused');
      await nats.start();
      await natsAnswers(nats.hostUrl);
    });
  });

  describe('cleanup', function () {
    it('close() removes every container and the network, even after a fault', async function () {
      const h = await Harness.create();
      const etcd = await h.startEtcd();
      await etcd.pause(); // a paused container must be removable too
      expect(await containersOfRun(h.run)).to.equal(1);
      await h.close();
      expect(await containersOfRun(h.run)).to.equal(0);
      const networks = await (
        await docker()
      ).listNetworks({ filters: JSON.stringify({ name: [h.networkName] }) });
      expect(networks).to.have.length(0);
    });

    it("reapOrphans() removes what a dead run left, and nothing of a live run's", async function () {
      const engine = await docker();
      const labels = (pid: string, start: string, run: string) => ({
        [LABEL_KIT]: 'true',
        [LABEL_OWNER_PID]: pid,
        [LABEL_OWNER_START]: start,
        [LABEL_RUN]: run,
      });
      // A run whose owner is gone (a pid that cannot exist), and one owned by this process.
      const orphan = await engine.createContainer({
        Image: images().etcd,
        Labels: labels('999999999', '1', 'orphan-run'),
      });
      const liveHarness = await Harness.create();
      const live = await liveHarness.startEtcd('live');
      try {
        await reapOrphans();
        const left = await engine.listContainers({ all: true, filters: JSON.stringify({ id: [orphan.id] }) });
        expect(left).to.have.length(0);
        expect(await live.state()).to.equal('running');
      } finally {
        await liveHarness.close();
        await orphan.remove({ force: true }).catch(() => undefined);
      }
    });
  });
});

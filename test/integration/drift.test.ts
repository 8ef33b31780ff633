// Drift keeps a stale standby out of elections: real etcd and NATS, three agents and a
// controller as processes. Node c runs an older build of the bot (another executable on its
// PATH) and has the highest priority: without the drift hold it would win every election.
// Who led is read from etcd all along, not from what the agents say.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { HistoryView, IdentityView } from '../../pkg/api/schema.js';
import { DriftRecord, Keys, readLeader } from '../../pkg/lease/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import type { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import type { ControllerProcess } from '../support/controllers.js';
import { repoRoot } from '../support/paths.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

const HANDOVER_TIMEOUT_MS = 60_000;
/** The controller judges heartbeats every round; the agent re-hashes its executable every 10 s. */
const DRIFT_TIMEOUT_MS = 30_000;
const IDENTITY = 'drifty';
/** How often the test reads who holds the leader key. */
const LEADER_POLL_MS = 50;

describe('drift: a drifted standby never wins an election', function () {
  this.timeout(600_000);
  let cluster: IntegrationCluster;
  let client: Etcd3;
  let ctl: ControllerProcess;
  let root: string;
  const keys = new Keys();

  /** The bot as an executable on a node's PATH; `build` makes two nodes' binaries differ. */
  async function installBot(node: string, build: string): Promise<string> {
    const bin = join(root, `bin-${node}`);
    await mkdir(bin, { recursive: true });
    const path = join(bin, 'ratebot');
    await writeFile(
      path,
      `#!/bin/sh\n# ratebot build ${build}\nexec "${process.execPath}" --import tsx "${repoRoot}/pkg/demo/ratebot.ts" "$@"\n`,
    );
    await chmod(path, 0o755);
    return bin;
  }

  async function startAgent(node: string, priority: number, identity = IDENTITY): Promise<AgentProcess> {
    return cluster.startAgent({
      node,
      identities: { [identity]: null },
      priority,
      env: { PATH: `${join(root, `bin-${node}`)}:${process.env.PATH ?? ''}` },
    });
  }

  async function driftOf(node: string, identity = IDENTITY): Promise<DriftRecord | undefined> {
    const text = await client.get(keys.drift(identity, node)).string();
    return text === null ? undefined : DriftRecord.parse(JSON.parse(text));
  }

  /** The bot found on each node's PATH, keeping its state per node. */
  function botSpec(identity: string, state: Record<string, unknown> = {}) {
    const spec = rateBotSpec(identity, { state: { dir: `${root}/{node}/${identity}`, ...state } });
    return {
      ...spec,
      service: { ...spec.service, command: ['ratebot', '--feed', 'demo/rates.json'] } as typeof spec.service,
    };
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'understudy-drift-'));
    cluster = await IntegrationCluster.start();
    client = cluster.client;
    await installBot('a', '2');
    await installBot('b', '2');
    await installBot('c', '1 (older)');
    await putSpec(client, botSpec(IDENTITY));
    ctl = await cluster.startController({ name: 'c1' });
    await ctl.waitForActive();
  });

  afterEach(function () {
    return cluster.reportFailure(this.currentTest);
  });

  after(async () => {
    await cluster?.close();
    if (root) await rm(root, { recursive: true, force: true });
  });

  it('held back across repeated failovers, shown as drifted, and let in again once in sync', async () => {
    let a = await startAgent('a', 10);
    await a.waitForState(IDENTITY, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
    let b = await startAgent('b', 5);
    await b.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    const c = await startAgent('c', 20);
    const hold = await waitFor(() => driftOf('c'), {
      timeoutMs: DRIFT_TIMEOUT_MS,
      what: 'c held back as drifted',
    });
    expect(hold.reasons.join(' ')).to.match(/c runs service version sha256:\w+, the leader runs sha256:\w+/);
    expect(await driftOf('b'), 'b runs what a runs').to.equal(undefined);

    // Shown where operators look: the API's standby entry and the history.
    const view = (await ctl.api().get<IdentityView>(`/v1/identities/${IDENTITY}`)).body;
    expect(view.standbys.find((s) => s.node === 'c')?.drift?.join(' ')).to.contain('service version');
    const history = (await ctl.api().get<HistoryView>(`/v1/identities/${IDENTITY}/history`)).body;
    expect(history.entries.some((e) => e.to === 'drifted' && /c held back/.test(e.reason ?? ''))).to.equal(
      true,
    );

    // Who holds the key, read from etcd every LEADER_POLL_MS for the rest of the test.
    const leaders = new Set<string>();
    let polling = true;
    const poller = (async () => {
      while (polling) {
        const node = (await readLeader(client, IDENTITY).catch(() => undefined))?.record.node;
        if (node) leaders.add(node);
        await new Promise((r) => setTimeout(r, LEADER_POLL_MS));
      }
    })();
    const leaderIs = (node: string) =>
      waitFor(async () => (await readLeader(client, IDENTITY))?.record.node === node, {
        timeoutMs: HANDOVER_TIMEOUT_MS,
        what: `${node} leading ${IDENTITY}`,
      });
    try {
      // Three failovers; c (priority 20, the highest) is a live candidate through all of them.
      await a.stop();
      cluster.forget(a);
      await leaderIs('b');
      a = await startAgent('a', 10);
      await a.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
      await b.stop();
      cluster.forget(b);
      await leaderIs('a');
      b = await startAgent('b', 5);
      await b.waitForState(IDENTITY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
      await a.stop();
      cluster.forget(a);
      await leaderIs('b');
      expect([...leaders].sort()).to.deep.equal(['a', 'b']);
      expect(await driftOf('c'), 'still held').to.not.equal(undefined);

      // c gets the current build: it reports the leader's version, the hold goes, and with b
      // gone c takes over.
      await installBot('c', '2');
      await waitFor(async () => (await driftOf('c')) === undefined, {
        timeoutMs: DRIFT_TIMEOUT_MS,
        what: 'the drift hold of c removed once it runs the same build',
      });
      await b.stop();
      cluster.forget(b);
      await leaderIs('c');
      await c.waitForState(IDENTITY, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
    } finally {
      polling = false;
      await poller;
    }
  });

  it('no in-sync standby when the leader goes: stay-down keeps it down and says so; freshest lets the drifted one in and says so', async () => {
    const LONELY = 'lonely';
    await installBot('p', '2');
    await installBot('q', '1 (older)');
    await putSpec(client, botSpec(LONELY, { whenNoneInSync: 'stay-down' }));
    const p = await startAgent('p', 10, LONELY);
    await p.waitForState(LONELY, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
    const q = await startAgent('q', 5, LONELY);
    await q.waitForState(LONELY, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    await waitFor(() => driftOf('q', LONELY), {
      timeoutMs: DRIFT_TIMEOUT_MS,
      what: 'q held back as drifted',
    });

    const entries = async () =>
      (await ctl.api().get<HistoryView>(`/v1/identities/${LONELY}/history?limit=500`)).body.entries;
    await p.stop();
    cluster.forget(p);
    const down = await waitFor(async () => (await entries()).find((e) => e.to === 'stay-down'), {
      timeoutMs: DRIFT_TIMEOUT_MS,
      what: 'the stay-down decision in the history',
    });
    expect(down.reason).to.match(/lonely stays down: no in-sync standby .* q \(q runs service version/);
    // Observed over two lease TTLs: nobody takes the key while q is the only candidate.
    const until = Date.now() + 8_000;
    while (Date.now() < until) {
      expect((await readLeader(client, LONELY))?.record.node, 'nobody leads').to.equal(undefined);
      await new Promise((r) => setTimeout(r, LEADER_POLL_MS));
    }

    await putSpec(client, botSpec(LONELY, { whenNoneInSync: 'freshest' }));
    const let_in = await waitFor(async () => (await entries()).find((e) => e.to === 'freshest'), {
      timeoutMs: DRIFT_TIMEOUT_MS,
      what: 'the freshest decision in the history',
    });
    expect(let_in.reason).to.match(/letting the freshest, q\b.* take over although it drifted/);
    await waitFor(async () => (await readLeader(client, LONELY))?.record.node === 'q', {
      timeoutMs: HANDOVER_TIMEOUT_MS,
      what: 'q leading lonely',
    });
    await q.waitForState(LONELY, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
  });
});

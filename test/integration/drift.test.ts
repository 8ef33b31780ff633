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

  async function startAgent(node: string, priority: number): Promise<AgentProcess> {
    return cluster.startAgent({
      node,
      identities: { [IDENTITY]: null },
      priority,
      env: { PATH: `${join(root, `bin-${node}`)}:${process.env.PATH ?? ''}` },
    });
  }

  async function driftOf(node: string): Promise<DriftRecord | undefined> {
    const text = await client.get(keys.drift(IDENTITY, node)).string();
    return text === null ? undefined : DriftRecord.parse(JSON.parse(text));
  }

  before(async () => {
    root = await mkdtemp(join(tmpdir(), 'understudy-drift-'));
    cluster = await IntegrationCluster.start();
    client = cluster.client;
    await installBot('a', '2');
    await installBot('b', '2');
    await installBot('c', '1 (older)');
    const spec = rateBotSpec(IDENTITY, { state: { dir: `${root}/{node}/state` } });
    await putSpec(client, {
      ...spec,
      service: { ...spec.service, command: ['ratebot', '--feed', 'demo/rates.json'] } as typeof spec.service,
    });
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
    ctl = await cluster.startController({ name: 'c1' });
    await ctl.waitForActive();
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
});

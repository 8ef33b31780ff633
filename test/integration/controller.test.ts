// The controller, end to end: real etcd and NATS (containers), agents and controllers as
// separate processes on the host, the demo rate bot as the service. Each test uses its own
// identity; nodes are fenced and unfenced within a test.
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { headers as natsHeaders, type NatsConnection } from 'nats';
import type { IdentityList, IdentityView, NodeView, Problem, Workflow } from '../../pkg/api/schema.js';
import { generateCallerKey } from '../../pkg/identity/access.js';
import { collectResponders } from '../../pkg/identity/client.js';
import { readNodeKey } from '../../pkg/keys/index.js';
import { signReply } from '../../pkg/identity/presence.js';
import { registerNodeKey, userSigner } from '../../pkg/keys/index.js';
import { subjects } from '../../pkg/identity/wire.js';
import { readLeader } from '../../pkg/lease/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import type { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import { runCli } from '../support/cli.js';
import { EXIT } from '../../pkg/cli/exit.js';
import { TEST_TOKENS, type Api } from '../support/controllers.js';
import { pidDead } from '../support/processes.js';
import { PingSampler } from '../support/sampler.js';
import { rateBotSpec } from '../support/specs.js';
import { waitFor } from '../support/wait.js';

/** Window in which a PING collects every responder (two would be a split brain). */
const RESPONDER_WINDOW_MS = 300;
/** A handover through the controller, including a warm bot's login, on a loaded machine. */
const HANDOVER_TIMEOUT_MS = 60_000;
/** Probe settings of the identities under test: a frozen leader is noticed after 3 × 500 ms. */
const PROBE = { intervalMs: 500, timeoutMs: 300, failures: 3 };
/** Slack on the probe budget: the controller's 250 ms tick and a loaded 2-core machine. */
const PROBE_SLACK_MS = 2_500;

describe('controller: probes, maintenance handover and the API', function () {
  this.timeout(300_000);
  let cluster: IntegrationCluster;
  let nc: NatsConnection;
  let client: Etcd3;

  before(async () => {
    cluster = await IntegrationCluster.start({ connect: true });
    ({ nc, client } = cluster);
  });

  afterEach(function () {
    return cluster.afterTest(this.currentTest);
  });

  after(() => cluster?.close());

  const SWITCHOVER = { deadlineMs: 40_000, drainTimeoutMs: 5_000 };

  async function startController(name: string, env: Record<string, string> = {}, extra = {}) {
    return cluster.startController({
      name,
      env,
      extra: { switchover: SWITCHOVER, ...extra },
    });
  }

  /** Agents a (priority 10, leads) and b (standby) hosting `identity`, a logged in. */
  async function pair(identity: string, nodes = ['a', 'b']): Promise<AgentProcess[]> {
    await putSpec(client, rateBotSpec(identity, { probe: PROBE }));
    const started = [];
    for (const [i, node] of nodes.entries()) {
      const agent = await cluster.startAgent({ node, identities: { [identity]: null }, priority: 10 - i });
      if (i === 0) await agent.waitForState(identity, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
      started.push(agent);
    }
    for (const a of started.slice(1))
      await a.waitForState(identity, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    return started;
  }

  async function untilWorkflowEnds(api: Api, identity: string): Promise<Workflow> {
    return waitFor(
      async () => {
        const { body } = await api.get<Workflow>(`/v1/identities/${identity}/workflow`);
        return body.state === 'done' || body.state === 'aborted' ? body : undefined;
      },
      { what: `${identity}'s workflow to end`, timeoutMs: HANDOVER_TIMEOUT_MS, intervalMs: 100 },
    );
  }

  async function leaderOf(identity: string): Promise<string | undefined> {
    return (await readLeader(client, identity))?.record.node;
  }

  it('switches over to the named node; PING never has two responders; the actor is in history', async () => {
    await pair('swo');
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const sampler = new PingSampler(nc, 'swo', { everyMs: 10 }).start();
    try {
      // Through the CLI, as an operator would: it waits for the end and exits 0 on done.
      const cli = await runCli([
        '--controller',
        ctl.url,
        'switchover',
        'swo',
        '--to',
        'b',
        '--reason',
        'patching a',
        '--yes',
        '-o',
        'json',
      ]);
      expect(cli.code, cli.stderr).to.equal(0);
      const wf = JSON.parse(cli.stdout) as Workflow;
      expect(wf.from?.node).to.equal('a');
      expect(wf.state, wf.outcome).to.equal('done');
      // The old leader handed the key to b itself, in the step that recorded its logout: the
      // workflow went from draining straight to transferred, with no move of the controller's.
      expect(wf.steps.map((s) => s.state)).to.deep.equal([
        'requested',
        'draining',
        'transferred',
        'logged-in',
        'done',
      ]);
      expect(wf.steps.find((s) => s.state === 'transferred')?.note).to.match(
        /^a logged out and handed the key to b \(token \d+\)$/,
      );
      expect(BigInt(wf.newToken!) > BigInt(wf.from!.token), 'new token above the old').to.equal(true);
      // Verified with b's key as registered in etcd: the answer is b's own, not someone's claim.
      const keys = (node: string) => readNodeKey(client, node);
      const answers = await collectResponders(nc, 'swo', RESPONDER_WINDOW_MS, { keys });
      expect(answers.map(({ node, token, verified }) => ({ node, token, verified }))).to.deep.equal([
        { node: 'b', token: BigInt(wf.newToken!), verified: true },
      ]);
    } finally {
      await sampler.close();
    }
    expect(sampler.violations()).to.deep.equal([]);
    expect(sampler.terms(), 'the sampler saw the old and the new term').to.have.length(2);
    const history = await ctl
      .api('viewer')
      .get<{ entries: Array<{ actor?: string; reason?: string }> }>('/v1/identities/swo/history?limit=50');
    expect(
      history.body.entries.some(
        (e) => e.actor === 'operator-user' && /switchover .* requested to b/.test(e.reason ?? ''),
      ),
    ).to.equal(true);
    // The old leader is not held off any longer: it is a healthy standby again.
    const view = await ctl.api('viewer').get<IdentityView>('/v1/identities/swo');
    expect(view.body.standbys.find((s) => s.node === 'a')).to.include({ fenced: false, registered: true });
  });

  it('the controller moves the key itself when told that old leaders only log out (switchover.handOver: false)', async () => {
    await pair('plain');
    const ctl = await startController('c1', {}, { switchover: { ...SWITCHOVER, handOver: false } });
    await ctl.waitForActive();
    expect((await ctl.api().post('/v1/identities/plain/switchover', { to: 'b' })).status).to.equal(202);
    const wf = await untilWorkflowEnds(ctl.api(), 'plain');
    expect(wf.state, wf.outcome).to.equal('done');
    expect(wf.steps.map((s) => s.state)).to.deep.equal([
      'requested',
      'draining',
      'logged-out',
      'transferred',
      'logged-in',
      'done',
    ]);
    expect(wf.steps.find((s) => s.state === 'transferred')?.note).to.match(/^key moved to b \(token \d+\)$/);
    expect(await leaderOf('plain')).to.equal('b');
  });

  for (const state of ['draining', 'logged-out', 'transferred'] as const) {
    it(`a second controller finishes a switchover whose active controller died in ${state}`, async () => {
      const identity = `ha-${state.replace('-', '')}`;
      await pair(identity);
      // The workflow passes through logged-out only when the controller moves the key.
      const extra = state === 'logged-out' ? { switchover: { ...SWITCHOVER, handOver: false } } : {};
      const doomed = await startController('c1', { UNDERSTUDY_FAILPOINT: `workflow-stall:${state}` }, extra);
      await doomed.waitForActive();
      const standby = await startController('c2', {}, extra);
      // A standby controller serves reads and points writes at the active one.
      const refused = await standby.api().post<Problem>(`/v1/identities/${identity}/switchover`, { to: 'b' });
      expect(refused.status).to.equal(503);
      expect(refused.body).to.include({ code: 'not-active' });
      expect(refused.body.active).to.deep.equal({ name: 'c1', url: doomed.url });

      const sampler = new PingSampler(nc, identity, { everyMs: 10 }).start();
      try {
        expect(
          (await doomed.api().post(`/v1/identities/${identity}/switchover`, { to: 'b' })).status,
        ).to.equal(202);
        await waitFor(
          async () =>
            (await standby.api().get<Workflow>(`/v1/identities/${identity}/workflow`)).body.state === state,
          { what: `workflow in ${state}`, timeoutMs: HANDOVER_TIMEOUT_MS, intervalMs: 50 },
        );
        doomed.kill('SIGKILL');
        await standby.waitForActive();
        const wf = await untilWorkflowEnds(standby.api(), identity);
        expect(wf.controller).to.equal('c2');
        // Resumed, not restarted: the second controller carried on from the persisted state.
        expect(wf.steps.filter((s) => s.state === 'requested')).to.have.length(1);
        const expected = wf.state === 'done' ? 'b' : 'a';
        await waitFor(
          async () => {
            const r = await collectResponders(nc, identity, RESPONDER_WINDOW_MS);
            return r.length === 1 && r[0]!.node === expected;
          },
          { what: `exactly one responder (${expected})`, timeoutMs: HANDOVER_TIMEOUT_MS },
        );
        expect(await leaderOf(identity)).to.equal(expected);
      } finally {
        await sampler.close();
      }
      expect(sampler.violations()).to.deep.equal([]);
      expect(sampler.answered, 'the sampler heard the identity').to.be.greaterThan(0);
    });
  }

  it('rolls back to the old leader when the target goes away before the transfer', async () => {
    const [a, b] = await pair('rollback');
    // Drained and held: the old leader only logs out, the controller would move the key.
    const plain = { switchover: { ...SWITCHOVER, handOver: false } };
    const doomed = await startController('c1', { UNDERSTUDY_FAILPOINT: 'workflow-stall:logged-out' }, plain);
    await doomed.waitForActive();
    const second = await startController('c2', {}, plain);
    const token = (await readLeader(client, 'rollback'))!.token;
    expect((await doomed.api().post('/v1/identities/rollback/switchover', { to: 'b' })).status).to.equal(202);
    await a!.waitForState('rollback', 'drained', { timeoutMs: HANDOVER_TIMEOUT_MS });
    // The target's agent stops while the old leader is drained, then the controller dies.
    await b!.stop();
    cluster.forget(b!);
    doomed.kill('SIGKILL');
    await second.waitForActive();
    const wf = await untilWorkflowEnds(second.api(), 'rollback');
    expect(wf.state).to.equal('aborted');
    expect(wf.outcome).to.match(/rolled back: a logs back in/);
    // The old leader logs back in under its own term: same node, same token.
    await a!.waitForState('rollback', 'leader', { from: a!.records.findIndex((r) => r.to === 'drained') });
    expect(
      (await collectResponders(nc, 'rollback', RESPONDER_WINDOW_MS)).map((r) => [r.node, r.token]),
    ).to.deep.equal([['a', token]]);
  });

  it('escalates when the old leader cannot confirm its logout: revoke, fence command, wait out its deadline', async () => {
    const [a] = await pair('stuck');
    const fenceLog = join(await mkdtemp(join(tmpdir(), 'understudy-fence-')), 'fenced');
    const ctl = await startController(
      'c1',
      {},
      {
        switchover: { deadlineMs: 40_000, drainTimeoutMs: 1_000 },
        fencing: {
          command: ['sh', '-c', `echo "$UNDERSTUDY_FENCE_NODE $UNDERSTUDY_FENCE_TOKEN" >> ${fenceLog}`],
        },
      },
    );
    await ctl.waitForActive();
    const token = (await readLeader(client, 'stuck'))!.token;
    const sampler = new PingSampler(nc, 'stuck', { everyMs: 10 }).start();
    // A frozen agent hears no drain request; its lease would outlive the drain timeout.
    a!.kill('SIGSTOP');
    try {
      expect((await ctl.api().post('/v1/identities/stuck/switchover', { to: 'b' })).status).to.equal(202);
      const wf = await untilWorkflowEnds(ctl.api(), 'stuck');
      expect(wf.state, wf.outcome).to.equal('done');
      expect(wf.escalation).to.deep.equal(['drain', 'revoke', 'fence-command', 'self-fence-wait']);
      expect(await readFile(fenceLog, 'utf8')).to.equal(`a ${token}\n`);
      // The target logged in only after the old holder's self-fence deadline (S3).
      const loggedOut = wf.steps.find((s) => s.state === 'logged-out')!;
      expect(Date.parse(loggedOut.at)).to.be.at.least(Date.parse(wf.revoked!.until));
      expect(await leaderOf('stuck')).to.equal('b');
    } finally {
      a!.kill('SIGCONT');
      await sampler.close();
    }
    expect(sampler.violations()).to.deep.equal([]);
    expect(sampler.answered, 'the sampler heard the identity').to.be.greaterThan(0);
  });

  it('raises a split-brain alarm when two instances answer for one identity', async () => {
    await pair('twice');
    const ctl = await startController('c1');
    await ctl.waitForActive();
    // A second instance answering PING for the identity, as a second logged-in node would: it
    // signs with a node key registered for a live session (an unsigned impostor is ignored).
    const rogue = userSigner(generateCallerKey().seed);
    const lease = client.lease(30, { autoKeepAlive: true });
    await registerNodeKey(client, 'rogue', rogue.publicKey, await lease.grant());
    const impostor = nc.subscribe(subjects.identity('twice'), {
      callback: (_err, msg) => {
        const requestId = msg.headers?.get('Understudy-Request-Id') ?? '';
        const fields = {
          identity: 'twice',
          node: 'rogue',
          token: 1n,
          requestId,
          mode: 'core' as const,
          error: '',
        };
        const h = natsHeaders();
        h.set('Understudy-Identity', 'twice');
        h.set('Understudy-Token', '1');
        h.set('Understudy-Node', 'rogue');
        h.set('Understudy-Request-Id', requestId);
        h.set('Understudy-Reply-Signature', signReply(rogue, fields, 'PONG rogue 1'));
        msg.respond('PONG rogue 1', { headers: h });
      },
    });
    try {
      const alarm = await ctl.waitForRecord(
        (r) => r.alarm === 'split-brain' && r.identity === 'twice',
        'split-brain alarm',
      );
      expect(alarm.level).to.equal('error');
      expect(alarm.msg).to.match(/2 nodes answer PING/);
      const view = await ctl.api('viewer').get<IdentityView>('/v1/identities/twice');
      expect(view.body.health).to.equal('split-brain');
      const metrics = await fetch(`${ctl.url}/metrics`).then((r) => r.text());
      expect(metrics).to.match(/understudy_identity_split_brain\{identity="twice"\} 1/);
    } finally {
      impostor.unsubscribe();
      await lease.revoke();
    }
  });

  it('fails over from a leader whose service froze while its agent keeps the lease, though an impostor answers PING in its name', async () => {
    const [a] = await pair('frozen');
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const pid = a!.servicePid('frozen')!;
    expect(pid).to.be.a('number');
    const token = (await readLeader(client, 'frozen'))!.token;
    // Forged PONGs as the leader (its node, its token), unsigned and signed with a key of
    // nobody's, and with a huge token: the probe must still see the leader as silent.
    const mallory = userSigner(generateCallerKey().seed);
    const impostor = nc.subscribe(subjects.identity('frozen'), {
      callback: (_err, msg) => {
        const requestId = msg.headers?.get('Understudy-Request-Id') ?? '';
        for (const [t, signed] of [
          [String(token), false],
          [String(token), true],
          ['9'.repeat(40), false],
        ] as const) {
          const h = natsHeaders();
          h.set('Understudy-Identity', 'frozen');
          h.set('Understudy-Token', t);
          h.set('Understudy-Node', 'a');
          h.set('Understudy-Request-Id', requestId);
          if (signed) {
            const fields = {
              identity: 'frozen',
              node: 'a',
              token,
              requestId,
              mode: 'core' as const,
              error: '',
            };
            h.set('Understudy-Reply-Signature', signReply(mallory, fields, `PONG a ${t}`));
          }
          msg.respond(`PONG a ${t}`, { headers: h });
        }
      },
    });
    const frozenAt = Date.now();
    process.kill(pid, 'SIGSTOP');
    try {
      const wf = await untilWorkflowEnds(ctl.api(), 'frozen');
      expect(wf.kind).to.equal('probe-failover');
      expect(wf.state, wf.outcome).to.equal('done');
      expect(wf.chosen).to.equal('b');
      // Noticed within the configured budget: failures × interval (+ the last probe's timeout).
      const noticedMs = Date.parse(wf.createdAt) - frozenAt;
      expect(noticedMs).to.be.at.most(PROBE.failures * PROBE.intervalMs + PROBE.timeoutMs + PROBE_SLACK_MS);
      expect(await leaderOf('frozen')).to.equal('b');
      // The old node stopped its frozen service on the way out (SIGKILL reaches a stopped process).
      await waitFor(() => pidDead(pid), { what: 'the frozen service to be gone', timeoutMs: 10_000 });
    } finally {
      impostor.unsubscribe();
      if (!(await pidDead(pid))) process.kill(pid, 'SIGCONT');
    }
  });

  it('past its PING budget it judges identities from heartbeats, and still fails over the one whose service froze', async () => {
    const names = Array.from({ length: 12 }, (_, i) => `many${String(i).padStart(2, '0')}`);
    for (const name of names) await putSpec(client, rateBotSpec(name, { probe: PROBE }));
    const hosted = Object.fromEntries(names.map((n) => [n, null]));
    const a = await cluster.startAgent({ node: 'a', identities: hosted, priority: 10 });
    for (const n of names) await a.waitForState(n, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
    const b = await cluster.startAgent({ node: 'b', identities: hosted, priority: 9 });
    for (const n of names) await b.waitForState(n, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
    // 12 identities PINGed every 500 ms would be 24 PINGs a second; the budget is 3.
    const budget = 3;
    const ctl = await startController('c1', {}, { probes: { maxPingsPerSecond: budget } });
    await ctl.waitForActive();
    let pings = 0;
    const counter = nc.subscribe(subjects.identity('*'), {
      callback: (_err, msg) => {
        if (msg.string() === 'PING') pings++;
      },
    });
    try {
      const windowMs = 8_000;
      const from = Date.now();
      await waitFor(async () => Date.now() - from >= windowMs || undefined, {
        what: 'a window of PINGs to count',
        timeoutMs: windowMs * 2,
        intervalMs: 200,
      });
      const seconds = (Date.now() - from) / 1000;
      // The bucket holds one second of PINGs; the rest come at the budget's rate.
      expect(pings, `${pings} PINGs in ${seconds.toFixed(1)} s`).to.be.at.most(budget * (seconds + 2));
      const metrics = await fetch(`${ctl.url}/metrics`).then((r) => r.text());
      expect(metrics).to.match(/understudy_probe_judgements_total\{judged="heartbeat"\} [1-9]/);

      // The list comes a page at a time, in name order, filtered on the server.
      const seen: string[] = [];
      let after: string | undefined;
      do {
        const page = await ctl
          .api('viewer')
          .get<IdentityList>(`/v1/identities?limit=5&prefix=many${after ? `&after=${after}` : ''}`);
        expect(page.status).to.equal(200);
        expect(page.body.total).to.equal(names.length);
        seen.push(...page.body.identities.map((v) => v.identity));
        after = page.body.next;
      } while (after !== undefined);
      expect(seen).to.deep.equal(names);
      const onA = await ctl.api('viewer').get<IdentityList>('/v1/identities?prefix=many1&leader=a');
      expect(onA.body.identities.map((v) => v.identity)).to.deep.equal(['many10', 'many11']);
      const cli = await runCli([
        '--controller',
        ctl.url,
        'list',
        '--prefix',
        'many0',
        '--limit',
        '3',
        '-o',
        'json',
      ]);
      expect(cli.code, cli.stderr).to.equal(0);
      const listed = JSON.parse(cli.stdout) as IdentityList;
      expect(listed.identities.map((v) => v.identity)).to.deep.equal(['many00', 'many01', 'many02']);
      expect(listed.total).to.equal(10);

      // No flags: a context file names the controller and the token file (relative to it), as
      // the one `npm start` leaves; a flag still wins over it.
      const dir = await mkdtemp(join(tmpdir(), 'understudy-context-'));
      await writeFile(join(dir, 'token'), TEST_TOKENS.viewer, { mode: 0o600 });
      await writeFile(join(dir, 'context.yaml'), `controller: ${ctl.url}\ntokenFile: token\n`);
      const plain = await runCli(['list', '--prefix', 'many0', '--limit', '2', '-o', 'json'], {
        context: join(dir, 'context.yaml'),
      });
      expect(plain.code, plain.stderr).to.equal(0);
      expect((JSON.parse(plain.stdout) as IdentityList).identities.map((v) => v.identity)).to.deep.equal([
        'many00',
        'many01',
      ]);
      await writeFile(join(dir, 'elsewhere.yaml'), 'controller: http://127.0.0.1:9\ntokenFile: token\n');
      // The flag's controller is the one asked, and the file's token (meant for the file's
      // controller) is not sent to it: it answers that it wants a token.
      const flagWins = await runCli(['--controller', ctl.url, 'list', '--prefix', 'many0', '--limit', '1'], {
        context: join(dir, 'elsewhere.yaml'),
      });
      expect(flagWins.code, flagWins.stderr).to.equal(EXIT.unauthorized);
      expect(flagWins.stderr).to.include(`the controller at ${ctl.url} wants an API token`);
      const withToken = await runCli(
        [
          '--controller',
          ctl.url,
          '--token-file',
          join(dir, 'token'),
          'list',
          '--prefix',
          'many0',
          '--limit',
          '1',
        ],
        { context: join(dir, 'elsewhere.yaml') },
      );
      expect(withToken.code, withToken.stderr).to.equal(0);
      const bad = await runCli(['--controller', ctl.url, 'list', '--health', 'fine']);
      expect(bad.code).to.not.equal(0);
      expect(bad.stderr, bad.stderr).to.include('--health');

      const frozen = 'many05';
      const pid = a.servicePid(frozen)!;
      const frozenAt = Date.now();
      process.kill(pid, 'SIGSTOP');
      try {
        const wf = await untilWorkflowEnds(ctl.api(), frozen);
        expect(wf.kind).to.equal('probe-failover');
        expect(wf.state, wf.outcome).to.equal('done');
        expect(wf.chosen).to.equal('b');
        // Noticed by the agent's check within two heartbeats (1 s each here), then PINGed like
        // any suspect: the spec's budget of misses.
        const noticedMs = Date.parse(wf.createdAt) - frozenAt;
        expect(noticedMs).to.be.at.most(
          2 * 1_000 + PROBE.failures * PROBE.intervalMs + PROBE.timeoutMs + PROBE_SLACK_MS,
        );
        // Nothing else moved.
        for (const n of names.filter((n) => n !== frozen)) expect(await leaderOf(n), n).to.equal('a');
      } finally {
        if (!(await pidDead(pid))) process.kill(pid, 'SIGCONT');
      }
    } finally {
      counter.unsubscribe();
    }
  });

  it('with the identity paused, a frozen leader raises an alarm and nothing moves', async () => {
    const [a] = await pair('paused');
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const paused = await ctl
      .api()
      .post<IdentityView>('/v1/identities/paused/pause', { reason: 'vendor maintenance' });
    expect(paused.status).to.equal(200);
    expect(paused.body.paused).to.include({ reason: 'vendor maintenance', actor: 'operator-user' });
    const pid = a!.servicePid('paused')!;
    const token = (await readLeader(client, 'paused'))!.token;
    process.kill(pid, 'SIGSTOP');
    try {
      const alarm = await ctl.waitForRecord(
        (r) => r.alarm === 'probe-failover-paused' && r.identity === 'paused',
        'the paused alarm',
      );
      expect(alarm.level).to.equal('error');
      const metrics = await fetch(`${ctl.url}/metrics`).then((r) => r.text());
      expect(metrics).to.match(/understudy_alarms_total\{alarm="probe-failover-paused"\} [1-9]/);
      // Two more probe rounds after the alarm: time in which an ignored pause would have moved it.
      await waitFor(
        async () =>
          (await ctl.api('viewer').get<IdentityView>('/v1/identities/paused')).body.probeFailures >=
          PROBE.failures + 2,
        { what: 'two more failed probes after the alarm', timeoutMs: 10_000, intervalMs: 100 },
      );
      // Nothing moved: same node, same term, no workflow.
      const leader = await readLeader(client, 'paused');
      expect(leader?.record.node).to.equal('a');
      expect(leader?.token).to.equal(token);
      expect((await ctl.api().get('/v1/identities/paused/workflow')).status).to.equal(404);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
  });

  it('fencing a node moves its identities away first; it never campaigns until unfenced, across restarts', async () => {
    await pair('fenced');
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const sampler = new PingSampler(nc, 'fenced', { everyMs: 10 }).start();
    try {
      const res = await ctl.api().post<{ fenced: boolean; workflows: Workflow[] }>('/v1/nodes/a/fence', {
        reason: 'kernel upgrade',
      });
      expect(res.status).to.equal(202);
      expect(res.body.workflows.map((w) => w.identity)).to.deep.equal(['fenced']);
      await waitFor(
        async () => {
          const nodes = (await ctl.api().get<{ nodes: NodeView[] }>('/v1/nodes')).body.nodes;
          const a = nodes.find((n) => n.node === 'a');
          return a?.fenced && !a.fencePending ? a : undefined;
        },
        { what: 'node a fenced', timeoutMs: HANDOVER_TIMEOUT_MS, intervalMs: 100 },
      );
    } finally {
      await sampler.close();
    }
    expect(sampler.violations()).to.deep.equal([]);
    expect(sampler.answered, 'the sampler heard the identity').to.be.greaterThan(0);
    expect(await leaderOf('fenced')).to.equal('b');
    // Restarted, the fenced node stays out even though it has the higher priority.
    const a = cluster.agents.find((x) => x.node === 'a')!;
    await a.stop();
    cluster.forget(a);
    const again = await cluster.startAgent({ node: 'a', identities: { fenced: null }, priority: 10 });
    await again.waitForState('fenced', 'fenced');
    const b = cluster.agents.find((x) => x.node === 'b')!;
    b.kill('SIGTERM'); // b resigns: a free key that a fenced a must not take
    await b.exited;
    cluster.forget(b);
    // The key is free: wait until the controller has probed the identity down twice, time in
    // which an unfenced a (the only candidate left) would have taken it.
    const downSince = Date.now();
    await waitFor(
      async () => {
        const v = (await ctl.api('viewer').get<IdentityView>('/v1/identities/fenced')).body;
        return (
          v.health === 'down' &&
          v.lastProbe !== undefined &&
          Date.parse(v.lastProbe) > downSince + PROBE.intervalMs
        );
      },
      { what: 'the controller to see the identity down', timeoutMs: 15_000, intervalMs: 100 },
    );
    expect(await leaderOf('fenced')).to.equal(undefined);
    expect(again.records.some((r) => r.identity === 'fenced' && r.to === 'campaigning')).to.equal(false);
    const unfenced = await ctl.api().post<NodeView>('/v1/nodes/a/unfence');
    expect(unfenced.status).to.equal(200);
    await again.waitForState('fenced', 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
  });

  it('answers bad requests with a clear 4xx and changes nothing', async () => {
    await pair('strict', ['a', 'b', 'c']);
    const ctl = await startController('c1');
    await ctl.waitForActive();
    expect((await ctl.api().post('/v1/nodes/c/fence', { reason: 'broken disk' })).status).to.equal(202);
    const before = await readLeader(client, 'strict');
    const api = ctl.api();

    const malformed = await api.call<Problem>(
      'POST',
      '/v1/identities/strict/switchover',
      undefined,
      '{"to": ',
    );
    expect(malformed.status).to.equal(400);
    expect(malformed.body.field).to.equal('(body)');

    const badField = await api.post<Problem>('/v1/identities/strict/switchover', { to: 'b', deadlineMs: 5 });
    expect(badField.status).to.equal(400);
    expect(badField.body.field).to.equal('deadlineMs');

    const unknownIdentity = await api.post<Problem>('/v1/identities/nosuch/switchover', { to: 'b' });
    expect(unknownIdentity.status).to.equal(404);
    expect(unknownIdentity.body.detail).to.match(/no identity named nosuch/);

    const unknownNode = await api.post<Problem>('/v1/identities/strict/switchover', { to: 'zed' });
    expect(unknownNode.status).to.equal(404);
    expect(unknownNode.body.field).to.equal('to');

    const toFenced = await api.post<Problem>('/v1/identities/strict/switchover', { to: 'c' });
    expect(toFenced.status).to.equal(409);
    expect(toFenced.body).to.include({ field: 'to' });
    expect(toFenced.body.detail).to.match(/c is fenced/);

    const unauthenticated = await fetch(`${ctl.url}/v1/identities/strict/switchover`, {
      method: 'POST',
      body: '{}',
    });
    expect(unauthenticated.status).to.equal(401);
    expect((await ctl.api('viewer').post('/v1/identities/strict/switchover', { to: 'b' })).status).to.equal(
      403,
    );

    // None of the refused calls changed anything: same leader, same term, no workflow.
    expect(await readLeader(client, 'strict').then((l) => [l?.record.node, l?.token])).to.deep.equal([
      'a',
      before!.token,
    ]);
    expect((await api.get('/v1/identities/strict/workflow')).status).to.equal(404);

    // Two switchovers of one identity at once: one starts, the other is refused.
    const [first, second] = await Promise.all([
      api.post<Workflow | Problem>('/v1/identities/strict/switchover', { to: 'b', deadlineMs: 30_000 }),
      api.post<Workflow | Problem>('/v1/identities/strict/switchover', { to: 'b', deadlineMs: 30_000 }),
    ]);
    expect([first.status, second.status].sort()).to.deep.equal([202, 409]);
    const refused = (first.status === 409 ? first : second).body as Problem;
    expect(refused.detail).to.match(/already has a switchover in progress|started at the same time/);

    // Only the accepted switchover moves the identity.
    const wf = await untilWorkflowEnds(api, 'strict');
    expect(wf.state).to.equal('done');
    expect(await leaderOf('strict')).to.equal('b');
    await api.post('/v1/nodes/c/unfence');
  });
});

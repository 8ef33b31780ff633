// Regression tests for the controller's handover holes (issue 10, point 3), against real
// processes: etcd and NATS in containers, agents and controllers as separate processes.
//   - a cancel that lands while the old leader is still logging out (drain in flight) gives
//     the identity back at once, instead of leaving it logged out until the drain hold ends;
//   - a controller frozen right before a side effect, past the loss of its election, does
//     nothing when it resumes (the new active controller owns the workflow);
//   - a controller frozen right *after* its term check, resumed once deposed, still sends its
//     drain: the agent refuses it (the request carries the stale election term);
//   - forged state-changing requests with an old election term, or without one, are refused;
//   - a revocation records the end of term of every identity on the revoked lease;
//   - an approve or deny of a pending authorization request that fails is recorded as failed.
import { mkdtemp, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { connect, nkeys, type NatsConnection } from 'nats';
import type { Workflow } from '../../pkg/api/schema.js';
import { PROTOCOL_VERSION, type ControlReply } from '../../pkg/control/protocol.js';
import { controlHeaders } from '../../pkg/control/signing.js';
import { controllerElectionKey } from '../../pkg/control/term.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';
import { subjects } from '../../pkg/identity/wire.js';
import { connectEtcd, Keys, readLeader, revokeHolder, TermEnd } from '../../pkg/lease/index.js';
import { MAX_PENDING_PER_IDENTITY } from '../../pkg/spec/pending.js';
import { getSpec, listPending, putSpec, recordPending } from '../../pkg/spec/store.js';
import { AgentProcess, type AgentOptions } from '../support/agents.js';
import { ControllerProcess, type Api } from '../support/controllers.js';
import { Harness, type EtcdMember, type NatsServer } from '../support/harness.js';
import { rateBotSpec } from '../support/specs.js';
import { ControlSender } from '../support/control.js';
import { waitFor } from '../support/wait.js';
import { describeProblems, judgeWitness, parseWitnessLines } from '../support/witness.js';
import { repoRoot } from '../support/paths.js';

/** A handover through the controller, including a warm bot's login, on a loaded machine. */
const HANDOVER_TIMEOUT_MS = 60_000;
/** Handover deadline of these tests: the old leader's drain hold lasts about this long. */
const DEADLINE_MS = 40_000;
/**
 * How soon a cancelled drain must give the identity back: far under the drain hold (about
 * DEADLINE_MS), which is what the old leader waited for before the fix.
 */
const GIVE_BACK_WITHIN_MS = 15_000;
/** The service under test needs this long to stop after SIGTERM, as a real bot closing its session. */
const SLOW_STOP_S = 1.2;

/** The witness's beat: a service killed without a logout line counts one beat past its last. */
const WITNESS_BEAT_MS = 50;

/**
 * A cold service that takes SLOW_STOP_S to exit after SIGTERM (a drain stays in flight that
 * long), and that records its own logins and logouts (chaos/witness.ts): the
 * judge of who was logged in, independent of what the agents say.
 */
function slowStopSpec(name: string, witnessFile: string) {
  return {
    name,
    service: {
      driver: 'process' as const,
      command: [process.execPath, '--import', 'tsx', 'chaos/witness.ts'],
      cwd: repoRoot,
      mode: 'cold' as const,
      env: {
        WITNESS_FILE: witnessFile,
        WITNESS_BEAT_MS: String(WITNESS_BEAT_MS),
        WITNESS_STOP_DELAY_MS: String(SLOW_STOP_S * 1000),
      },
      // tsx compiles on the way: seconds on a cold cache and a loaded machine.
      startTimeoutMs: 30_000,
      // Within the agents' logout budget: the stop is confirmed.
      stopTimeoutMs: 1_500,
    },
    access: { open: true },
  };
}

describe('controller safety: cancel during a drain, a frozen controller, revocations', function () {
  this.timeout(300_000);
  let harness: Harness;
  let etcd: EtcdMember;
  let nats: NatsServer;
  let client: Etcd3;
  let agents: AgentProcess[] = [];
  let controllers: ControllerProcess[] = [];

  before(async () => {
    harness = await Harness.create();
    [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats()]);
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
  });

  afterEach(async function () {
    if (this.currentTest?.state === 'failed') {
      for (const p of [...controllers, ...agents])
        console.log(
          `--- ${p.name} output (last 40 lines) ---\n${p.output().split('\n').slice(-40).join('\n')}`,
        );
    }
    for (const c of controllers) c.kill('SIGCONT');
    await Promise.all([...controllers, ...agents].map((p) => p.stop()));
    agents = [];
    controllers = [];
  });

  after(async () => {
    client?.close();
    await harness?.close();
  });

  async function startAgent(opts: Omit<AgentOptions, 'etcd' | 'nats'>): Promise<AgentProcess> {
    const agent = await AgentProcess.start({ etcd: [etcd.hostEndpoint], nats: [nats.hostUrl], ...opts });
    agents.push(agent);
    return agent;
  }

  async function startController(
    name: string,
    env: Record<string, string> = {},
    extra: Record<string, unknown> = {},
  ) {
    const c = await ControllerProcess.start({
      name,
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      env,
      extra: { switchover: { deadlineMs: DEADLINE_MS, drainTimeoutMs: 5_000 }, ...extra },
    });
    controllers.push(c);
    return c;
  }

  /** Agents a (priority 10, leads) and b (standby) hosting `identity`. */
  async function pair(identity: string): Promise<AgentProcess[]> {
    const started = [];
    for (const [i, node] of ['a', 'b'].entries()) {
      const agent = await startAgent({ node, identities: { [identity]: null }, priority: 10 - i });
      if (i === 0) await agent.waitForState(identity, 'leader', { timeoutMs: HANDOVER_TIMEOUT_MS });
      started.push(agent);
    }
    await started[1]!.waitForState(identity, 'standby', { timeoutMs: HANDOVER_TIMEOUT_MS });
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

  it('a cancel during a drain gives the identity back to the old leader at once', async () => {
    const identity = 'candrain';
    const witnessFile = join(await mkdtemp(join(tmpdir(), 'understudy-witness-')), `${identity}.jsonl`);
    await putSpec(client, slowStopSpec(identity, witnessFile));
    const [a, b] = await pair(identity);
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const before = (await readLeader(client, identity))!;
    expect(before.record.node).to.equal('a');

    const from = a!.records.length;
    expect((await ctl.api().post(`/v1/identities/${identity}/switchover`, { to: 'b' })).status).to.equal(202);
    // The drain is in flight: the service is stopping, its logout not yet recorded.
    await a!.waitForState(identity, 'logging-out', { from, timeoutMs: HANDOVER_TIMEOUT_MS });
    const cancel = await ctl.api().call<Workflow>('DELETE', `/v1/identities/${identity}/workflow`);
    expect(cancel.status, JSON.stringify(cancel.body)).to.equal(200);

    const wf = await untilWorkflowEnds(ctl.api(), identity);
    expect(wf.state).to.equal('aborted');
    // The premise: the cancel was handled while draining, before the logout was confirmed.
    expect(wf.steps.map((s) => s.state)).to.deep.equal(['requested', 'draining', 'aborted']);
    expect(wf.outcome).to.match(/cancelled by operator-user; rolled back: a logs back in/);
    // The drain completed after the cancel, and the old leader came back at once, under its
    // own term: not after its hold (about DEADLINE_MS) ran out.
    const drained = await a!.waitForState(identity, 'drained', { from, timeoutMs: HANDOVER_TIMEOUT_MS });
    await a!.waitForState(identity, 'leader', {
      from: a!.records.indexOf(drained),
      timeoutMs: GIVE_BACK_WITHIN_MS,
    });
    const after = (await readLeader(client, identity))!;
    expect([after.record.node, after.token]).to.deep.equal(['a', before.token]);
    expect(b!.records.some((r) => r.identity === identity && r.to === 'leader')).to.equal(false);
    // The services' own record: only a was ever logged in, always under its one term, and
    // never two instances at once (the logout before the cancel, the login after it).
    // The service logged back in after the drain: its second login line (tsx start-up).
    await waitFor(
      async () =>
        parseWitnessLines(await readFile(witnessFile, 'utf8')).filter((l) => l.event === 'login').length >=
          2 || undefined,
      { what: "the old leader's service to record its login after the rollback", timeoutMs: 30_000 },
    );
    const verdict = judgeWitness(await readFile(witnessFile, 'utf8'), { beatMs: WITNESS_BEAT_MS });
    expect(describeProblems(verdict)).to.deep.equal([]);
    expect(verdict.intervals.map((i) => [i.node, i.token])).to.deep.equal([
      ['a', String(before.token)],
      ['a', String(before.token)],
    ]);
  });

  // The controller is held by a failpoint right before the side effect (before its term
  // check), frozen there with SIGSTOP until the standby controller has taken over, then
  // resumed. The standby is stalled in that workflow state, so whatever happens to the old
  // leader after the resume can only come from the frozen controller.
  const frozen = [
    { effect: 'drain', state: 'draining' },
    { effect: 'hold-off', state: 'requested' },
  ] as const;
  for (const { effect, state } of frozen) {
    it(`a controller frozen before a ${effect}, past the loss of its election, does nothing when resumed`, async () => {
      const identity = `frozen-${effect}`;
      await putSpec(client, rateBotSpec(identity));
      const [a] = await pair(identity);
      const c1 = await startController('c1', { UNDERSTUDY_FAILPOINT: `workflow-hold-before:${effect}` });
      await c1.waitForActive();
      const c2 = await startController('c2', { UNDERSTUDY_FAILPOINT: `workflow-stall:${state}` });
      const before = (await readLeader(client, identity))!;
      const from = a!.records.length;

      expect((await c1.api().post(`/v1/identities/${identity}/switchover`, { to: 'b' })).status).to.equal(
        202,
      );
      await c1.waitForRecord(
        (r) => r.msg === `failpoint: holding before ${effect} until SIGCONT`,
        'failpoint',
      );
      c1.kill('SIGSTOP');
      await c2.waitForActive({ timeoutMs: HANDOVER_TIMEOUT_MS });
      // Held off already when the drain is next (the frozen step came after the hold-off).
      const holdOffKey = new Keys().holdOff(identity, 'a');
      const heldOffBefore = (await client.get(holdOffKey).string()) !== null;
      expect(heldOffBefore).to.equal(effect === 'drain');
      const resumedAt = c1.records.length;
      c1.kill('SIGCONT');

      // Either the resumed controller refuses, or (without the guard) the effect shows.
      const seen = await waitFor(
        async () => {
          if (a!.records.slice(from).some((r) => r.identity === identity && r.to === 'logging-out'))
            return 'old leader drained';
          if (!heldOffBefore && (await client.get(holdOffKey).string()) !== null)
            return 'old leader held off';
          const refused = c1.records
            .slice(resumedAt)
            .some((r) => r.msg.startsWith('this controller is no longer the active one'));
          return refused ? 'refused' : undefined;
        },
        { what: 'the resumed controller to act or refuse', timeoutMs: 30_000, intervalMs: 50 },
      );
      expect(seen).to.equal('refused');
      expect((await client.get(holdOffKey).string()) !== null).to.equal(heldOffBefore);
      expect(a!.records.slice(from).some((r) => r.identity === identity && r.to === 'logging-out')).to.equal(
        false,
      );
      const after = (await readLeader(client, identity))!;
      expect([after.record.node, after.token]).to.deep.equal(['a', before.token]);
      // The new active controller owns the workflow; the old one wrote nothing to it.
      const wf = (await c2.api().get<Workflow>(`/v1/identities/${identity}/workflow`)).body;
      expect(wf.state).to.equal(state);
      expect(wf.escalation).to.deep.equal([]);
    });
  }

  /** The active controller's election term, as the agents read it: the election key's mod revision. */
  async function electionTerm(): Promise<string> {
    const kv = (await client.get(controllerElectionKey()).exec()).kvs[0];
    if (!kv) throw new Error('no controller holds the election');
    return String(kv.mod_revision);
  }

  /** What became of a drain of `identity` on agent `a` since record `from`. */
  function drainOutcome(a: AgentProcess, identity: string, from: number): string | undefined {
    const records = a.records.slice(from);
    if (records.some((r) => r.identity === identity && r.to === 'logging-out')) return 'old leader drained';
    const refused = records.find(
      (r) =>
        r.msg === 'control request refused; nothing changed' &&
        (r.code === 'stale-controller' || r.code === 'unauthenticated'),
    );
    return refused ? 'refused' : undefined;
  }

  // The hole the controller's own check leaves: frozen between its term check and the send.
  // The failpoint holds the controller right after the check passed; it is frozen there until
  // the standby controller (stalled in `draining`, so it sends nothing itself) has won the
  // election, then resumed: the drain leaves with the old term, and only the agent can stop it.
  it('a drain sent by a controller resumed after its term check, once deposed, is refused by the agent', async () => {
    const identity = 'frozen-after-check';
    await putSpec(client, rateBotSpec(identity));
    const [a] = await pair(identity);
    const c1 = await startController('c1', { UNDERSTUDY_FAILPOINT: 'workflow-hold-after-check:drain' });
    const oldTerm = (await c1.waitForActive()).token;
    const c2 = await startController('c2', { UNDERSTUDY_FAILPOINT: 'workflow-stall:draining' });
    const before = (await readLeader(client, identity))!;
    const from = a!.records.length;

    expect((await c1.api().post(`/v1/identities/${identity}/switchover`, { to: 'b' })).status).to.equal(202);
    await c1.waitForRecord(
      (r) => r.msg === 'failpoint: holding after the term check for drain until SIGCONT',
      'failpoint after the term check',
    );
    c1.kill('SIGSTOP');
    const newTerm = (await c2.waitForActive({ timeoutMs: HANDOVER_TIMEOUT_MS })).token;
    expect(await electionTerm()).to.equal(newTerm);
    const resumedAt = c1.records.length;
    c1.kill('SIGCONT');

    // The resumed controller sends its drain (its check passed before the freeze) ...
    const seen = await waitFor(() => drainOutcome(a!, identity, from), {
      what: 'the old leader to drain or refuse the stale drain',
      timeoutMs: 30_000,
      intervalMs: 50,
    });
    expect(seen).to.equal('refused');
    // Refused either way: as unknown when its key went with its session, or, if it re-registered
    // on resuming before the drain left, as a live controller that is not the active one.
    const refusal = a!.records.slice(from).find((r) => r.msg === 'control request refused; nothing changed')!;
    expect(['unauthenticated', 'stale-controller']).to.include(refusal.code);
    expect(refusal.err).to.match(
      /is not the key of a controller allowed to send it|is signed by a controller that is not the active one/,
    );
    // ... and hears why it was refused.
    await c1.waitForRecord(
      (r) =>
        [
          'the agent refused the drain: this controller no longer holds the term it was sent under',
          "the agent refused the drain as not signed by the active controller: this controller was deposed, or the agent's controllerKeys do not list its key",
        ].includes(String(r.msg)) && r.term === oldTerm,
      'the refusal reported back',
      { from: resumedAt },
    );
    // The old leader never logged out, under its own term.
    expect(drainOutcome(a!, identity, from)).to.equal('refused');
    const after = (await readLeader(client, identity))!;
    expect([after.record.node, after.token, after.login?.loggedIn]).to.deep.equal(['a', before.token, true]);
    // The new active controller owns the workflow; the old one's update lost its compare.
    const wf = (await c2.api().get<Workflow>(`/v1/identities/${identity}/workflow`)).body;
    expect(wf.state).to.equal('draining');
    expect(wf.escalation).to.deep.equal([]);
  });

  it('control requests unsigned, signed by a deposed or unknown controller, or by the active one under an old term or none, are refused', async () => {
    const identity = 'forged';
    await putSpec(client, rateBotSpec(identity));
    const [a] = await pair(identity);
    const c1Key = generateCallerKey();
    const c2Key = generateCallerKey();
    const keyDir = await mkdtemp(join(tmpdir(), 'controller-keys-'));
    const keyFile = async (seed: string, name: string) => {
      const file = join(keyDir, name);
      await writeFile(file, seed, { mode: 0o600 });
      return file;
    };
    const c1 = await startController('c1', {}, { keyFile: await keyFile(c1Key.seed, 'c1.seed') });
    const oldTerm = (await c1.waitForActive()).token!;
    await c1.stop();
    const c2 = await startController('c2', {}, { keyFile: await keyFile(c2Key.seed, 'c2.seed') });
    const newTerm = (await c2.waitForActive({ timeoutMs: HANDOVER_TIMEOUT_MS })).token!;
    expect(BigInt(newTerm) > BigInt(oldTerm)).to.equal(true);
    const before = (await readLeader(client, identity))!;
    const from = a!.records.length;

    const nc: NatsConnection = await connect({ servers: nats.hostUrl });
    const asC1 = new ControlSender(nc, userSigner(c1Key.seed));
    const asC2 = new ControlSender(nc, userSigner(c2Key.seed));
    const asMallory = new ControlSender(nc, userSigner(generateCallerKey().seed));
    try {
      const drain = { v: PROTOCOL_VERSION, op: 'drain', identity, actor: 'forger', holdMs: 60_000 };
      const fence = { v: PROTOCOL_VERSION, op: 'fence', actor: 'forger', reason: 'forged' };
      const code = (reply: ControlReply) => (reply.ok ? 'ok' : reply.error.code);

      // Mallory's request from the issue: unsigned, answered `ok` before.
      const raw = JSON.parse(
        (
          await nc.request(subjects.control('a'), JSON.stringify({ ...drain, term: newTerm }), {
            timeout: 10_000,
          })
        ).string(),
      ) as ControlReply;
      expect(code(raw)).to.equal('unauthenticated');
      // Signed, but by keys no live controller holds (the deposed c1's session is gone).
      expect(code(await asMallory.send('a', { ...drain, term: newTerm }))).to.equal('unauthenticated');
      expect(code(await asC1.send('a', { ...fence, term: newTerm }))).to.equal('unauthenticated');
      // Signed by the active controller's key, but under the deposed term ...
      expect(await asC2.send('a', { ...drain, term: oldTerm })).to.deep.equal({
        v: PROTOCOL_VERSION,
        ok: false,
        error: {
          code: 'stale-controller',
          field: 'term',
          message:
            `controller term ${oldTerm} is no longer current (current: ${newTerm}); ignoring drain. ` +
            'Nothing to do: the active controller decides now and sends its own requests',
        },
      });
      expect(code(await asC2.send('a', { ...fence, term: oldTerm }))).to.equal('stale-controller');
      // ... or with no term at all.
      const unnamed = await asC2.send('a', drain);
      expect(unnamed.ok).to.equal(false);
      if (!unnamed.ok) expect(unnamed.error).to.include({ code: 'bad-request', field: 'term' });
      // The signature is the body's: the same headers on another body do not verify.
      const moved = await asC2.send(
        'a',
        { ...fence, term: newTerm },
        {
          tamper: (h) => ({ ...h, [controlHeaders.nonce]: 'x'.repeat(22) }),
        },
      );
      expect(code(moved)).to.equal('unauthenticated');
      // Read-only status from the active controller's key is answered: the key is trusted.
      expect(code(await asC2.send('a', { v: PROTOCOL_VERSION, op: 'status' }))).to.equal('ok');
    } finally {
      asC1.stop();
      asC2.stop();
      asMallory.stop();
      await nc.close();
    }
    // Nothing changed: a is still the logged-in leader under its term, and not fenced.
    expect(a!.records.slice(from).some((r) => r.identity === identity && r.to === 'logging-out')).to.equal(
      false,
    );
    const after = (await readLeader(client, identity))!;
    expect([after.record.node, after.token, after.login?.loggedIn]).to.deep.equal(['a', before.token, true]);
    expect(await client.get(new Keys().fence('a')).string()).to.equal(null);
    // Each refusal was logged by the agent, saying nothing changed.
    const refusals = a!.records
      .slice(from)
      .filter((r) => r.msg === 'control request refused; nothing changed');
    expect(refusals.map((r) => r.code)).to.include.members([
      'unauthenticated',
      'stale-controller',
      'bad-request',
    ]);
  });

  it('an approve or deny of a pending request that fails is recorded as failed, never as done', async () => {
    const identity = 'aclfail';
    await putSpec(client, rateBotSpec(identity));
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const api = ctl.api();
    // carol's request is pending and approved: the history of a decision that took effect.
    const carol = nkeys.createUser();
    await recordPending(client, identity, {
      name: 'carol',
      nkey: carol.getPublicKey(),
      request: 'RATE USD',
      node: 'a',
      at: Date.now(),
    });
    expect((await api.post(`/v1/identities/${identity}/acl/pending/carol/approve`)).status).to.equal(200);
    // Nothing is pending from mallory: approving or denying her fails.
    const approve = await api.post<{ detail: string }>(
      `/v1/identities/${identity}/acl/pending/mallory/approve`,
    );
    expect(approve.status).to.equal(404);
    const deny = await api.post(`/v1/identities/${identity}/acl/pending/mallory/deny`, { block: true });
    expect(deny.status).to.equal(404);

    const history = await ctl
      .api('viewer')
      .get<{ entries: Array<{ actor?: string; reason?: string }> }>(
        `/v1/identities/${identity}/history?limit=50`,
      );
    const reasons = history.body.entries.filter((e) => e.actor === 'operator-user').map((e) => e.reason);
    expect(reasons).to.deep.equal([
      'approval of carol requested',
      'authorization of carol approved',
      'approval of mallory requested',
      `approval of mallory failed: ${identity} has no pending authorization request from mallory; list them with understudy acl ${identity}`,
      'denial of mallory with its key blocked requested',
      `denial of mallory with its key blocked failed: ${identity} has no pending authorization request from mallory; list them with understudy acl ${identity}`,
    ]);
  });

  it('an approval authorizes exactly the key that asked: two keys under one name must be told apart first', async () => {
    const identity = 'aclbind';
    await putSpec(client, rateBotSpec(identity));
    const ctl = await startController('c1');
    await ctl.waitForActive();
    const api = ctl.api();
    const [dave, impostor] = [nkeys.createUser().getPublicKey(), nkeys.createUser().getPublicKey()];
    const ask = (nkey: string) =>
      recordPending(client, identity, { name: 'dave', nkey, request: 'RATE USD', node: 'a', at: Date.now() });
    expect(await ask(dave)).to.equal(true);
    expect(await ask(dave)).to.equal(false); // the same pair again: nothing new
    expect(await ask(impostor)).to.equal(true);
    const ambiguous = await api.post<{ detail: string }>(
      `/v1/identities/${identity}/acl/pending/dave/approve`,
    );
    expect(ambiguous.status).to.equal(409);
    expect(ambiguous.body.detail).to.match(/2 different keys asked as dave.*deny the others by key/);
    expect((await getSpec(client, identity))!.spec.access.authorized).to.deep.equal([]);
    const denied = await api.post(`/v1/identities/${identity}/acl/pending/dave/deny`, { key: impostor });
    expect(denied.status).to.equal(200);
    expect((await api.post(`/v1/identities/${identity}/acl/pending/dave/approve`)).status).to.equal(200);
    expect((await getSpec(client, identity))!.spec.access.authorized).to.deep.equal([
      { name: 'dave', nkey: dave },
    ]);
    // A later request as dave with another key is recorded apart and cannot replace dave's key.
    expect(await ask(impostor)).to.equal(true);
    const replace = await api.post<{ detail: string }>(`/v1/identities/${identity}/acl/pending/dave/approve`);
    expect(replace.status).to.equal(409);
    expect(replace.body.detail).to.match(/already on aclbind's lists with key/);
    expect((await getSpec(client, identity))!.spec.access.authorized).to.deep.equal([
      { name: 'dave', nkey: dave },
    ]);
  });

  it('pending records are capped per identity: beyond the limit nothing is written', async () => {
    const identity = 'aclcap';
    for (let i = 0; i < MAX_PENDING_PER_IDENTITY; i++) {
      const nkey = nkeys.createUser().getPublicKey();
      await recordPending(client, identity, { name: `c${i}`, nkey, request: 'X', node: 'a', at: 0 });
    }
    const err = await recordPending(client, identity, {
      name: 'late',
      nkey: nkeys.createUser().getPublicKey(),
      request: 'X',
      node: 'a',
      at: 0,
    }).catch((e: Error) => e);
    expect((err as Error).message).to.match(/already has 100 pending.*nothing was recorded/);
    expect(await listPending(client, identity)).to.have.length(MAX_PENDING_PER_IDENTITY);
  });

  it('a revocation records the end of term of every identity on the revoked lease', async () => {
    const keys = new Keys('revoke-test');
    const lease = client.lease(30, { autoKeepAlive: false });
    const leaseId = await lease.grant();
    const leader = (node: string) =>
      JSON.stringify({ node, leaseId, ttlMs: 4_000, mustBeOutByMs: 3_600, since: Date.now() });
    // Two identities led on one agent's lease: `one` confirmed its logout, `two` did not.
    await lease.put(keys.leader('one')).value(leader('a'));
    await lease.put(keys.leader('two')).value(leader('a'));
    const one = (await readLeader(client, 'one', keys))!.token;
    const two = (await readLeader(client, 'two', keys))!.token;
    const login = (token: bigint, loggedIn: boolean) =>
      JSON.stringify({ node: 'a', token: String(token), loggedIn, at: Date.now(), leaseId, ttlMs: 4_000 });
    await client.put(keys.login('one')).value(login(one, false));
    await client.put(keys.login('two')).value(login(two, true));

    const result = await revokeHolder(client, { identity: 'one', expectToken: one, actor: 'test', keys });
    expect(result.ended.sort()).to.deep.equal(['one', 'two']);
    const ends = await Promise.all(
      ['one', 'two'].map(async (id) =>
        TermEnd.parse(JSON.parse((await client.get(keys.termEnd(id)).string())!)),
      ),
    );
    expect(ends.map((e) => [e.token, e.how, e.loggedOut])).to.deep.equal([
      [String(one), 'revoked', true],
      [String(two), 'revoked', false],
    ]);
    expect(Number((await client.leaseClient.leaseTimeToLive({ ID: leaseId })).TTL)).to.equal(-1);
  });
});

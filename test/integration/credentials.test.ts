// Credentials released only to the lease holder (issue 12, point 7), with real etcd and NATS
// (with the shipped authorization), a real controller and two real agents: the secret is stored sealed through the API, the
// leader's service reads it at login, and nobody else gets it: not the standby, not the old
// leader with its previous token, not a forged or replayed request. Nor is it readable in
// plain text in etcd, in any log, in any process's argv or in the agent's or controller's
// environment.
import { expect } from 'chai';
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { connect, type Msg, type NatsConnection } from 'nats';
import {
  CredentialReply,
  credentialSubject,
  openReply,
  replyKeyPair,
  signRequest,
  type CredentialRequest,
} from '../../pkg/credentials/protocol.js';
import { generateCallerKey, userSigner, type UserSigner } from '../../pkg/keys/index.js';
import { connectEtcd } from '../../pkg/lease/index.js';
import { AgentProcess } from '../support/agents.js';
import { ControllerProcess } from '../support/controllers.js';
import { Harness, type EtcdMember, type NatsServer } from '../support/harness.js';
import { waitFor } from '../support/wait.js';

const IDENTITY = 'vault';
/** Random per run, so finding it anywhere cannot be a coincidence with a fixture. */
const SECRET = `s3cret-${randomBytes(12).toString('hex')}`;
const SECRET_B64 = Buffer.from(SECRET).toString('base64');
/** What an older version left in etcd in plain text, for another identity. */
const LEGACY = `legacy-${randomBytes(12).toString('hex')}`;
const sha256 = (text: string | Buffer) => createHash('sha256').update(text).digest('hex');

describe('credentials released only to the lease holder (real etcd, NATS, controller, agents)', function () {
  this.timeout(180_000);
  let harness: Harness;
  let etcd: EtcdMember;
  let nats: NatsServer;
  let nc: NatsConnection;
  let client: Etcd3;
  let controller: ControllerProcess;
  const agents: Record<string, AgentProcess> = {};
  const signers: Record<string, UserSigner> = {};
  let dir: string;
  /** Requests the agents sent, as seen by a plain subscriber (an open NATS lets anyone see them). */
  const seen: Msg[] = [];
  /** A request that was answered with the credential (the leader's, made by the test). */
  let released: CredentialRequest | undefined;

  before(async () => {
    harness = await Harness.create();
    // NATS with the shipped authorization: the agents and the controller connect as their
    // role's users, so the credential subject's permissions are exercised too. The test's own
    // connection is the harness's all-powerful observer (it forges and replays requests).
    [etcd, nats] = await Promise.all([harness.startEtcd(), harness.startNats('nats', { auth: {} })]);
    nc = await connect({ servers: nats.hostUrl });
    client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
    dir = await mkdtemp(join(tmpdir(), 'understudy-credentials-'));
    await writeFile(join(dir, 'credential.key'), randomBytes(32), { mode: 0o600 });
    await client.put('understudy/secrets/legacy/credential').value(LEGACY);
    controller = await startController();
    nc.subscribe(credentialSubject(IDENTITY), { callback: (_e, m) => seen.push(m) });
    await nc.flush();
  });

  afterEach(function () {
    if (this.currentTest?.state !== 'failed') return;
    for (const p of [controller, ...Object.values(agents)]) {
      if (p)
        process.stderr.write(`--- ${p.name} (last lines)\n${p.output().split('\n').slice(-25).join('\n')}\n`);
    }
  });

  after(async () => {
    await Promise.all(Object.values(agents).map((a) => a.stop()));
    await controller?.stop();
    await nc?.close();
    client?.close();
    await harness?.close();
  });

  async function startController(): Promise<ControllerProcess> {
    const c = await ControllerProcess.start({
      name: 'ctl-a',
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      extra: { credentials: { keyFile: join(dir, 'credential.key') } },
    });
    await c.waitForActive();
    return c;
  }

  async function startAgent(node: string, priority: number): Promise<AgentProcess> {
    const seed = generateCallerKey().seed;
    signers[node] = userSigner(seed);
    const keyFile = join(dir, `${node}.nk`);
    await writeFile(keyFile, seed, { mode: 0o600 });
    const agent = await AgentProcess.start({
      node,
      etcd: [etcd.hostEndpoint],
      nats: [nats.hostUrl],
      identities: { [IDENTITY]: null },
      priority,
      extra: { keyFile, allow: { unrestricted: true }, service: { allowRoot: true } },
    });
    agents[node] = agent;
    await agent.waitForStarted();
    return agent;
  }

  /** The current term of the identity: its holder and token, from the leader key. */
  async function term(): Promise<{ node: string; token: string }> {
    const kv = (await client.get(`understudy/identities/${IDENTITY}/leader`).exec()).kvs[0]!;
    return { node: (JSON.parse(kv.value.toString()) as { node: string }).node, token: kv.mod_revision };
  }

  /** Ask for the credential as `node` (signed by `signer`), as an agent would. */
  async function ask(node: string, token: string, signer: UserSigner) {
    const pair = replyKeyPair();
    const request = signRequest(signer, {
      identity: IDENTITY,
      node,
      token,
      at: Date.now(),
      nonce: randomBytes(18).toString('base64url'),
      replyKey: pair.publicKey,
    });
    return { request, ...(await send(request)), pair };
  }

  async function send(request: CredentialRequest) {
    const msg = await nc.request(credentialSubject(IDENTITY), JSON.stringify(request), { timeout: 5_000 });
    const text = new TextDecoder().decode(msg.data);
    return { reply: CredentialReply.parse(JSON.parse(text)), text };
  }

  /** The service records the sha256 of the credential it read, per node and term. */
  async function serviceSaw(node: string, token: string): Promise<string> {
    return waitFor(
      async () =>
        (await readFile(join(dir, 'out', `${node}-${token}`), 'utf8').catch(() => undefined))?.split(' ')[0],
      { what: `the service on ${node} (term ${token}) to read its credential`, timeoutMs: 30_000 },
    );
  }

  it('stores the credential sealed, and the leader’s service reads the right secret', async () => {
    const admin = controller.api('admin');
    const spec = {
      service: {
        driver: 'process',
        command: [
          'sh',
          '-c',
          'sha256sum < "$UNDERSTUDY_CREDENTIAL_FILE" > "$OUT/$UNDERSTUDY_NODE-$UNDERSTUDY_TOKEN"; exec sleep 1000',
        ],
        env: { OUT: join(dir, 'out') },
      },
      credential: { source: 'etcd' },
      access: { open: true },
    };
    await mkdir(join(dir, 'out'));
    expect((await admin.call('PUT', `/v1/identities/${IDENTITY}`, spec)).status).to.equal(200);
    const stored = await admin.call<{ keyId: string }>('PUT', `/v1/identities/${IDENTITY}/credential`, {
      value: SECRET_B64,
    });
    expect(stored.status, JSON.stringify(stored.body)).to.equal(200);
    expect(JSON.stringify(stored.body)).to.not.include(SECRET);

    await startAgent('a', 10);
    await agents.a!.waitForState(IDENTITY, 'leader', { timeoutMs: 60_000 });
    await startAgent('b', 0);
    await agents.b!.waitForState(IDENTITY, 'standby', { timeoutMs: 60_000 });
    const now = await term();
    expect(now.node).to.equal('a');
    expect(await serviceSaw('a', now.token)).to.equal(sha256(SECRET));
  });

  it('answers the leader’s own signed request, encrypted to its reply key only', async () => {
    const now = await term();
    const { reply, text, request, pair } = await ask('a', now.token, signers.a!);
    expect(reply.ok, text).to.equal(true);
    expect(text).to.not.include(SECRET);
    released = request;
    if (!reply.ok) return;
    const context = { identity: IDENTITY, node: 'a', token: now.token, nonce: request.nonce };
    expect(openReply(reply.sealed, pair.privateKey, context).toString()).to.equal(SECRET);
    expect(() => openReply(reply.sealed, replyKeyPair().privateKey, context)).to.throw();
  });

  it('refuses the standby, a forged signature and a replayed request, returning nothing', async () => {
    const now = await term();
    const standby = await ask('b', now.token, signers.b!);
    expect(standby.reply).to.include({ ok: false, code: 'not-leader' });

    const forged = await ask('a', now.token, userSigner(generateCallerKey().seed));
    expect(forged.reply).to.include({ ok: false, code: 'bad-signature' });

    // A request that was answered, sent again as it was (same nonce, same signature).
    const replayed = await send(released!);
    expect(replayed.reply).to.include({ ok: false, code: 'replayed' });

    // The leader's own login request, captured on the wire and sent again.
    expect(seen.length, 'the leader asked at login').to.be.greaterThan(0);
    const captured = JSON.parse(new TextDecoder().decode(seen[0]!.data)) as CredentialRequest;
    expect(captured.node).to.equal('a');
    const again = await send(captured);
    expect(again.reply.ok).to.equal(false);
    expect((again.reply as { code: string }).code).to.be.oneOf(['replayed', 'stale-request']);
    for (const r of [standby.text, forged.text, replayed.text, again.text]) expect(r).to.not.include(SECRET);
  });

  it('after a switchover, refuses the old leader with its previous token; the new leader gets it', async () => {
    const before = await term();
    const res = await controller.api('operator').post(`/v1/identities/${IDENTITY}/switchover`, { to: 'b' });
    expect(res.status, JSON.stringify(res.body)).to.equal(202);
    await agents.b!.waitForState(IDENTITY, 'leader', { timeoutMs: 60_000 });
    const after = await term();
    expect(after.node).to.equal('b');
    expect(await serviceSaw('b', after.token)).to.equal(sha256(SECRET));

    const old = await ask('a', before.token, signers.a!);
    expect(old.reply).to.include({ ok: false, code: 'not-leader' });
    const borrowed = await ask('a', after.token, signers.a!);
    expect(borrowed.reply).to.include({ ok: false, code: 'not-leader' });
    const stale = await ask('b', before.token, signers.b!);
    expect(stale.reply).to.include({ ok: false, code: 'stale-token' });
  });

  it('warns at start about a plain-text credential left by an older version, without quoting it', async () => {
    const warning = await controller.waitForRecord(
      (r) => r.identity === 'legacy' && r.code === 'plaintext',
      'a warning about the plain-text credential of legacy',
    );
    expect(warning.level).to.equal('warn');
    expect(warning.msg).to.match(/understudy credential set legacy --from-file/);
    expect(controller.output()).to.not.include(LEGACY);
  });

  it('leaves the secret readable nowhere in plain text: etcd, logs, argv, environments', async () => {
    const all = await client.getAll().prefix('').buffers();
    expect(Object.keys(all)).to.include(`understudy/secrets/${IDENTITY}/credential`);
    for (const [key, value] of Object.entries(all)) {
      expect(value.includes(SECRET), `etcd key ${key}`).to.equal(false);
      expect(value.includes(SECRET_B64), `etcd key ${key} (base64)`).to.equal(false);
    }
    for (const p of [controller, ...Object.values(agents)]) {
      const out = p.output();
      expect(out.includes(SECRET), `${p.name}'s log`).to.equal(false);
      expect(out.includes(SECRET_B64), `${p.name}'s log (base64)`).to.equal(false);
    }
    const pids = (await readdir('/proc')).filter((p) => /^\d+$/.test(p));
    let cmdlines = 0;
    for (const pid of pids) {
      const cmdline = await readFile(`/proc/${pid}/cmdline`).catch(() => undefined);
      if (!cmdline) continue;
      cmdlines++;
      expect(cmdline.includes(SECRET) || cmdline.includes(SECRET_B64), `argv of pid ${pid}`).to.equal(false);
    }
    expect(cmdlines).to.be.greaterThan(3);
    for (const p of [controller, ...Object.values(agents)]) {
      const environ = await readFile(`/proc/${p.pid}/environ`);
      expect(environ.length, `environment of ${p.name}`).to.be.greaterThan(0);
      expect(environ.includes(SECRET) || environ.includes(SECRET_B64), `environment of ${p.name}`).to.equal(
        false,
      );
    }
  });

  it('a login with no controller up fails saying why, and is retried until one answers', async function () {
    // a may campaign only once the switchover's hold-off on it lapses (up to its deadline, 60 s).
    this.timeout(300_000);
    await controller.stop();
    const from = agents.a!.records.length;
    agents.b!.kill('SIGKILL'); // the leader dies: a takes over once b's lease expires
    await waitFor(
      () => agents.a!.output().includes('credential.source etcd needs a running controller') || undefined,
      {
        what: "a's login to fail for want of a controller",
        timeoutMs: 150_000,
      },
    );
    expect(agents.a!.records.slice(from).some((r) => r.to === 'leader')).to.equal(false);
    controller = await startController();
    await agents.a!.waitForState(IDENTITY, 'leader', { from, timeoutMs: 60_000 });
    const now = await term();
    expect(now.node).to.equal('a');
    expect(await serviceSaw('a', now.token)).to.equal(sha256(SECRET));
  });
});

// What a spec may run, with real agents, etcd and NATS: a spec naming a command outside the
// agent's allow-list runs nothing and is not campaigned for (no leader key), with the reason
// shown; a root agent runs its service as the configured unprivileged user, who can read the
// credential file and nothing makes it root.
import { execFileSync, spawn } from 'node:child_process';
import { chmod, chown, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import type { Etcd3 } from 'etcd3';
import { putSpec } from '../../pkg/spec/store.js';
import { stringify } from 'yaml';
import { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import { repoRoot } from '../support/paths.js';
import { waitFor } from '../support/wait.js';

/** The unprivileged account the test's services run as (created if absent). */
const SERVICE_USER = 'understudy-test-svc';

const leaderKey = (identity: string) => `understudy/identities/${identity}/leader`;

function accountIds(user: string): { uid: number; gid: number } {
  const [, , uid, gid] = execFileSync('getent', ['passwd', user], { encoding: 'utf8' }).split(':');
  return { uid: Number(uid), gid: Number(gid) };
}

/** An agent started as an unprivileged user, as the systemd unit runs it. */
class UnprivilegedAgent extends AgentProcess {
  static async startAs(
    user: { uid: number; gid: number },
    dir: string,
    config: Record<string, unknown>,
  ): Promise<UnprivilegedAgent> {
    const file = join(dir, 'agent.yaml');
    await writeFile(file, stringify(config), { mode: 0o600 });
    await chown(file, user.uid, user.gid);
    const child = spawn(process.execPath, ['--import', 'tsx', 'cmd/agent/main.ts', '--config', file], {
      cwd: repoRoot,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: dir },
      uid: user.uid,
      gid: user.gid,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new UnprivilegedAgent(String(config.node), child, dir);
  }
}

describe('agent: what a spec may run, and as whom', function () {
  this.timeout(180_000);
  let cluster: IntegrationCluster;
  let client: Etcd3;
  /** A directory every user may pass through (mkdtemp makes 0700 ones). */
  let base: string;
  let svc: { uid: number; gid: number };

  before(async function () {
    if (process.getuid?.() !== 0) this.skip(); // switching users needs a root agent
    try {
      accountIds(SERVICE_USER);
    } catch {
      execFileSync('useradd', ['--system', '--no-create-home', '--shell', '/usr/sbin/nologin', SERVICE_USER]);
    }
    svc = accountIds(SERVICE_USER);
    base = await mkdtemp(join(tmpdir(), 'understudy-policy-'));
    await chmod(base, 0o755);
    cluster = await IntegrationCluster.start();
    client = cluster.client;
  });

  afterEach(function () {
    return cluster?.afterTest(this.currentTest);
  });

  after(async function () {
    await cluster?.close();
    if (base) await rm(base, { recursive: true, force: true });
  });

  /** The agent's status of `identity` from its local /healthz. */
  async function statusOf(agent: AgentProcess, identity: string) {
    const listening = await agent.waitForRecord(
      (r) => r.msg === 'health and metrics listening',
      'health port',
    );
    const res = await fetch(`http://127.0.0.1:${listening.port as number}/healthz`);
    const body = (await res.json()) as {
      status: { identities: Array<{ identity: string; state: string; detail?: string }> };
    };
    return body.status.identities.find((i) => i.identity === identity)!;
  }

  it('a command outside the allow-list runs nothing, is not campaigned for, and says why', async function () {
    const identity = 'refused-cmd';
    const markers = join(base, 'markers');
    await mkdir(markers);
    await chown(markers, svc.uid, svc.gid); // the service user writes the marker
    const marker = join(markers, 'refused-ran');
    // Warm: an allowed spec would start its process at once, before any campaign.
    await putSpec(client, {
      name: identity,
      service: {
        driver: 'process',
        command: ['/bin/sh', '-c', `touch ${marker}; exec sleep 1000`],
        mode: 'warm',
        channel: 'fd3',
      },
    });
    const a = await cluster.startAgent({
      node: 'a',
      identities: { [identity]: null },
      extra: {
        allow: { commands: ['/usr/bin/sleep'] },
        service: { user: SERVICE_USER },
        health: { listen: '127.0.0.1:0' },
      },
    });
    const refused = await a.waitForRecord(
      (r) => r.identity === identity && typeof r.reason === 'string' && r.reason.includes('allow.commands'),
      'the refusal of the spec',
    );
    expect(refused.reason).to.match(
      /^service\.command '\/bin\/sh' \(\/usr\/bin\/\w+\) is not in allow\.commands/,
    );
    expect(refused.level, 'logged as an error').to.equal('error');
    const status = await statusOf(a, identity);
    expect(status.state).to.equal('standby');
    expect(status.detail).to.match(/not campaigning: service\.command '\/bin\/sh'.*allow\.commands/);
    expect((await client.get(leaderKey(identity)).string()) ?? undefined, 'no leader key').to.equal(
      undefined,
    );
    expect(a.records.some((r) => r.identity === identity && r.msg === 'service started')).to.equal(false);
    expect(existsSync(marker), 'the command never ran').to.equal(false);
    expect(
      a.records.filter((r) => r.identity === identity && String(r.msg).startsWith('accepting the spec')),
      'logged once',
    ).to.have.length(1);

    // The same spec on a node that allows /bin/sh starts its warm process at once, before any
    // campaign: the marker checked above would have appeared.
    await cluster.startAgent({
      node: 'b',
      identities: { [identity]: null },
      extra: { allow: { commands: ['/bin/sh'] }, service: { user: SERVICE_USER } },
    });
    await waitFor(() => existsSync(marker), { what: 'the allowed service ran', timeoutMs: 30_000 });
  });

  it('a root agent runs the service as service.user, which can read its credential file', async function () {
    const identity = 'as-svc-user';
    const out = join(base, 'out');
    await mkdir(out);
    await chown(out, svc.uid, svc.gid);
    const creds = join(base, 'creds');
    await mkdir(creds, { mode: 0o700 });
    await writeFile(join(creds, 'db'), 'sekrit', { mode: 0o600 });
    const runDir = join(base, 'run');
    await putSpec(client, {
      name: identity,
      service: {
        driver: 'process',
        command: [
          'sh',
          '-c',
          'id -u > "$OUT/uid"; id -g > "$OUT/gid"; cat "$UNDERSTUDY_CREDENTIAL_FILE" > "$OUT/cred"; exec sleep 1000',
        ],
        env: { OUT: out },
      },
      credential: { source: 'file', path: join(creds, 'db') },
    });
    const a = await cluster.startAgent({
      node: 'a',
      identities: { [identity]: null },
      extra: {
        allow: { commands: ['/bin/sh'], credentialPaths: [`${creds}/`] },
        service: { user: SERVICE_USER },
        runDir,
      },
    });
    await a.waitForState(identity, 'leader');
    const uid = await waitFor(
      async () => (await readFile(join(out, 'uid'), 'utf8').catch(() => '')).trim() || undefined,
      {
        what: 'the service to write its uid',
        timeoutMs: 10_000,
      },
    );
    expect(Number(uid)).to.equal(svc.uid).and.not.equal(0);
    expect(Number((await readFile(join(out, 'gid'), 'utf8')).trim())).to.equal(svc.gid);
    const cred = await waitFor(
      async () => (await readFile(join(out, 'cred'), 'utf8').catch(() => '')) || undefined,
      {
        what: 'the service to copy its credential',
        timeoutMs: 10_000,
      },
    );
    expect(cred).to.equal('sekrit');
    const file = await stat(join(runDir, identity, `credential-${identity}`));
    expect({ uid: file.uid, mode: (file.mode & 0o777).toString(8) }).to.deep.equal({
      uid: svc.uid,
      mode: '600',
    });
    // Its directory stays the agent's: the service passes through, cannot list or plant links.
    const dir = await stat(join(runDir, identity));
    expect({ uid: dir.uid, mode: (dir.mode & 0o777).toString(8) }).to.deep.equal({ uid: 0, mode: '701' });
    const started = a.records.find((r) => r.identity === identity && r.msg === 'service started');
    expect(started?.uid).to.equal(svc.uid);
  });

  it('the agent itself runs unprivileged: it leads, and its service runs as its own user', async function () {
    const identity = 'unprivileged-agent';
    const home = join(base, 'agent-home');
    await mkdir(home);
    await chown(home, svc.uid, svc.gid);
    const out = join(home, 'out');
    await mkdir(out);
    await chown(out, svc.uid, svc.gid);
    await putSpec(client, {
      name: identity,
      service: {
        driver: 'process',
        command: ['sh', '-c', 'id -u > "$OUT/uid"; exec sleep 1000'],
        env: { OUT: out },
      },
    });
    const a = await UnprivilegedAgent.startAs(svc, home, {
      node: 'u',
      etcd: { endpoints: cluster.endpoints.etcd },
      nats: { servers: cluster.endpoints.nats },
      lease: { ttlSeconds: 4 },
      identities: { [identity]: null },
      runDir: join(home, 'run'),
      logLevel: 'info',
      // No service section: an unprivileged agent runs services as itself.
      allow: { commands: ['/bin/sh'] },
    });
    cluster.track(a);
    await a.waitForState(identity, 'leader');
    const uid = await waitFor(
      async () => (await readFile(join(out, 'uid'), 'utf8').catch(() => '')).trim() || undefined,
      { what: 'the service to write its uid', timeoutMs: 10_000 },
    );
    expect(Number(uid)).to.equal(svc.uid);
    const agentUid = (await readFile(`/proc/${a.child.pid}/status`, 'utf8')).match(/^Uid:\s+(\d+)/m)?.[1];
    expect(Number(agentUid), 'the agent runs as the unprivileged user').to.equal(svc.uid);
    const lifeline = a.records.find((r) => r.msg === 'lifeline ready');
    expect(lifeline?.pdeathsig, 'the lifeline works unprivileged, pdeathsig included').to.equal(true);
    expect(a.records.filter((r) => r.level === 'error' || r.level === 'fatal')).to.deep.equal([]);
  });
});

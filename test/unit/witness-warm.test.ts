// The warm witness (chaos/witness.ts, WITNESS_MODE=warm) speaks the agent's fd3 channel: it
// starts logged out and says `ready`, logs in under the token a `login` message carries, and
// out when told. The failover benchmark's warm figures stand on these lines.
import { expect } from 'chai';
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/paths.js';
import { waitFor } from '../support/wait.js';

describe('the warm witness on the fd3 channel', function () {
  this.timeout(30_000);
  let dir: string;
  let child: ChildProcess | undefined;

  beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'witness-warm-'))));
  afterEach(async () => {
    child?.kill('SIGKILL');
    await rm(dir, { recursive: true, force: true });
  });

  /** The witness with a socket as its fd 3; returns our end and the lines it sends. */
  async function start(opts: { deathLine?: boolean } = {}): Promise<{
    channel: Socket;
    received: Array<Record<string, unknown>>;
    file: string;
  }> {
    const path = join(dir, 'channel.sock');
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(path, resolve));
    const theirs = createConnection(path);
    const ours = await new Promise<Socket>((resolve) => server.once('connection', resolve));
    await new Promise<void>((resolve) =>
      theirs.readyState === 'open' ? resolve() : theirs.once('connect', resolve),
    );
    const file = join(dir, 'witness.jsonl');
    child = spawn(process.execPath, ['--import', 'tsx', 'chaos/witness.ts'], {
      cwd: repoRoot,
      env: {
        ...process.env,
        WITNESS_FILE: file,
        WITNESS_MODE: 'warm',
        WITNESS_DEATH_LINE: opts.deathLine ? '1' : '0',
        // A beat every ms: one that outlived the logout would show within the status round trip.
        WITNESS_BEAT_MS: '1',
        UNDERSTUDY_NODE: 'a',
      },
      stdio: ['ignore', 'ignore', 'inherit', theirs],
    });
    theirs.destroy();
    server.close();
    const received: Array<Record<string, unknown>> = [];
    let buffered = '';
    ours.on('data', (chunk) => {
      buffered += chunk.toString();
      for (let nl = buffered.indexOf('\n'); nl >= 0; nl = buffered.indexOf('\n')) {
        received.push(JSON.parse(buffered.slice(0, nl)) as Record<string, unknown>);
        buffered = buffered.slice(nl + 1);
      }
    });
    return { channel: ours, received, file };
  }

  const lines = async (file: string) =>
    (await readFile(file, 'utf8').catch(() => ''))
      .split('\n')
      .filter(Boolean)
      .map((l) => JSON.parse(l) as { event: string; token: string | null; node: string });
  const said = (received: Array<Record<string, unknown>>, type: string) => () =>
    received.some((m) => m.type === type);

  it('says ready, records nothing until told to log in, then logs in and out under the message token', async () => {
    const { channel, received, file } = await start();
    await waitFor(said(received, 'ready'), { what: 'ready', timeoutMs: 20_000 });
    expect(await lines(file), 'a warm standby is not logged in').to.deep.equal([]);

    channel.write(`${JSON.stringify({ type: 'login', identity: 'w1', node: 'b', token: '42' })}\n`);
    await waitFor(said(received, 'logged-in'), { what: 'logged-in', timeoutMs: 5_000 });
    expect(received.find((m) => m.type === 'logged-in')).to.deep.equal({ type: 'logged-in', token: '42' });
    const login = (await lines(file))[0]!;
    expect(login).to.include({ event: 'login', token: '42', node: 'b' });

    channel.write(`${JSON.stringify({ type: 'logout' })}\n`);
    await waitFor(said(received, 'logged-out'), { what: 'logged-out', timeoutMs: 5_000 });
    const events = await lines(file);
    expect(events.at(-1)).to.include({ event: 'logout', token: '42' });
    // Logged out, it beats no more under the old token.
    const count = events.length;
    channel.write(`${JSON.stringify({ type: 'status', id: 's1' })}\n`);
    await waitFor(() => received.some((m) => m.type === 'status'), { what: 'status', timeoutMs: 5_000 });
    expect((await lines(file)).length).to.equal(count);
    expect(received.find((m) => m.type === 'status')).to.deep.include({ fields: { node: 'b', token: null } });
  });

  it('its recorder, started while it stands by, writes a death line for the term it died in, and none after a logout', async () => {
    const { channel, received, file } = await start({ deathLine: true });
    await waitFor(said(received, 'ready'), { what: 'ready', timeoutMs: 20_000 });
    const send = (m: Record<string, unknown>) => channel.write(`${JSON.stringify(m)}\n`);
    send({ type: 'login', identity: 'w1', node: 'b', token: '41' });
    await waitFor(said(received, 'logged-in'), { what: 'logged-in', timeoutMs: 5_000 });
    send({ type: 'logout' });
    await waitFor(said(received, 'logged-out'), { what: 'logged-out', timeoutMs: 5_000 });
    received.length = 0;
    send({ type: 'login', identity: 'w1', node: 'b', token: '42' });
    await waitFor(said(received, 'logged-in'), { what: 'logged-in', timeoutMs: 5_000 });
    const login = (await lines(file)).find((l) => l.event === 'login' && l.token === '42')!;
    child!.kill('SIGKILL');
    const dead = await waitFor(
      async () => {
        const found = (await lines(file)).filter((l) => l.event === 'dead');
        return found.length > 0 ? found : undefined;
      },
      { what: 'the death line', timeoutMs: 10_000 },
    );
    // Only the term it died in: the one it logged out of is not reported dead.
    expect(dead.map((d) => d.token)).to.deep.equal(['42']);
    expect(dead[0]).to.include({ node: 'b', from: (login as unknown as { mono: number }).mono });
  });

  it('a recorder gone before a login is replaced: the term still gets its death line', async () => {
    const { channel, received, file } = await start({ deathLine: true });
    await waitFor(said(received, 'ready'), { what: 'ready', timeoutMs: 20_000 });
    const children = () => {
      try {
        return execFileSync('pgrep', ['-P', String(child!.pid)], { encoding: 'utf8' })
          .split(/\s+/)
          .filter(Boolean);
      } catch {
        return []; // pgrep exits 1 when nothing matches
      }
    };
    const [standbyRecorder] = await waitFor(() => (children().length > 0 ? children() : undefined), {
      what: "the standby's recorder",
      timeoutMs: 10_000,
    });
    process.kill(Number(standbyRecorder), 'SIGKILL');
    await waitFor(() => !children().includes(standbyRecorder!), {
      what: 'the recorder gone',
      timeoutMs: 10_000,
    });
    channel.write(`${JSON.stringify({ type: 'login', identity: 'w1', node: 'b', token: '43' })}\n`);
    await waitFor(said(received, 'logged-in'), { what: 'logged-in', timeoutMs: 5_000 });
    child!.kill('SIGKILL');
    const dead = await waitFor(
      async () => {
        const found = (await lines(file)).filter((l) => l.event === 'dead');
        return found.length > 0 ? found : undefined;
      },
      { what: 'the death line', timeoutMs: 10_000 },
    );
    expect(dead.map((d) => d.token)).to.deep.equal(['43']);
  });
});

import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import type { Socket } from 'node:net';
import { Duplex } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { pino } from 'pino';
import { ManualClock } from '../../pkg/clock/index.js';
import {
  AgentMessage,
  ChannelClient,
  decodeLine,
  encodeMessage,
  LineFramer,
  MAX_LINE_BYTES,
  messageReader,
  ServiceMessage,
} from '../../pkg/identity/channel.js';

function framer(max?: number) {
  const lines: string[] = [];
  const problems: string[] = [];
  const f = new LineFramer(
    (line) => lines.push(line),
    (problem) => problems.push(problem),
    max,
  );
  return { f, lines, problems };
}

describe('control channel (fd 3 JSON lines)', function () {
  describe('line framer', function () {
    it('splits on newlines across chunk boundaries', function () {
      const { f, lines } = framer();
      f.push('{"a":1}\n{"b"');
      f.push(':2}\n{"c":3}');
      expect(lines).to.deep.equal(['{"a":1}', '{"b":2}']);
      f.push('\n');
      expect(lines).to.deep.equal(['{"a":1}', '{"b":2}', '{"c":3}']);
    });

    it('keeps a multi-byte character split between two chunks intact', function () {
      const { f, lines } = framer();
      const bytes = Buffer.from('{"body":"1 € = 1.08 $"}\n', 'utf8');
      const euro = bytes.indexOf(0xe2); // first byte of '€'
      f.push(bytes.subarray(0, euro + 1));
      f.push(bytes.subarray(euro + 1));
      expect(lines).to.deep.equal(['{"body":"1 € = 1.08 $"}']);
    });

    it('drops a carriage return before the newline and skips blank lines', function () {
      const { f, lines, problems } = framer();
      f.push('one\r\n\n  \ntwo\n');
      expect(lines).to.deep.equal(['one', 'two']);
      expect(problems).to.deep.equal([]);
    });

    it('reports a line over the limit once, discards it, and goes on with the next line', function () {
      const { f, lines, problems } = framer(10);
      f.push('0123456789A');
      f.push('BCDEF');
      f.push('GH\nshort\n');
      expect(lines).to.deep.equal(['short']);
      expect(problems).to.have.length(1);
      expect(problems[0]).to.match(/longer than 10 bytes/);
    });

    it('accepts a line of exactly the limit', function () {
      const { f, lines, problems } = framer(5);
      f.push('12345\n');
      expect(lines).to.deep.equal(['12345']);
      expect(problems).to.deep.equal([]);
    });

    it('reports a last line cut off by the end of the stream instead of using it', function () {
      const { f, lines, problems } = framer();
      f.push('{"type":"ready"}\n{"type":"logg');
      f.end();
      expect(lines).to.deep.equal(['{"type":"ready"}']);
      expect(problems[0]).to.match(/ended inside a line/);
    });

    it('defaults to a 1 MiB limit', function () {
      expect(MAX_LINE_BYTES).to.equal(1024 * 1024);
      const { f, lines, problems } = framer();
      f.push(`${'x'.repeat(MAX_LINE_BYTES)}\n`);
      f.push(`${'x'.repeat(MAX_LINE_BYTES + 1)}\n`);
      expect(lines).to.have.length(1);
      expect(problems).to.have.length(1);
    });
  });

  describe('messages', function () {
    it('encodes one message per line, even with newlines inside strings', function () {
      const line = encodeMessage({ type: 'reply', id: 'r1', body: 'two\nlines' });
      expect(line.endsWith('\n')).to.equal(true);
      expect(line.slice(0, -1)).not.to.include('\n');
      expect(decodeLine(ServiceMessage, line.trim())).to.deep.equal({
        ok: true,
        message: { type: 'reply', id: 'r1', body: 'two\nlines' },
      });
    });

    it('accepts every agent → service message', function () {
      const messages = [
        { type: 'login', identity: 'ratebot', node: 'n1', token: '18446744073709551615' },
        {
          type: 'login',
          identity: 'ratebot',
          node: 'n1',
          token: '7',
          credentialFile: '/run/u/credential-ratebot',
        },
        { type: 'logout' },
        { type: 'request', id: 'a', command: 'RATE USD' },
        { type: 'request', id: 'b', command: 'RATE USD', caller: 'alice' },
        { type: 'status', id: 's1' },
      ];
      for (const m of messages) expect(AgentMessage.safeParse(m).success, JSON.stringify(m)).to.equal(true);
    });

    it('accepts every service → agent message', function () {
      const messages = [
        { type: 'ready' },
        { type: 'logged-in', token: '42' },
        { type: 'logged-out' },
        { type: 'reply', id: 'a', body: '1 EUR = 1.0842 USD' },
        { type: 'reply', id: 'a', body: 'no such currency', error: 'bad-request' },
        { type: 'status', id: 's1', fields: { loggedIn: true, currencies: ['USD'] } },
      ];
      for (const m of messages) expect(ServiceMessage.safeParse(m).success, JSON.stringify(m)).to.equal(true);
    });

    it('refuses a token that is not a decimal string (64-bit revisions do not survive JSON numbers)', function () {
      expect(AgentMessage.safeParse({ type: 'login', identity: 'i', node: 'n', token: 42 }).success).to.equal(
        false,
      );
      expect(
        AgentMessage.safeParse({ type: 'login', identity: 'i', node: 'n', token: '4e2' }).success,
      ).to.equal(false);
    });

    it('refuses a reply error outside the four a service may give', function () {
      const m = { type: 'reply', id: 'a', body: 'x', error: 'not-authorized' };
      expect(ServiceMessage.safeParse(m).success).to.equal(false);
    });

    it('carries the snapshot hold: snapshot and snapshot-done to the service, snapshot-ready back, each with its id', function () {
      for (const m of [
        { type: 'snapshot', id: 'snapshot-1' },
        { type: 'snapshot-done', id: 'snapshot-1' },
      ])
        expect(AgentMessage.safeParse(m).success, JSON.stringify(m)).to.equal(true);
      expect(ServiceMessage.safeParse({ type: 'snapshot-ready', id: 'snapshot-1' }).success).to.equal(true);
      for (const m of [{ type: 'snapshot' }, { type: 'snapshot-done', id: '' }])
        expect(AgentMessage.safeParse(m).success, JSON.stringify(m)).to.equal(false);
      expect(ServiceMessage.safeParse({ type: 'snapshot-ready' }).success).to.equal(false);
    });

    it('ignores unknown fields, so a newer peer can add some', function () {
      const decoded = decodeLine(ServiceMessage, '{"type":"ready","version":2}');
      expect(decoded).to.deep.equal({ ok: true, message: { type: 'ready' } });
    });

    it('says what is wrong with a bad line instead of throwing', function () {
      expect(decodeLine(ServiceMessage, 'not json')).to.include({ ok: false });
      const wrongType = decodeLine(ServiceMessage, '{"type":"login"}');
      expect(wrongType.ok).to.equal(false);
      const missing = decodeLine(ServiceMessage, '{"type":"reply","body":"x"}');
      expect(missing.ok === false && missing.problem).to.match(/^id:/);
    });

    it('reads a stream of messages, reporting bad lines with their text and keeping good ones', function () {
      const got: ServiceMessage[] = [];
      const bad: Array<[string, string | undefined]> = [];
      const reader = messageReader(
        ServiceMessage,
        (m) => got.push(m),
        (problem, line) => bad.push([problem, line]),
      );
      reader.push('{"type":"ready"}\n{"type":"bogus"}\n{"type":"logged-in","token":"9"}\n');
      expect(got).to.deep.equal([{ type: 'ready' }, { type: 'logged-in', token: '9' }]);
      expect(bad).to.have.length(1);
      expect(bad[0]![1]).to.equal('{"type":"bogus"}');
    });
  });

  describe("the agent's end (ChannelClient)", function () {
    /** A fake fd 3: what the agent writes is kept; the test plays the service. */
    function channel() {
      const sent: AgentMessage[] = [];
      const socket = new Duplex({
        read() {},
        write(chunk: Buffer, _enc, done) {
          for (const line of chunk.toString().split('\n').filter(Boolean))
            sent.push(JSON.parse(line) as AgentMessage);
          done();
        },
      });
      const clock = new ManualClock();
      let closed = 0;
      const client = new ChannelClient(
        socket as unknown as Socket,
        pino({ level: 'silent' }),
        () => closed++,
        clock,
      );
      const say = (m: ServiceMessage) => socket.push(encodeMessage(m));
      return { client, sent, clock, say, socket, closedCount: () => closed };
    }
    const turn = () => new Promise<void>((resolve) => setImmediate(resolve));

    it('sends a request once and gives its reply to every caller waiting on that id', async function () {
      const { client, sent, say } = channel();
      const first = client.request({ id: 'r1', command: 'RATE USD', caller: 'alice' }, 1_000);
      const again = client.request({ id: 'r1', command: 'RATE USD' }, 1_000);
      await turn();
      expect(sent).to.deep.equal([{ type: 'request', id: 'r1', command: 'RATE USD', caller: 'alice' }]);
      say({ type: 'reply', id: 'r1', body: '1.08' });
      expect(await first).to.deep.equal({ body: '1.08' });
      expect(await again).to.deep.equal({ body: '1.08' });
    });

    it('answers unavailable when the service does not reply in time, on the injected clock', async function () {
      const { client, clock } = channel();
      let settled = false;
      const reply = client.request({ id: 'r2', command: 'RATE USD' }, 500).finally(() => (settled = true));
      await clock.advance(499);
      expect(settled, 'not before the timeout').to.equal(false);
      await clock.advance(1);
      expect(await reply).to.deep.equal({
        body: 'the service did not answer within 500 ms',
        error: 'unavailable',
      });
    });

    it('says a hung service does not answer a status round trip, and a live one does', async function () {
      const { client, clock, say, sent } = channel();
      const hung = client.answers(200);
      await clock.advance(200);
      expect(await hung).to.equal(false);
      const live = client.status(200);
      await turn();
      const ask = sent.at(-1) as { type: 'status'; id: string };
      say({ type: 'status', id: ask.id, fields: { loggedIn: true } });
      expect(await live).to.deep.equal({ loggedIn: true });
    });

    it('remembers when the service last said anything, for as long as asked, and not once closed', async function () {
      const { client, clock, say, socket } = channel();
      expect(client.heardWithin(200), 'nothing heard yet').to.equal(false);
      say({ type: 'ready' });
      await turn();
      expect(client.heardWithin(200)).to.equal(true);
      await clock.advance(200);
      expect(client.heardWithin(200)).to.equal(true);
      await clock.advance(1);
      expect(client.heardWithin(200), 'quiet for longer than asked').to.equal(false);
      say({ type: 'status', id: 'nobody-asked', fields: {} });
      await turn();
      expect(client.heardWithin(200), 'any line counts').to.equal(true);
      socket.destroy();
      await turn();
      expect(client.heardWithin(200), 'a closed channel vouches for nothing').to.equal(false);
    });

    it('a status question still out when the channel closes is unanswered: the service does not serve', async function () {
      const { client, socket } = channel();
      const asked = client.answers(60_000);
      socket.destroy();
      expect(await asked).to.equal(false);
    });

    it('answers everyone still waiting when the channel closes', async function () {
      const { client, socket, closedCount } = channel();
      const ready = client.next('ready');
      const reply = client.request({ id: 'r3', command: 'RATE USD' }, 60_000);
      socket.destroy();
      expect(await ready.message).to.equal(undefined);
      expect(await reply).to.deep.equal({
        body: 'the service stopped before answering',
        error: 'unavailable',
      });
      expect(closedCount()).to.equal(1);
      expect(client.send({ type: 'logout' }), 'nothing is sent on a closed channel').to.equal(false);
    });

    describe('holding the service still for a snapshot (quiesce)', function () {
      it('asks with a snapshot id and resolves, at snapshot-ready, with a release that sends snapshot-done', async function () {
        const { client, sent, say } = channel();
        const quiesced = client.quiesce(5_000);
        await turn();
        expect(sent).to.deep.equal([{ type: 'snapshot', id: 'snapshot-1' }]);
        say({ type: 'snapshot-ready', id: 'snapshot-1' });
        const release = await quiesced;
        expect(release).to.be.a('function');
        expect(sent, 'the service is held until released').to.have.length(1);
        release!();
        await turn();
        expect(sent).to.deep.equal([
          { type: 'snapshot', id: 'snapshot-1' },
          { type: 'snapshot-done', id: 'snapshot-1' },
        ]);
      });

      it('gives each hold its own id, and answers only the one the service names', async function () {
        const { client, sent, say, clock } = channel();
        let first: (() => void) | undefined | 'pending' = 'pending';
        void client.quiesce(5_000).then((r) => (first = r));
        const second = client.quiesce(5_000);
        await turn();
        expect(sent.map((m) => m.type === 'snapshot' && m.id)).to.deep.equal(['snapshot-1', 'snapshot-2']);
        say({ type: 'snapshot-ready', id: 'snapshot-2' });
        say({ type: 'snapshot-ready', id: 'snapshot-9' });
        (await second)!();
        await turn();
        expect(first, 'the other hold still waits').to.equal('pending');
        expect(sent.at(-1)).to.deep.equal({ type: 'snapshot-done', id: 'snapshot-2' });
        await clock.advance(5_000);
        expect(first).to.equal(undefined);
      });

      it('resolves undefined after timeoutMs when the service stays silent (it is copied as it runs)', async function () {
        const { client, clock, sent } = channel();
        let settled = false;
        const quiesced = client.quiesce(5_000).finally(() => (settled = true));
        await clock.advance(4_999);
        expect(settled, 'not before the timeout').to.equal(false);
        await clock.advance(1);
        expect(await quiesced).to.equal(undefined);
        expect(sent, 'nothing to release').to.deep.equal([{ type: 'snapshot', id: 'snapshot-1' }]);
      });

      it('releases a snapshot-ready that comes after the timeout at once, and only once', async function () {
        const { client, clock, sent, say } = channel();
        const quiesced = client.quiesce(5_000);
        await clock.advance(5_000);
        expect(await quiesced).to.equal(undefined);
        say({ type: 'snapshot-ready', id: 'snapshot-1' });
        await turn();
        expect(sent).to.deep.equal([
          { type: 'snapshot', id: 'snapshot-1' },
          { type: 'snapshot-done', id: 'snapshot-1' },
        ]);
        say({ type: 'snapshot-ready', id: 'snapshot-1' });
        await turn();
        expect(sent, 'a repeated snapshot-ready is not released again').to.have.length(2);
      });

      it('resolves undefined at once, sending nothing, on a closed channel', async function () {
        const { client, sent, socket } = channel();
        socket.destroy();
        await turn();
        expect(await client.quiesce(5_000)).to.equal(undefined);
        expect(sent).to.deep.equal([]);
      });

      it('resolves undefined when the channel closes while it waits', async function () {
        const { client, socket, clock } = channel();
        const quiesced = client.quiesce(60_000);
        await turn();
        socket.destroy();
        expect(await quiesced).to.equal(undefined);
        expect(clock.pending, 'its timer is cancelled').to.equal(0);
      });
    });
  });

  describe("the service's end (serveChannel) holding its state for a snapshot", function () {
    this.timeout(15_000);
    const serviceModule = new URL('../../pkg/identity/service.ts', import.meta.url).href;
    /**
     * A service in a child process, on a real fd-3 socket pair, served by serveChannel. What
     * its handlers do is written to its stdout, one line each; `mode` chooses its onSnapshot.
     */
    const program = `
      import { serveChannel } from ${JSON.stringify(serviceModule)};
      const mode = process.argv[1];
      const say = (line) => process.stdout.write(line + '\\n');
      const onSnapshot = async () => {
        if (mode === 'slow') await new Promise((resolve) => setTimeout(resolve, 300));
        if (mode === 'fails') throw new Error('the journal is being rotated');
        say('held');
        return () => say('resumed');
      };
      serveChannel(
        { onLogin() {}, onLogout() {}, onRequest: () => ({ body: 'ok' }), ...(mode === 'none' ? {} : { onSnapshot }) },
        { warn: (message) => say('warn: ' + message) },
      );
    `;
    let child: ChildProcess | undefined;

    afterEach(function () {
      child?.kill('SIGKILL');
      child = undefined;
    });

    async function service(mode: 'holds' | 'slow' | 'fails' | 'none') {
      child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', program, mode], {
        cwd: fileURLToPath(new URL('../..', import.meta.url)),
        stdio: ['ignore', 'pipe', 'inherit', 'pipe'],
      });
      const said: string[] = [];
      let buffered = '';
      child.stdout!.on('data', (chunk: Buffer) => {
        buffered += chunk.toString();
        const lines = buffered.split('\n');
        buffered = lines.pop()!;
        said.push(...lines);
      });
      const clock = new ManualClock();
      const client = new ChannelClient(
        child.stdio[3] as Socket,
        pino({ level: 'silent' }),
        () => undefined,
        clock,
      );
      expect(await client.next('ready').message).to.deep.equal({ type: 'ready' });
      /** A status round trip: the service has handled every message sent before it. */
      const handled = async () => expect(await client.answers(60_000)).to.equal(true);
      const until = async (line: string) => {
        for (let i = 0; i < 400 && !said.includes(line); i++) await new Promise((r) => setTimeout(r, 5));
        expect(said).to.include(line);
      };
      return { client, clock, said, handled, until };
    }

    it('holds its writes at snapshot, says snapshot-ready, and resumes at snapshot-done', async function () {
      const { client, said, until, handled } = await service('holds');
      const release = await client.quiesce(5_000);
      expect(release).to.be.a('function');
      await until('held');
      await handled();
      expect(said, 'still held').to.deep.equal(['held']);
      release!();
      await until('resumed');
      release!();
      await handled();
      await new Promise((r) => setTimeout(r, 50));
      expect(said, 'a second snapshot-done resumes nothing').to.deep.equal(['held', 'resumed']);
    });

    it('stays silent without onSnapshot, so quiesce resolves undefined at its timeout', async function () {
      const { client, clock, said, handled } = await service('none');
      let settled = false;
      const quiesced = client.quiesce(5_000).finally(() => (settled = true));
      await handled();
      expect(settled, 'no answer to the snapshot request').to.equal(false);
      await clock.advance(5_000);
      expect(await quiesced).to.equal(undefined);
      expect(said).to.deep.equal([]);
    });

    it('stays silent, and says why, when it cannot hold its state', async function () {
      const { client, clock, said, until } = await service('fails');
      let settled = false;
      const quiesced = client.quiesce(5_000).finally(() => (settled = true));
      await until('warn: cannot hold the state for a snapshot: the journal is being rotated');
      expect(settled).to.equal(false);
      await clock.advance(5_000);
      expect(await quiesced).to.equal(undefined);
      expect(said).to.not.include('held');
    });

    it('is released at once when it says snapshot-ready after the agent stopped waiting', async function () {
      const { client, clock, said, until } = await service('slow');
      const quiesced = client.quiesce(100);
      await clock.advance(100);
      expect(await quiesced, 'the agent copies it as it runs').to.equal(undefined);
      await until('resumed');
      expect(said).to.deep.equal(['held', 'resumed']);
    });
  });
});

import { expect } from 'chai';
import {
  AgentMessage,
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
});

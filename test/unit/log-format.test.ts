// Logs are JSON lines, and readable on a terminal; the readable form hides the same secrets.
import { expect } from 'chai';
import { Writable } from 'node:stream';
import { createLogger, logFormat } from '../../pkg/log/index.js';

describe('log format: JSON, or readable on a terminal', () => {
  const rows: Array<[string, boolean, string | undefined, 'json' | 'pretty']> = [
    ['a pipe or a file (systemd, docker): JSON', false, undefined, 'json'],
    ['a terminal: readable', true, undefined, 'pretty'],
    ['a terminal piped into jq by choice', true, 'json', 'json'],
    ['readable text under a supervisor by choice', false, 'pretty', 'pretty'],
    ['an empty variable is the default', true, '', 'pretty'],
  ];
  for (const [name, tty, env, want] of rows) {
    it(name, () => {
      expect(logFormat(tty, env === undefined ? {} : { UNDERSTUDY_LOG_FORMAT: env })).to.equal(want);
    });
  }

  it('a wrong value is refused, naming the variable', () => {
    expect(() => logFormat(true, { UNDERSTUDY_LOG_FORMAT: 'text' })).to.throw(
      /UNDERSTUDY_LOG_FORMAT must be json or pretty, not 'text'/,
    );
  });

  it('the readable form is one line per record, with the message and fields, and secrets redacted', () => {
    let out = '';
    const destination = new Writable({
      write(chunk: Buffer, _enc, done) {
        out += chunk.toString();
        done();
      },
    });
    const log = createLogger({ name: 'agent', destination, format: 'pretty', base: { node: 'a' } });
    log.warn({ identity: 'demo', credential: 'hunter2', nats: { pass: 'swordfish' } }, 'logging in');
    expect(out.trim().split('\n')).to.have.length(1);
    expect(out).to.include('WARN');
    expect(out).to.include('logging in');
    expect(out).to.include('demo');
    expect(out).to.not.include('hunter2');
    expect(out).to.not.include('swordfish');
    expect(out).to.not.match(/^\{/);
  });
});

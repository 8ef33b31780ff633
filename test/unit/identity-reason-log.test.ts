// A repeating failure is logged when its reason begins or changes, and once when it clears.
import { expect } from 'chai';
import { pino } from 'pino';
import { ReasonLog } from '../../pkg/identity/reason-log.js';

function capture() {
  const records: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'debug' }, { write: (line: string) => records.push(JSON.parse(line)) });
  return { logger, records };
}

describe('reason log (once per change of reason)', function () {
  it('logs a failure once while its reason stays the same, again when it changes, once when it clears', function () {
    const { logger, records } = capture();
    const r = new ReasonLog(logger, 'starting the warm service');
    r.fail('exited with code 1');
    r.fail('exited with code 1');
    r.fail('exited with code 1');
    expect(records).to.have.length(1);
    expect(records[0]).to.include({ level: 40, reason: 'exited with code 1' });
    expect(records[0]!.msg).to.match(/^starting the warm service failed; retrying/);

    r.fail('did not report ready within 100 ms');
    expect(records).to.have.length(2);
    expect(records[1]).to.include({
      reason: 'did not report ready within 100 ms',
      previous: 'exited with code 1',
    });

    r.ok();
    r.ok();
    expect(records).to.have.length(3);
    expect(records[2]).to.include({ level: 30, was: 'did not report ready within 100 ms', repeats: 0 });
    expect(records[2]!.msg).to.equal('starting the warm service works again');
    expect(r.reason).to.equal(undefined);

    r.fail('exited with code 1');
    expect(records, 'the same reason after a recovery is news again').to.have.length(4);
  });

  it('can log at error level, for a fault that endangers safety', function () {
    const { logger, records } = capture();
    new ReasonLog(logger, 'restarting the lifeline reaper', 'error').fail('spawn /bin/sh ENOENT');
    expect(records[0]).to.include({ level: 50 });
  });
});

// The agent obeys a state-changing control request only under the controller's current
// election term: a controller that froze after its own term check and resumed deposed is
// refused by the agent (issue 10, point 3).
import { expect } from 'chai';
import {
  ControlRequest,
  isMutating,
  isSupportedVersion,
  parseControlRequest,
  PROTOCOL_VERSION,
} from '../../pkg/control/protocol.js';
import { controllerElectionKey, judgeControllerTerm, type TermVerdict } from '../../pkg/control/term.js';
import { ACTIVE } from '../../pkg/controller/election.js';
import { ControllerKeys } from '../../pkg/controller/store.js';

const CURRENT = 42n;
const PREVIOUS_VERSION = PROTOCOL_VERSION - 1;

function outcome(verdict: TermVerdict): string {
  return verdict.act ? 'act' : `refuse: ${verdict.error.code}`;
}

describe('control requests under the controller election term', () => {
  describe('judgeControllerTerm', () => {
    const table: Array<{
      case: string;
      v: number;
      term?: string;
      current: bigint | undefined;
      expected: string;
    }> = [
      { case: 'the current term', v: PROTOCOL_VERSION, term: '42', current: CURRENT, expected: 'act' },
      {
        case: 'an older term (a deposed controller)',
        v: PROTOCOL_VERSION,
        term: '41',
        current: CURRENT,
        expected: 'refuse: stale-controller',
      },
      {
        case: 'a term that never was (ahead of the current one)',
        v: PROTOCOL_VERSION,
        term: '43',
        current: CURRENT,
        expected: 'refuse: stale-controller',
      },
      {
        case: 'a term while no controller holds the election',
        v: PROTOCOL_VERSION,
        term: '42',
        current: undefined,
        expected: 'refuse: stale-controller',
      },
      {
        case: 'no term, current protocol version',
        v: PROTOCOL_VERSION,
        current: CURRENT,
        expected: 'refuse: bad-request',
      },
      {
        // It used to be obeyed unchecked during rolling upgrades: a raw NATS request could
        // drain a leader that way (issue 12).
        case: 'no term, the version before',
        v: PREVIOUS_VERSION,
        current: CURRENT,
        expected: 'refuse: bad-request',
      },
      {
        case: 'an older term, the version before',
        v: PREVIOUS_VERSION,
        term: '41',
        current: CURRENT,
        expected: 'refuse: stale-controller',
      },
    ];
    for (const row of table) {
      it(`${row.case} → ${row.expected}`, () => {
        const request = { v: row.v, op: 'drain' as const, ...(row.term ? { term: row.term } : {}) };
        expect(outcome(judgeControllerTerm(request, row.current))).to.equal(row.expected);
      });
    }

    it('a stale term is refused with both terms named and what to do', () => {
      const verdict = judgeControllerTerm({ v: PROTOCOL_VERSION, op: 'drain', term: '41' }, CURRENT);
      expect(verdict.act).to.equal(false);
      if (verdict.act) return;
      expect(verdict.error.message).to.match(
        /^controller term 41 is no longer current \(current: 42\); ignoring drain\. Nothing to do/,
      );
      expect(verdict.error.field).to.equal('term');
    });

    it('a missing term names the field, whatever the version', () => {
      for (const v of [PROTOCOL_VERSION, PREVIOUS_VERSION]) {
        const refused = judgeControllerTerm({ v, op: 'fence' }, CURRENT);
        expect(refused.act).to.equal(false);
        if (!refused.act) expect(refused.error).to.include({ code: 'bad-request', field: 'term' });
      }
    });
  });

  it('the version before is still spoken (rolling upgrades); its requests need a term too', () => {
    expect(isSupportedVersion(PREVIOUS_VERSION)).to.equal(true);
  });

  it('every operation but status changes state and is checked', () => {
    const ops = ControlRequest.options.map((o) => o.shape.op.value);
    const checked = ops.filter((op) => isMutating({ op } as ControlRequest));
    expect(checked).to.deep.equal(ops.filter((op) => op !== 'status'));
    expect(checked).to.include.members(['drain', 'undrain', 'fence', 'unfence']);
  });

  it('parses the term of a request and refuses one that is not a revision, naming the field', () => {
    const drain = { v: PROTOCOL_VERSION, op: 'drain', identity: 'demo', actor: 'ops', holdMs: 5000 };
    expect(parseControlRequest(JSON.stringify({ ...drain, term: '42' }), 'a')).to.include({ term: '42' });
    for (const term of ['0', '-1', '4x', '']) {
      expect(() => parseControlRequest(JSON.stringify({ ...drain, term }), 'a'))
        .to.throw()
        .with.property('field', 'term');
    }
  });

  it('reads the same election key the controllers campaign on', () => {
    expect(controllerElectionKey()).to.equal(new ControllerKeys().election.leader(ACTIVE));
    expect(controllerElectionKey('other')).to.equal(new ControllerKeys('other').election.leader(ACTIVE));
  });
});

// The control protocol: a version handshake on every request, clear refusals naming the field.
import { expect } from 'chai';
import {
  ControlError,
  isSupportedVersion,
  parseControlRequest,
  PROTOCOL_VERSION,
} from '../../pkg/control/protocol.js';

function refusal(raw: string): ControlError {
  try {
    parseControlRequest(raw, 'a');
  } catch (err) {
    expect(err).to.be.instanceOf(ControlError);
    return err as ControlError;
  }
  throw new Error('expected a refusal');
}

describe('control protocol', () => {
  it('accepts the current version and exactly one back', () => {
    expect(isSupportedVersion(5, 5)).to.equal(true);
    expect(isSupportedVersion(4, 5)).to.equal(true);
    expect(isSupportedVersion(3, 5)).to.equal(false);
    expect(isSupportedVersion(6, 5)).to.equal(false);
    expect(isSupportedVersion(0, 1)).to.equal(false);
  });

  it('parses each operation', () => {
    expect(parseControlRequest(`{"v":${PROTOCOL_VERSION},"op":"status"}`, 'a')).to.deep.equal({
      v: PROTOCOL_VERSION,
      op: 'status',
    });
    expect(
      parseControlRequest(
        JSON.stringify({ v: PROTOCOL_VERSION, op: 'drain', identity: 'demo', actor: 'ops', holdMs: 5000 }),
        'a',
      ),
    ).to.include({ op: 'drain', identity: 'demo' });
  });

  it('refuses a version it does not speak, saying which it does', () => {
    const e = refusal(`{"v":${PROTOCOL_VERSION + 1},"op":"status"}`);
    expect(e.code).to.equal('incompatible-version');
    expect(e.field).to.equal('v');
    expect(e.message).to.match(/speaks control protocol \d+\.\.\d+/);
  });

  it('refuses what is not JSON, lacks a version, or has a bad field, naming it', () => {
    expect(refusal('hello').code).to.equal('bad-request');
    expect(refusal('[1]').field).to.equal('(root)');
    expect(refusal('{"op":"status"}').field).to.equal('v');
    const e = refusal(`{"v":${PROTOCOL_VERSION},"op":"drain","identity":"demo","actor":"ops","holdMs":-1}`);
    expect(e).to.include({ code: 'bad-request', field: 'holdMs' });
    expect(refusal(`{"v":${PROTOCOL_VERSION},"op":"status","identity":"Not Valid"}`).field).to.equal(
      'identity',
    );
  });
});

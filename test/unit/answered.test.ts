// What a term remembers of the durable requests it answered (pkg/identity/answered.ts): enough
// to give a second delivery the same reply, bounded in count and bytes, and only for its term.
import { expect } from 'chai';
import { headers as natsHeaders } from 'nats';
import { AnsweredRequests, storedRequest, type Answered } from '../../pkg/identity/answered.js';

const reply = (bytes: number): Answered => ({
  reply: { to: '_INBOX.x', body: new Uint8Array(bytes), headers: natsHeaders() },
});

describe('the answers a term remembers', function () {
  it('tells a request by its sequence and its storing time: a recreated stream reuses sequences', function () {
    const a = new AnsweredRequests().forTerm(5n);
    a.remember(storedRequest(1, 100n), reply(3));
    expect(a.get(storedRequest(1, 100n))).to.not.equal(undefined);
    expect(a.get(storedRequest(1, 200n)), 'the same sequence in a new stream').to.equal(undefined);
  });

  it("keeps a term's answers across its responders, and forgets them for another term", function () {
    const shared = new AnsweredRequests();
    shared.forTerm(5n).remember('1@1', reply(3));
    expect(shared.forTerm(5n).get('1@1'), 'the same term logged in again').to.not.equal(undefined);
    expect(shared.forTerm(6n).get('1@1'), 'a later term answers with its own token').to.equal(undefined);
  });

  it('keeps the newest within the count, oldest out first', function () {
    const a = new AnsweredRequests(2, 1_000).forTerm(1n);
    a.remember('1@1', reply(1));
    a.remember('2@1', reply(1));
    a.remember('3@1', {});
    expect(a.size).to.equal(2);
    expect(a.get('1@1')).to.equal(undefined);
    expect(a.get('2@1')).to.not.equal(undefined);
    expect(a.get('3@1'), 'nothing owed is remembered too').to.deep.equal({});
  });

  it('keeps the newest within the bytes, and does not keep a reply larger than all of them', function () {
    const a = new AnsweredRequests(100, 10).forTerm(1n);
    a.remember('1@1', reply(4));
    a.remember('2@1', reply(4));
    a.remember('3@1', reply(4)); // 12 > 10: the oldest goes
    expect([a.get('1@1'), a.get('2@1'), a.get('3@1')].map(Boolean)).to.deep.equal([false, true, true]);
    a.remember('4@1', reply(11)); // served again if it comes back: at least once beats never
    expect(a.get('4@1')).to.equal(undefined);
    expect([a.get('2@1'), a.get('3@1')].map(Boolean), 'and it pushes nothing out').to.deep.equal([
      true,
      true,
    ]);
  });

  it('counts a request remembered twice once', function () {
    const a = new AnsweredRequests(100, 10).forTerm(1n);
    a.remember('1@1', reply(6));
    a.remember('1@1', reply(6));
    a.remember('2@1', reply(4));
    expect(a.size).to.equal(2);
  });
});

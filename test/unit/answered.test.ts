// What a term remembers of the durable requests it answered (pkg/identity/answered.ts): enough
// to give a second delivery the same reply, or the answer being made, bounded in count and
// bytes, and only for its term.
import { expect } from 'chai';
import { headers as natsHeaders } from 'nats';
import { AnsweredRequests, storedRequest, type Answered } from '../../pkg/identity/answered.js';

const reply = (bytes: number): Answered => ({
  reply: { to: '_INBOX.x', body: new Uint8Array(bytes), headers: natsHeaders() },
});
const answer = (a: AnsweredRequests, token: bigint, request: string, answered: Answered | undefined) =>
  a.serve(token, request).done(answered);

describe('the answers a term remembers', function () {
  it('tells a request by its sequence and its storing time: a recreated stream reuses sequences', async function () {
    const a = new AnsweredRequests().forTerm(5n);
    answer(a, 5n, storedRequest(1, 100), reply(3));
    expect(await a.answerOf(5n, storedRequest(1, 100))).to.not.equal(undefined);
    expect(await a.answerOf(5n, storedRequest(1, 200)), 'the same sequence in a new stream').to.equal(
      undefined,
    );
  });

  it("keeps a term's answers across its responders; a later term forgets them, an earlier one's late answer is not kept", async function () {
    const shared = new AnsweredRequests();
    answer(shared.forTerm(5n), 5n, '1@1', reply(3));
    expect(await shared.forTerm(5n).answerOf(5n, '1@1'), 'the same term logged in again').to.not.equal(
      undefined,
    );
    shared.forTerm(6n);
    expect(await shared.answerOf(6n, '1@1'), 'a later term answers with its own token').to.equal(undefined);
    answer(shared, 5n, '2@1', reply(3)); // the old term's handler finishing late
    expect(await shared.answerOf(6n, '2@1')).to.equal(undefined);
    shared.forTerm(5n); // an old responder made late does not take the store back
    expect(await shared.answerOf(5n, '1@1')).to.equal(undefined);
  });

  it('makes a copy of a request being served wait for its answer, or for nothing when it was left for later', async function () {
    const a = new AnsweredRequests().forTerm(1n);
    const first = a.serve(1n, '1@1');
    const copy = a.answerOf(1n, '1@1');
    first.done(reply(2));
    expect(await copy).to.deep.equal(reply(2));
    const nakked = a.serve(1n, '2@1');
    const copy2 = a.answerOf(1n, '2@1');
    nakked.done(undefined); // offered again: the copy is served
    expect(await copy2).to.equal(undefined);
    expect(await a.answerOf(1n, '2@1')).to.equal(undefined);
  });

  it('keeps the newest within the count, oldest out first', async function () {
    const a = new AnsweredRequests(2, 1_000).forTerm(1n);
    answer(a, 1n, '1@1', reply(1));
    answer(a, 1n, '2@1', reply(1));
    answer(a, 1n, '3@1', {});
    expect(a.size).to.equal(2);
    expect(await a.answerOf(1n, '1@1')).to.equal(undefined);
    expect(await a.answerOf(1n, '2@1')).to.not.equal(undefined);
    expect(await a.answerOf(1n, '3@1'), 'nothing owed is remembered too').to.deep.equal({});
  });

  it('keeps the newest within the bytes, and does not keep a reply larger than all of them', async function () {
    const a = new AnsweredRequests(100, 10).forTerm(1n);
    answer(a, 1n, '1@1', reply(4));
    answer(a, 1n, '2@1', reply(4));
    answer(a, 1n, '3@1', reply(4)); // 12 > 10: the oldest goes
    const kept = async (...ids: string[]) =>
      Promise.all(ids.map(async (id) => (await a.answerOf(1n, id)) !== undefined));
    expect(await kept('1@1', '2@1', '3@1')).to.deep.equal([false, true, true]);
    answer(a, 1n, '4@1', reply(11)); // served again if it comes back: at least once beats never
    expect(await kept('4@1', '2@1', '3@1'), 'and it pushes nothing out').to.deep.equal([false, true, true]);
  });

  it('counts a request answered twice once', function () {
    const a = new AnsweredRequests(100, 10).forTerm(1n);
    answer(a, 1n, '1@1', reply(6));
    answer(a, 1n, '1@1', reply(6));
    answer(a, 1n, '2@1', reply(4));
    expect(a.size).to.equal(2);
  });
});

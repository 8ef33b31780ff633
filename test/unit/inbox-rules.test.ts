import { expect } from 'chai';
import { nanos, type StreamInfo } from 'nats';
import { inboxRepairs } from '../../pkg/identity/inbox.js';
import { Inbox } from '../../pkg/spec/schema.js';

// What the agent may set right on an inbox stream by itself: only what the spec sets.
describe('the durable inbox: what the agent repairs', () => {
  const spec = Inbox.parse({ durable: true, replicas: 3 });
  const stream = (over: Partial<StreamInfo['config']> = {}) =>
    ({
      max_age: nanos(spec.maxAgeMs),
      max_msgs: spec.maxMessages,
      num_replicas: 3,
      ...over,
    }) as StreamInfo['config'];

  const cases: Array<[string, Partial<StreamInfo['config']>, boolean]> = [
    ['a stream as the spec says needs nothing', {}, false],
    ['a stream with fewer copies than inbox.replicas is scaled up', { num_replicas: 1 }, true],
    ['a stream with more copies is scaled down', { num_replicas: 5 }, true],
    ['a different max age is set to the spec', { max_age: nanos(1_000) }, true],
    ['a different message limit is set to the spec', { max_msgs: 7 }, true],
  ];
  for (const [name, over, repair] of cases) {
    it(name, () => expect(inboxRepairs(spec, stream(over), undefined).stream).to.equal(repair));
  }

  it('a stream that reports no replica count holds one copy', () => {
    const one = Inbox.parse({ durable: true });
    expect(inboxRepairs(one, stream({ num_replicas: 0 }), undefined).stream).to.equal(false);
  });

  it('refuses replicas outside 1..5, naming the field', () => {
    const bad = Inbox.safeParse({ replicas: 7 });
    expect(bad.success).to.equal(false);
    expect(bad.error?.issues[0]?.path).to.deep.equal(['replicas']);
  });
});

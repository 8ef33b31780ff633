// Heartbeats: the node is the one the subject names (which NATS permissions can restrict per
// agent user), never the one the body claims; silent nodes are forgotten and the number of
// nodes tracked is bounded (issue 12, point 4).
import { expect } from 'chai';
import type { NatsConnection } from 'nats';
import pino from 'pino';
import { ManualClock } from '../../pkg/clock/index.js';
import {
  AgentLink,
  FORGET_SILENT_AGENT_MS,
  MAX_TRACKED_AGENTS,
  readHeartbeat,
} from '../../pkg/controller/agents.js';
import { controlHeaders } from '../../pkg/control/signing.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';

const beat = (node: string, extra: Record<string, unknown> = {}) =>
  JSON.stringify({ v: 1, node, at: 1, fenced: false, identities: [], ...extra });
const subject = (node: string) => `understudy.agent.${node}.heartbeat`;

describe('heartbeats as the controller reads them', () => {
  const table: Array<{ case: string; subject: string; raw: string; expected: string }> = [
    { case: 'a node speaking for itself', subject: subject('a'), raw: beat('a'), expected: 'a' },
    { case: 'a body claiming another node', subject: subject('a'), raw: beat('b'), expected: 'refused' },
    {
      case: 'a subject with no valid node name',
      subject: subject('A_B'),
      raw: beat('A_B'),
      expected: 'refused',
    },
    {
      case: 'a wildcard-looking name',
      subject: 'understudy.agent.*.heartbeat',
      raw: beat('*'),
      expected: 'refused',
    },
    {
      case: 'a very long name',
      subject: subject('n'.repeat(200)),
      raw: beat('n'.repeat(200)),
      expected: 'refused',
    },
    {
      case: 'another subject altogether',
      subject: 'understudy.agent.a.control',
      raw: beat('a'),
      expected: 'refused',
    },
    { case: 'not JSON', subject: subject('a'), raw: '{', expected: 'refused' },
    {
      case: 'a version this controller does not speak',
      subject: subject('a'),
      raw: beat('a', { v: 99 }),
      expected: 'refused',
    },
    {
      case: 'a field from a newer agent',
      subject: subject('a'),
      raw: beat('a', { later: true }),
      expected: 'a',
    },
  ];
  for (const row of table) {
    it(`${row.case} → ${row.expected}`, () => {
      const v = readHeartbeat(row.subject, row.raw);
      expect(v.ok ? v.node : 'refused').to.equal(row.expected);
    });
  }

  describe('the agents tracked', () => {
    const link = (clock: ManualClock) =>
      new AgentLink(
        {} as NatsConnection,
        pino({ level: 'silent' }),
        userSigner(generateCallerKey().seed),
        undefined,
        clock,
      );

    it('are forgotten once silent for FORGET_SILENT_AGENT_MS, and kept until then', async () => {
      const clock = new ManualClock();
      const agents = link(clock);
      agents.receive(subject('a'), beat('a'));
      agents.receive(subject('b'), beat('b'));
      await clock.advance(FORGET_SILENT_AGENT_MS);
      agents.receive(subject('b'), beat('b'));
      expect([...agents.agents().keys()]).to.have.members(['a', 'b']);
      await clock.advance(1);
      agents.receive(subject('b'), beat('b'));
      expect([...agents.agents().keys()]).to.deep.equal(['b']);
    });

    it('are bounded: heartbeats of new nodes beyond MAX_TRACKED_AGENTS are ignored, known ones still heard', () => {
      const agents = link(new ManualClock());
      for (let i = 0; i < MAX_TRACKED_AGENTS; i++) agents.receive(subject(`n${i}`), beat(`n${i}`));
      agents.receive(subject('one-more'), beat('one-more'));
      expect(agents.agents().size).to.equal(MAX_TRACKED_AGENTS);
      expect(agents.agents().has('one-more')).to.equal(false);
      agents.receive(subject('n0'), beat('n0', { fenced: true }));
      expect(agents.agents().get('n0')?.heartbeat.fenced).to.equal(true);
    });

    it('remember the instance each agent announced, for signing requests to it', () => {
      const agents = link(new ManualClock());
      agents.receive(subject('a'), beat('a', { instance: 'i-1' }));
      expect(agents.instanceOf('a')).to.equal('i-1');
      expect(agents.instanceOf('b')).to.equal(undefined);
    });

    it('a request to a node not heard from yet waits for its first heartbeat, within the request time', async () => {
      const clock = new ManualClock();
      const sent: Array<string | undefined> = [];
      const nc = {
        request: async (_subject: string, _data: string, opts: { headers?: { get(n: string): string } }) => {
          sent.push(opts.headers?.get(controlHeaders.instance));
          return { string: () => JSON.stringify({ v: 2, ok: true, result: { node: 'a' } }) };
        },
      } as unknown as NatsConnection;
      const agents = new AgentLink(
        nc,
        pino({ level: 'silent' }),
        userSigner(generateCallerKey().seed),
        undefined,
        clock,
      );
      const answered = agents.status('a', 2_000);
      await clock.advance(500);
      expect(sent).to.deep.equal([]);
      agents.receive(subject('a'), beat('a', { instance: 'i-7' }));
      expect(await answered).to.deep.equal({ node: 'a' });
      expect(sent).to.deep.equal(['i-7']);

      // Nobody heard within the request's time: no request is sent unsigned, the caller is told why.
      const silent = agents.status('b', 2_000).catch((err: Error) => err);
      await clock.advance(2_000);
      expect(String(await silent)).to.match(/agent b sent no heartbeat naming its instance within 2000 ms/);
      expect(sent).to.have.length(1);
    });

    it('a drain names its target only to an agent whose heartbeat says it hands over (an older one refuses the field)', async () => {
      const bodies: Array<Record<string, unknown>> = [];
      const nc = {
        request: async (_subject: string, data: string) => {
          bodies.push(JSON.parse(data) as Record<string, unknown>);
          return { string: () => JSON.stringify({ v: 2, ok: true, result: {} }) };
        },
      } as unknown as NatsConnection;
      const agents = new AgentLink(nc, pino({ level: 'silent' }), userSigner(generateCallerKey().seed));
      agents.receive(subject('old'), beat('old', { instance: 'i-1' }));
      agents.receive(subject('new'), beat('new', { instance: 'i-2', handsOver: true }));
      const drain = { identity: 'bot', actor: 'op', holdMs: 10_000, to: 'b', workflow: 'switchover-1' };
      await agents.drain('old', '7', drain, 2_000);
      await agents.drain('new', '7', drain, 2_000);
      expect(bodies.map((b) => [b.to, b.workflow])).to.deep.equal([
        [undefined, undefined],
        ['b', 'switchover-1'],
      ]);
      expect(bodies[0]).to.not.have.property('to');
      expect(bodies[0]).to.not.have.property('workflow');
      expect(bodies.map((b) => [b.op, b.identity, b.term])).to.deep.equal([
        ['drain', 'bot', '7'],
        ['drain', 'bot', '7'],
      ]);
    });
  });
});

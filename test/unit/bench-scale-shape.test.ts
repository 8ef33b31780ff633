import { expect } from 'chai';
import { ConfigError, parseAgentConfig } from '../../pkg/config/agent.js';
import { agentsFor, hostedPerAgent, shapeProblem } from '../../bench/scale-shape.js';

// The scale bench asks the agents' own kill-budget rule before it starts anything: a shape
// the agents would refuse at start is refused as a flag, and the full profile picks a shape
// they accept.
describe('the scale bench: its shapes', () => {
  it('gives each agent the identities it leads and those it stands by for', () => {
    expect(hostedPerAgent({ agents: 10, identities: 1000 })).to.deep.equal(new Array(10).fill(200));
    // 7 over 3: agent 0 leads 0, 3, 6 and stands by for 2, 5; agent 1 leads 1, 4 and stands by for 0, 3, 6.
    expect(hostedPerAgent({ agents: 3, identities: 7 })).to.deep.equal([5, 5, 4]);
  });

  it('accepts the quick profile (1,000 on 10 agents) at T = 2, 5 and 10 s', () => {
    for (const ttl of [2, 5, 10])
      expect(shapeProblem({ agents: 10, identities: 1000 }, ttl)).to.equal(undefined);
  });

  it('refuses 10,000 identities on 10 agents at T = 5 s, in the words the agents would use', () => {
    const problem = shapeProblem({ agents: 10, identities: 10_000 }, 5);
    expect(problem).to.match(
      /^10000 identities on 10 agents at T = 5 s host up to 2000 on one agent, which the agents refuse: 2000 identities on one agent may need/,
    );
    expect(problem).to.include('more --agents, fewer --identities or a longer --ttl');
  });

  it('agrees with the agent config: a shape it accepts loads, one it refuses does not', () => {
    const config = (count: number) =>
      [
        'node: a00',
        'etcd: { endpoints: ["http://127.0.0.1:2379"] }',
        'nats: { servers: ["nats://127.0.0.1:4222"] }',
        'lease: { ttlSeconds: 5 }',
        'identities:',
        ...Array.from({ length: count }, (_, i) => `  s${i}: {}`),
      ].join('\n');
    const most = (agents: number) => Math.max(...hostedPerAgent({ agents, identities: 10_000 }));
    expect(() => parseAgentConfig(config(most(11)), 'agent.yaml')).not.to.throw();
    // Refused for the kill budget, on the identities field: not for some other fault of the text.
    let refused: unknown;
    try {
      parseAgentConfig(config(most(10)), 'agent.yaml');
    } catch (err) {
      refused = err;
    }
    expect(refused).to.be.instanceOf(ConfigError);
    const [only, ...rest] = (refused as ConfigError).problems;
    expect(rest).to.deep.equal([]);
    expect(only?.field).to.equal('identities');
    expect(only?.message).to.include('to be killed by the must-be-out instant');
  });

  it('finds the fewest agents from a floor up that accept a count at a TTL', () => {
    expect(agentsFor(10_000, 5, 10)).to.equal(11);
    expect(agentsFor(10_000, 10, 10)).to.equal(10);
    expect(agentsFor(1000, 5, 10)).to.equal(10);
    // At T = 2 s an agent may host 760: 10,000 need 27 agents.
    expect(agentsFor(10_000, 2, 10)).to.equal(27);
    expect(() => agentsFor(1_000_000, 2, 10)).to.throw(/need more than 100 agents/);
  });
});

// The agent's configuration: every problem is refused with the field and where it came from.
import { expect } from 'chai';
import { ConfigError, killBudgetProblem, parseAgentConfig } from '../../pkg/config/agent.js';

const GOOD = `node: a
etcd:
  endpoints: [http://127.0.0.1:2379]
nats:
  servers: [nats://127.0.0.1:4222]
identities:
  demo:
`;

function problems(text: string, env: NodeJS.ProcessEnv = {}) {
  try {
    parseAgentConfig(text, '/etc/understudy/agent.yaml', env);
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error('expected the config to be refused');
}

describe('agent config', () => {
  it('accepts a minimal config and fills in defaults', () => {
    const c = parseAgentConfig(GOOD, 'agent.yaml');
    expect(c.lease.ttlSeconds).to.equal(5);
    expect(c.identities).to.deep.equal({ demo: {} });
    expect(c.priority).to.equal(0);
    expect(c.history.keepPerIdentity).to.equal(2_000);
  });

  it('keeps a configured number of history entries per identity, and names a bad one', () => {
    expect(
      parseAgentConfig(`${GOOD}history: { keepPerIdentity: 50 }\n`, 'agent.yaml').history.keepPerIdentity,
    ).to.equal(50);
    const found = problems(`${GOOD}history: { keepPerIdentity: 0 }\n`);
    expect(found.map((p) => p.field)).to.deep.equal(['history.keepPerIdentity']);
  });

  it('caps per-identity metric series at 500 identities unless told otherwise, and names a bad cap', () => {
    expect(parseAgentConfig(GOOD, 'agent.yaml').metrics.identityLimit).to.equal(500);
    expect(
      parseAgentConfig(`${GOOD}metrics: { identityLimit: 0 }\n`, 'agent.yaml').metrics.identityLimit,
    ).to.equal(0);
    const found = problems(`${GOOD}metrics: { identityLimit: -1 }\n`);
    expect(found.map((p) => p.field)).to.deep.equal(['metrics.identityLimit']);
  });

  it('names the field and the line of each bad value, all at once', () => {
    const found = problems(`node: Bad Name
etcd:
  endpoints: [127.0.0.1:2379]
nats:
  servers: [nats://127.0.0.1:4222]
priority: high
identities:
  demo:
`);
    const byField = Object.fromEntries(found.map((p) => [p.field, p.source]));
    expect(byField).to.deep.equal({
      node: '/etc/understudy/agent.yaml:1',
      'etcd.endpoints.0': '/etc/understudy/agent.yaml:3',
      priority: '/etc/understudy/agent.yaml:6',
    });
  });

  it('names the environment variable when an override is bad', () => {
    const found = problems(GOOD, { UNDERSTUDY_LEASE_TTL_SECONDS: 'soon', UNDERSTUDY_NODE: 'b' });
    expect(found).to.have.length(1);
    expect(found[0]).to.include({ field: 'lease.ttlSeconds', source: 'from UNDERSTUDY_LEASE_TTL_SECONDS' });
  });

  it('lets the environment override the file', () => {
    const c = parseAgentConfig(GOOD, 'agent.yaml', {
      UNDERSTUDY_NODE: 'b',
      UNDERSTUDY_ETCD_ENDPOINTS: 'http://e1:2379, http://e2:2379',
    });
    expect(c.node).to.equal('b');
    expect(c.etcd.endpoints).to.deep.equal(['http://e1:2379', 'http://e2:2379']);
  });

  it('refuses unknown fields (a typo must not be silently ignored)', () => {
    const found = problems(`${GOOD}prority: 3\n`);
    expect(found[0]!.message).to.match(/prority/);
  });

  it('refuses lease timing that breaks the self-fence inequality, naming the field', () => {
    const found = problems(`${GOOD}lease:\n  ttlSeconds: 4\n  selfFenceMs: 3900\n`);
    expect(found[0]!.field).to.equal('lease.selfFenceMs');
    expect(found[0]!.message).to.match(/exceeds ttlSeconds/);
  });

  it("refuses a lease TTL below etcd's minimum with the schema pkg/lease declares, naming the field and line", () => {
    const found = problems(`${GOOD}lease:\n  ttlSeconds: 1\n`);
    expect(found).to.have.length(1);
    expect(found[0]).to.include({ field: 'lease.ttlSeconds', source: '/etc/understudy/agent.yaml:9' });
    expect(found[0]!.message).to.match(/at least 2 s/);
  });

  it('reports YAML syntax errors with their line', () => {
    const found = problems('node: a\netcd: [\n');
    expect(found[0]!.field).to.equal('(yaml)');
    expect(found[0]!.source).to.match(/agent\.yaml:\d+$/);
  });

  it('requires at least one identity', () => {
    const found = problems(GOOD.replace('identities:\n  demo:\n', 'identities: {}\n'));
    expect(found[0]).to.include({ field: 'identities' });
  });

  it('allows nothing by default, and runs no service as root unasked', () => {
    const c = parseAgentConfig(GOOD, 'agent.yaml');
    expect(c.allow).to.deep.equal({
      commands: [],
      modules: [],
      credentialPaths: [],
      stateDirs: [],
      unrestricted: false,
    });
    expect(c.service).to.deep.equal({ allowRoot: false });
  });

  it('accepts allow-lists of absolute paths and directories, and a service user', () => {
    const c = parseAgentConfig(
      `${GOOD}allow:\n  commands: [/usr/local/bin/ratebot, /opt/svc/bin/]\n  credentialPaths: [/etc/understudy/creds/]\nservice: { user: understudy-svc, group: '1234' }\n`,
      'agent.yaml',
    );
    expect(c.allow.commands).to.deep.equal(['/usr/local/bin/ratebot', '/opt/svc/bin/']);
    expect(c.service).to.deep.include({ user: 'understudy-svc', group: '1234' });
  });

  it('refuses allow entries an operator could misread, naming each one', () => {
    const found = problems(
      `${GOOD}allow:\n  commands: ['*', '>', '..', /usr/bin/*, /opt/app/../bin/sh, /${'a'.repeat(5000)}]\n`,
    );
    expect(found.map((p) => p.field)).to.deep.equal([0, 1, 2, 3, 4, 5].map((i) => `allow.commands.${i}`));
    expect(found[0]!.message).to.match(/not an absolute path/);
    expect(found[3]!.message).to.match(/globs are not supported/);
    expect(found[4]!.message).to.match(/not a plain path/);
    expect(found[5]!.message).to.match(/limit is 4096/);
  });

  it('refuses unrestricted beside lists, a group without a user and a bad account name', () => {
    const found = problems(
      `${GOOD}allow: { unrestricted: true, commands: [/bin/sh] }\nservice: { group: svc }\n`,
    );
    expect(found.map((p) => p.field).sort()).to.deep.equal(['allow', 'service.group']);
    expect(problems(`${GOOD}service: { user: 'Bad User;' }\n`)[0]).to.include({ field: 'service.user' });
  });
});

describe('agent config: services killed by the must-be-out instant', () => {
  // Defaults: the logout budget is 0.2 T; the kills may take all of it at 0.5 ms each, but
  // for the 20 ms the reaper's clock may be early by.
  const T5 = { ttlMs: 5_000, logoutBudgetMs: 1_000 };
  const T2 = { ttlMs: 2_000, logoutBudgetMs: 400 };
  for (const [identities, timing, ok] of [
    [1_960, T5, true],
    [1_961, T5, false],
    [760, T2, true],
    [761, T2, false],
  ] as const) {
    it(`${identities} identities at T = ${timing.ttlMs / 1000} s → ${ok ? 'accepted' : 'refused, with the numbers'}`, () => {
      const problem = killBudgetProblem(identities, timing);
      if (ok) expect(problem).to.equal(undefined);
      else
        expect(problem)
          .to.include(`${identities} identities`)
          .and.include(`${timing.logoutBudgetMs} ms logout budget`)
          .and.include('lease.ttlSeconds');
    });
  }

  it('refuses such a config, naming the identities field', () => {
    const many = Array.from({ length: 900 }, (_, i) => `  id${i}:`).join('\n');
    const found = problems(`node: a
etcd:
  endpoints: [http://127.0.0.1:2379]
nats:
  servers: [nats://127.0.0.1:4222]
lease: { ttlSeconds: 2 }
identities:
${many}
`);
    expect(found.map((p) => p.field)).to.deep.equal(['identities']);
    expect(found[0]!.message).to.match(/900 identities on one agent may need 470 ms.*at most 760 here/);
  });
});

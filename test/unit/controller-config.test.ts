// The controller's configuration: refused with the field at fault, tokens checked before start.
import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, parseControllerConfig, resolveTokens } from '../../pkg/config/controller.js';

const config = (tokens: string) => `name: ctl-1
etcd: { endpoints: [http://127.0.0.1:2379] }
nats: { servers: [nats://127.0.0.1:4222] }
http: {}
auth:
  tokens:
${tokens}
`;
const ONE = '    - { name: alice, role: admin, token: 0123456789abcdef-alice }';

function problems(fn: () => unknown) {
  try {
    fn();
  } catch (err) {
    expect(err).to.be.instanceOf(ConfigError);
    return (err as ConfigError).problems.map((p) => `${p.field}: ${p.message}`);
  }
  throw new Error('expected the config to be refused');
}

describe('controller config', () => {
  it('accepts a minimal config and fills in the defaults an operator expects', () => {
    const c = parseControllerConfig(config(ONE), 'controller.yaml');
    expect(c.http.listen).to.equal('127.0.0.1:8480');
    expect(c.switchover).to.deep.equal({
      deadlineMs: 60_000,
      drainTimeoutMs: 10_000,
      loginTimeoutMs: 20_000,
      handOver: true,
    });
    expect(c.probes).to.deep.equal({ heartbeatTimeoutMs: 6_000, failover: true, maxPingsPerSecond: 100 });
    expect(c.http.metricsIdentityLimit).to.equal(1_000);
    expect(resolveTokens(c, 'controller.yaml')).to.deep.equal([
      { name: 'alice', role: 'admin', secret: '0123456789abcdef-alice' },
    ]);
  });

  it('names the field of an unknown role, a short token, and a token given twice over', () => {
    const found = problems(() =>
      parseControllerConfig(
        config(`    - { name: bob, role: root, token: 0123456789abcdef }
    - { name: eve, role: viewer, token: short }
    - { name: mal, role: viewer, token: 0123456789abcdef, tokenFile: /x }`),
        'controller.yaml',
      ),
    );
    expect(found.some((p) => p.startsWith('auth.tokens.0.role'))).to.equal(true);
    expect(found.some((p) => p.startsWith('auth.tokens.1.token') && /16 characters/.test(p))).to.equal(true);
    expect(
      found.some((p) => p.startsWith('auth.tokens.2') && /exactly one of token and tokenFile/.test(p)),
    ).to.equal(true);
  });

  it('refuses an unreadable token file and one token shared by two actors, naming each', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'understudy-tokens-'));
    try {
      await writeFile(join(dir, 'ops'), '0123456789abcdef-shared\n');
      const c = parseControllerConfig(
        config(`    - { name: ops, role: operator, tokenFile: ${join(dir, 'ops')} }
    - { name: dev, role: viewer, token: 0123456789abcdef-shared }
    - { name: gone, role: viewer, tokenFile: ${join(dir, 'missing')} }`),
        'controller.yaml',
      );
      const found = problems(() => resolveTokens(c, 'controller.yaml'));
      expect(found.some((p) => p.startsWith('auth.tokens.2.tokenFile') && /cannot read/.test(p))).to.equal(
        true,
      );
      expect(found.some((p) => p.startsWith('auth.tokens.1') && /share one token/.test(p))).to.equal(true);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('refuses two tokens with one name: history and dashboard sessions know an actor by it', () => {
    const c = parseControllerConfig(
      config(`    - { name: ci, role: viewer, token: 0123456789abcdef-viewer }
    - { name: ci, role: operator, token: 0123456789abcdef-operator }`),
      'controller.yaml',
    );
    const found = problems(() => resolveTokens(c, 'controller.yaml'));
    expect(found.some((p) => p.startsWith('auth.tokens.1.name') && /named 'ci'/.test(p))).to.equal(true);
  });

  it('takes the connection overrides every component shares from the environment', () => {
    const c = parseControllerConfig(config(ONE), 'controller.yaml', {
      UNDERSTUDY_ETCD_ENDPOINTS: 'http://10.0.0.1:2379,http://10.0.0.2:2379',
      UNDERSTUDY_HTTP_LISTEN: '0.0.0.0:9000',
    });
    expect(c.etcd.endpoints).to.deep.equal(['http://10.0.0.1:2379', 'http://10.0.0.2:2379']);
    expect(c.http.listen).to.equal('0.0.0.0:9000');
  });
});

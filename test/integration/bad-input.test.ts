// Bad input, from every door an outsider can knock on: the controller's HTTP routes, the
// agents' control subject, an identity's request subject, and the config files. Each case
// asserts its 4xx or refusal, and that nothing in etcd changed (every key that records a
// decision: specs, credentials, pending requests, leaders and logins, fences, workflows, pauses)
// nor who is logged in (issue 12, acceptance). Names such as `*`, `>`, `..` and very long ones
// are tried wherever a name goes.
import { expect } from 'chai';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import { headers, type NatsConnection } from 'nats';
import { parseAgentConfig } from '../../pkg/config/agent.js';
import { parseControllerConfig } from '../../pkg/config/controller.js';
import { PROTOCOL_VERSION, type ControlReply } from '../../pkg/control/protocol.js';
import { controllerElectionKey } from '../../pkg/control/term.js';
import { signRequest } from '../../pkg/identity/request-signing.js';
import { headers as H, subjects } from '../../pkg/identity/wire.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';
import { readLeader } from '../../pkg/lease/index.js';
import { putSpec } from '../../pkg/spec/store.js';
import type { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import { ControlSender } from '../support/control.js';
import { Api, type ControllerProcess } from '../support/controllers.js';
import { rateBotSpec } from '../support/specs.js';

const IDENTITY = 'gate';
const LONG = 'a'.repeat(300);
/** Names an outsider might try where a name goes; `..` travels percent-encoded (fetch would resolve it). */
const BAD_NAMES: Array<[label: string, raw: string, inPath: string]> = [
  ['*', '*', '%2A'],
  ['>', '>', '%3E'],
  ['..', '..', '%2E%2E'],
  ['a 300-character name', LONG, LONG],
];

/** Keys whose change would mean a decision was taken (sessions, history and heartbeats move on their own). */
const DECISION_PREFIXES = [
  'understudy/specs/',
  'understudy/secrets/',
  'understudy/acl-pending/',
  'understudy/identities/',
  'understudy/nodes/',
  'understudy/workflows/',
  'understudy/paused/',
  'understudy/node-fences/',
];

describe('bad input is refused with a 4xx or a refusal, and changes nothing', function () {
  this.timeout(240_000);
  let cluster: IntegrationCluster;
  let client: Etcd3;
  let nc: NatsConnection;
  let agent: AgentProcess;
  let controller: ControllerProcess;
  let asController: ControlSender;
  let term: string;

  /** Every decision key with its mod revision, and who is logged in under which term. */
  async function state(): Promise<string> {
    const rows: string[] = [];
    for (const prefix of DECISION_PREFIXES) {
      const res = await client.getAll().prefix(prefix).exec();
      for (const kv of res.kvs) rows.push(`${kv.key.toString()}@${kv.mod_revision}`);
    }
    const leader = await readLeader(client, IDENTITY);
    rows.push(`leader ${leader?.record.node} ${leader?.token} ${leader?.login?.loggedIn}`);
    return rows.sort().join('\n');
  }

  before(async () => {
    cluster = await IntegrationCluster.start({ connect: true });
    ({ client, nc } = cluster);
    await putSpec(client, rateBotSpec(IDENTITY, { access: { open: false } }));
    const keyDir = await mkdtemp(join(tmpdir(), 'bad-input-'));
    const controllerKey = generateCallerKey();
    await writeFile(join(keyDir, 'controller.seed'), controllerKey.seed, { mode: 0o600 });
    agent = await cluster.startAgent({ node: 'a', identities: { [IDENTITY]: null } });
    controller = await cluster.startController({
      name: 'c1',
      extra: { keyFile: join(keyDir, 'controller.seed') },
    });
    term = (await controller.waitForActive()).token!;
    await agent.waitForState(IDENTITY, 'leader');
    expect(String((await client.get(controllerElectionKey()).exec()).kvs[0]?.mod_revision)).to.equal(term);
    asController = new ControlSender(nc, userSigner(controllerKey.seed));
  });

  after(async () => {
    asController?.stop();
    await cluster?.close();
  });

  interface Case {
    name: string;
    /** Returns what was observed: `<status> <code>` for HTTP, the refusal code otherwise. */
    run(): Promise<string>;
    expected: RegExp;
  }

  // --- HTTP routes ----------------------------------------------------------------------------
  const http =
    (
      role: 'viewer' | 'operator' | 'admin' | 'none',
      method: string,
      path: string,
      body?: unknown,
      raw?: string,
    ) =>
    async () => {
      const api = role === 'none' ? new Api(controller.url, undefined) : controller.api(role);
      const res = await api.call<{ code?: string }>(method, path, body, raw);
      return `${res.status} ${res.body?.code ?? ''}`;
    };
  const httpCases: Case[] = [
    ...BAD_NAMES.flatMap(([label, , inPath]): Case[] => [
      {
        name: `GET an identity named ${label}`,
        run: http('viewer', 'GET', `/v1/identities/${inPath}`),
        expected: /^40[04] /,
      },
      {
        name: `switch over an identity named ${label}`,
        run: http('operator', 'POST', `/v1/identities/${inPath}/switchover`, { to: 'a' }),
        expected: /^40[04] /,
      },
      {
        name: `delete an identity named ${label}`,
        run: http('admin', 'DELETE', `/v1/identities/${inPath}`),
        expected: /^40[04] /,
      },
      {
        name: `fence a node named ${label}`,
        run: http('operator', 'POST', `/v1/nodes/${inPath}/fence`, { reason: 'bad input test' }),
        expected: /^40[04] /,
      },
      {
        name: `switch over to a node named ${label}`,
        run: http('operator', 'POST', `/v1/identities/${IDENTITY}/switchover`, {
          to: BAD_NAMES.find((n) => n[0] === label)![1],
        }),
        expected: /^400 bad-request$/,
      },
    ]),
    {
      name: 'apply a spec named *',
      run: http('admin', 'POST', '/v1/apply', { specs: [rateBotSpec('*')] }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'apply a spec named ..',
      run: http('admin', 'POST', '/v1/apply', { specs: [rateBotSpec('..')] }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'apply a spec with an empty command',
      run: http('admin', 'POST', '/v1/apply', {
        specs: [{ name: IDENTITY, service: { driver: 'process', command: [] } }],
      }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'pause with a 10,000-character reason',
      run: http('operator', 'POST', `/v1/identities/${IDENTITY}/pause`, { reason: 'x'.repeat(10_000) }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'a body that is not JSON',
      run: http('operator', 'POST', `/v1/identities/${IDENTITY}/switchover`, undefined, '{'),
      expected: /^400 bad-request$/,
    },
    {
      name: 'an unknown field in a body',
      run: http('operator', 'POST', `/v1/identities/${IDENTITY}/switchover`, { to: 'a', sneaky: 1 }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'an access-list change naming a caller >',
      run: http('admin', 'POST', `/v1/identities/${IDENTITY}/acl`, {
        op: 'add',
        list: 'authorized',
        caller: { name: '>', nkey: generateCallerKey().publicKey },
      }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'an access-list change with a key that is not an nkey',
      run: http('admin', 'POST', `/v1/identities/${IDENTITY}/acl`, {
        op: 'add',
        list: 'authorized',
        caller: { name: 'eve', nkey: 'U123' },
      }),
      expected: /^400 bad-request$/,
    },
    {
      name: 'approve a pending caller named *',
      run: http('admin', 'POST', `/v1/identities/${IDENTITY}/acl/pending/%2A/approve`),
      expected: /^40[04] /,
    },
    {
      name: 'history with limit -1',
      run: http('viewer', 'GET', `/v1/identities/${IDENTITY}/history?limit=-1`),
      expected: /^400 bad-request$/,
    },
    {
      name: 'no token',
      run: http('none', 'POST', `/v1/identities/${IDENTITY}/pause`, { reason: 'x' }),
      expected: /^401 unauthorized$/,
    },
    {
      name: 'a viewer switching over',
      run: http('viewer', 'POST', `/v1/identities/${IDENTITY}/switchover`, { to: 'a' }),
      expected: /^403 forbidden$/,
    },
    {
      name: 'an operator storing a credential',
      run: http('operator', 'PUT', `/v1/identities/${IDENTITY}/credential`, { value: 'c2VjcmV0' }),
      expected: /^403 forbidden$/,
    },
    {
      name: 'an agent view of a node named *',
      run: http('viewer', 'GET', '/v1/nodes/%2A/agent'),
      expected: /^40[04] /,
    },
  ];

  // --- control messages -------------------------------------------------------------------------
  // Bodies are made when the case runs: the controller's term is known only then.
  const control =
    (body: () => Record<string, unknown>, signed = true) =>
    async () => {
      const reply: ControlReply = signed
        ? await asController.send('a', body())
        : (JSON.parse(
            (await nc.request(subjects.control('a'), JSON.stringify(body()), { timeout: 5_000 })).string(),
          ) as ControlReply);
      return reply.ok ? 'ok' : reply.error.code;
    };
  const drain =
    (identity: string, more: Record<string, unknown> = {}) =>
    () => ({
      v: PROTOCOL_VERSION,
      op: 'drain',
      identity,
      actor: 'tester',
      holdMs: 20_000,
      term,
      ...more,
    });
  const op =
    (name: string, more: Record<string, unknown> = {}) =>
    () => ({
      v: PROTOCOL_VERSION,
      op: name,
      actor: 'tester',
      term,
      ...more,
    });
  const controlCases: Case[] = [
    { name: "mallory's unsigned drain", run: control(drain(IDENTITY), false), expected: /^unauthenticated$/ },
    {
      name: 'an unsigned fence',
      run: control(op('fence', { reason: 'r' }), false),
      expected: /^unauthenticated$/,
    },
    { name: 'an unsigned unfence', run: control(op('unfence'), false), expected: /^unauthenticated$/ },
    ...BAD_NAMES.map(([label, raw]): Case => ({
      name: `a signed drain of an identity named ${label}`,
      run: control(drain(raw)),
      expected: /^bad-request$/,
    })),
    {
      name: 'a signed drain held for a day',
      run: control(drain(IDENTITY, { holdMs: 86_400_000 })),
      expected: /^bad-request$/,
    },
    {
      name: 'a signed fence without a reason',
      run: control(op('fence', { reason: '' })),
      expected: /^bad-request$/,
    },
    { name: 'a signed unknown operation', run: control(op('explode')), expected: /^bad-request$/ },
    {
      name: 'a signed drain under term 0',
      run: control(drain(IDENTITY, { term: '0' })),
      expected: /^bad-request$/,
    },
    {
      name: 'a signed drain under a term that never was',
      run: control(drain(IDENTITY, { term: '999999999' })),
      expected: /^stale-controller$/,
    },
  ];

  // --- identity requests ----------------------------------------------------------------------
  const ask = async (body: string, hdrs: Record<string, string> = {}) => {
    const h = headers();
    for (const [k, v] of Object.entries(hdrs)) h.set(k, v);
    const msg = await nc.request(subjects.identity(IDENTITY), body, { timeout: 5_000, headers: h });
    return msg.headers?.get(H.error) || 'answered';
  };
  const eve = { name: 'eve', ...generateCallerKey() };
  const signedAs = (body: string, change: Record<string, string>) => () =>
    ask(body, { ...signRequest({ identity: IDENTITY, caller: eve.name, seed: eve.seed, body }), ...change });
  const identityCases: Case[] = [
    {
      name: 'a request over 64 KiB',
      run: () => ask(`RATE ${'X'.repeat(70_000)}`),
      expected: /^bad-request$/,
    },
    { name: 'STATUS from a stranger', run: () => ask('STATUS'), expected: /^not-a-contact$/ },
    {
      name: 'a service command from an unsigned caller of a closed identity',
      run: () => ask('RATE USD'),
      expected: /^not-authorized$/,
    },
    {
      name: 'a signed request whose caller is renamed *',
      run: signedAs('RATE USD', { [H.caller]: '*' }),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signed request whose caller is renamed ..',
      run: signedAs('RATE USD', { [H.caller]: '..' }),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signed request with a 300-character caller',
      run: signedAs('RATE USD', { [H.caller]: LONG }),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signed request whose time is >',
      run: signedAs('RATE USD', { [H.time]: '>' }),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signed request whose nonce is ..',
      run: signedAs('RATE USD', { [H.nonce]: '..' }),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signed request with a key that is not an nkey',
      run: signedAs('RATE USD', { [H.key]: `U${'A'.repeat(55)}` }),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signature over another body',
      run: () =>
        ask(
          'RATE USD',
          signRequest({ identity: IDENTITY, caller: eve.name, seed: eve.seed, body: 'RATE GBP' }),
        ),
      expected: /^unauthenticated$/,
    },
    {
      name: 'a signature made for another identity',
      run: () =>
        ask(
          'RATE USD',
          signRequest({ identity: 'other', caller: eve.name, seed: eve.seed, body: 'RATE USD' }),
        ),
      expected: /^unauthenticated$/,
    },
  ];

  // --- config values ----------------------------------------------------------------------------
  const agentConfig = (node: string, extra = '') =>
    `node: ${JSON.stringify(node)}\netcd: { endpoints: ["http://127.0.0.1:2379"] }\nnats: { servers: ["nats://127.0.0.1:4222"] }\nlease: { ttlSeconds: 5 }\nidentities: { demo: }\n${extra}`;
  const refusedField = (parse: () => unknown) => async () => {
    try {
      parse();
      return 'accepted';
    } catch (err) {
      const problems = (err as { problems?: Array<{ field: string }> }).problems;
      return problems
        ? `refused ${problems.map((p) => p.field).join(',')}`
        : `threw ${(err as Error).message}`;
    }
  };
  const configCases: Case[] = [
    ...BAD_NAMES.map(([label, raw]): Case => ({
      name: `an agent named ${label}`,
      run: refusedField(() => parseAgentConfig(agentConfig(raw), 'agent.yaml')),
      expected: /^refused node$/,
    })),
    {
      name: 'an agent hosting an identity named *',
      run: refusedField(() =>
        parseAgentConfig(
          agentConfig('a').replace('identities: { demo: }', 'identities: { "*": }'),
          'agent.yaml',
        ),
      ),
      expected: /^refused identities/,
    },
    {
      name: 'an agent whose NATS server is >',
      run: refusedField(() =>
        parseAgentConfig(agentConfig('a').replace('nats://127.0.0.1:4222', '>'), 'agent.yaml'),
      ),
      expected: /^refused nats\.servers\.0$/,
    },
    {
      name: 'a controller named ..',
      run: refusedField(() =>
        parseControllerConfig(
          'name: ".."\netcd: { endpoints: ["http://127.0.0.1:2379"] }\nnats: { servers: ["nats://127.0.0.1:4222"] }\nhttp: {}\nauth: { tokens: [{ name: a, role: admin, token: "0123456789abcdef0123" }] }\n',
          'controller.yaml',
        ),
      ),
      expected: /^refused name$/,
    },
    {
      name: 'a controller listening on *',
      run: refusedField(() =>
        parseControllerConfig(
          'name: c1\netcd: { endpoints: ["http://127.0.0.1:2379"] }\nnats: { servers: ["nats://127.0.0.1:4222"] }\nhttp: { listen: "*" }\nauth: { tokens: [{ name: a, role: admin, token: "0123456789abcdef0123" }] }\n',
          'controller.yaml',
        ),
      ),
      expected: /^refused http\.listen$/,
    },
  ];

  for (const [area, cases] of [
    ['HTTP', httpCases],
    ['control', controlCases],
    ['identity request', identityCases],
    ['config', configCases],
  ] as const) {
    describe(area, () => {
      for (const c of cases) {
        it(`${c.name} → ${c.expected.source}`, async () => {
          const before = await state();
          expect(await c.run()).to.match(c.expected);
          expect(await state(), 'state after the bad input').to.equal(before);
        });
      }
    });
  }

  it('has at least 40 cases over the four doors', () => {
    const total = httpCases.length + controlCases.length + identityCases.length + configCases.length;
    expect(total).to.be.at.least(40);
  });
});

import { Writable } from 'node:stream';
import { expect } from 'chai';
import type { Hono } from 'hono';
import { ApiError, ROUTES, type ApiEvent, type IdentityView, type Workflow } from '../../pkg/api/schema.js';
import type { ResolvedToken } from '../../pkg/config/controller.js';
import { createApp, MAX_BODY_BYTES, serveHttp, SSE_MAX_QUEUED } from '../../pkg/http/index.js';
import { openApiDocument, openApiPath } from '../../pkg/api/openapi.js';
import { createLogger } from '../../pkg/log/index.js';
import { FakeApi, identityView, NODE, NOW, workflow } from '../support/fake-controller-api.js';

const TOKENS: ResolvedToken[] = [
  { name: 'vera', role: 'viewer', secret: 'viewer-secret-0123456789' },
  { name: 'otto', role: 'operator', secret: 'operator-secret-0123456789' },
  { name: 'ada', role: 'admin', secret: 'admin-secret-0123456789' },
];
const VIEWER = TOKENS[0]!.secret;
const OPERATOR = TOKENS[1]!.secret;
const ADMIN = TOKENS[2]!.secret;

/** Log records written by the app, parsed. */
class LogCapture extends Writable {
  lines: string[] = [];
  override _write(chunk: Buffer, _enc: string, done: () => void): void {
    this.lines.push(...chunk.toString().split('\n').filter(Boolean));
    done();
  }
  records(): Record<string, unknown>[] {
    return this.lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  }
}

interface Problem {
  status: number;
  code: string;
  detail: string;
  field?: string;
  active?: { name: string; url?: string };
}

describe('controller HTTP API (pkg/http)', function () {
  let api: FakeApi;
  let logs: LogCapture;
  let app: Hono;

  beforeEach(function () {
    api = new FakeApi();
    logs = new LogCapture();
    const logger = createLogger({ name: 'test', level: 'debug', destination: logs });
    app = createApp({ api, tokens: TOKENS, logger });
  });

  function send(
    method: string,
    path: string,
    opts: { token?: string; body?: unknown; raw?: string } = {},
  ): Promise<Response> {
    const headers: Record<string, string> = { 'content-type': 'application/json' };
    if (opts.token) headers.authorization = `Bearer ${opts.token}`;
    const body = opts.raw ?? (opts.body === undefined ? undefined : JSON.stringify(opts.body));
    return Promise.resolve(app.request(path, { method, headers, body }));
  }

  async function problemOf(res: Response): Promise<Problem> {
    expect(res.headers.get('content-type')).to.equal('application/problem+json');
    return (await res.json()) as Problem;
  }

  describe('authentication and roles', function () {
    it('answers 401 with a Bearer challenge when no token is sent', async function () {
      const res = await send('GET', '/v1/identities');
      expect(res.status).to.equal(401);
      expect(res.headers.get('www-authenticate')).to.match(/^Bearer/);
      const problem = await problemOf(res);
      expect(problem.code).to.equal('unauthorized');
      expect(problem.detail).to.match(/Authorization: Bearer/);
      expect(api.calls).to.deep.equal([]);
    });

    it('answers 401 invalid_token for a token it does not know', async function () {
      const res = await send('GET', '/v1/identities', { token: 'not-a-configured-token' });
      expect(res.status).to.equal(401);
      expect(res.headers.get('www-authenticate')).to.match(/^Bearer.*invalid_token/);
      expect(api.calls).to.deep.equal([]);
    });

    it('answers 403 to a viewer asking for a switchover, naming the role needed and the role held', async function () {
      const res = await send('POST', '/v1/identities/msggateway/switchover', { token: VIEWER, body: {} });
      expect(res.status).to.equal(403);
      const problem = await problemOf(res);
      expect(problem.code).to.equal('forbidden');
      expect(problem.detail)
        .to.match(/needs role operator/)
        .and.match(/has role viewer/);
      expect(api.calls).to.deep.equal([]);
    });

    it('answers 403 to an operator applying specs (admin only)', async function () {
      const res = await send('POST', '/v1/apply', { token: OPERATOR, body: { specs: [{ name: 'x' }] } });
      expect(res.status).to.equal(403);
      expect((await problemOf(res)).detail)
        .to.match(/needs role admin/)
        .and.match(/has role operator/);
    });

    it('lets a higher role do what a lower one may (admin reads)', async function () {
      const res = await send('GET', '/v1/identities', { token: ADMIN });
      expect(res.status).to.equal(200);
    });

    it('passes the token name to the core as the actor', async function () {
      const res = await send('POST', '/v1/identities/msggateway/switchover', {
        token: OPERATOR,
        body: { to: 'node-b' },
      });
      expect(res.status).to.equal(202);
      expect(api.callsTo('switchover')[0]!.args).to.deep.equal(['msggateway', { to: 'node-b' }, 'otto']);
    });

    it('serves /healthz, /readyz, /metrics and /openapi.json without a token', async function () {
      for (const path of ['/healthz', '/readyz', '/metrics', '/openapi.json']) {
        expect((await send('GET', path)).status, path).to.equal(200);
      }
    });
  });

  describe('validation (nothing reaches the core until the request is valid)', function () {
    it('answers 400 field (body) to malformed JSON', async function () {
      const res = await send('POST', '/v1/identities/msggateway/switchover', {
        token: OPERATOR,
        raw: '{"to": ',
      });
      expect(res.status).to.equal(400);
      const problem = await problemOf(res);
      expect(problem.field).to.equal('(body)');
      expect(problem.detail).to.match(/not valid JSON/);
      expect(api.calls).to.deep.equal([]);
    });

    it('names an unknown field in a strict body', async function () {
      const res = await send('POST', '/v1/identities/msggateway/switchover', {
        token: OPERATOR,
        body: { target: 'node-b' },
      });
      expect(res.status).to.equal(400);
      const problem = await problemOf(res);
      expect(problem.field).to.equal('target');
      expect(problem.detail)
        .to.match(/target: unknown field/)
        .and.match(/allowed: to, at, deadlineMs, reason/);
      expect(api.calls).to.deep.equal([]);
    });

    it('names the field of an out-of-range value and lists every issue', async function () {
      const res = await send('POST', '/v1/identities/msggateway/switchover', {
        token: OPERATOR,
        body: { deadlineMs: 5, reason: '' },
      });
      expect(res.status).to.equal(400);
      const problem = await problemOf(res);
      expect(problem.field).to.equal('deadlineMs');
      expect(problem.detail)
        .to.match(/deadlineMs: /)
        .and.match(/reason: /);
      expect(api.calls).to.deep.equal([]);
    });

    it('answers 400 path.identity to a name that cannot be an identity', async function () {
      const res = await send('GET', '/v1/identities/Not%20A%20Name', { token: VIEWER });
      expect(res.status).to.equal(400);
      const problem = await problemOf(res);
      expect(problem.field).to.equal('path.identity');
      expect(problem.detail).to.match(/lowercase/);
      expect(api.calls).to.deep.equal([]);
    });

    it('answers 400 query.limit to a history limit out of range', async function () {
      const res = await send('GET', '/v1/identities/msggateway/history?limit=0', { token: VIEWER });
      expect(res.status).to.equal(400);
      expect((await problemOf(res)).field).to.equal('query.limit');
      expect(api.calls).to.deep.equal([]);
    });

    it('passes the history query with its defaults applied', async function () {
      const res = await send('GET', '/v1/history', { token: VIEWER });
      expect(res.status).to.equal(200);
      expect(api.callsTo('history')[0]!.args).to.deep.equal([undefined, { limit: 100 }]);
    });

    it('takes an empty body where every field is optional, and applies defaults', async function () {
      expect((await send('POST', '/v1/identities/msggateway/pause', { token: OPERATOR })).status).to.equal(
        200,
      );
      const deny = await send('POST', '/v1/identities/msggateway/acl/pending/bob/deny', { token: OPERATOR });
      expect(deny.status).to.equal(200);
      expect(api.callsTo('deny')[0]!.args).to.deep.equal(['msggateway', 'bob', { block: false }, 'otto']);
    });

    it('answers 400 (body) when a required body is missing, saying what it needs', async function () {
      const res = await send('POST', '/v1/nodes/node-a/fence', { token: OPERATOR });
      expect(res.status).to.equal(400);
      const problem = await problemOf(res);
      expect(problem.field).to.equal('(body)');
      expect(problem.detail).to.match(/reason/);
    });

    it('resume and unfence take no body, {} or a reason for the history, and refuse anything else', async function () {
      expect((await send('POST', '/v1/identities/msggateway/resume', { token: OPERATOR })).status).to.equal(
        200,
      );
      const empty = await send('POST', '/v1/nodes/node-a/unfence', { token: OPERATOR, body: {} });
      expect(empty.status).to.equal(200);
      const extra = await send('POST', '/v1/nodes/node-a/unfence', {
        token: OPERATOR,
        body: { force: true },
      });
      expect(extra.status).to.equal(400);
      expect((await problemOf(extra)).field).to.equal('force');
      const why = await send('POST', '/v1/nodes/node-a/unfence', {
        token: OPERATOR,
        body: { reason: 'fixed' },
      });
      expect(why.status).to.equal(200);
      expect(api.callsTo('unfenceNode').map((c) => c.args)).to.deep.equal([
        ['node-a', {}, 'otto'],
        ['node-a', { reason: 'fixed' }, 'otto'],
      ]);
      expect(api.callsTo('resume')[0]!.args).to.deep.equal(['msggateway', {}, 'otto']);
    });

    it('answers 413 to a body over 1 MiB', async function () {
      const res = await send('POST', '/v1/apply', { token: ADMIN, raw: 'x'.repeat(MAX_BODY_BYTES + 1) });
      expect(res.status).to.equal(413);
      const problem = await problemOf(res);
      expect(problem.code).to.equal('payload-too-large');
      expect(problem.detail).to.match(/larger than/);
      expect(api.calls).to.deep.equal([]);
    });

    it('answers 415 to a body that is not JSON by its Content-Type, and reads JSON and +json bodies', async function () {
      const body = JSON.stringify({ reason: 'kernel upgrade' });
      const post = (contentType?: string) =>
        Promise.resolve(
          app.request('/v1/identities/msggateway/pause', {
            method: 'POST',
            headers: {
              authorization: `Bearer ${OPERATOR}`,
              ...(contentType ? { 'content-type': contentType } : {}),
            },
            body,
          }),
        );
      for (const type of ['application/x-www-form-urlencoded', 'text/plain']) {
        const res = await post(type);
        expect(res.status, type).to.equal(415);
        const problem = await problemOf(res);
        expect(problem.code).to.equal('unsupported-media-type');
        expect(problem.detail).to.include(type).and.include('application/json');
      }
      expect(api.calls).to.deep.equal([]);
      for (const type of ['application/json; charset=utf-8', 'application/merge-patch+json']) {
        expect((await post(type)).status, type).to.equal(200);
      }
      expect(api.calls).to.have.length(2);
    });
  });

  describe('PUT /v1/identities/:identity', function () {
    it('takes the name from the path when the spec has none and returns the single result', async function () {
      const res = await send('PUT', '/v1/identities/msggateway', {
        token: ADMIN,
        body: { service: { driver: 'nats-service', handler: 'ratebot' } },
      });
      expect(res.status).to.equal(200);
      expect(await res.json()).to.deep.equal({ identity: 'msggateway', action: 'created', revision: '8' });
      const [body, actor] = api.callsTo('apply')[0]!.args as [
        { specs: { name: string }[]; dryRun: boolean },
        string,
      ];
      expect(body.specs).to.have.length(1);
      expect(body.specs[0]!.name).to.equal('msggateway');
      expect(body.dryRun).to.equal(false);
      expect(actor).to.equal('ada');
    });

    it('answers 400 field name when the spec names another identity', async function () {
      const res = await send('PUT', '/v1/identities/msggateway', { token: ADMIN, body: { name: 'other' } });
      expect(res.status).to.equal(400);
      const problem = await problemOf(res);
      expect(problem.field).to.equal('name');
      expect(problem.detail)
        .to.match(/other/)
        .and.match(/msggateway/);
      expect(api.calls).to.deep.equal([]);
    });
  });

  describe('answers', function () {
    it('returns 202 with the workflow for switchover, failover and fence', async function () {
      const switchover = await send('POST', '/v1/identities/msggateway/switchover', {
        token: OPERATOR,
        body: {},
      });
      expect(switchover.status).to.equal(202);
      expect(((await switchover.json()) as Workflow).id).to.equal('wf-1');
      const failover = await send('POST', '/v1/identities/msggateway/failover', {
        token: OPERATOR,
        body: { to: 'node-b' },
      });
      expect(failover.status).to.equal(202);
      const fence = await send('POST', '/v1/nodes/node-a/fence', {
        token: OPERATOR,
        body: { reason: 'disk swap' },
      });
      expect(fence.status).to.equal(202);
    });

    it('returns 204 with no body when an identity is deleted', async function () {
      const res = await send('DELETE', '/v1/identities/msggateway', { token: ADMIN });
      expect(res.status).to.equal(204);
      expect(await res.text()).to.equal('');
      expect(api.callsTo('deleteIdentity')[0]!.args).to.deep.equal(['msggateway', 'ada']);
    });

    it('wraps lists in a named field', async function () {
      const res = await send('GET', '/v1/identities', { token: VIEWER });
      expect(((await res.json()) as { identities: IdentityView[] }).identities[0]!.identity).to.equal(
        'msggateway',
      );
    });

    it('passes the list query to the core parsed, and refuses a bad one naming the field', async function () {
      const ok = await send(
        'GET',
        '/v1/identities?limit=20&after=bot-0100&health=down,degraded&leader=node-a',
        {
          token: VIEWER,
        },
      );
      expect(ok.status).to.equal(200);
      expect(api.callsTo('listIdentities').at(-1)!.args).to.deep.equal([
        { limit: 20, after: 'bot-0100', health: ['down', 'degraded'], leader: 'node-a' },
      ]);
      const calls = api.callsTo('listIdentities').length;
      for (const [query, field] of [
        ['limit=0', 'limit'],
        ['limit=99999', 'limit'],
        ['health=fine', 'health'],
        ['colour=red', 'colour'],
      ] as const) {
        const res = await send('GET', `/v1/identities?${query}`, { token: VIEWER });
        expect(res.status, query).to.equal(400);
        expect(JSON.stringify(await res.json()), query).to.include(field);
      }
      expect(api.callsTo('listIdentities')).to.have.length(calls);
    });

    it('turns the core’s not-found into 404 problem+json carrying its detail', async function () {
      api.failWith = new ApiError('not-found', "no identity 'nope': list them with GET /v1/identities");
      const res = await send('GET', '/v1/identities/nope', { token: VIEWER });
      expect(res.status).to.equal(404);
      const problem = await problemOf(res);
      expect(problem.code).to.equal('not-found');
      expect(problem.detail).to.match(/no identity 'nope'/);
    });

    it('turns the core’s conflict into 409', async function () {
      api.failWith = new ApiError('conflict', 'a switchover of msggateway is already running');
      const res = await send('POST', '/v1/identities/msggateway/switchover', { token: OPERATOR, body: {} });
      expect(res.status).to.equal(409);
      expect((await problemOf(res)).code).to.equal('conflict');
    });

    it('turns not-active into 503 naming the active controller', async function () {
      const active = { name: 'ctl-b', url: 'https://ctl-b:8480' };
      api.failWith = new ApiError('not-active', 'this controller is a standby', undefined, active);
      const res = await send('POST', '/v1/identities/msggateway/pause', { token: OPERATOR, body: {} });
      expect(res.status).to.equal(503);
      const problem = await problemOf(res);
      expect(problem.code).to.equal('not-active');
      expect(problem.active).to.deep.equal(active);
    });

    it('turns any other error into 500 internal without a stack, and logs it', async function () {
      api.failWith = new Error('etcd request timed out');
      const res = await send('GET', '/v1/nodes', { token: VIEWER });
      expect(res.status).to.equal(500);
      const problem = await problemOf(res);
      expect(problem.code).to.equal('internal');
      expect(problem.detail)
        .to.match(/GET \/v1\/nodes/)
        .and.match(/etcd request timed out/);
      expect(problem.detail).not.to.match(/\bat .*\.ts:\d+/);
      expect(logs.records().some((r) => r.level === 'error')).to.equal(true);
    });

    it('answers /readyz 503 with the problems when not ready', async function () {
      api.ready = { ready: false, problems: ['etcd does not answer'] };
      const res = await send('GET', '/readyz');
      expect(res.status).to.equal(503);
      expect(await res.json()).to.deep.equal({ ready: false, problems: ['etcd does not answer'] });
    });

    it('serves metrics with the core’s content type', async function () {
      const res = await send('GET', '/metrics');
      expect(res.headers.get('content-type')).to.equal('text/plain; version=0.0.4');
      expect(await res.text()).to.equal('up 1\n');
    });

    it('answers 404 problem to an unknown route and 405 with Allow to a wrong method', async function () {
      const unknown = await send('GET', '/v1/nothing-here', { token: VIEWER });
      expect(unknown.status).to.equal(404);
      expect((await problemOf(unknown)).detail).to.match(/openapi\.json/);
      const wrong = await send('PATCH', '/v1/identities/msggateway', { token: ADMIN });
      expect(wrong.status).to.equal(405);
      expect(wrong.headers.get('allow')).to.include('PUT').and.include('DELETE');
      expect((await problemOf(wrong)).code).to.equal('method-not-allowed');
    });
  });

  describe('logging', function () {
    it('logs writes at info with method, path, actor, status and duration, and never the token', async function () {
      await send('POST', '/v1/identities/msggateway/resume', { token: OPERATOR });
      const record = logs.records().find((r) => r.msg === 'http request' && r.method === 'POST');
      expect(record).to.include({
        level: 'info',
        path: '/v1/identities/msggateway/resume',
        actor: 'otto',
        status: 200,
      });
      expect(record!.durationMs).to.be.a('number');
      expect(logs.lines.join('\n')).not.to.include(OPERATOR);
    });

    it('logs reads at debug', async function () {
      await send('GET', '/v1/nodes', { token: VIEWER });
      const record = logs.records().find((r) => r.msg === 'http request');
      expect(record).to.include({ level: 'debug', method: 'GET', actor: 'vera' });
    });
  });

  describe('GET /v1/events (server-sent events)', function () {
    const decoder = new TextDecoder();

    async function openStream(query = ''): Promise<ReadableStreamDefaultReader<Uint8Array>> {
      const res = await send('GET', `/v1/events${query}`, { token: VIEWER });
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.match(/^text\/event-stream/);
      return res.body!.getReader();
    }

    async function nextChunk(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
      const { value } = await reader.read();
      return decoder.decode(value);
    }

    const workflowEvent = (identity: string): ApiEvent => ({
      type: 'workflow',
      at: NOW,
      workflow: workflow(identity),
    });

    it('delivers a published event as event/data/id and unsubscribes when the client goes away', async function () {
      const reader = await openStream();
      expect(api.listeners.size).to.equal(1);
      api.publish(workflowEvent('msggateway'));
      const chunk = await nextChunk(reader);
      expect(chunk)
        .to.match(/^event: workflow\n/m)
        .and.match(/^id: 1$/m);
      const data = /^data: (.*)$/m.exec(chunk)![1]!;
      expect((JSON.parse(data) as { workflow: Workflow }).workflow.identity).to.equal('msggateway');
      await reader.cancel();
      await new Promise((resolve) => setImmediate(resolve));
      expect(api.listeners.size).to.equal(0);
    });

    it('with ?identity= passes only events about that identity', async function () {
      const reader = await openStream('?identity=msggateway');
      api.publish(workflowEvent('other'));
      api.publish({ type: 'node', at: NOW, node: NODE });
      api.publish({ type: 'alarm', at: NOW, alarm: 'split-brain', identity: 'other', message: 'two' });
      api.publish({ type: 'identity', at: NOW, identity: identityView('msggateway') });
      const chunk = await nextChunk(reader);
      expect(chunk)
        .to.match(/^event: identity\n/)
        .and.match(/^id: 1$/m);
      await reader.cancel();
    });

    it('cuts off a client that stops reading instead of queueing events without bound', async function () {
      const reader = await openStream();
      for (let i = 0; i <= SSE_MAX_QUEUED + 1; i++) api.publish(workflowEvent('msggateway'));
      await new Promise((resolve) => setImmediate(resolve));
      expect(api.listeners.size).to.equal(0);
      await reader.cancel();
    });

    it('answers 400 query.identity to a bad filter', async function () {
      const res = await send('GET', '/v1/events?identity=BAD!', { token: VIEWER });
      expect(res.status).to.equal(400);
      expect((await problemOf(res)).field).to.equal('query.identity');
      expect(api.listeners.size).to.equal(0);
    });
  });

  describe('GET /openapi.json', function () {
    it('documents every route of the route table with its role', async function () {
      const res = await send('GET', '/openapi.json');
      const doc = (await res.json()) as {
        openapi: string;
        info: { version: string };
        paths: Record<string, Record<string, { 'x-understudy-role': string }>>;
      };
      expect(doc.openapi).to.match(/^3\.1/);
      expect(doc.info.version).to.equal('1.2.3');
      for (const route of ROUTES) {
        const op = doc.paths[openApiPath(route.path)]?.[route.method];
        expect(op, `${route.method} ${route.path}`).not.to.equal(undefined);
        expect(op!['x-understudy-role']).to.equal(route.role);
      }
    });

    it('is generated without error for every schema, with unique operation ids and declared path params', function () {
      const doc = openApiDocument() as {
        paths: Record<
          string,
          Record<string, { operationId: string; parameters?: { name: string; in: string }[] }>
        >;
      };
      const ids = Object.values(doc.paths).flatMap((item) => Object.values(item).map((op) => op.operationId));
      expect(new Set(ids).size).to.equal(ROUTES.length);
      const deny = doc.paths['/v1/identities/{identity}/acl/pending/{caller}/deny']!.post!;
      const pathParams = deny.parameters!.filter((p) => p.in === 'path').map((p) => p.name);
      expect(pathParams).to.deep.equal(['identity', 'caller']);
    });
  });

  describe('credentials and secrets (issue 12)', function () {
    it('shows a viewer the names of service.env but not the values; operators see them', async function () {
      const asViewer = (await (await send('GET', '/v1/identities/gw/spec', { token: VIEWER })).json()) as {
        spec: { service: { env: Record<string, string> } };
      };
      expect(asViewer.spec.service.env).to.deep.equal({ DB_PASSWORD: '[redacted]', MODE: '[redacted]' });
      expect(JSON.stringify(asViewer)).to.not.include('p4ss-w0rd');
      const asOperator = (await (
        await send('GET', '/v1/identities/gw/spec', { token: OPERATOR })
      ).json()) as {
        spec: { service: { env: Record<string, string> } };
      };
      expect(asOperator.spec.service.env.DB_PASSWORD).to.equal('p4ss-w0rd');
    });

    it('stores a credential for admins only, passing the base64 value and the actor', async function () {
      const body = { value: Buffer.from('s3cret').toString('base64') };
      const operator = await send('PUT', '/v1/identities/gw/credential', { token: OPERATOR, body });
      expect(operator.status).to.equal(403);
      expect(api.callsTo('setCredential')).to.deep.equal([]);
      const res = await send('PUT', '/v1/identities/gw/credential', { token: ADMIN, body });
      expect(res.status).to.equal(200);
      expect(await res.json()).to.deep.equal({ identity: 'gw', revision: '9', keyId: '0123456789abcdef' });
      expect(api.callsTo('setCredential')[0]!.args).to.deep.equal(['gw', body, 'ada']);
      const deleted = await send('DELETE', '/v1/identities/gw/credential', { token: ADMIN });
      expect(deleted.status).to.equal(204);
      expect(api.callsTo('deleteCredential')[0]!.args).to.deep.equal(['gw', 'ada']);
    });

    it('answers 400 value to a credential that is not base64, and has no route that reads one', async function () {
      const res = await send('PUT', '/v1/identities/gw/credential', {
        token: ADMIN,
        body: { value: 'not base64!' },
      });
      expect(res.status).to.equal(400);
      expect((await problemOf(res)).field).to.equal('value');
      const read = await send('GET', '/v1/identities/gw/credential', { token: ADMIN });
      expect(read.status).to.equal(405);
      expect(api.callsTo('setCredential')).to.deep.equal([]);
    });

    it('puts /metrics behind a viewer token when metricsAuth is viewer', async function () {
      const logger = createLogger({ name: 'test', level: 'silent' });
      const guarded = createApp({ api, tokens: TOKENS, logger, metricsAuth: 'viewer' });
      expect((await guarded.request('/metrics')).status).to.equal(401);
      const ok = await guarded.request('/metrics', { headers: { authorization: `Bearer ${VIEWER}` } });
      expect(ok.status).to.equal(200);
      expect((await guarded.request('/healthz')).status).to.equal(200);
    });
  });

  describe('serveHttp', function () {
    it('listens on 127.0.0.1:0, reports the real port, answers /healthz and closes', async function () {
      const server = await serveHttp(app, { listen: '127.0.0.1:0' });
      try {
        expect(server.port).to.be.greaterThan(0);
        expect(server.url).to.equal(`http://127.0.0.1:${server.port}`);
        const res = await fetch(`${server.url}/healthz`);
        expect(res.status).to.equal(200);
        expect(await res.json()).to.deep.equal({ ok: true });
      } finally {
        await server.close();
      }
      const after = await fetch(`${server.url}/healthz`).catch((err: unknown) => err);
      expect(after).to.be.instanceOf(Error);
    });

    it('streams events over real HTTP, and close() ends open streams at once instead of waiting', async function () {
      const server = await serveHttp(app, { listen: '127.0.0.1:0' });
      const res = await fetch(`${server.url}/v1/events`, { headers: { authorization: `Bearer ${VIEWER}` } });
      const reader = res.body!.getReader();
      api.publish({
        type: 'alarm',
        at: NOW,
        alarm: 'split-brain',
        identity: 'msggateway',
        message: 'two PONGs',
      });
      expect(new TextDecoder().decode((await reader.read()).value)).to.match(/^event: alarm\n/);
      const started = Date.now();
      await server.close();
      expect(Date.now() - started).to.be.lessThan(1_000);
      await reader.read().catch(() => undefined);
      await new Promise((resolve) => setTimeout(resolve, 20));
      expect(api.listeners.size).to.equal(0);
    });

    it('refuses a listen address that is not host:port, saying what it expects', async function () {
      const err = await serveHttp(app, { listen: 'localhost' }).catch((e: unknown) => e);
      expect((err as Error).message).to.match(/host:port/);
    });
  });
});

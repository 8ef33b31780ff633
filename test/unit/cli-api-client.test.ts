import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiEvent, Problem, Workflow } from '../../pkg/api/schema.js';
import {
  ApiClient,
  ApiProblemError,
  exitCodeForStatus,
  mayFollow,
  normalizeBaseUrl,
  parseControllerAllow,
  resolveToken,
  SseParser,
  type SseMessage,
  withField,
} from '../../pkg/cli/api-client.js';
import { CliError, EXIT } from '../../pkg/cli/exit.js';

type Handler = (req: IncomingMessage, res: ServerResponse, body: string) => void;

interface FakeController {
  url: string;
  requests: { method: string; url: string; authorization?: string; body: string }[];
  close(): Promise<void>;
}

/** A unit-level stand-in for the controller: one handler, every request recorded. */
async function fakeController(handler: Handler): Promise<FakeController> {
  const requests: FakeController['requests'] = [];
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (chunk: Buffer) => (body += chunk.toString('utf8')));
    req.on('end', () => {
      requests.push({ method: req.method!, url: req.url!, authorization: req.headers.authorization, body });
      handler(req, res, body);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    requests,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

const json = (res: ServerResponse, status: number, value: unknown) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(value));
};

const problem = (
  res: ServerResponse,
  status: number,
  p: Partial<Problem> & Pick<Problem, 'code' | 'detail'>,
) => {
  res.writeHead(status, { 'content-type': 'application/problem+json' });
  res.end(JSON.stringify({ type: `https://understudy.dev/problems/${p.code}`, title: p.code, status, ...p }));
};

const rejection = async (promise: Promise<unknown>): Promise<CliError> => {
  const err = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'the call should fail').to.be.instanceOf(CliError);
  return err as CliError;
};

const workflow = (state: Workflow['state']): Workflow => ({
  id: 'wf-1',
  identity: 'gw',
  kind: 'switchover',
  state,
  actor: 'alice',
  createdAt: '2026-05-01T12:00:00Z',
  deadline: '2026-05-01T12:01:00Z',
  escalation: [],
  steps: [{ state, at: '2026-05-01T12:00:00Z' }],
  updatedAt: '2026-05-01T12:00:00Z',
  controller: 'c1',
});

describe('CLI API client (pkg/cli/api-client.ts)', function () {
  const servers: FakeController[] = [];
  const serve = async (handler: Handler) => {
    const server = await fakeController(handler);
    servers.push(server);
    return server;
  };
  afterEach(async function () {
    await Promise.all(servers.splice(0).map((s) => s.close()));
  });

  describe('requests', function () {
    it('sends the bearer token and a JSON body, and returns the parsed answer', async function () {
      const server = await serve((_req, res, body) => json(res, 202, { echoed: JSON.parse(body) }));
      const api = new ApiClient({ baseUrl: server.url, token: 's3cret-token' });
      const answer = await api.post<{ echoed: unknown }>('/v1/identities/gw/switchover', { to: 'b' });
      expect(answer).to.deep.equal({ echoed: { to: 'b' } });
      expect(server.requests[0]).to.deep.include({
        method: 'POST',
        url: '/v1/identities/gw/switchover',
        authorization: 'Bearer s3cret-token',
      });
    });

    it('sends no Authorization header without a token, and query parameters when given', async function () {
      const server = await serve((_req, res) => json(res, 200, { entries: [] }));
      await new ApiClient({ baseUrl: server.url }).get('/v1/history', {
        query: { limit: 5, skip: undefined },
      });
      expect(server.requests[0]?.authorization).to.equal(undefined);
      expect(server.requests[0]?.url).to.equal('/v1/history?limit=5');
    });

    it('returns undefined for 204 No Content', async function () {
      const server = await serve((_req, res) => {
        res.writeHead(204);
        res.end();
      });
      expect(await new ApiClient({ baseUrl: server.url }).delete('/v1/identities/gw')).to.equal(undefined);
    });
  });

  describe('problems', function () {
    it('turns each problem status into its exit code, with the detail in the message', async function () {
      const cases: [number, Problem['code'], number][] = [
        [400, 'bad-request', EXIT.usage],
        [404, 'not-found', EXIT.notFound],
        [409, 'conflict', EXIT.conflict],
        [503, 'unavailable', EXIT.unavailable],
        [500, 'internal', EXIT.failed],
      ];
      for (const [status, code, exit] of cases) {
        const server = await serve((_req, res) =>
          problem(res, status, { code, detail: `detail of ${code}` }),
        );
        const err = await rejection(new ApiClient({ baseUrl: server.url }).get('/v1/identities/gw'));
        expect(err, code).to.be.instanceOf(ApiProblemError);
        expect(err.exitCode, code).to.equal(exit);
        expect(err.message, code).to.include(`detail of ${code}`);
        expect((err as ApiProblemError).problem?.code).to.equal(code);
      }
    });

    it('names the field at fault, as the option that sets it', async function () {
      const server = await serve((_req, res) =>
        problem(res, 400, { code: 'bad-request', detail: 'must be at least 2000', field: 'deadlineMs' }),
      );
      const err = await rejection(
        new ApiClient({ baseUrl: server.url }).post(
          '/v1/identities/gw/switchover',
          { deadlineMs: 1 },
          {
            describeField: (f) => (f === 'deadlineMs' ? '--deadline' : f),
          },
        ),
      );
      expect(err.exitCode).to.equal(EXIT.usage);
      expect(err.message).to.equal('--deadline: must be at least 2000');
    });

    it('renames a field the detail already names instead of repeating it', function () {
      const describe = (f: string) => (f === 'to' ? '--to' : f);
      expect(withField('invalid request body: to: must be lowercase', 'to', describe)).to.equal(
        'invalid request body: --to: must be lowercase',
      );
      expect(withField('unknown node', 'to', describe)).to.equal('--to: unknown node');
    });

    it('on 401 says which token setting is missing, or which token was refused', async function () {
      const server = await serve((_req, res) =>
        problem(res, 401, { code: 'unauthorized', detail: 'no bearer token' }),
      );
      const missing = await rejection(new ApiClient({ baseUrl: server.url }).get('/v1/identities'));
      expect(missing.exitCode).to.equal(EXIT.unauthorized);
      expect(missing.message).to.include('set UNDERSTUDY_TOKEN or pass --token-file');
      const refused = await rejection(
        new ApiClient({ baseUrl: server.url, token: 'wrong', tokenFrom: '--token-file /etc/t' }).get('/v1/x'),
      );
      expect(refused.message).to.include('refused the token from --token-file /etc/t');
    });

    it('on 403 says the token lacks the role (exit 9)', async function () {
      const server = await serve((_req, res) =>
        problem(res, 403, { code: 'forbidden', detail: 'needs role admin; token viewer has viewer' }),
      );
      const err = await rejection(
        new ApiClient({ baseUrl: server.url, token: 't', tokenFrom: 'UNDERSTUDY_TOKEN' }).post(
          '/v1/apply',
          {},
        ),
      );
      expect(err.exitCode).to.equal(EXIT.unauthorized);
      expect(err.message).to.match(/token from UNDERSTUDY_TOKEN may not do this: needs role admin/);
    });

    it('quotes a non-problem error body (a proxy page) with its status', async function () {
      const server = await serve((_req, res) => {
        res.writeHead(502, { 'content-type': 'text/html' });
        res.end('<h1>Bad Gateway</h1>');
      });
      const err = await rejection(new ApiClient({ baseUrl: server.url }).get('/v1/identities'));
      expect(err.exitCode).to.equal(EXIT.unavailable);
      expect(err.message).to.equal('HTTP 502: <h1>Bad Gateway</h1>');
    });
  });

  describe('standby controllers', function () {
    it('follows not-active to active.url once, says so, and stays with the active controller', async function () {
      const active = await serve((_req, res) => json(res, 200, { name: 'gw' }));
      const standby = await serve((_req, res) =>
        problem(res, 503, {
          code: 'not-active',
          detail: 'c2 is a standby controller',
          active: { name: 'c1', url: `${active.url}/` },
        }),
      );
      const notices: string[] = [];
      const api = new ApiClient({
        baseUrl: standby.url,
        token: 't',
        notice: (m) => notices.push(m),
        allowedControllers: [active.url],
      });
      expect(await api.post('/v1/identities/gw/pause', { reason: 'r' })).to.deep.equal({ name: 'gw' });
      expect(notices).to.have.length(1);
      expect(notices[0]).to.include(`sending this to the active controller c1 at ${active.url}`);
      expect(active.requests[0]).to.deep.include({
        method: 'POST',
        authorization: 'Bearer t',
        body: '{"reason":"r"}',
      });
      await api.post('/v1/identities/gw/resume');
      expect(standby.requests).to.have.length(1);
      expect(active.requests).to.have.length(2);
      expect(api.baseUrl).to.equal(active.url);
    });

    it('retries only once when the named controller is not active either (exit 8)', async function () {
      const urls: { other?: string } = {};
      const notActive = (name: string) => (_req: IncomingMessage, res: ServerResponse) =>
        problem(res, 503, {
          code: 'not-active',
          detail: `${name} is a standby`,
          active: { name: 'x', url: urls.other! },
        });
      const b = await serve(notActive('b'));
      urls.other = b.url;
      const a = await serve(notActive('a'));
      const err = await rejection(
        new ApiClient({ baseUrl: a.url, allowedControllers: [a.url, b.url] }).post('/v1/apply', {}),
      );
      expect(err.exitCode).to.equal(EXIT.unavailable);
      expect(err.message).to.match(/both say they are not the active controller/);
      expect(a.requests.length + b.requests.length).to.equal(2);
    });

    it('does not send the token to an active.url the operator did not configure, and says what to set', async function () {
      const elsewhere = await serve((_req, res) => json(res, 200, { stolen: true }));
      const other = await serve((_req, res) => json(res, 200, {}));
      const standby = await serve((_req, res) =>
        problem(res, 503, {
          code: 'not-active',
          detail: 'standby',
          active: { name: 'c1', url: elsewhere.url },
        }),
      );
      for (const allowedControllers of [[], [other.url]]) {
        const api = new ApiClient({ baseUrl: standby.url, token: 'secret-token', allowedControllers });
        const err = await rejection(api.post('/v1/apply', {}));
        expect(err.exitCode).to.equal(EXIT.unavailable);
        expect(err.message)
          .to.include(`names the active controller at ${elsewhere.url}`)
          .and.include('--controller-allow');
        expect(api.baseUrl).to.equal(standby.url);
      }
      expect(elsewhere.requests).to.have.length(0);
      expect(other.requests).to.have.length(0);
    });

    it('never follows from https to http, even to a listed controller; matches scheme, host and port', function () {
      const down = mayFollow('https://ctl-a.example:8480', 'http://ctl-b.example:8480', [
        'http://ctl-b.example:8480',
      ]);
      expect(down).to.include({ follow: false });
      expect(!down.follow && down.reason).to.match(/from https to plain http/);
      expect(
        mayFollow('https://ctl-a.example:8480', 'https://ctl-b.example:8480/', [
          'https://ctl-b.example:8480',
        ]),
      ).to.deep.equal({ follow: true, url: 'https://ctl-b.example:8480' });
      expect(mayFollow('http://a:1', 'http://b:2', ['http://b:3'])).to.include({ follow: false });
      expect(mayFollow('http://a:1', 'https://b:2', ['http://b:2'])).to.include({ follow: false });
      expect(mayFollow('http://a:1', 'http://b:2', ['http://b:2'])).to.include({ follow: true });
    });

    it('reads --controller-allow as comma-separated URLs, and names a bad entry', function () {
      expect(parseControllerAllow(' https://a:1/ , b:2,')).to.deep.equal(['https://a:1', 'http://b:2']);
      expect(parseControllerAllow(undefined)).to.deep.equal([]);
      expect(() => parseControllerAllow('ftp://x')).to.throw(/--controller-allow: ftp:\/\/x is not a URL/);
    });

    it('without active.url, says to pass --controller (exit 8)', async function () {
      const server = await serve((_req, res) =>
        problem(res, 503, { code: 'not-active', detail: 'c2 is a standby', active: { name: 'c1' } }),
      );
      const err = await rejection(new ApiClient({ baseUrl: server.url }).post('/v1/apply', {}));
      expect(err.exitCode).to.equal(EXIT.unavailable);
      expect(err.message).to.match(/active controller is c1 .*pass --controller/);
    });
  });

  describe('connection failures', function () {
    it('connection refused: exit 8, naming the URL and what to do', async function () {
      const server = await fakeController(() => undefined);
      await server.close();
      const err = await rejection(new ApiClient({ baseUrl: server.url }).get('/v1/identities'));
      expect(err.exitCode).to.equal(EXIT.unavailable);
      expect(err.message).to.include(server.url);
      expect(err.message).to.match(/connection refused.*start the controller.*--controller/);
    });

    it('a controller that does not answer in time: exit 8 with the timeout', async function () {
      const server = await serve(() => undefined); // never answers
      const err = await rejection(
        new ApiClient({ baseUrl: server.url, timeoutMs: 100 }).get('/v1/identities'),
      );
      expect(err.exitCode).to.equal(EXIT.unavailable);
      expect(err.message).to.match(/did not answer within 0\.1s/);
    });
  });

  describe('options', function () {
    it('normalizes --controller: scheme added to host:port, trailing slash dropped, others refused', function () {
      expect(normalizeBaseUrl('10.0.0.5:8480')).to.equal('http://10.0.0.5:8480');
      expect(normalizeBaseUrl('https://ctl.example/understudy/')).to.equal('https://ctl.example/understudy');
      expect(() => normalizeBaseUrl('ftp://x')).to.throw(CliError, /http:\/\/ or https:\/\//);
    });

    it('maps HTTP statuses to exit codes', function () {
      expect([400, 401, 403, 404, 409, 500, 503].map(exitCodeForStatus)).to.deep.equal([2, 9, 9, 6, 7, 1, 8]);
    });

    it('takes the token from --token, --token-file (trimmed) or UNDERSTUDY_TOKEN, in that order', async function () {
      const dir = await mkdtemp(join(tmpdir(), 'understudy-cli-'));
      try {
        const file = join(dir, 'token');
        await writeFile(file, '  from-file\n');
        const env = { UNDERSTUDY_TOKEN: 'from-env' };
        expect(await resolveToken({ token: 'flag' }, env)).to.deep.equal({
          token: 'flag',
          tokenFrom: '--token',
        });
        expect(await resolveToken({ tokenFile: file }, env)).to.deep.equal({
          token: 'from-file',
          tokenFrom: `--token-file ${file}`,
        });
        expect(await resolveToken({}, env)).to.deep.equal({
          token: 'from-env',
          tokenFrom: 'UNDERSTUDY_TOKEN',
        });
        expect(await resolveToken({}, {})).to.deep.equal({});
        const both = await rejection(resolveToken({ token: 'a', tokenFile: file }, {}));
        expect(both.exitCode).to.equal(EXIT.usage);
        const unreadable = await rejection(resolveToken({ tokenFile: join(dir, 'absent') }, {}));
        expect(unreadable.message).to.match(/cannot read --token-file .*absent \(ENOENT\)/);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('server-sent events', function () {
    const STREAM =
      ': keepalive\n\n' +
      'event: workflow\nid: 1\ndata: {"a":1}\n\n' +
      'event: alarm\r\ndata: line one\r\ndata: line two\r\n\r\n' +
      'data: no event name\n\n' +
      'id: 7\n\n' +
      'data:x\n\n';
    const EXPECTED: SseMessage[] = [
      { event: 'workflow', data: '{"a":1}', id: '1' },
      { event: 'alarm', data: 'line one\nline two', id: '1' },
      { event: 'message', data: 'no event name', id: '1' },
      { event: 'message', data: 'x', id: '7' },
    ];

    it('parses a multi-event stream: comments, CRLF, multi-line data, default event, sticky id', function () {
      expect(new SseParser().push(STREAM)).to.deep.equal(EXPECTED);
    });

    it('gives the same events however the stream is cut into chunks', function () {
      for (let cut = 1; cut < STREAM.length; cut++) {
        const parser = new SseParser();
        const got = [
          ...parser.push(STREAM.slice(0, cut)),
          ...parser.push(STREAM.slice(cut)),
          ...parser.end(),
        ];
        expect(got, `cut at ${cut}`).to.deep.equal(EXPECTED);
      }
      const parser = new SseParser();
      const oneByOne = [...STREAM].flatMap((c) => parser.push(c));
      expect(oneByOne).to.deep.equal(EXPECTED);
    });

    it('drops an event the stream ended before finishing', function () {
      const parser = new SseParser();
      expect([...parser.push('data: {"half":'), ...parser.end()]).to.deep.equal([]);
    });

    it('streams ApiEvents from /v1/events, split across writes, skipping what is not an event', async function () {
      const events: ApiEvent[] = [
        { type: 'workflow', at: '2026-05-01T12:00:00Z', workflow: workflow('draining') },
        {
          type: 'alarm',
          at: '2026-05-01T12:00:01Z',
          alarm: 'split-brain',
          identity: 'gw',
          message: 'two — responders',
        },
        { type: 'workflow', at: '2026-05-01T12:00:02Z', workflow: workflow('done') },
      ];
      const wire = Buffer.from(
        `${sse(events[0]!, 1)}: keepalive\n\nevent: identity\ndata: {"not":"an event"}\n\n${sse(events[1]!, 2)}${sse(events[2]!, 3)}`,
      );
      const server = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        // Cut mid-JSON and inside the multi-byte dash, then hold the stream open.
        const cuts = [7, wire.indexOf('—') + 1, Math.floor(wire.length / 2), wire.length];
        let from = 0;
        const next = () => {
          const to = cuts.shift();
          if (to === undefined) return;
          res.write(wire.subarray(from, to));
          from = to;
          setTimeout(next, 5);
        };
        next();
      });
      const abort = new AbortController();
      const stream = await new ApiClient({ baseUrl: server.url, token: 't' }).events('gw', abort.signal);
      const got: ApiEvent[] = [];
      for await (const event of stream) {
        got.push(event);
        if (got.length === 3) abort.abort();
      }
      expect(got).to.deep.equal(events);
      expect(server.requests[0]).to.deep.include({
        url: '/v1/events?identity=gw',
        authorization: 'Bearer t',
      });
    });

    it('ends quietly when aborted while waiting for the next event', async function () {
      const server = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(': hello\n\n');
      });
      const abort = new AbortController();
      const stream = await new ApiClient({ baseUrl: server.url }).events(undefined, abort.signal);
      setTimeout(() => abort.abort(), 30);
      const got: ApiEvent[] = [];
      for await (const event of stream) got.push(event);
      expect(got).to.deep.equal([]);
    });

    it('fails when the stream goes silent, keepalives included, for the idle limit', async function () {
      const server = await serve((_req, res) => {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.write(': keepalive\n\n');
      });
      const api = new ApiClient({ baseUrl: server.url, eventsIdleTimeoutMs: 50 });
      const stream = await api.events('gw', new AbortController().signal);
      const err = await (async () => {
        for await (const _ of stream) expect.fail('no event was sent');
      })().catch((e: unknown) => e);
      expect((err as Error).message).to.match(/sent nothing for 0\.05s/);
    });

    it('fails before streaming when the subscription is refused', async function () {
      const server = await serve((_req, res) =>
        problem(res, 401, { code: 'unauthorized', detail: 'no token' }),
      );
      const err = await rejection(
        new ApiClient({ baseUrl: server.url }).events('gw', new AbortController().signal),
      );
      expect(err.exitCode).to.equal(EXIT.unauthorized);
    });
  });
});

function sse(event: ApiEvent, id: number): string {
  return `event: ${event.type}\nid: ${id}\ndata: ${JSON.stringify(event)}\n\n`;
}

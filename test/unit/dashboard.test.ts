// The dashboard's rules that need no browser: who sees what, who may act, how a session is
// kept, and what the timeline shows. The browser test (test/integration/dashboard-browser)
// shows the same page against a real cluster.
import { expect } from 'chai';
import type { Hono } from 'hono';
import { Writable } from 'node:stream';
import { ApiError, type IdentityView } from '../../pkg/api/schema.js';
import type { ResolvedToken } from '../../pkg/config/controller.js';
import { html } from '../../pkg/dashboard/html.js';
import { mintSession, readSession, SESSION_COOKIE, SESSION_TTL_MS } from '../../pkg/dashboard/session.js';
import { buildTimeline } from '../../pkg/dashboard/timeline.js';
import type { HistoryEntry } from '../../pkg/history/index.js';
import { createApp } from '../../pkg/http/index.js';
import { createLogger } from '../../pkg/log/index.js';
import { FakeApi, identityView } from '../support/fake-controller-api.js';

const TOKENS: ResolvedToken[] = [
  { name: 'vera', role: 'viewer', secret: 'viewer-secret-0123456789' },
  { name: 'otto', role: 'operator', secret: 'operator-secret-0123456789' },
];
const NOW_MS = Date.parse('2026-12-03T10:00:00.000Z');
const NOW_ISO = new Date(NOW_MS).toISOString();

const DEMO: IdentityView = {
  ...identityView('demo'),
  leader: 'a',
  token: '167',
  loggedInSince: '2026-12-03T09:59:00.000Z',
  standbys: [
    { node: 'a', registered: true, healthy: true, fenced: false, nofailover: false, state: 'leader' },
    { node: 'b', registered: true, healthy: true, fenced: false, nofailover: false, state: 'standby' },
  ],
};

class Sink extends Writable {
  override _write(_chunk: Buffer, _enc: string, done: () => void): void {
    done();
  }
}

describe('dashboard (pkg/dashboard)', function () {
  let api: FakeApi;
  let app: Hono;

  beforeEach(function () {
    api = new FakeApi();
    api.identities = [DEMO];
    const logger = createLogger({ name: 'test', level: 'silent', destination: new Sink() });
    app = createApp({ api, tokens: TOKENS, logger });
  });

  async function signIn(token: string): Promise<string> {
    const res = await app.request('/ui/login', { method: 'POST', body: new URLSearchParams({ token }) });
    expect(res.status, await res.clone().text()).to.equal(303);
    const cookie = /understudy_session=([^;]+)/.exec(res.headers.get('set-cookie') ?? '');
    expect(cookie, 'a session cookie').to.not.equal(null);
    return `${SESSION_COOKIE}=${cookie![1]}`;
  }

  function get(path: string, cookie?: string): Promise<Response> {
    return Promise.resolve(app.request(path, { headers: cookie ? { cookie } : {} }));
  }

  function act(
    path: string,
    cookie: string,
    form: Record<string, string>,
    headers = { 'hx-request': 'true' },
  ) {
    return Promise.resolve(
      app.request(path, { method: 'POST', headers: { cookie, ...headers }, body: new URLSearchParams(form) }),
    );
  }

  describe('signing in', function () {
    it('shows the sign-in form at / without a session, and no identity', async function () {
      const res = await get('/');
      expect(res.status).to.equal(200);
      const page = await res.text();
      expect(page).to.contain('name="token"');
      expect(page).to.not.contain('demo');
      expect(api.callsTo('listIdentities')).to.have.length(0);
    });

    it('refuses an unknown token with 401 and sets no cookie', async function () {
      const res = await app.request('/ui/login', {
        method: 'POST',
        body: new URLSearchParams({ token: 'guess' }),
      });
      expect(res.status).to.equal(401);
      expect(res.headers.get('set-cookie')).to.equal(null);
      expect(await res.text()).to.contain('not a token this controller knows');
    });

    it('gives an HttpOnly, SameSite=Strict cookie that opens the overview', async function () {
      const res = await app.request('/ui/login', {
        method: 'POST',
        body: new URLSearchParams({ token: TOKENS[0]!.secret }),
      });
      const setCookie = res.headers.get('set-cookie') ?? '';
      expect(setCookie)
        .to.match(/HttpOnly/i)
        .and.match(/SameSite=Strict/i);
      expect(setCookie, 'the cookie is not the token').to.not.contain(TOKENS[0]!.secret);
      const page = await (await get('/', await signIn(TOKENS[0]!.secret))).text();
      expect(page).to.contain('id="identity-demo"');
    });

    it('slows guessing: after 20 failed sign-ins in a minute even a good token waits', async function () {
      for (let i = 0; i < 20; i++) {
        const res = await app.request('/ui/login', {
          method: 'POST',
          body: new URLSearchParams({ token: `guess-${i}` }),
        });
        expect(res.status).to.equal(401);
      }
      const res = await app.request('/ui/login', {
        method: 'POST',
        body: new URLSearchParams({ token: TOKENS[1]!.secret }),
      });
      expect(res.status).to.equal(429);
      expect(res.headers.get('set-cookie')).to.equal(null);
    });

    it('answers a bad filter with a page naming it, under the same security headers', async function () {
      const res = await get('/?health=bogus', await signIn(TOKENS[0]!.secret));
      expect(res.status).to.equal(400);
      expect(res.headers.get('content-security-policy')).to.contain("script-src 'self'");
      expect(await res.text()).to.contain('query.health');
    });

    it('ignores a sign-out posted from another site', async function () {
      const cookie = await signIn(TOKENS[0]!.secret);
      const res = await app.request('/ui/logout', {
        method: 'POST',
        headers: { cookie, 'sec-fetch-site': 'cross-site' },
      });
      expect(res.headers.get('set-cookie')).to.equal(null);
    });

    it('refuses a sign-in the browser says came from another site', async function () {
      const res = await app.request('/ui/login', {
        method: 'POST',
        headers: { 'sec-fetch-site': 'cross-site' },
        body: new URLSearchParams({ token: TOKENS[1]!.secret }),
      });
      expect(res.status).to.equal(403);
    });
  });

  describe('sessions', function () {
    const operator = TOKENS[1]!;

    it('are accepted until they expire, then refused', function () {
      const cookie = mintSession(operator, NOW_MS);
      expect(readSession(cookie, TOKENS, NOW_MS + SESSION_TTL_MS - 1)).to.deep.equal({
        token: operator,
        expiresMs: NOW_MS + SESSION_TTL_MS,
      });
      expect(readSession(cookie, TOKENS, NOW_MS + SESSION_TTL_MS))
        .to.have.property('problem')
        .that.match(/expired/);
    });

    it('end when their token is rotated or removed', function () {
      const cookie = mintSession(operator, NOW_MS);
      const rotated = [{ ...operator, secret: 'a-new-secret-0123456789' }];
      expect(readSession(cookie, rotated, NOW_MS)).to.have.property('problem');
      expect(readSession(cookie, [TOKENS[0]!], NOW_MS)).to.have.property('problem');
    });

    it('cannot be forged by renaming the token or moving the expiry', function () {
      const [name, expires, mac] = mintSession(TOKENS[0]!, NOW_MS).split('.') as [string, string, string];
      const asOperator = `${Buffer.from('otto').toString('base64url')}.${expires}.${mac}`;
      expect(readSession(asOperator, TOKENS, NOW_MS)).to.have.property('problem');
      const later = `${name}.${Number(expires) + 1000}.${mac}`;
      expect(readSession(later, TOKENS, NOW_MS)).to.have.property('problem');
      expect(readSession('garbage', TOKENS, NOW_MS))
        .to.have.property('problem')
        .that.match(/malformed/);
    });
  });

  describe('what each role sees', function () {
    it('shows an operator the identity with its leader, token and standbys, and the buttons', async function () {
      const page = await (await get('/', await signIn(TOKENS[1]!.secret))).text();
      const row = rowOf(page, 'identity-demo');
      expect(textOf(row)).to.contain('demo a 167').and.contain('b: standby');
      expect(row).to.contain('data-action="switchover"').and.contain('data-action="pause"');
      expect(page).to.contain('data-action="fence"');
    });

    it('shows a viewer the same identity with no button at all', async function () {
      const page = await (await get('/', await signIn(TOKENS[0]!.secret))).text();
      expect(rowOf(page, 'identity-demo')).to.contain('167');
      expect(page).to.not.contain('data-action');
      expect(page).to.contain('read only');
    });

    it('escapes what operators and agents wrote (a pause reason is text, not markup)', async function () {
      api.identities = [{ ...DEMO, paused: { reason: '<script>alert(1)</script>', actor: 'otto', at: '' } }];
      const page = await (await get('/', await signIn(TOKENS[0]!.secret))).text();
      expect(page).to.not.contain('<script>alert(1)');
      expect(page).to.contain('&lt;script&gt;alert(1)&lt;/script&gt;');
    });

    it('sends a content security policy that allows no inline script and no framing', async function () {
      const res = await get('/', await signIn(TOKENS[0]!.secret));
      const csp = res.headers.get('content-security-policy') ?? '';
      expect(csp).to.contain("script-src 'self'").and.contain("frame-ancestors 'none'");
      expect(csp).to.not.contain('unsafe');
    });
  });

  describe('actions', function () {
    it('switch over with the chosen node and the reason, in the session token’s name', async function () {
      const cookie = await signIn(TOKENS[1]!.secret);
      const res = await act('/ui/identities/demo/switchover', cookie, { to: 'b', reason: 'patching a' });
      expect(res.status, await res.clone().text()).to.equal(200);
      expect(api.callsTo('switchover')[0]!.args).to.deep.equal([
        'demo',
        { to: 'b', reason: 'patching a' },
        'otto',
      ]);
    });

    it('are refused to a viewer, even when posted by hand, and nothing reaches the core', async function () {
      const cookie = await signIn(TOKENS[0]!.secret);
      for (const path of [
        '/ui/identities/demo/switchover',
        '/ui/identities/demo/pause',
        '/ui/nodes/node-a/fence',
      ]) {
        const res = await act(path, cookie, { reason: 'try' });
        expect(res.status, path).to.equal(403);
      }
      expect((await get('/ui/identities/demo/actions/switchover', cookie)).status).to.equal(403);
      expect(api.calls.filter((c) => ['switchover', 'pause', 'fenceNode'].includes(c.method))).to.deep.equal(
        [],
      );
    });

    it('are refused to a viewer on every action and confirmation route, saying operator is needed', async function () {
      const cookie = await signIn(TOKENS[0]!.secret);
      const posts = ['switchover', 'pause', 'resume'].map((a) => `/ui/identities/demo/${a}`);
      posts.push('/ui/nodes/node-a/fence', '/ui/nodes/node-a/unfence');
      for (const path of posts) {
        const res = await act(path, cookie, { reason: 'try', to: 'b' });
        expect(res.status, path).to.equal(403);
        expect(await res.text(), path).to.contain('acting needs operator');
      }
      const confirmations = ['switchover', 'pause', 'resume'].map((a) => `/ui/identities/demo/actions/${a}`);
      confirmations.push('/ui/nodes/node-a/actions/fence', '/ui/nodes/node-a/actions/unfence');
      for (const path of confirmations) {
        const res = await get(path, cookie);
        expect(res.status, path).to.equal(403);
        expect(await res.text(), path).to.contain('acting needs operator');
      }
      expect(
        api.calls.map((c) => c.method).filter((m) => !['listIdentities', 'listNodes'].includes(m)),
      ).to.deep.equal([]);
    });

    it('need a reason, named as the field at fault', async function () {
      const cookie = await signIn(TOKENS[1]!.secret);
      const res = await act('/ui/nodes/node-a/fence', cookie, { reason: '  ' });
      expect(res.status).to.equal(400);
      expect(await res.text()).to.contain('reason');
      expect(api.callsTo('fenceNode')).to.have.length(0);
    });

    it('are refused without the page’s own request header or from another site (CSRF)', async function () {
      const cookie = await signIn(TOKENS[1]!.secret);
      const plain = await act(
        '/ui/identities/demo/pause',
        cookie,
        { reason: 'x' },
        {} as { 'hx-request': string },
      );
      expect(plain.status).to.equal(403);
      const cross = await act('/ui/identities/demo/pause', cookie, { reason: 'x' }, {
        'hx-request': 'true',
        'sec-fetch-site': 'cross-site',
      } as { 'hx-request': string });
      expect(cross.status).to.equal(403);
      expect(api.callsTo('pause')).to.have.length(0);
    });

    it('are refused without a session, with 401', async function () {
      const res = await act('/ui/identities/demo/resume', 'understudy_session=x', { reason: 'x' });
      expect(res.status).to.equal(401);
      expect(api.callsTo('resume')).to.have.length(0);
    });

    it('show the core’s refusal, with its status', async function () {
      const cookie = await signIn(TOKENS[1]!.secret);
      api.failWith = new ApiError('conflict', 'demo has a workflow running: wait or cancel it');
      const res = await act('/ui/identities/demo/switchover', cookie, { reason: 'x' });
      expect(res.status).to.equal(409);
      expect(await res.text()).to.contain('demo has a workflow running');
    });

    it('ask for confirmation with the standbys to choose from', async function () {
      const cookie = await signIn(TOKENS[1]!.secret);
      const form = await (await get('/ui/identities/demo/actions/switchover', cookie)).text();
      expect(form)
        .to.contain('popover')
        .and.match(/<option value="b"\s*>\s*b\s*</);
      expect(form, 'the leader is not a target').to.not.match(/<option value="a"/);
      expect(form).to.contain('name="reason" required');
    });
  });

  describe('live stream', function () {
    const decoder = new TextDecoder();
    /** Events are written as they are published: a second is ample on a loaded machine. */
    const READ_TIMEOUT_MS = 2_000;

    async function open(cookie: string, query: string) {
      const res = await get(`/ui/stream${query}`, cookie);
      expect(res.status).to.equal(200);
      return res.body!.getReader();
    }
    /** The next chunk; a stream that stays silent fails the test and is cancelled, not left open. */
    async function next(reader: ReadableStreamDefaultReader<Uint8Array>): Promise<string> {
      let timer: NodeJS.Timeout | undefined;
      const silent = new Promise<never>((_, reject) => {
        timer = setTimeout(() => {
          void reader.cancel();
          reject(new Error(`no event within ${READ_TIMEOUT_MS} ms`));
        }, READ_TIMEOUT_MS);
      });
      try {
        return decoder.decode((await Promise.race([reader.read(), silent])).value);
      } finally {
        clearTimeout(timer);
      }
    }

    /** Every event name sent until `last` arrives, in order. */
    async function eventsUntil(
      reader: ReadableStreamDefaultReader<Uint8Array>,
      last: string,
    ): Promise<string[]> {
      let text = '';
      while (!new RegExp(`^event: ${last}$`, 'm').test(text)) text += await next(reader);
      return [...text.matchAll(/^event: (.+)$/gm)].map((m) => m[1]!);
    }

    it('sends the rows of the identities on the page, rendered for the viewer, and a term event when the leader changes', async function () {
      const reader = await open(await signIn(TOKENS[0]!.secret), '?first=dash&last=demo');
      try {
        api.publish({ type: 'identity', at: '', identity: { ...DEMO, identity: 'zeta' } });
        api.publish({ type: 'identity', at: '', identity: DEMO });
        const first = await next(reader);
        expect(first).to.contain('<tr id="identity-demo"');
        expect(first, 'a viewer’s row has no button').to.not.contain('data-action');
        // A probe's news is a row, not a term; a new leader is both.
        api.publish({ type: 'identity', at: '', identity: { ...DEMO, probeFailures: 1 } });
        api.publish({ type: 'identity', at: '', identity: { ...DEMO, leader: 'b', token: '170' } });
        api.publish({ type: 'node', at: '', node: { node: 'b', alive: true, identities: [] } });
        const rest = await eventsUntil(reader, 'node-b');
        expect([...(/^event: (.+)$/gm.exec(first) ?? [])].slice(1).concat(rest)).to.deep.equal([
          'identity-demo',
          'term-demo',
          'identity-demo',
          'identity-demo',
          'term-demo',
          'node-b',
        ]);
      } finally {
        await reader.cancel();
      }
    });

    it('escapes what it sends (an alarm message is text)', async function () {
      const reader = await open(await signIn(TOKENS[0]!.secret), '?first=a&last=z');
      try {
        api.publish({
          type: 'alarm',
          at: NOW_ISO,
          alarm: 'split-brain',
          identity: 'demo',
          message: '"><img src=x>',
        });
        const text = await next(reader);
        expect(text).to.contain('&quot;&gt;&lt;img src=x&gt;').and.not.contain('<img');
      } finally {
        await reader.cancel();
      }
    });

    it('is refused without a session', async function () {
      expect((await get('/ui/stream?first=a&last=z')).status).to.equal(401);
    });
  });

  describe('timeline', function () {
    const t0 = NOW_MS - 60_000;
    const step = (node: string, at: number, from: string, to: string, token?: string): HistoryEntry => ({
      identity: 'demo',
      node,
      at,
      kind: 'transition',
      from,
      to,
      ...(token ? { token } : {}),
    });

    it('draws each node’s term phases as bars that end when the node leaves them', function () {
      const t = buildTimeline(
        [
          step('a', t0, 'waiting-out', 'logging-in', '5'),
          step('a', t0 + 1_000, 'logging-in', 'leader', '5'),
          step('a', t0 + 30_000, 'leader', 'logging-out', '5'),
          step('a', t0 + 30_100, 'logging-out', 'drained', '5'),
          step('b', t0 + 30_200, 'waiting-out', 'logging-in', '9'),
          step('b', t0 + 30_500, 'logging-in', 'leader', '9'),
        ],
        NOW_MS,
      );
      const leaders = t.bars.filter((b) => b.phase === 'leader');
      expect(leaders.map((b) => [b.node, b.token, b.startMs - t0, b.open])).to.deep.equal([
        ['a', '5', 1_000, false],
        ['b', '9', 30_500, true],
      ]);
      expect(leaders[0]!.endMs - t0).to.equal(30_000);
      expect(leaders[1]!.endMs).to.equal(NOW_MS);
      expect(t.nodes).to.deep.equal(['a', 'b']);
    });

    it('ends a silent node’s bar where the next term began, marked as unknown (a SIGKILL writes no history)', function () {
      const t = buildTimeline(
        [
          step('a', t0, 'logging-in', 'leader', '5'),
          step('b', t0 + 6_000, 'waiting-out', 'logging-in', '9'),
          step('b', t0 + 6_300, 'logging-in', 'leader', '9'),
        ],
        NOW_MS,
      );
      const a = t.bars.find((b) => b.node === 'a' && b.phase === 'leader')!;
      expect(a).to.include({ open: false, endUnknown: true, endMs: t0 + 6_000 });
      const overlap = t.bars.filter((b) => b.startMs < a.endMs && b.endMs > a.startMs && b.node !== 'a');
      expect(overlap, 'no false double login drawn').to.deep.equal([]);
    });

    it('shows an overlap the old node reports late: its bar runs to its own logout, past the successor’s login', function () {
      const t = buildTimeline(
        [
          step('a', t0, 'logging-in', 'leader', '5'),
          step('b', t0 + 6_000, 'waiting-out', 'logging-in', '9'),
          step('b', t0 + 6_300, 'logging-in', 'leader', '9'),
          step('a', t0 + 7_000, 'leader', 'logging-out', '5'),
        ],
        NOW_MS,
      );
      const a = t.bars.find((b) => b.node === 'a' && b.phase === 'leader')!;
      expect(a.endMs - t0).to.equal(7_000);
      expect(a.endUnknown).to.equal(undefined);
      const bLeader = t.bars.find((b) => b.node === 'b' && b.phase === 'leader')!;
      expect(bLeader.startMs < a.endMs, 'the double login is drawn').to.equal(true);
    });

    it('draws the current leader even when no entry read shows its login', function () {
      const t = buildTimeline([step('b', t0, 'standby', 'campaigning')], NOW_MS, {
        leader: 'a',
        token: '5',
        loggedIn: true,
      });
      expect(t.bars).to.deep.equal([
        {
          node: 'a',
          phase: 'leader',
          token: '5',
          startMs: t0,
          endMs: NOW_MS,
          clippedStart: true,
          open: true,
        },
      ]);
    });

    it('starts a term that began before the oldest entry at the window’s edge', function () {
      const t = buildTimeline([step('a', t0, 'leader', 'logging-out', '5')], NOW_MS);
      expect(t.bars[0]).to.include({
        node: 'a',
        phase: 'leader',
        startMs: t0,
        endMs: t0,
        clippedStart: true,
      });
    });

    it('marks a workflow’s start and end and operator actions, not every step', function () {
      const action = (at: number, reason: string, to?: string): HistoryEntry => ({
        identity: 'demo',
        node: 'ctl-1',
        at,
        kind: 'action',
        reason,
        actor: 'otto',
        ...(to ? { from: 'x', to } : {}),
      });
      const t = buildTimeline(
        [
          action(t0, 'switchover sw-1 requested to b: patching a'),
          action(t0 + 5, 'switchover sw-1 to b: a held off demo', 'draining'),
          action(t0 + 10, 'switchover sw-1 to b: a confirmed its logout', 'logged-out'),
          action(t0 + 400, 'switchover sw-1 to b', 'done'),
          action(t0 + 500, 'paused: kernel upgrade'),
        ],
        NOW_MS,
      );
      expect(t.marks.map((m) => [m.kind, m.atMs - t0])).to.deep.equal([
        ['switchover', 0],
        ['switchover', 400],
        ['operator', 500],
      ]);
    });
  });

  it('html`` escapes values and keeps nested markup', function () {
    expect(
      String(html`<b>${'<i>&"\''}</b>${html`<i>ok</i>`}${undefined}${false}${['x', html`<u>y</u>`]}`),
    ).to.equal('<b>&lt;i&gt;&amp;&quot;&#39;</b><i>ok</i>x<u>y</u>');
  });
});

/** What a person reads in some markup: the text, whitespace collapsed. */
function textOf(markup: string): string {
  return markup
    .replace(/<[^>]*>/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** The markup of the table row with this id. */
function rowOf(page: string, id: string): string {
  const start = page.indexOf(`<tr id="${id}"`);
  expect(start, `row ${id}`).to.be.greaterThan(-1);
  return page.slice(start, page.indexOf('</tr>', start));
}

// The dashboard, served by the controller beside its API: pages at `/` and
// `/identities/<id>`, its own routes under /ui (sign in, live stream, confirmations, actions).
//
// Auth follows the API's roles. A browser signs in once with an API token and gets a session
// cookie (session.ts): HttpOnly (no script reads it), SameSite=Strict (no other site's page
// sends it) and Secure over HTTPS. Actions additionally need htmx's `HX-Request` header, which
// a cross-site form cannot set and a cross-site script cannot send without a CORS preflight
// this server never grants, and they are refused when the browser says the request came from
// another site. The operator check here (`fragment(true, …)`) is the only one: the core
// methods take an actor name, not a role, so it must stay on every action route. Every action
// is written to history with the session's token name and reason.
import type { Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { streamSSE } from 'hono/streaming';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { z } from 'zod';
import {
  ApiError,
  FenceBody,
  IdentityListQuery,
  PauseBody,
  ReasonBody,
  SwitchoverBody,
  type ApiEvent,
  type ControllerApi,
  type IdentityView,
} from '../api/schema.js';
import type { ResolvedToken } from '../config/controller.js';
import { tokenChecker } from '../http/auth.js';
import { DASHBOARD_STREAM_PATH, pumpEvents, type SseMessage } from '../http/events.js';
import { parseOrThrow, validName } from '../http/validate.js';
import type { Logger } from '../log/index.js';
import { assets } from './assets.js';
import type { Html } from './html.js';
import { readSession, mintSession, SESSION_COOKIE, SESSION_TTL_MS } from './session.js';
import { buildTimeline } from './timeline.js';
import {
  alarmItem,
  canAct,
  errorPage,
  fenceForm,
  historySection,
  identityPage,
  identityRow,
  loginPage,
  nodeRow,
  notice,
  overviewPage,
  pauseForm,
  switchoverForm,
  UI,
  workflowCell,
  type Viewer,
} from './views.js';

/** Identities per overview page: a screenful; the filters and `next page` reach the rest. */
export const OVERVIEW_PAGE = 100;
/** History entries behind an identity's timeline. */
const TIMELINE_ENTRIES = 500;
/** Form bodies are a reason and a node name. */
const MAX_FORM_BYTES = 16 * 1024;
/**
 * Failed sign-ins accepted per minute, from anyone: guessing tokens through the form is slowed
 * to this pace. Past it the form answers 429 for the rest of the minute (the API is unaffected).
 */
export const SIGN_IN_FAILURES_PER_MINUTE = 20;

/**
 * No inline script or style, nothing from elsewhere, no framing (clickjacking a Fence button),
 * forms post only here. htmx runs with eval off, so 'unsafe-eval' is not needed.
 */
const SECURITY_HEADERS = {
  'Content-Security-Policy':
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; " +
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
};

export interface DashboardOptions {
  api: ControllerApi;
  tokens: ResolvedToken[];
  logger: Logger;
  /** Wall-clock ms (session expiry, "since" columns); injected for tests. */
  now?: () => number;
}

export function mountDashboard(app: Hono, opts: DashboardOptions): void {
  const now = opts.now ?? Date.now;
  const checkToken = tokenChecker(opts.tokens);
  const { api } = opts;

  const viewerOf = (c: Context): (Viewer & { expiresMs: number }) | undefined => {
    const session = readSession(getCookie(c, SESSION_COOKIE), opts.tokens, now());
    return 'token' in session
      ? { name: session.token.name, role: session.token.role, expiresMs: session.expiresMs }
      : undefined;
  };
  const failedSignIns: number[] = [];
  const send = (c: Context, body: Html | string, status = 200, type = 'text/html; charset=utf-8') =>
    c.body(String(body), status as ContentfulStatusCode, { ...SECURITY_HEADERS, 'Content-Type': type });

  /** Pages for people: signed out, the sign-in form (at `/`) or a redirect to it. */
  const page =
    (render: (c: Context, viewer: Viewer) => Promise<Html>) =>
    async (c: Context): Promise<Response> => {
      const viewer = viewerOf(c);
      if (!viewer) {
        if (c.req.path !== '/') return c.redirect('/', 303);
        return send(c, loginPage({ controller: api.info().name, secure: isHttps(c) }));
      }
      try {
        return send(c, await render(c, viewer));
      } catch (err) {
        if (!(err instanceof ApiError)) {
          opts.logger.error({ err, path: c.req.path, actor: viewer.name }, 'dashboard page failed');
        }
        const status = err instanceof ApiError ? err.status : 500;
        return send(c, errorPage(status, (err as Error).message), status);
      }
    };

  /** Fragments and actions for a signed-in page: 401 (not a redirect) when the session is gone. */
  const fragment =
    (needsOperator: boolean, render: (c: Context, viewer: Viewer) => Promise<Html | Response>) =>
    async (c: Context): Promise<Response> => {
      const viewer = viewerOf(c);
      if (!viewer) return send(c, notice('error', 'your session ended: reload the page and sign in'), 401);
      if (needsOperator && !canAct(viewer)) {
        return send(c, notice('error', `${viewer.name} has role ${viewer.role}: acting needs operator`), 403);
      }
      try {
        const out = await render(c, viewer);
        return out instanceof Response ? out : send(c, out);
      } catch (err) {
        if (err instanceof ApiError) return send(c, notice('error', err.message), err.status);
        opts.logger.error({ err, path: c.req.path, actor: viewer.name }, 'dashboard request failed');
        return send(c, notice('error', `failed inside the controller: ${(err as Error).message}`), 500);
      }
    };

  // --- pages ---------------------------------------------------------------------------------

  app.get(
    '/',
    page(async (c, viewer) => {
      const prefix = c.req.query('prefix') || undefined;
      const health = c.req.query('health') || undefined;
      const after = c.req.query('after') || undefined;
      const query = parseField(IdentityListQuery, { limit: OVERVIEW_PAGE, prefix, health, after }, 'query');
      const [list, nodes] = await Promise.all([api.listIdentities(query), api.listNodes()]);
      const next = new URLSearchParams({
        ...(prefix && { prefix }),
        ...(health && { health }),
        ...(list.next && { after: list.next }),
      });
      return overviewPage({
        info: api.info(),
        viewer,
        identities: list.identities,
        total: list.total,
        ...(list.next && { nextPage: `/?${next}` }),
        filters: { ...(prefix && { prefix }), ...(health && { health }) },
        nodes,
        nowMs: now(),
      });
    }),
  );

  app.get(
    '/identities/:identity',
    page(async (c, viewer) => {
      const identity = name(c, 'identity');
      const [view, history] = await Promise.all([
        api.getIdentity(identity),
        api.history(identity, { limit: TIMELINE_ENTRIES }),
      ]);
      const nowMs = now();
      const timeline = buildTimeline(history.entries, nowMs, view);
      return identityPage({ info: api.info(), viewer, view, timeline, entries: history.entries, nowMs });
    }),
  );

  // --- sign in and out -----------------------------------------------------------------------

  app.post(`${UI}/login`, bodyLimit({ maxSize: MAX_FORM_BYTES }), async (c) => {
    if (crossSite(c))
      return send(
        c,
        loginPage({ controller: api.info().name, error: 'cross-site sign-in refused', secure: isHttps(c) }),
        403,
      );
    while (failedSignIns.length > 0 && failedSignIns[0]! <= now() - 60_000) failedSignIns.shift();
    if (failedSignIns.length >= SIGN_IN_FAILURES_PER_MINUTE) {
      const error = 'too many failed sign-ins in the last minute: wait a minute and try again';
      return send(c, loginPage({ controller: api.info().name, error, secure: isHttps(c) }), 429);
    }
    const form = await c.req.parseBody();
    const token = typeof form.token === 'string' ? form.token.trim() : '';
    const found = token ? checkToken(`Bearer ${token}`) : 'missing';
    if (found === 'missing' || found === 'invalid') {
      failedSignIns.push(now());
      opts.logger.info({ path: c.req.path }, 'dashboard sign-in refused: unknown token');
      const error = found === 'missing' ? 'enter an API token' : 'that is not a token this controller knows';
      return send(c, loginPage({ controller: api.info().name, error, secure: isHttps(c) }), 401);
    }
    setCookie(c, SESSION_COOKIE, mintSession(found, now()), {
      httpOnly: true,
      sameSite: 'Strict',
      secure: isHttps(c),
      path: '/',
      maxAge: Math.floor(SESSION_TTL_MS / 1000),
    });
    opts.logger.info({ actor: found.name, role: found.role }, 'dashboard sign-in');
    return c.redirect('/', 303);
  });

  app.post(`${UI}/logout`, (c) => {
    // Another site's page must not sign an operator out in the middle of an incident.
    if (crossSite(c)) return c.redirect('/', 303);
    deleteCookie(c, SESSION_COOKIE, { path: '/' });
    return c.redirect('/', 303);
  });

  // Browsers ask for it on every page; there is none, and a 404 would fill their consoles.
  app.get('/favicon.ico', (c) => c.body(null, 204));

  app.get(`${UI}/assets/:file`, (c) => {
    const asset = assets().get(c.req.param('file'));
    if (!asset) return c.body('no such asset', 404);
    return c.body(asset.body, 200, {
      ...SECURITY_HEADERS,
      'Content-Type': asset.type,
      'Cache-Control': 'max-age=3600',
    });
  });

  // --- live parts ----------------------------------------------------------------------------

  app.get(DASHBOARD_STREAM_PATH, async (c) => {
    const viewer = viewerOf(c);
    if (!viewer) return send(c, 'sign in first', 401, 'text/plain; charset=utf-8');
    const first = c.req.query('first');
    const last = c.req.query('last');
    const inRange = (identity: string | undefined) =>
      identity !== undefined &&
      first !== undefined &&
      last !== undefined &&
      identity >= first &&
      identity <= last;
    const terms = new Map<string, string>();
    const toMessages = (e: ApiEvent): SseMessage[] => {
      switch (e.type) {
        case 'identity': {
          if (!inRange(e.identity.identity)) return [];
          const id = e.identity.identity;
          const out = [{ event: `identity-${id}`, data: String(identityRow(e.identity, viewer, now())) }];
          const term = termOf(e.identity);
          // The first event of an identity may already be a new term (nothing is sent when
          // the stream opens): it counts as a change too.
          if (terms.get(id) !== term) out.push({ event: `term-${id}`, data: term });
          terms.set(id, term);
          return out;
        }
        case 'workflow':
          if (!inRange(e.workflow.identity)) return [];
          return [{ event: `workflow-${e.workflow.identity}`, data: String(workflowCell(e.workflow)) }];
        case 'node':
          return [{ event: `node-${e.node.node}`, data: String(nodeRow(e.node, viewer, now())) }];
        case 'alarm':
          return [{ event: 'alarm', data: String(alarmItem(e)) }];
      }
    };
    c.header('Cache-Control', 'no-store');
    return streamSSE(
      c,
      async (stream) => {
        // A stream must not outlive the session that opened it; the page then asks to sign in.
        const expiry = setTimeout(() => stream.abort(), Math.max(0, viewer.expiresMs - now()));
        try {
          await pumpEvents(stream, api, toMessages);
        } finally {
          clearTimeout(expiry);
        }
      },
      async (err) => {
        opts.logger.error({ err }, 'dashboard stream failed; the page reconnects');
      },
    );
  });

  app.get(
    `${UI}/identities/:identity/history`,
    fragment(false, async (c) => {
      const identity = name(c, 'identity');
      const [view, history] = await Promise.all([
        api.getIdentity(identity),
        api.history(identity, { limit: TIMELINE_ENTRIES }),
      ]);
      return historySection(buildTimeline(history.entries, now(), view), history.entries);
    }),
  );

  // --- confirmations and actions -------------------------------------------------------------

  app.get(
    `${UI}/identities/:identity/actions/:action`,
    fragment(true, async (c) => {
      const view = await api.getIdentity(name(c, 'identity'));
      switch (c.req.param('action')) {
        case 'switchover':
          return switchoverForm(view);
        case 'pause':
          return pauseForm(view, true);
        case 'resume':
          return pauseForm(view, false);
      }
      throw new ApiError('not-found', `no action ${c.req.param('action')}: switchover, pause or resume`);
    }),
  );

  app.get(
    `${UI}/nodes/:node/actions/:action`,
    fragment(true, async (c) => {
      const node = name(c, 'node');
      const view = (await api.listNodes()).find((n) => n.node === node);
      if (!view) throw new ApiError('not-found', `no node named ${node} is known`, 'path.node');
      switch (c.req.param('action')) {
        case 'fence':
          return fenceForm(view, true);
        case 'unfence':
          return fenceForm(view, false);
      }
      throw new ApiError('not-found', `no action ${c.req.param('action')}: fence or unfence`);
    }),
  );

  /** An action: same-site htmx request, operator session, a reason; the core does the rest. */
  const act = (run: (c: Context, form: Record<string, string>, actor: string) => Promise<string>) =>
    fragment(true, async (c, viewer) => {
      if (c.req.header('hx-request') !== 'true' || crossSite(c)) {
        throw new ApiError('forbidden', 'actions are taken from the dashboard page itself: reload it');
      }
      const form = Object.fromEntries(
        Object.entries(await c.req.parseBody()).filter(
          (e): e is [string, string] => typeof e[1] === 'string',
        ),
      );
      if (!form.reason?.trim())
        throw new ApiError('bad-request', 'reason: say why (it is kept in the history)', 'reason');
      const text = await run(c, { ...form, reason: form.reason.trim() }, viewer.name);
      opts.logger.info({ actor: viewer.name, path: c.req.path, reason: form.reason }, `dashboard: ${text}`);
      return notice('ok', text);
    });
  const limit = bodyLimit({ maxSize: MAX_FORM_BYTES });
  const action = (path: string, run: Parameters<typeof act>[0]) => app.post(path, limit, act(run));

  action(`${UI}/identities/:identity/switchover`, async (c, form, actor) => {
    const identity = name(c, 'identity');
    const body = parseField(SwitchoverBody, { reason: form.reason, ...(form.to ? { to: form.to } : {}) }, '');
    const wf = await api.switchover(identity, body, actor);
    const to = wf.target ?? wf.chosen ?? 'the best healthy standby';
    return `switchover ${wf.id} of ${identity} requested: ${wf.from?.node ?? 'no leader'} → ${to}`;
  });
  action(`${UI}/identities/:identity/pause`, async (c, form, actor) => {
    const identity = name(c, 'identity');
    await api.pause(identity, parseField(PauseBody, { reason: form.reason }, ''), actor);
    return `${identity} paused: no probe-driven failover until resumed`;
  });
  action(`${UI}/identities/:identity/resume`, async (c, form, actor) => {
    const identity = name(c, 'identity');
    await api.resume(identity, parseField(ReasonBody, { reason: form.reason }, ''), actor);
    return `${identity} resumed: probe-driven failover is on again`;
  });
  action(`${UI}/nodes/:node/fence`, async (c, form, actor) => {
    const node = name(c, 'node');
    const result = await api.fenceNode(node, parseField(FenceBody, { reason: form.reason }, ''), actor);
    return result.fenced
      ? `${node} fenced: it stays out until unfenced`
      : `fencing ${node}: its identities move away first (${result.workflows.length} handovers)`;
  });
  action(`${UI}/nodes/:node/unfence`, async (c, form, actor) => {
    const node = name(c, 'node');
    await api.unfenceNode(node, parseField(ReasonBody, { reason: form.reason }, ''), actor);
    return `${node} unfenced: it may campaign and log in again`;
  });
}

/** What a term change is: the timeline is read again only when this differs. */
function termOf(v: IdentityView): string {
  return `${v.leader ?? ''}/${v.token ?? ''}/${v.loggedIn}`;
}

/** A path parameter naming an identity or node, checked as the API checks it. */
function name(c: Context, param: 'identity' | 'node'): string {
  return validName(param, c.req.param(param) ?? '');
}

/** A form or query parsed with the API's own schema; errors name the field as the API does. */
function parseField<T extends z.ZodType>(schema: T, value: unknown, prefix: string): z.infer<T> {
  return parseOrThrow(schema, value, prefix, prefix || '(form)') as z.infer<T>;
}

/** The browser says the request came from another site (Fetch Metadata; absent in old browsers). */
function crossSite(c: Context): boolean {
  const site = c.req.header('sec-fetch-site');
  return site !== undefined && site !== 'same-origin' && site !== 'none';
}

/**
 * Served over HTTPS, directly or behind a TLS-terminating proxy or ingress. The forwarded
 * header is the client's word, but it only ever makes the cookie stricter (Secure).
 */
function isHttps(c: Context): boolean {
  return new URL(c.req.url).protocol === 'https:' || c.req.header('x-forwarded-proto') === 'https';
}

// The dashboard's pages and the fragments the live stream swaps in. Pure: views in, HTML out.
// What a viewer may do is decided here once (`canAct`): a viewer's page has no buttons, and
// the action routes refuse a viewer anyway.
import {
  roleAllows,
  type ControllerInfo,
  type IdentityView,
  type NodeView,
  type Role,
} from '../api/schema.js';
import type { ApiEvent } from '../api/schema.js';
import type { HistoryEntry } from '../history/index.js';
import { html, type Html } from './html.js';
import { clock, timelineSvg } from './timeline-svg.js';
import type { Timeline } from './timeline.js';

export interface Viewer {
  name: string;
  role: Role;
}

/** Switchover, pause, resume, fence and unfence need the API's operator role. */
export function canAct(viewer: Viewer): boolean {
  return roleAllows(viewer.role, 'operator');
}

/** Base path of the dashboard's own routes (pages are at `/` and under it). */
export const UI = '/ui';
export const ASSETS = `${UI}/assets`;

// --- page frame ------------------------------------------------------------------------------

/** htmx settings: no eval (the CSP forbids it) and error answers swapped in like others. */
const HTMX_CONFIG = JSON.stringify({
  allowEval: false,
  includeIndicatorStyles: false,
  responseHandling: [
    { code: '204', swap: false },
    { code: '[23]..', swap: true },
    { code: '[45]..', swap: true, error: true },
  ],
});

function page(title: string, body: Html, head: Html = html``): Html {
  return html`<!doctype html>
    <html lang="en">
      <head>
        <meta charset="utf-8" />
        <meta name="viewport" content="width=device-width, initial-scale=1" />
        <meta name="htmx-config" content="${HTMX_CONFIG}" />
        <title>${title} · understudy</title>
        <link rel="stylesheet" href="${ASSETS}/style.css" />
        ${head}
      </head>
      <body>
        ${body}
      </body>
    </html>`;
}

function scripts(): Html {
  return html`<script src="${ASSETS}/htmx.min.js"></script>
    <script src="${ASSETS}/sse.js"></script>
    <script src="${ASSETS}/dashboard.js"></script>`;
}

function header(info: ControllerInfo, viewer: Viewer): Html {
  const active = info.active
    ? html`<span class="badge ok">active</span>`
    : html`<span class="badge warn">standby</span> actions go to the active
        controller${info.activeController ? html` <b>${info.activeController.name}</b>${info.activeController.url ? activeLink(info.activeController.url) : ''}` : ''}`;
  return html`<header>
      <a class="brand" href="/">understudy</a>
      <span>controller <b>${info.name}</b> ${active}</span>
      <span class="who"
        >signed in as <b>${viewer.name}</b> (${viewer.role}${canAct(viewer) ? '' : ': read only'})
        <form method="post" action="${UI}/logout" class="inline">
          <button type="submit">Sign out</button>
        </form></span
      >
    </header>
    <div id="notice" role="status" aria-live="polite"></div>
    <div id="dialog"></div>`;
}

/** The active controller's address, linked only when it is an http(s) URL. */
function activeLink(url: string): Html {
  return /^https?:\/\//.test(url) ? html` (<a href="${url}">${url}</a>)` : html` (${url})`;
}

/** A page that could not be built: what went wrong and what to try, inside the same frame. */
export function errorPage(status: number, message: string): Html {
  return page(
    'error',
    html`<main class="login">
      <h1>understudy</h1>
      <p class="error" role="alert">${status}: ${message}</p>
      <p><a href="/">Back to all identities</a>, or reload once the controller answers again.</p>
    </main>`,
  );
}

// --- sign in ---------------------------------------------------------------------------------

export function loginPage(opts: { controller: string; error?: string; secure: boolean }): Html {
  const warning =
    !opts.secure &&
    html`<p class="hint">
      This controller serves plain HTTP: sign in only on this host or through a TLS proxy.
    </p>`;
  return page(
    'sign in',
    html`<main class="login">
      <h1>understudy</h1>
      <p>
        Controller <b>${opts.controller}</b>. Sign in with an API token (<code>auth.tokens</code> in the
        controller config; <code>npm start</code> writes them to <code>.understudy/run/token-*</code>).
        Viewers see; operators also act.
      </p>
      ${opts.error && html`<p class="error" role="alert">${opts.error}</p>`}
      <form method="post" action="${UI}/login">
        <label
          >API token <input type="password" name="token" autocomplete="current-password" required autofocus
        /></label>
        <button type="submit">Sign in</button>
      </form>
      ${warning}
    </main>`,
  );
}

// --- overview --------------------------------------------------------------------------------

export interface OverviewData {
  info: ControllerInfo;
  viewer: Viewer;
  identities: IdentityView[];
  total: number;
  /** Link to the next page, when there is one. */
  nextPage?: string;
  filters: { prefix?: string; health?: string };
  nodes: NodeView[];
  nowMs: number;
}

export function overviewPage(d: OverviewData): Html {
  const first = d.identities[0]?.identity;
  const last = d.identities[d.identities.length - 1]?.identity;
  const range =
    first && last ? `?first=${encodeURIComponent(first)}&last=${encodeURIComponent(last)}` : '?none=1';
  return page(
    'identities',
    html`${header(d.info, d.viewer)}
      <main hx-ext="sse" sse-connect="${UI}/stream${range}">
        <section>
          <h2>Alarms</h2>
          <ul id="alarms" class="alarms" sse-swap="alarm" hx-swap="afterbegin">
            <li class="none">none since this page opened</li>
          </ul>
        </section>
        <section>
          <h2>Identities <small>${d.identities.length} of ${d.total}</small></h2>
          <form method="get" action="/" class="filters">
            <label>Name starts with <input name="prefix" value="${d.filters.prefix ?? ''}" /></label>
            <label
              >Health <input name="health" value="${d.filters.health ?? ''}" placeholder="down,degraded"
            /></label>
            <button type="submit">Filter</button>
          </form>
          ${identityTable(d.identities, d.viewer, d.nowMs)}
          ${d.nextPage && html`<p><a href="${d.nextPage}">next page</a></p>`}
        </section>
        <section>
          <h2>Nodes</h2>
          <table class="nodes">
            <thead>
              <tr>
                <th>Node</th>
                <th>Agent</th>
                <th>Last heartbeat</th>
                <th>Fenced</th>
                <th>Identities</th>
                ${canAct(d.viewer) && html`<th>Actions</th>`}
              </tr>
            </thead>
            <tbody>
              ${d.nodes.map((n) => nodeRow(n, d.viewer, d.nowMs))}
            </tbody>
          </table>
        </section>
      </main>
      ${scripts()}`,
  );
}

/** The identities table of the overview and of an identity's page: one header, one row type. */
function identityTable(views: IdentityView[], viewer: Viewer, nowMs: number): Html {
  const columns = ['Identity', 'Leader', 'Token', 'Logged in since', 'Health', 'Standbys', 'Drift'];
  columns.push('Fenced nodes', 'Paused', 'Workflow', ...(canAct(viewer) ? ['Actions'] : []));
  return html`<table class="identities">
    <thead>
      <tr>
        ${columns.map((c) => html`<th>${c}</th>`)}
      </tr>
    </thead>
    <tbody>
      ${views.map((v) => identityRow(v, viewer, nowMs))}
    </tbody>
  </table>`;
}

/** One identity's row; the stream sends it again, whole, at each change of the identity. */
export function identityRow(v: IdentityView, viewer: Viewer, nowMs: number): Html {
  const id = v.identity;
  const standbys = v.standbys.filter((s) => s.node !== v.leader);
  const lagging = standbys.filter((s) => (s.cloneLag ?? 0) > 0 && !s.drift);
  const drifted = standbys.filter((s) => s.drift);
  return html`<tr id="identity-${id}" data-identity="${id}" sse-swap="identity-${id}" hx-swap="outerHTML">
    <td><a href="/identities/${id}">${id}</a></td>
    <td class="leader">
      ${v.leader ?? html`<span class="muted">none</span>`}${v.leader && !v.loggedIn ? html` <span class="muted">(logging in)</span>` : ''}
    </td>
    <td class="token">${v.token ?? ''}</td>
    <td title="${v.loggedInSince ?? ''}">${v.loggedInSince ? ago(v.loggedInSince, nowMs) : ''}</td>
    <td>
      <span class="badge ${v.health}">${v.health}</span
      >${v.probeFailures > 0 ? html` <small>${v.probeFailures} probe failures</small>` : ''}
    </td>
    <td class="standbys">
      ${standbys.map((s) => html`<span class="standby ${s.healthy ? 'ok' : 'down'}" title="${s.state ?? ''}">${s.node}${s.fenced ? ' (fenced)' : ''}${s.nofailover ? ' (nofailover)' : ''}: ${s.state ?? 'unknown'}</span> `)}
    </td>
    <td>
      ${lagging.length + drifted.length === 0 ? html`<span class="muted">in sync</span>` : ''}${drifted.map((s) => html`<span class="badge degraded" title="${(s.drift ?? []).join('; ')}">${s.node} drifted</span> `)}${lagging.map((s) => html`${s.node} ${s.cloneLag} behind `)}
    </td>
    <td>${v.fencedNodes.join(', ')}</td>
    <td>
      ${v.paused ? html`<span class="badge warn" title="${v.paused.actor} at ${v.paused.at}">paused</span> ${v.paused.reason}` : ''}
    </td>
    <td sse-swap="workflow-${id}" hx-swap="innerHTML">${v.workflow ? workflowCell(v.workflow) : ''}</td>
    ${canAct(viewer) && html`<td class="actions">${identityButtons(v)}</td>`}
  </tr>`;
}

function identityButtons(v: IdentityView): Html {
  const base = `${UI}/identities/${v.identity}/actions`;
  const button = (action: string, label: string) =>
    html`<button
      type="button"
      hx-get="${base}/${action}"
      hx-target="#dialog"
      hx-swap="innerHTML"
      data-action="${action}"
    >
      ${label}
    </button>`;
  return html`${button('switchover', 'Switchover…')}${v.paused ? button('resume', 'Resume…') : button('pause', 'Pause…')}`;
}

export function workflowCell(w: { id: string; kind: string; state: string; outcome?: string }): Html {
  const cls = w.state === 'done' ? 'ok' : w.state === 'aborted' ? 'down' : 'warn';
  return html`<span class="badge ${cls}" title="${w.id}${w.outcome ? `: ${w.outcome}` : ''}"
    >${w.kind} ${w.state}</span
  >`;
}

export function nodeRow(n: NodeView, viewer: Viewer, nowMs: number): Html {
  const fenced = n.fenced
    ? html`<span class="badge down">fenced</span> ${n.fenced.reason} <small>by ${n.fenced.actor}</small>`
    : n.fencePending
      ? html`<span class="badge warn">fencing</span> ${n.fencePending.reason}`
      : '';
  const base = `${UI}/nodes/${n.node}/actions`;
  const action =
    n.fenced || n.fencePending
      ? html`<button
          type="button"
          hx-get="${base}/unfence"
          hx-target="#dialog"
          hx-swap="innerHTML"
          data-action="unfence"
        >
          Unfence…
        </button>`
      : html`<button
          type="button"
          hx-get="${base}/fence"
          hx-target="#dialog"
          hx-swap="innerHTML"
          data-action="fence"
        >
          Fence…
        </button>`;
  return html`<tr id="node-${n.node}" sse-swap="node-${n.node}" hx-swap="outerHTML">
    <td>${n.node}</td>
    <td><span class="badge ${n.alive ? 'ok' : 'down'}">${n.alive ? 'alive' : 'silent'}</span></td>
    <td title="${n.lastHeartbeat ?? ''}">${n.lastHeartbeat ? ago(n.lastHeartbeat, nowMs) : 'never'}</td>
    <td>${fenced}</td>
    <td>
      ${n.identities.map((i) => html`<span title="${i.state}">${i.identity}${i.state === 'leader' ? ' ★' : ''}</span> `)}
    </td>
    ${canAct(viewer) && html`<td class="actions">${action}</td>`}
  </tr>`;
}

export function alarmItem(e: Extract<ApiEvent, { type: 'alarm' }>): Html {
  return html`<li class="alarm ${e.alarm}">
    <time>${e.at.slice(11, 23)}Z</time> <b>${e.alarm}</b> ${e.identity ?? ''}${e.node ? ` on ${e.node}` : ''}:
    ${e.message}
  </li>`;
}

// --- one identity ----------------------------------------------------------------------------

export interface IdentityPageData {
  info: ControllerInfo;
  viewer: Viewer;
  view: IdentityView;
  timeline: Timeline;
  entries: HistoryEntry[];
  nowMs: number;
}

export function identityPage(d: IdentityPageData): Html {
  const id = d.view.identity;
  return page(
    id,
    html`${header(d.info, d.viewer)}
      <main hx-ext="sse" sse-connect="${UI}/stream?first=${id}&last=${id}">
        <p><a href="/">← all identities</a></p>
        <h2>${id} ${d.view.description && html`<small>${d.view.description}</small>`}</h2>
        ${identityTable([d.view], d.viewer, d.nowMs)}
        <section
          id="history"
          hx-get="${UI}/identities/${id}/history"
          hx-trigger="sse:term-${id} delay:300ms, sse:workflow-${id} delay:300ms"
          hx-swap="innerHTML"
        >
          ${historySection(d.timeline, d.entries)}
        </section>
      </main>
      ${scripts()}`,
  );
}

/** The timeline and the entries behind it, newest first; fetched again when a term changes. */
export function historySection(timeline: Timeline, entries: HistoryEntry[]): Html {
  const newest = [...entries].sort((a, b) => b.at - a.at);
  return html`<h3>Timeline <small>${clock(timeline.fromMs)} – ${clock(timeline.toMs)}</small></h3>
    ${timelineSvg(timeline)}
    <p class="legend">
      <span class="bar leader"></span> logged in <span class="bar logging-in"></span> logging in
      <span class="bar logging-out"></span> logging out <span class="mark"></span> switchover, failover,
      operator action
    </p>
    <h3>History</h3>
    <table class="history">
      <thead>
        <tr>
          <th>At</th>
          <th>Node</th>
          <th>What</th>
          <th>Token</th>
          <th>Why</th>
          <th>Who</th>
        </tr>
      </thead>
      <tbody>
        ${newest.map(
          (e) =>
            html`<tr>
              <td>${clock(e.at)}</td>
              <td>${e.node}</td>
              <td>
                ${e.kind === 'transition' ? `${e.from ?? '?'} → ${e.to ?? '?'}` : e.to ? `workflow ${e.from ?? ''} → ${e.to}` : 'action'}
              </td>
              <td>${e.token ?? ''}</td>
              <td>${e.reason ?? ''}</td>
              <td>${e.actor ?? ''}</td>
            </tr>`,
        )}
      </tbody>
    </table>`;
}

// --- confirmations ---------------------------------------------------------------------------

/**
 * The confirmation of an action: a popover form that says what will happen and asks why.
 * Nothing is sent until its own button is pressed; Cancel or Escape closes it.
 */
function confirmForm(opts: {
  id: string;
  post: string;
  title: string;
  what: Html;
  submit: string;
  fields?: Html;
}): Html {
  return html`<form
    id="${opts.id}"
    class="confirm"
    popover="manual"
    hx-post="${opts.post}"
    hx-target="#notice"
  >
    <h3>${opts.title}</h3>
    <p>${opts.what}</p>
    ${opts.fields}
    <label>Reason <input name="reason" required maxlength="500" placeholder="kept in the history" /></label>
    <p class="error" id="dialog-error" role="alert"></p>
    <div class="buttons">
      <button type="submit" class="primary">${opts.submit}</button>
      <button type="button" popovertarget="${opts.id}" popovertargetaction="hide">Cancel</button>
    </div>
  </form>`;
}

export function switchoverForm(v: IdentityView): Html {
  const candidates = v.standbys.filter((s) => s.node !== v.leader && s.registered && !s.fenced);
  const from = v.leader
    ? html`from <b>${v.leader}</b>${v.token ? ` (token ${v.token})` : ''}`
    : html`(no leader now)`;
  return confirmForm({
    id: 'confirm-switchover',
    post: `${UI}/identities/${v.identity}/switchover`,
    title: `Switch ${v.identity} over`,
    what: html`Move <b>${v.identity}</b> ${from} to the node below. The old leader logs out before the new one
      logs in.`,
    fields: html`<label
      >To
      <select name="to">
        <option value="">the best healthy standby</option>
        ${candidates.map((s) => html`<option value="${s.node}" ${s.healthy ? '' : ' disabled'}>${s.node}${s.healthy ? '' : ' (unhealthy)'}</option>`)}
      </select></label
    >`,
    submit: 'Switch over',
  });
}

export function pauseForm(v: IdentityView, pause: boolean): Html {
  return pause
    ? confirmForm({
        id: 'confirm-pause',
        post: `${UI}/identities/${v.identity}/pause`,
        title: `Pause ${v.identity}`,
        what: html`Maintenance mode: the controller stops failing <b>${v.identity}</b> over on failed probes
          (it only raises an alarm). A dead leader's lease still expires and a standby still takes over.`,
        submit: 'Pause',
      })
    : confirmForm({
        id: 'confirm-resume',
        post: `${UI}/identities/${v.identity}/resume`,
        title: `Resume ${v.identity}`,
        what: html`Probe-driven failover of <b>${v.identity}</b> is turned on again.`,
        submit: 'Resume',
      });
}

export function fenceForm(n: NodeView, fence: boolean): Html {
  const leads = n.identities.filter((i) => i.state === 'leader').map((i) => i.identity);
  return fence
    ? confirmForm({
        id: 'confirm-fence',
        post: `${UI}/nodes/${n.node}/fence`,
        title: `Fence ${n.node}`,
        what: html`<b>${n.node}</b> is taken out for maintenance:
          ${leads.length ? html`the identities it leads (${leads.join(', ')}) are switched over first, then ` : ''}it
          neither campaigns nor logs in until unfenced, even after a restart.`,
        submit: 'Fence',
      })
    : confirmForm({
        id: 'confirm-unfence',
        post: `${UI}/nodes/${n.node}/unfence`,
        title: `Unfence ${n.node}`,
        what: html`<b>${n.node}</b> may campaign and log in again.`,
        submit: 'Unfence',
      });
}

/** What the notice area says after an action. */
export function notice(kind: 'ok' | 'error', text: string): Html {
  return html`<p class="${kind === 'ok' ? 'ok' : 'error'}">${text}</p>`;
}

function ago(iso: string, nowMs: number): string {
  const s = Math.max(0, (nowMs - Date.parse(iso)) / 1000);
  if (s < 60) return `${s.toFixed(1)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m${Math.floor(s % 60)}s ago`;
  return `${Math.floor(s / 3600)}h${Math.floor((s % 3600) / 60)}m ago`;
}

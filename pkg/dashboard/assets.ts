// The dashboard's static files: htmx and its SSE extension from node_modules (pinned in
// package-lock.json, served from here so the page needs nothing from the internet), the
// stylesheet and the few lines of script htmx does not do (opening and closing confirmations).
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';

export interface Asset {
  type: string;
  body: string;
}

const require = createRequire(import.meta.url);

function vendored(specifier: string): string {
  return readFileSync(require.resolve(specifier), 'utf8');
}

const JS = 'text/javascript; charset=utf-8';

/**
 * Opens a confirmation the server sent into #dialog, closes it once its action was accepted,
 * and shows an action's refusal inside the confirmation instead of behind it.
 */
const DASHBOARD_JS = `
document.addEventListener('htmx:load', (e) => {
  const form = e.target;
  if (!(form instanceof HTMLElement) || !form.matches('#dialog > [popover]')) return;
  form.showPopover();
  form.querySelector('input[name=reason]')?.focus();
});
// After a reconnection (a controller restarted, a network blip) the stream has no replay:
// once it is back, read the page again and replace what <main> holds, keeping <main> itself
// (it owns the stream, so nothing is missed meanwhile). A failed read changes nothing and says so.
document.addEventListener('htmx:sseOpen', async (e) => {
  const main = e.target;
  if (!(main instanceof HTMLElement) || main.tagName !== 'MAIN') return;
  if (!main.dataset.opened) { main.dataset.opened = 'yes'; return; }
  const notice = document.getElementById('notice');
  try {
    const res = await fetch(location.href, { headers: { accept: 'text/html' } });
    const fresh = res.ok ? new DOMParser().parseFromString(await res.text(), 'text/html').querySelector('main') : null;
    if (!fresh) throw new Error('HTTP ' + res.status);
    main.innerHTML = fresh.innerHTML;
    for (const child of main.children) htmx.process(child);
  } catch (err) {
    if (notice) notice.textContent = 'Reconnected, but the page could not be read again (' + err.message + '): reload it.';
  }
});
document.addEventListener('htmx:afterRequest', (e) => {
  const form = e.detail.elt;
  if (!(form instanceof HTMLFormElement) || !form.hasAttribute('popover')) return;
  if (e.detail.successful) form.hidePopover();
});
document.addEventListener('htmx:beforeSwap', (e) => {
  const form = e.detail.requestConfig?.elt;
  if (!e.detail.isError || !(form instanceof HTMLFormElement) || !form.hasAttribute('popover')) return;
  const slot = form.querySelector('#dialog-error');
  if (slot) { e.detail.target = slot; }
});
`;

const STYLE = `
:root { --ok: #1a7f37; --warn: #9a6700; --down: #cf222e; --muted: #6e7781; --line: #d0d7de; font-family: system-ui, sans-serif; font-size: 14px; }
body { margin: 0; color: #1f2328; }
header { display: flex; gap: 2em; align-items: center; padding: .6em 1em; border-bottom: 1px solid var(--line); background: #f6f8fa; }
header .who { margin-left: auto; }
.brand { font-weight: 700; color: inherit; text-decoration: none; }
main { padding: 0 1em 2em; }
h2 small, h3 small { color: var(--muted); font-weight: normal; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35em .5em; border-bottom: 1px solid var(--line); vertical-align: top; }
th { font-weight: 600; background: #f6f8fa; }
.token { font-family: ui-monospace, monospace; }
.muted, .none { color: var(--muted); }
.badge { display: inline-block; padding: 0 .5em; border-radius: 1em; border: 1px solid currentColor; font-size: 12px; }
.badge.ok, .standby.ok { color: var(--ok); }
.badge.degraded, .badge.warn, .badge.unknown { color: var(--warn); }
.badge.down, .badge.split-brain, .standby.down { color: var(--down); }
.error { color: var(--down); }
.ok { color: var(--ok); }
.hint { color: var(--muted); }
form.inline { display: inline; }
.filters { display: flex; gap: 1em; margin: .5em 0; }
.alarms { list-style: none; padding: 0; max-height: 10em; overflow: auto; }
.alarm { color: var(--down); }
.alarms li.none:not(:only-child) { display: none; }
#notice p { margin: .5em 1em; }
form.confirm { border: 1px solid var(--line); border-radius: 8px; padding: 1em 1.5em; max-width: 32em; box-shadow: 0 8px 24px rgba(0,0,0,.2); }
form.confirm label { display: block; margin: .6em 0; }
form.confirm input, form.confirm select { display: block; width: 100%; box-sizing: border-box; padding: .3em; }
form.confirm .buttons { display: flex; gap: 1em; }
button.primary { font-weight: 600; }
.login { max-width: 30em; margin: 4em auto; }
.login input { display: block; width: 100%; box-sizing: border-box; margin: .3em 0 1em; padding: .4em; }
svg.timeline { width: 100%; height: auto; border: 1px solid var(--line); background: #fff; }
svg text { font-size: 12px; fill: #1f2328; }
svg line.lane { stroke: var(--line); }
rect.bar.leader, span.bar.leader { fill: var(--ok); background: var(--ok); }
rect.bar.logging-in, span.bar.logging-in { fill: #7ee2a8; background: #7ee2a8; }
rect.bar.logging-out, span.bar.logging-out { fill: #f5c46b; background: #f5c46b; }
rect.bar.end-unknown { opacity: .55; }
line.mark { stroke: #0969da; stroke-width: 2; stroke-dasharray: 4 2; }
line.mark.failover, line.mark.probe-failover { stroke: var(--down); }
span.bar, span.mark { display: inline-block; width: 1.5em; height: .8em; margin-left: 1em; }
span.mark { border-left: 2px dashed #0969da; width: 0; }
.legend { color: var(--muted); }
`;

let cache: Map<string, Asset> | undefined;

/** The assets by file name, read once. */
export function assets(): Map<string, Asset> {
  cache ??= new Map([
    ['htmx.min.js', { type: JS, body: vendored('htmx.org/dist/htmx.min.js') }],
    ['sse.js', { type: JS, body: vendored('htmx-ext-sse/dist/sse.min.js') }],
    ['dashboard.js', { type: JS, body: DASHBOARD_JS }],
    ['style.css', { type: 'text/css; charset=utf-8', body: STYLE }],
  ]);
  return cache;
}

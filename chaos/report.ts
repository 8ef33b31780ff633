// A run's history as one self-contained HTML page: the summary (faults, violations, timings)
// and a timeline where a gap or an overlap shows at a glance.
//
//   one lane per identity and node: the witness's logged-in spans as bars (the service's own
//   record), the leader key's terms as a thin line under them (etcd's view);
//   one PING lane per identity: a tick per PING, green when one node answered, grey when
//   none did, red when two did;
//   faults as shaded bands across every lane (instant ones as a line), labelled;
//   violations as red marks on an overview strip at the top and on the lanes, listed below.
//
// Pure: events in, a string out (no scripts, no external assets), so the page can be kept
// beside its history and opened anywhere.
import { loginSpans, type Report } from './checker.js';
import type { EventOf, HistoryEvent } from './history.js';

/** Pixels per second of run on the detailed timeline (scrolls sideways on long runs). */
const PX_PER_S = 24;
const LANE_H = 18;
const LABEL_W = 120;
/** A PING or request run breaks at a silence this long (a sampler that stopped, a lost answer). */
const RUN_GAP_MS = 1_500;
const OVERVIEW_W = 1100;
const NODE_COLOURS = ['#3b7dd8', '#d8913b', '#4caf50', '#9c27b0', '#00838f', '#795548'];

const esc = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);

const only = <K extends HistoryEvent['kind']>(events: readonly HistoryEvent[], kind: K) =>
  events.filter((e): e is EventOf<K> => e.kind === kind);

export interface ScenarioBand {
  name: string;
  from: number;
  to: number;
  ok: boolean;
}

export function renderHtml(
  events: readonly HistoryEvent[],
  report: Report,
  title: string,
  summaryText: string,
  scenarios: readonly ScenarioBand[] = [],
): string {
  const t0 = events[0]?.t ?? 0;
  const tEnd = events.at(-1)?.t ?? t0;
  const x = (t: number) => LABEL_W + ((Math.min(t, tEnd) - t0) / 1000) * PX_PER_S;
  const width = Math.ceil(x(tEnd)) + 40;
  const spans = loginSpans([...events]);
  const identities = [
    ...new Set([...spans.map((s) => s.identity), ...only(events, 'leader').map((e) => e.identity)]),
  ].sort();
  const nodes = [
    ...new Set(
      spans.map((s) => s.node).concat(only(events, 'leader').flatMap((e) => (e.node ? [e.node] : []))),
    ),
  ].sort();
  const colour = (node: string) => NODE_COLOURS[nodes.indexOf(node) % NODE_COLOURS.length]!;

  // Lanes: per identity, one per node that ever held it, then its PING lane.
  const lanes: Array<{ identity: string; node?: string; y: number }> = [];
  let y = 30;
  for (const identity of identities) {
    const held = nodes.filter(
      (n) =>
        spans.some((s) => s.identity === identity && s.node === n) ||
        only(events, 'leader').some((e) => e.identity === identity && e.node === n),
    );
    for (const node of held) {
      lanes.push({ identity, node, y });
      y += LANE_H;
    }
    lanes.push({ identity, y });
    y += LANE_H + 8;
  }
  const height = y + 20;
  const laneOf = (identity: string, node?: string) =>
    lanes.find((l) => l.identity === identity && l.node === node);

  const svg: string[] = [];
  // Faults first, under everything.
  const nemesis = only(events, 'nemesis');
  for (const start of nemesis.filter((n) => n.phase === 'start')) {
    const end = nemesis.find((n) => n.id === start.id && n.phase === 'end');
    const x1 = x(start.t);
    const x2 = Math.max(x1 + 2, x(end?.t ?? tEnd));
    svg.push(
      `<rect x="${x1.toFixed(1)}" y="14" width="${(x2 - x1).toFixed(1)}" height="${height - 24}" class="fault"><title>${esc(`${start.id} ${start.action} ${start.targets.join(',')} (${end ? Math.round(end.t - start.t) : '?'} ms)`)}</title></rect>`,
      `<text x="${(x1 + 2).toFixed(1)}" y="12" class="fault-label">${esc(`${start.action} ${start.targets.join(',')}`)}</text>`,
    );
  }
  for (const s of scenarios) {
    svg.push(
      `<line x1="${x(s.from).toFixed(1)}" x2="${x(s.from).toFixed(1)}" y1="0" y2="${height}" class="scenario${s.ok ? '' : ' failed'}"><title>${esc(s.name)}</title></line>`,
    );
  }
  for (const lane of lanes) {
    svg.push(
      `<text x="4" y="${lane.y + LANE_H - 5}" class="lane">${esc(lane.node ? `${lane.identity} @ ${lane.node}` : `${lane.identity} PING / req`)}</text>`,
      `<line x1="${LABEL_W}" x2="${width}" y1="${lane.y + LANE_H}" y2="${lane.y + LANE_H}" class="grid"/>`,
    );
  }
  // Leader terms (etcd's view): a thin line at the bottom of the lane.
  for (const identity of identities) {
    const changes = only(events, 'leader').filter((e) => e.identity === identity);
    changes.forEach((e, i) => {
      if (!e.node) return;
      const lane = laneOf(identity, e.node);
      if (!lane) return;
      const until = changes[i + 1]?.t ?? tEnd;
      svg.push(
        `<rect x="${x(e.t).toFixed(1)}" y="${lane.y + LANE_H - 4}" width="${Math.max(1, x(until) - x(e.t)).toFixed(1)}" height="3" class="term"><title>${esc(`leader key: ${e.node}, token ${e.token}`)}</title></rect>`,
      );
    });
  }
  // The witnesses' logged-in spans: what the services themselves recorded.
  for (const s of spans) {
    const lane = laneOf(s.identity, s.node);
    if (!lane) continue;
    const open = !Number.isFinite(s.to);
    const x1 = x(s.from);
    const x2 = Math.max(x1 + 1, x(open ? tEnd : s.to));
    svg.push(
      `<rect x="${x1.toFixed(1)}" y="${lane.y + 2}" width="${(x2 - x1).toFixed(1)}" height="${LANE_H - 8}" fill="${colour(s.node)}" class="span${open ? ' open' : ''}"><title>${esc(`${s.identity} logged in on ${s.node}, token ${s.token}: ${((s.from - t0) / 1000).toFixed(2)} s → ${open ? 'no end recorded' : `${((s.to - t0) / 1000).toFixed(2)} s (${s.end?.what})`}`)}</title></rect>`,
    );
  }
  // PINGs and requests, as runs of the same outcome (one mark per event would weigh megabytes
  // on an hour's run): a run breaks where the outcome, the answering term or a gap changes.
  const runs = <E extends { t: number }>(list: E[], key: (e: E) => string) => {
    const out: Array<{ from: E; to: E; n: number; key: string }> = [];
    for (const e of list) {
      const k = key(e);
      const last = out.at(-1);
      if (last && last.key === k && e.t - last.to.t < RUN_GAP_MS) {
        last.to = e;
        last.n++;
      } else out.push({ from: e, to: e, n: 1, key: k });
    }
    return out;
  };
  for (const identity of identities) {
    const lane = laneOf(identity);
    if (!lane) continue;
    const pings = only(events, 'ping').filter((p) => p.identity === identity);
    for (const r of runs(
      pings,
      (p) =>
        `${p.responders.length === 0 ? 'none' : p.responders.length === 1 ? 'one' : 'many'} ${p.responders.map((x) => `${x.node} (${x.token})`).join(', ')}`,
    )) {
      const cls = r.key.split(' ')[0];
      svg.push(
        `<rect x="${x(r.from.t).toFixed(1)}" y="${lane.y + 3}" width="${Math.max(2, x(r.to.t) - x(r.from.t) + 2).toFixed(1)}" height="${(LANE_H - 8) / 2}" class="ping ${cls}"><title>${esc(`${r.n} PING(s): ${r.key.slice(cls!.length + 1) || 'no answer'}`)}</title></rect>`,
      );
    }
    const answers = only(events, 'request').filter((q) => q.identity === identity && q.what !== 'send');
    for (const r of runs(answers, (q) => `${q.what} ${q.node ?? ''} ${q.token ?? ''} ${q.error ?? ''}`)) {
      const cls = r.from.what;
      svg.push(
        `<rect x="${x(r.from.t).toFixed(1)}" y="${lane.y + 3 + (LANE_H - 8) / 2}" width="${Math.max(2, x(r.to.t) - x(r.from.t) + 2).toFixed(1)}" height="${(LANE_H - 8) / 2}" class="req ${cls}"><title>${esc(`${r.n} request(s): ${r.key}`)}</title></rect>`,
      );
    }
  }
  for (const thaw of report.thaws) {
    const lane = laneOf(thaw.identity, thaw.node);
    const end = spans.find(
      (sp) => sp.identity === thaw.identity && sp.node === thaw.node && sp.token === thaw.token,
    );
    if (!lane || !end) continue;
    svg.push(
      `<line x1="${x(end.to).toFixed(1)}" x2="${x(end.to).toFixed(1)}" y1="${lane.y}" y2="${lane.y + LANE_H}" class="thaw"><title>${esc(`${thaw.identity} on ${thaw.node} thawed with its host and was gone ${Math.round(thaw.livedMs)} ms later`)}</title></line>`,
    );
  }
  // Violations: a red mark at each proving event's time.
  const overview: string[] = [];
  const ox = (t: number) => ((t - t0) / Math.max(1, tEnd - t0)) * OVERVIEW_W;
  for (const v of report.violations) {
    for (const e of v.events) {
      svg.push(
        `<line x1="${x(e.t).toFixed(1)}" x2="${x(e.t).toFixed(1)}" y1="14" y2="${height - 10}" class="violation"><title>${esc(`${v.invariant}: ${v.message}`)}</title></line>`,
      );
    }
    const first = v.events[0];
    if (first)
      overview.push(
        `<rect x="${ox(first.t).toFixed(1)}" y="0" width="3" height="16" class="violation-mark"><title>${esc(`${v.invariant}: ${v.message}`)}</title></rect>`,
      );
  }
  for (const start of nemesis.filter((n) => n.phase === 'start')) {
    overview.unshift(`<rect x="${ox(start.t).toFixed(1)}" y="4" width="2" height="8" class="fault-mark"/>`);
  }

  const violations =
    report.violations.length === 0
      ? '<p class="ok">No violation of S1–S5, L1, L2.</p>'
      : `<ol class="violations">${report.violations
          .map(
            (v) =>
              `<li><b>${esc(v.invariant)}</b>: ${esc(v.message)}<pre>${esc(v.events.map((e) => JSON.stringify(e)).join('\n'))}</pre></li>`,
          )
          .join('')}</ol>`;
  const legend = nodes
    .map((n) => `<span class="key" style="background:${colour(n)}"></span>${esc(n)}`)
    .join(' ');

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title>
<style>
body{font:13px system-ui,sans-serif;margin:16px;color:#222}
h1{font-size:18px} pre{background:#f6f6f6;padding:8px;overflow-x:auto}
.timeline{overflow-x:auto;border:1px solid #ddd} .ok{color:#2e7d32;font-weight:bold}
.fault{fill:#fbc02d;opacity:.18} .fault-label{font-size:10px;fill:#8a6d00}
.lane{font-size:11px;fill:#333} .grid{stroke:#eee} .term{fill:#555;opacity:.6}
.span{opacity:.85} .span.open{opacity:.5;stroke:#c62828;stroke-dasharray:3 2}
.ping.one{fill:#66bb6a} .ping.none{fill:#bdbdbd} .ping.many{fill:#d32f2f}
.req.reply{fill:#1565c0} .req.error{fill:#ef6c00} .thaw{stroke:#7b1fa2;stroke-width:2}
.violation{stroke:#d32f2f;stroke-width:2} .violation-mark{fill:#d32f2f} .fault-mark{fill:#fbc02d}
.scenario{stroke:#999;stroke-dasharray:2 3} .scenario.failed{stroke:#d32f2f}
.key{display:inline-block;width:12px;height:12px;margin:0 4px 0 10px;vertical-align:middle}
.violations li{margin-bottom:8px}
</style></head><body>
<h1>${esc(title)}</h1>
<p>Overview (whole run; yellow: faults, red: violations)</p>
<svg width="${OVERVIEW_W}" height="16" style="background:#fafafa;border:1px solid #ddd">${overview.join('')}</svg>
<h2>Verdict</h2>
${violations}
<h2>Timeline</h2>
<p>Bars: each service's own logged-in record (dashed red outline: no end recorded). Thin line: the leader key in etcd. PING / req lane: above, PING (green one answer, grey none, red two or more); below, the workload's requests (blue answered, orange refused or failed). Purple: a whole-host freeze's thaw. Shaded: faults. ${legend}</p>
<div class="timeline"><svg width="${width}" height="${height}">${svg.join('')}</svg></div>
<h2>Summary</h2>
<pre>${esc(summaryText)}</pre>
</body></html>
`;
}

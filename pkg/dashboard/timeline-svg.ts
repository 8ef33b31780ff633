// The timeline drawn as inline SVG, server-side: one lane per node, bars per term phase,
// marks as vertical lines. Every bar and mark has a <title> (shown on hover) with its exact
// times, and the marks are also listed as text beside the picture.
import { html, type Html } from './html.js';
import type { Timeline, TermBar } from './timeline.js';

const WIDTH = 1000;
const LABEL_WIDTH = 90;
const LANE_HEIGHT = 26;
const AXIS_HEIGHT = 22;

export function timelineSvg(t: Timeline): Html {
  const span = Math.max(1, t.toMs - t.fromMs);
  const x = (ms: number) => LABEL_WIDTH + ((ms - t.fromMs) / span) * (WIDTH - LABEL_WIDTH - 10);
  const height = Math.max(1, t.nodes.length) * LANE_HEIGHT + AXIS_HEIGHT;
  const laneY = (node: string) => t.nodes.indexOf(node) * LANE_HEIGHT;
  const lanes = t.nodes.map(
    (node) =>
      html`<text class="lane" x="4" y="${laneY(node) + 17}">${node}</text>
        <line
          class="lane"
          x1="${LABEL_WIDTH}"
          x2="${WIDTH - 10}"
          y1="${laneY(node) + LANE_HEIGHT - 2}"
          y2="${laneY(node) + LANE_HEIGHT - 2}"
        />`,
  );
  const bars = t.bars.map((b) => {
    const x1 = x(b.startMs);
    const w = Math.max(2, x(b.endMs) - x1);
    return html`<rect
      class="bar ${b.phase}${b.open ? ' open' : ''}${b.endUnknown ? ' end-unknown' : ''}"
      data-node="${b.node}"
      data-token="${b.token ?? ''}"
      x="${x1.toFixed(1)}"
      y="${laneY(b.node) + 4}"
      width="${w.toFixed(1)}"
      height="${LANE_HEIGHT - 10}"
      ><title>${barTitle(b)}</title></rect
    >`;
  });
  const axisY = height - AXIS_HEIGHT;
  const marks = t.marks.map(
    (m) =>
      html`<line
        class="mark ${m.kind}"
        x1="${x(m.atMs).toFixed(1)}"
        x2="${x(m.atMs).toFixed(1)}"
        y1="0"
        y2="${axisY}"
        ><title>${clock(m.atMs)} ${m.label}${m.actor ? ` by ${m.actor}` : ''}</title></line
      >`,
  );
  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) => {
    const ms = t.fromMs + f * span;
    const anchor = f === 0 ? 'start' : f === 1 ? 'end' : 'middle';
    return html`<text class="tick" x="${x(ms).toFixed(1)}" y="${axisY + 15}" text-anchor="${anchor}"
      >${clock(ms)}</text
    >`;
  });
  const empty =
    t.nodes.length === 0 && html`<text class="lane" x="${LABEL_WIDTH}" y="17">no term in this window</text>`;
  return html`<svg
    class="timeline"
    viewBox="0 0 ${WIDTH} ${height}"
    role="img"
    aria-label="terms per node over time"
  >
    ${lanes}${bars}${marks}${ticks}${empty}
  </svg>`;
}

function barTitle(b: TermBar): string {
  const token = b.token ? ` token ${b.token}` : '';
  const start = b.clippedStart ? `before ${clock(b.startMs)}` : clock(b.startMs);
  const end = b.open ? 'now' : b.endUnknown ? `by ${clock(b.endMs)} (end not recorded)` : clock(b.endMs);
  return `${b.node} ${b.phase}${token}: ${start} – ${end} (${seconds(b.endMs - b.startMs)})`;
}

/** Times as UTC clock readings with milliseconds: a handover's gap is a matter of them. */
export function clock(ms: number): string {
  return new Date(ms).toISOString().slice(11, 23) + 'Z';
}

function seconds(ms: number): string {
  return ms < 10_000 ? `${(ms / 1000).toFixed(2)} s` : `${Math.round(ms / 1000)} s`;
}

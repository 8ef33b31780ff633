// An identity's history as a picture: who was logged in when (terms as bars per node), and
// what operators and the controller did (switchovers, failovers, pauses, fences as marks).
// Pure: history entries in, a timeline out; rendered as SVG by timeline-svg.ts.
import type { HistoryEntry } from '../history/index.js';

/** The phases of a term worth seeing: an overlap of two nodes' bars is a double login. */
export const TERM_PHASES = ['logging-in', 'leader', 'logging-out'] as const;
export type TermPhase = (typeof TERM_PHASES)[number];

export interface TermBar {
  node: string;
  phase: TermPhase;
  token?: string;
  startMs: number;
  endMs: number;
  /** Began before the oldest entry read: the bar starts at the window's edge. */
  clippedStart: boolean;
  /** Still going. */
  open: boolean;
  /**
   * The node never said when it ended (killed, or its history lost): drawn up to where the next
   * term began, which is when it was provably out, not when it stopped.
   */
  endUnknown?: boolean;
}

export type MarkKind = 'switchover' | 'failover' | 'probe-failover' | 'node-fence' | 'operator';

export interface Mark {
  atMs: number;
  kind: MarkKind;
  /** The history's own words (the workflow and its step, or the operator's action). */
  label: string;
  actor?: string;
}

export interface Timeline {
  fromMs: number;
  toMs: number;
  /** Nodes with a bar, in order of first appearance. */
  nodes: string[];
  bars: TermBar[];
  marks: Mark[];
}

const WORKFLOW_KINDS = ['switchover', 'failover', 'probe-failover', 'node-fence'] as const;
/**
 * Workflow steps shown as marks: its end. Its start is the operator's request (an audit record
 * without a step) or, for a probe-driven failover, its first step; the steps between are in
 * the table beside the picture.
 */
const MARKED_STEPS = new Set(['done', 'aborted']);

function isPhase(state: string | undefined): state is TermPhase {
  return (TERM_PHASES as readonly string[]).includes(state ?? '');
}

/**
 * Bars from agents' transitions (a phase starts when a node enters it and ends when it leaves
 * it), marks from controller actions. The window starts at the oldest entry (or an hour
 * before `nowMs` when there is none) and ends at `nowMs`.
 */
export function buildTimeline(
  entries: readonly HistoryEntry[],
  nowMs: number,
  current?: { leader?: string; token?: string; loggedIn: boolean },
): Timeline {
  const sorted = [...entries].sort((a, b) => a.at - b.at);
  const fromMs = Math.min(sorted[0]?.at ?? nowMs - 60 * 60 * 1000, nowMs);
  const bars: TermBar[] = [];
  const marks: Mark[] = [];
  const nodes: string[] = [];
  const openBars = new Map<string, TermBar>();
  /** Bars ended by presumption (a successor logged in): a late word from their node ends them. */
  const presumedEnded = new Map<string, TermBar>();

  const close = (node: string, atMs: number) => {
    const bar = openBars.get(node);
    if (!bar) return;
    bar.endMs = atMs;
    bar.open = false;
    openBars.delete(node);
  };
  const open = (
    node: string,
    phase: TermPhase,
    atMs: number,
    token: string | undefined,
    clipped: boolean,
  ) => {
    if (!nodes.includes(node)) nodes.push(node);
    const bar: TermBar = {
      node,
      phase,
      startMs: atMs,
      endMs: nowMs,
      clippedStart: clipped,
      open: true,
      ...(token !== undefined && { token }),
    };
    bars.push(bar);
    openBars.set(node, bar);
  };

  for (const e of sorted) {
    if (e.kind === 'action') {
      const mark = markOf(e);
      if (mark) marks.push(mark);
      continue;
    }
    // The node's own word on a term presumed ended: the real end replaces the presumption, so a
    // term that outlived its successor's login shows as the overlap it was.
    const presumed = presumedEnded.get(e.node);
    if (presumed && isPhase(e.from) && presumed.phase === e.from && presumed.token === e.token) {
      presumed.endMs = e.at;
      delete presumed.endUnknown;
      presumedEnded.delete(e.node);
      if (isPhase(e.to)) open(e.node, e.to, e.at, e.token, false);
      continue;
    }
    presumedEnded.delete(e.node);
    // A node leaving a phase we never saw it enter was in it since before the window.
    if (isPhase(e.from) && !openBars.has(e.node)) open(e.node, e.from, fromMs, e.token, true);
    close(e.node, e.at);
    // A new term logging in while another node's bar of an older term is open: that node
    // stopped without a word (a SIGKILL writes no history) or has not written it yet. Its bar
    // ends here, marked as unknown, until the node's own record says otherwise.
    if (e.to === 'logging-in') {
      for (const [node, bar] of openBars) {
        if (node !== e.node && bar.token !== e.token) {
          close(node, e.at);
          bar.endUnknown = true;
          presumedEnded.set(node, bar);
        }
      }
    }
    if (isPhase(e.to)) open(e.node, e.to, e.at, e.token, false);
  }
  // The current leader, logged in since before every entry read, still has a bar.
  if (current?.loggedIn && current.leader && !openBars.has(current.leader)) {
    open(current.leader, 'leader', fromMs, current.token, true);
  }
  return { fromMs, toMs: nowMs, nodes, bars, marks };
}

function markOf(e: HistoryEntry): Mark | undefined {
  const actor = e.actor !== undefined ? { actor: e.actor } : {};
  const reason = e.reason ?? '';
  const kind = WORKFLOW_KINDS.find((k) => reason.startsWith(`${k} `));
  if (kind) {
    const start = e.to === undefined || (kind === 'probe-failover' && e.from === 'requested');
    if (!start && !MARKED_STEPS.has(e.to ?? '')) return undefined;
    return { atMs: e.at, kind, label: e.to ? `${reason} (${e.to})` : reason, ...actor };
  }
  return { atMs: e.at, kind: 'operator', label: reason || 'operator action', ...actor };
}

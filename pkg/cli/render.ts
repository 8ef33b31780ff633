// Pure text rendering for the CLI: tables, durations, times and the views of the controller's
// API responses. No I/O and no clock reads (callers pass `now`), so every line is unit-tested.
import type {
  AclView,
  ApplyResult,
  ControllerInfo,
  IdentityView,
  NodeView,
  StandbyView,
  Workflow,
} from '../api/schema.js';
import type { HistoryEntry } from '../history/index.js';
import { formatDuration, formatElapsed, toMs, formatAgo, formatLocalTime, formatWhen } from './time.js';

// --- tables -------------------------------------------------------------------------------

export interface Column {
  header: string;
  /** Numbers read best right-aligned; everything else left. */
  align?: 'left' | 'right';
}

/** Width in terminal cells, counting code points (names here are ASCII; arrows are one cell). */
const cellWidth = (text: string) => [...text].length;

const pad = (text: string, width: number, align: 'left' | 'right') => {
  const fill = ' '.repeat(Math.max(0, width - cellWidth(text)));
  return align === 'right' ? fill + text : text + fill;
};

/** A cell never breaks the row: newlines (a multi-line reason) become spaces. */
const oneLine = (text: string) => text.replace(/\s*[\r\n]+\s*/g, ' ');

/** A `+---+` bordered table like `patronictl list`; missing cells render empty. */
export function renderTable(columns: readonly Column[], rows: readonly (readonly string[])[]): string {
  const cells = rows.map((row) => columns.map((_, i) => oneLine(row[i] ?? '')));
  const widths = columns.map((column, i) =>
    Math.max(cellWidth(column.header), ...cells.map((row) => cellWidth(row[i] ?? ''))),
  );
  const border = `+${widths.map((w) => '-'.repeat(w + 2)).join('+')}+`;
  const line = (row: readonly string[], header: boolean) =>
    `| ${row
      .map((cell, i) => pad(cell, widths[i] ?? 0, header ? 'left' : (columns[i]?.align ?? 'left')))
      .join(' | ')} |`;
  return [
    border,
    line(
      columns.map((c) => c.header),
      true,
    ),
    border,
    ...cells.map((row) => line(row, false)),
    border,
  ].join('\n');
}

/** `Label:  value` lines with the values aligned; an empty value shows as `-`. */
export function renderKeyValues(pairs: readonly (readonly [string, string])[]): string {
  const width = Math.max(0, ...pairs.map(([key]) => cellWidth(key) + 1));
  return pairs.map(([key, value]) => `${pad(`${key}:`, width, 'left')}  ${value || '-'}`).join('\n');
}

// --- identities ---------------------------------------------------------------------------

export const LIST_COLUMNS: readonly Column[] = [
  { header: 'Identity' },
  { header: 'Member' },
  { header: 'Role' },
  { header: 'State' },
  { header: 'Token', align: 'right' },
  { header: 'Logged in since' },
  { header: 'Health' },
  { header: 'Lag', align: 'right' },
];

/** Role of a member, patronictl style: Leader, Standby, Cold standby, Drained, Fenced. */
export function memberRole(view: IdentityView, node: string, standby: StandbyView | undefined): string {
  if (view.leader === node) return 'Leader';
  if (standby?.fenced || view.fencedNodes.includes(node)) return 'Fenced';
  if (standby?.state === 'drained') return 'Drained';
  // Not registered: its agent is not running, so it is a cold standby (a clone that can start).
  const role = standby && !standby.registered ? 'Cold standby' : 'Standby';
  return standby?.nofailover ? `${role} (nofailover)` : role;
}

/** Members in display order: the leader, then standbys by priority (highest first) and name. */
export function members(view: IdentityView): { node: string; standby: StandbyView | undefined }[] {
  const byNode = new Map(view.standbys.map((s) => [s.node, s]));
  const others = [...view.standbys]
    .filter((s) => s.node !== view.leader)
    .sort((a, b) => (b.priority ?? 0) - (a.priority ?? 0) || a.node.localeCompare(b.node));
  const list = others.map((s) => ({ node: s.node, standby: s as StandbyView | undefined }));
  const fencedOnly = view.fencedNodes
    .filter((node) => !byNode.has(node) && node !== view.leader)
    .map((node) => ({ node, standby: undefined }));
  return [
    ...(view.leader ? [{ node: view.leader, standby: byNode.get(view.leader) }] : []),
    ...list,
    ...fencedOnly,
  ];
}

/** One table row per member of one identity. */
export function memberRows(view: IdentityView, now: number): string[][] {
  const rows = members(view).map(({ node, standby }) => {
    const leader = view.leader === node;
    const state = standby?.state ?? (leader ? (view.loggedIn ? 'logged-in' : 'logging-in') : '');
    const health = leader ? view.health : standby ? (standby.healthy ? 'healthy' : 'unhealthy') : '';
    return [
      view.identity,
      node,
      memberRole(view, node, standby),
      state,
      leader ? (view.token ?? '') : '',
      leader && view.loggedInSince ? formatAgo(view.loggedInSince, now) : '',
      health,
      leader ? '' : lagCell(standby),
    ];
  });
  // An identity nobody can host still gets a row, so it does not vanish from the list.
  return rows.length > 0 ? rows : [[view.identity, '-', 'no leader', '', '', '', view.health, '']];
}

/** The lines under the table: maintenance mode, a workflow in progress, a split brain. */
export function identityNotes(view: IdentityView, now: number): string[] {
  const notes: string[] = [];
  if (!view.leader) notes.push(`${view.identity}: NO LEADER: nobody is logged in (health ${view.health})`);
  else if (view.health === 'degraded') {
    notes.push(
      `${view.identity}: leader ${view.leader} does not answer probes (${view.probeFailures} failed in a row)`,
    );
  }
  if (view.health === 'split-brain') {
    const who = view.responders.map(responderText).join(', ');
    notes.push(`${view.identity}: SPLIT BRAIN: ${view.responders.length} responders: ${who}`);
  }
  if (view.paused) {
    notes.push(
      `${view.identity}: maintenance mode (no automatic failover): paused by ${view.paused.actor} ` +
        `${formatAgo(view.paused.at, now)}: ${view.paused.reason}`,
    );
  }
  for (const s of view.standbys) {
    if (s.drift) notes.push(`${view.identity}: ${s.node} DRIFTED, does not campaign: ${s.drift.join('; ')}`);
  }
  if (view.workflow && !isTerminal(view.workflow.state)) {
    notes.push(
      `${view.identity}: ${view.workflow.kind} ${view.workflow.id} in progress (${view.workflow.state})`,
    );
  }
  return notes;
}

/** A PING responder; one that answered with an error is logged in but its service is not. */
const responderText = (r: IdentityView['responders'][number]) =>
  `${r.node} (token ${r.token}${r.error ? `, answers with error: ${r.error}` : ''})`;

const isTerminal = (state: string) => state === 'done' || state === 'aborted';

/** `understudy list`: the members table, then one note line per notable identity. */
export function renderIdentityList(views: readonly IdentityView[], now: number): string {
  if (views.length === 0) return 'no identities yet: create them with `understudy apply -f specs.yaml`';
  const sorted = [...views].sort((a, b) => a.identity.localeCompare(b.identity));
  const table = renderTable(
    LIST_COLUMNS,
    sorted.flatMap((v) => memberRows(v, now)),
  );
  const notes = sorted.flatMap((v) => identityNotes(v, now));
  return [table, ...notes.map((n) => ` ${n}`)].join('\n');
}

const STANDBY_COLUMNS: readonly Column[] = [
  { header: 'Member' },
  { header: 'Role' },
  { header: 'State' },
  { header: 'Priority', align: 'right' },
  { header: 'Health' },
  { header: 'Lag', align: 'right' },
  { header: 'Last heartbeat' },
];

/** `understudy status <identity>`: everything the controller knows about one identity. */
export function renderIdentityStatus(view: IdentityView, now: number): string {
  const responders = view.responders.length === 0 ? 'none' : view.responders.map(responderText).join(', ');
  const probe = view.lastProbe
    ? `last probe ${formatAgo(view.lastProbe, now)}, ${view.probeFailures} failed in a row`
    : 'not probed yet';
  const workflow = view.workflow
    ? `${view.workflow.kind} ${view.workflow.id}: ${view.workflow.state}`
    : 'none';
  const summary = renderKeyValues([
    ['Identity', view.description ? `${view.identity} (${view.description})` : view.identity],
    ['Spec revision', view.specRevision],
    ['Leader', view.leader ? `${view.leader}${view.loggedIn ? '' : ' (not logged in yet)'}` : 'none'],
    ['Token', view.token ?? ''],
    ['Logged in since', view.loggedInSince ? formatWhen(view.loggedInSince, now) : ''],
    ['Term since', view.termSince ? formatWhen(view.termSince, now) : ''],
    ['Health', `${view.health} (${probe})`],
    ['Responders', responders],
    [
      'Paused',
      view.paused
        ? `yes, by ${view.paused.actor} ${formatAgo(view.paused.at, now)}: ${view.paused.reason}`
        : 'no',
    ],
    ['Fenced nodes', view.fencedNodes.join(', ')],
    ['Workflow', workflow],
  ]);
  const standbys = members(view).filter((m) => m.node !== view.leader && m.standby);
  const table =
    standbys.length === 0
      ? 'Standbys: none'
      : `Standbys:\n${renderTable(
          STANDBY_COLUMNS,
          standbys.map(({ node, standby }) => standbyRow(view, node, standby!, now)),
        )}`;
  const drifted = standbys.flatMap(({ node, standby }) =>
    standby?.drift ? [`${node} is DRIFTED and does not campaign: ${standby.drift.join('; ')}`] : [],
  );
  return [summary, table, ...drifted].join('\n');
}

function standbyRow(view: IdentityView, node: string, s: StandbyView, now: number): string[] {
  return [
    node,
    memberRole(view, node, s),
    s.state ?? '',
    s.priority === undefined ? '' : String(s.priority),
    s.healthy ? 'healthy' : 'unhealthy',
    lagCell(s),
    formatAgo(s.lastHeartbeat, now),
  ];
}

/** A standby's lag: `drifted` while held back from elections, else spec changes behind. */
function lagCell(s: StandbyView | undefined): string {
  if (s?.drift) return 'drifted';
  return s?.cloneLag === undefined ? '' : String(s.cloneLag);
}

// --- workflows ----------------------------------------------------------------------------

/** Width of the longest workflow state (`transferred`), so notes line up. */
const STATE_WIDTH = 11;

/** One progress line: `  +0.12s draining     asked b to log out` (label: which identity). */
export function stepLine(
  step: { state: string; at: string; note?: string },
  startMs: number,
  label?: string,
): string {
  const elapsed = formatElapsed((toMs(step.at) ?? startMs) - startMs).padStart(8);
  const who = label ? `${label}  ` : '';
  return `  ${elapsed} ${who}${step.state.padEnd(STATE_WIDTH)}${step.note ? `  ${step.note}` : ''}`.trimEnd();
}

/** The line printed when a workflow is accepted: `switchover wf-1 of msggateway: a -> b ...`. */
export function workflowHeadline(wf: Workflow, now: number): string {
  const from = wf.from ? `${wf.from.node} (token ${wf.from.token})` : 'no leader';
  const to = wf.target ?? wf.chosen ?? 'the best healthy standby';
  const budget = (toMs(wf.deadline) ?? 0) - (toMs(wf.at) ?? toMs(wf.createdAt) ?? 0);
  const when = wf.at && (toMs(wf.at) ?? 0) > now ? `, starts ${formatWhen(wf.at, now)}` : '';
  const deadline = budget > 0 ? `, deadline ${formatDuration(budget)}` : '';
  return `${wf.kind} ${wf.id} of ${wf.identity}: ${from} -> ${to}${when}${deadline}`;
}

/** How a finished (or still running) workflow ended, for the last line of the progress. */
export function workflowOutcome(wf: Workflow): string {
  const took = formatDuration((toMs(wf.updatedAt) ?? 0) - (toMs(wf.createdAt) ?? 0));
  if (wf.state === 'done') {
    const where = wf.chosen ?? wf.target;
    const token = wf.newToken ? ` with token ${wf.newToken}` : '';
    const result = where ? `${wf.identity} is logged in on ${where}${token}` : (wf.outcome ?? 'finished');
    return `${wf.kind} of ${wf.identity} done in ${took}: ${result}`;
  }
  if (wf.state === 'aborted') {
    const keeps = wf.from ? `; ${wf.from.node} keeps or regains ${wf.identity}` : '';
    return `${wf.kind} of ${wf.identity} ABORTED after ${took}: ${wf.outcome ?? 'no reason given'}${keeps}`;
  }
  return `${wf.kind} ${wf.id} of ${wf.identity} is still ${wf.state}`;
}

// --- nodes --------------------------------------------------------------------------------

const NODE_COLUMNS: readonly Column[] = [
  { header: 'Node' },
  { header: 'Alive' },
  { header: 'Last heartbeat' },
  { header: 'Fence' },
  { header: 'Identities' },
];

function fenceCell(node: NodeView, now: number): string {
  if (node.fenced)
    return `fenced by ${node.fenced.actor} ${formatAgo(node.fenced.at, now)}: ${node.fenced.reason}`;
  if (node.fencePending) {
    const moving = node.fencePending.workflows.length;
    return `pending (${moving} handover${moving === 1 ? '' : 's'}) by ${node.fencePending.actor}: ${node.fencePending.reason}`;
  }
  return '';
}

export function renderNodes(nodes: readonly NodeView[], now: number): string {
  if (nodes.length === 0) return 'no nodes have reported yet: start an agent (cmd/agent)';
  const rows = [...nodes]
    .sort((a, b) => a.node.localeCompare(b.node))
    .map((n) => [
      n.node,
      n.alive ? 'yes' : 'NO',
      formatAgo(n.lastHeartbeat, now),
      fenceCell(n, now),
      n.identities.map((i) => `${i.identity}:${i.state}${i.token ? `@${i.token}` : ''}`).join(', '),
    ]);
  return renderTable(NODE_COLUMNS, rows);
}

// --- history ------------------------------------------------------------------------------

const HISTORY_COLUMNS: readonly Column[] = [
  { header: 'Time' },
  { header: 'Identity' },
  { header: 'Node' },
  { header: 'Kind' },
  { header: 'Change' },
  { header: 'Token', align: 'right' },
  { header: 'Actor' },
  { header: 'Reason' },
  { header: 'Took', align: 'right' },
];

export function renderHistory(entries: readonly HistoryEntry[]): string {
  if (entries.length === 0) return 'no history yet';
  const rows = entries.map((e) => [
    formatLocalTime(e.at),
    e.identity,
    e.node,
    e.kind,
    e.from || e.to ? `${e.from ?? ''} -> ${e.to ?? ''}`.trim() : '',
    e.token ?? '',
    e.actor ?? '',
    e.reason ?? '',
    e.durationMs === undefined ? '' : formatDuration(e.durationMs),
  ]);
  return renderTable(HISTORY_COLUMNS, rows);
}

// --- apply, access lists, controller ------------------------------------------------------

export function renderApplyResults(results: readonly ApplyResult[], dryRun: boolean): string {
  if (results.length === 0) return 'nothing to apply';
  const verb = (action: ApplyResult['action']) =>
    dryRun
      ? { created: 'would be created', updated: 'would be updated', unchanged: 'unchanged' }[action]
      : action;
  const width = Math.max(...results.map((r) => cellWidth(r.identity)));
  const lines = results.map(
    (r) => `${pad(r.identity, width, 'left')}  ${verb(r.action)} (revision ${r.revision})`,
  );
  return dryRun ? [...lines, '(dry run: nothing was changed)'].join('\n') : lines.join('\n');
}

const PENDING_COLUMNS: readonly Column[] = [
  { header: 'Caller' },
  { header: 'Key' },
  { header: 'Request' },
  { header: 'Node' },
  { header: 'Asked' },
];

export function renderAcl(view: AclView, now: number): string {
  const callers = (list: readonly { name?: string; nkey?: string }[]) =>
    list.length === 0
      ? 'none'
      : list.map((c) => (c.name && c.nkey ? `${c.name} (${c.nkey})` : (c.name ?? c.nkey ?? '?'))).join(', ');
  const summary = renderKeyValues([
    ['Identity', view.identity],
    ['Open', view.access.open ? 'yes: anyone may use its commands (STATUS stays for contacts)' : 'no'],
    ['Contacts', callers(view.access.contacts)],
    ['Authorized', callers(view.access.authorized)],
    ['Blocked', callers(view.access.blocked)],
  ]);
  if (view.pending.length === 0) return `${summary}\nPending: none`;
  const rows = view.pending.map((p) => [p.name, p.nkey, p.request, p.node, formatAgo(p.at, now)]);
  return (
    `${summary}\nPending (approve with: understudy acl ${view.identity} approve <caller>):\n` +
    renderTable(PENDING_COLUMNS, rows)
  );
}

export function renderControllerInfo(info: ControllerInfo, url: string): string {
  const lines = [
    `${info.name} at ${url} answers (version ${info.version}): ${info.active ? 'active' : 'standby'}`,
  ];
  if (!info.active) {
    const active = info.activeController;
    lines.push(
      active
        ? `active controller: ${active.name}${active.url ? ` at ${active.url}` : ' (it advertises no URL)'}`
        : 'no active controller: an election is under way or no controller holds the lease',
    );
  }
  return lines.join('\n');
}

// An identity's state and cold standbys through the controller: take a snapshot now, list the
// snapshots kept, register a clone on a new node, list the clones with their age and drift.
import type { CloneList, CloneView, SnapshotList, SnapshotRecord } from '../api/schema.js';
import { EXIT } from './exit.js';
import { renderTable } from './render.js';
import { formatAgo, formatDuration } from './time.js';
import { context, fieldsAsOptions, routes, type ControllerOptions } from './controller-context.js';

const formatBytes = (n: number) =>
  n >= 1 << 30
    ? `${(n / (1 << 30)).toFixed(1)} GiB`
    : n >= 1 << 20
      ? `${(n / (1 << 20)).toFixed(1)} MiB`
      : n >= 1 << 10
        ? `${(n / (1 << 10)).toFixed(1)} KiB`
        : `${n} B`;

export function renderSnapshots(list: SnapshotList, now: number): string {
  if (list.snapshots.length === 0) {
    return `${list.identity} has no snapshot yet: its leader takes one on its schedule, or run \`understudy snapshot ${list.identity}\``;
  }
  return renderTable(
    [
      { header: 'Snapshot' },
      { header: 'Node' },
      { header: 'Token', align: 'right' },
      { header: 'Taken' },
      { header: 'Files', align: 'right' },
      { header: 'Size', align: 'right' },
      { header: 'Consistent' },
    ],
    list.snapshots.map((s) => [
      s.object,
      s.node,
      s.token,
      formatAgo(s.takenAt, now),
      String(s.files),
      formatBytes(s.bytes),
      s.quiesced ? 'yes' : 'copied live',
    ]),
  );
}

export async function snapshotNow(
  opts: ControllerOptions,
  identity: string,
  reason?: string,
): Promise<number> {
  const { api, out } = await context(opts);
  const record = await api.post<SnapshotRecord>(routes.snapshot(identity), reason ? { reason } : {}, {
    describeField: fieldsAsOptions({ reason: '--reason' }),
  });
  out.result(
    record,
    () =>
      `${identity}: snapshot ${record.object} published by ${record.node} under token ${record.token} ` +
      `(${record.files} files, ${formatBytes(record.bytes)}${record.quiesced ? '' : ', copied while the service ran'})`,
  );
  return EXIT.ok;
}

export async function snapshots(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  const list = await api.get<SnapshotList>(routes.snapshots(identity));
  out.result(list, () => renderSnapshots(list, Date.now()));
  return EXIT.ok;
}

export function renderClones(list: CloneList): string {
  if (list.clones.length === 0) {
    return `${list.identity} has no clone: register one with \`understudy clone ${list.identity} --to NODE\``;
  }
  const table = renderTable(
    [
      { header: 'Node' },
      { header: 'Age', align: 'right' },
      { header: 'Agent' },
      { header: 'Spec rev', align: 'right' },
      { header: 'Snapshot' },
      { header: 'Drift' },
    ],
    list.clones.map((c) => [
      c.node,
      formatDuration(c.ageMs),
      c.live ? 'running' : c.bootstrappedAt ? 'stopped' : 'not started',
      c.bundle.specRevision,
      c.bundle.snapshot?.object ?? '-',
      c.drifted ? 'DRIFTED' : 'in sync',
    ]),
  );
  const notes = list.clones.flatMap((c) => c.drift.map((d) => `${c.node}: ${d}`));
  return notes.length > 0 ? `${table}\n${notes.join('\n')}` : table;
}

export async function cloneTo(
  opts: ControllerOptions,
  identity: string,
  flags: { to: string; reason?: string },
): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<CloneView>(
    routes.clones(identity),
    { node: flags.to, ...(flags.reason ? { reason: flags.reason } : {}) },
    { describeField: fieldsAsOptions({ node: '--to', reason: '--reason' }) },
  );
  out.result(view, () =>
    [
      `${flags.to} registered as a cold standby of ${identity} (spec revision ${view.bundle.specRevision}` +
        `${view.bundle.snapshot ? `, snapshot ${view.bundle.snapshot.object}` : ', no snapshot yet'}).`,
      `Start it on ${flags.to} with:  understudy-agent --config /etc/understudy/agent.yaml --clone ${identity}`,
    ].join('\n'),
  );
  return EXIT.ok;
}

export async function clones(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  const list = await api.get<CloneList>(routes.clones(identity));
  out.result(list, () => renderClones(list));
  return EXIT.ok;
}

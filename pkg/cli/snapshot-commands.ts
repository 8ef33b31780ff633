// Snapshots of an identity's state directory through the controller: take one now, list them.
import type { SnapshotList, SnapshotRecord } from '../api/schema.js';
import { EXIT } from './exit.js';
import { renderTable } from './render.js';
import { formatAgo } from './time.js';
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

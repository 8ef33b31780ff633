// Snapshots kept in a real NATS JetStream object store with their records in a real etcd: a
// snapshot is published only under the term that holds the identity, and a corrupt newest
// one is refused in favour of the previous good one.
import { expect } from 'chai';
import { mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Keys } from '../../pkg/lease/keys.js';
import {
  packSnapshot,
  SNAPSHOT_BUCKET,
  SnapshotStore,
  StaleSnapshotError,
} from '../../pkg/snapshot/index.js';
import { IntegrationCluster } from '../support/cluster.js';

describe('snapshot store (real etcd, NATS JetStream object store)', function () {
  this.timeout(120_000);
  let cluster: IntegrationCluster;
  let store: SnapshotStore;
  let root: string;
  const keys = new Keys();

  before(async () => {
    cluster = await IntegrationCluster.start({ nats: { auth: false }, connect: true });
    store = new SnapshotStore(cluster.client, cluster.nc, keys);
  });
  after(() => cluster?.close());

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'understudy-snapstore-'));
  });
  afterEach(() => rm(root, { recursive: true, force: true }));

  /** A term for `identity` on `node`: the leader key, whose mod revision is the token. */
  async function term(identity: string, node: string): Promise<bigint> {
    const put = await cluster.client.put(keys.leader(identity)).value(JSON.stringify({ node }));
    return BigInt(put.header.revision);
  }

  async function stateWith(name: string, offset: string): Promise<string> {
    const dir = join(root, name);
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, 'offset'), offset);
    return dir;
  }

  const publish = (identity: string, token: bigint, dir: string, nowMs: number) =>
    store.publish({ identity, node: 'a', token, dir, quiesced: true, keep: 2, nowMs });

  it('publishes under the current token; a standby restores the state as it was', async () => {
    const token = await term('bot', 'a');
    const record = await publish('bot', token, await stateWith('leader', 'update_id=881\n'), 1_000);
    expect(record).to.include({ identity: 'bot', token: String(token), files: 1 });
    const restored = await store.restoreLatest('bot', join(root, 'standby'));
    expect(restored.record).to.deep.equal(record);
    expect(await readFile(join(root, 'standby', 'offset'), 'utf8')).to.equal('update_id=881\n');
  });

  it('refuses a snapshot under a stale token: no record, and its archive is gone', async () => {
    const old = await term('gw', 'a');
    await term('gw', 'b');
    const err = await publish('gw', old, await stateWith('stale', 'seq=1\n'), 2_000).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(StaleSnapshotError);
    expect((err as Error).message).to.match(new RegExp(`under token ${old} refused`));
    expect(await store.list('gw')).to.deep.equal([]);
    const os = await cluster.nc.jetstream().views.os(SNAPSHOT_BUCKET);
    expect((await os.list()).filter((o) => o.name.startsWith('gw/') && !o.deleted)).to.deep.equal([]);
  });

  it('leaves neither record nor half an archive when the copy fails (a link in the state directory)', async () => {
    const token = await term('torn', 'a');
    const dir = await stateWith('torn', 'seq=1\n');
    await symlink('/etc/hostname', join(dir, 'hostname'));
    const err = await publish('torn', token, dir, 7_000).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).to.match(/hostname is not a regular file/);
    expect(await store.list('torn')).to.deep.equal([]);
    const os = await cluster.nc.jetstream().views.os(SNAPSHOT_BUCKET);
    expect((await os.list()).filter((o) => o.name.startsWith('torn/') && !o.deleted)).to.deep.equal([]);
  });

  it('refuses an archive replaced in the object store, even with a self-consistent manifest', async () => {
    const token = await term('sms', 'a');
    const good = await publish('sms', token, await stateWith('good', 'queue=17\n'), 6_000);
    // Another snapshot of the same identity and token, but other state: a valid archive on its own.
    const os = await cluster.nc.jetstream().views.os(SNAPSHOT_BUCKET);
    const packed = packSnapshot(await stateWith('forged', 'queue=0\n'), {
      identity: 'sms',
      node: 'a',
      token: String(token),
      quiesced: true,
      startedMs: 6_000,
    });
    const chunks: Buffer[] = [];
    for await (const chunk of packed.stream as AsyncIterable<Buffer>) chunks.push(chunk);
    await os.putBlob({ name: good.object }, Buffer.concat(chunks));

    const err = await store.restoreLatest('sms', join(root, 'standby')).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).to.match(/manifest's sha256 .* is not the .* its record names/);
  });

  it('keeps the newest N, and restores the previous one when the newest is corrupt', async () => {
    const token = await term('fix', 'a');
    await publish('fix', token, await stateWith('s1', 'seq=1\n'), 3_000);
    const second = await publish('fix', token, await stateWith('s2', 'seq=2\n'), 4_000);
    const third = await publish('fix', token, await stateWith('s3', 'seq=3\n'), 5_000);
    expect((await store.list('fix')).map((r) => r.object)).to.deep.equal([third.object, second.object]);

    // The newest archive truncated in the store (a torn upload, a damaged disk).
    const os = await cluster.nc.jetstream().views.os(SNAPSHOT_BUCKET);
    const whole = await os.getBlob(third.object);
    await os.putBlob({ name: third.object }, whole!.subarray(0, whole!.length - 2048));

    const target = join(root, 'standby');
    const restored = await store.restoreLatest('fix', target);
    expect(restored.record.object).to.equal(second.object);
    expect(restored.refused.map((r) => r.record.object)).to.deep.equal([third.object]);
    expect(restored.refused[0]!.reason).to.match(/truncated|end|manifest/i);
    expect(await readFile(join(target, 'offset'), 'utf8')).to.equal('seq=2\n');
  });
});

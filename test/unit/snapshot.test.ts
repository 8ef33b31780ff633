// Snapshots of a state directory on a real filesystem: what a restore gives back, and what it
// refuses (truncated, corrupt, unsafe or foreign archives) without touching the directory.
import { expect } from 'chai';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import tar from 'tar-stream';
import {
  MANIFEST_ENTRY,
  packSnapshot,
  previousDir,
  recoverInterruptedSwap,
  restoreSnapshot,
  SnapshotError,
  type Manifest,
} from '../../pkg/snapshot/index.js';

const META = {
  identity: 'fix-session',
  node: 'a',
  token: '4711',
  quiesced: true,
  startedMs: Date.UTC(2026, 11, 3),
};

describe('snapshots of a state directory (pkg/snapshot)', function () {
  let root: string;
  let state: string;

  beforeEach(async () => {
    root = await mkdtemp(join(tmpdir(), 'understudy-snapshot-'));
    state = join(root, 'src');
    await mkdir(join(state, 'seq', 'empty'), { recursive: true });
    await writeFile(join(state, 'seq', 'outgoing'), 'MsgSeqNum=1042\n', { mode: 0o640 });
    await writeFile(join(state, 'offset'), '99817\n', { mode: 0o600 });
    await writeFile(join(state, 'blank'), '');
    await writeFile(join(state, 'big.bin'), Buffer.alloc(3 * 1024 * 1024 + 7, 0xab));
  });

  afterEach(() => rm(root, { recursive: true, force: true }));

  async function archive(dir = state): Promise<{ bytes: Buffer; manifest: Manifest }> {
    const packed = packSnapshot(dir, META);
    const chunks: Buffer[] = [];
    for await (const chunk of packed.stream as AsyncIterable<Buffer>) chunks.push(chunk);
    return { bytes: Buffer.concat(chunks), manifest: await packed.manifest };
  }

  async function tree(dir: string): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const name of (await readdir(dir, { recursive: true })).sort()) {
      const info = await stat(join(dir, name));
      out[name] = info.isDirectory()
        ? `dir ${(info.mode & 0o777).toString(8)}`
        : `${(info.mode & 0o777).toString(8)} ${(await readFile(join(dir, name))).toString('base64').slice(0, 40)}:${info.size}`;
    }
    return out;
  }

  it('restores every file and directory with its content and mode, stamped with the token', async () => {
    const { bytes, manifest } = await archive();
    expect(manifest).to.include({ identity: 'fix-session', token: '4711', quiesced: true });
    expect(manifest.entries.map((e) => e.path)).to.deep.equal([
      'big.bin',
      'blank',
      'offset',
      'seq',
      'seq/empty',
      'seq/outgoing',
    ]);
    expect(manifest.bytes).to.equal(3 * 1024 * 1024 + 7 + 15 + 6);
    const target = join(root, 'restored');
    const result = await restoreSnapshot(Readable.from([bytes]), target, { token: '4711' });
    expect(result.manifest).to.deep.equal(manifest);
    expect(await tree(target)).to.deep.equal(await tree(state));
  });

  it('gives the restored tree to the service user when services run as one (the agent being root, as here)', async function () {
    const target = join(root, 'restored');
    await restoreSnapshot(
      Readable.from([(await archive()).bytes]),
      target,
      {},
      { owner: { uid: 65534, gid: 65534 } },
    );
    const owners = new Set<string>();
    for (const name of ['', ...(await readdir(target, { recursive: true }))]) {
      const info = await stat(join(target, name));
      owners.add(`${info.uid}:${info.gid}`);
    }
    expect([...owners]).to.deep.equal(['65534:65534']);
    expect(await tree(target)).to.deep.equal(await tree(state));
  });

  it('keeps the directory it replaces as .prev', async () => {
    const target = join(root, 'restored');
    await mkdir(target);
    await writeFile(join(target, 'old'), 'before');
    const result = await restoreSnapshot(Readable.from([(await archive()).bytes]), target);
    expect(result.previous).to.equal(previousDir(target));
    expect(await readFile(join(previousDir(target), 'old'), 'utf8')).to.equal('before');
    expect(await readFile(join(target, 'offset'), 'utf8')).to.equal('99817\n');
  });

  describe('refuses, leaving the directory as it was and no temporary directory behind', () => {
    let target: string;

    beforeEach(async () => {
      target = join(root, 'restored');
      await mkdir(target);
      await writeFile(join(target, 'offset'), 'the good one\n');
    });

    async function refused(source: Buffer, expectToken?: string): Promise<SnapshotError> {
      const err = await restoreSnapshot(
        Readable.from([source]),
        target,
        expectToken ? { token: expectToken } : {},
      ).then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(err).to.be.instanceOf(SnapshotError);
      expect(await readFile(join(target, 'offset'), 'utf8')).to.equal('the good one\n');
      expect((await readdir(root)).sort()).to.deep.equal(['restored', 'src']);
      return err as SnapshotError;
    }

    it('a truncated archive', async () => {
      const { bytes } = await archive();
      const err = await refused(bytes.subarray(0, bytes.length / 2));
      expect(err.message).to.match(/truncated|end/i);
    });

    it('an archive cut before its manifest', async () => {
      const { bytes } = await archive();
      // Whole entries, but not the last (the manifest): cut at the manifest's header.
      const at = bytes.indexOf(Buffer.from(MANIFEST_ENTRY));
      const err = await refused(bytes.subarray(0, at));
      expect(err.message).to.match(/truncated|manifest/i);
    });

    it('a file whose bytes changed, named with its digest', async () => {
      const { bytes } = await archive();
      const corrupt = Buffer.from(bytes);
      const at = corrupt.indexOf(Buffer.from('99817'));
      corrupt[at] = 0x38;
      const err = await refused(corrupt);
      expect(err.path).to.equal('offset');
      expect(err.message).to.match(/sha256.*corrupt/);
    });

    it('a snapshot under another token than its record names', async () => {
      const err = await refused((await archive()).bytes, '4712');
      expect(err.message).to.match(/token 4711, not 4712/);
    });

    it('an entry that would write outside the directory', async () => {
      const err = await refused(await handMade([{ name: '../escaped', body: 'x' }]));
      expect(err.path).to.equal('../escaped');
      expect((await readdir(root)).includes('escaped')).to.equal(false);
    });

    it('a symbolic link', async () => {
      const err = await refused(await handMade([{ name: 'link', type: 'symlink', linkname: '/etc/passwd' }]));
      expect(err.message).to.match(/symlink/);
    });

    it('a file the manifest does not list', async () => {
      const manifest: Manifest = { ...(await archive()).manifest, entries: [], bytes: 0 };
      const err = await refused(
        await handMade([
          { name: 'stowaway', body: 'x' },
          { name: MANIFEST_ENTRY, body: JSON.stringify(manifest) },
        ]),
      );
      expect(err.path).to.equal('stowaway');
    });
  });

  it('refuses to take a snapshot of a directory holding a symbolic link, naming it', async () => {
    await symlink('/etc/hostname', join(state, 'hostname'));
    const packed = packSnapshot(state, META);
    const read = (async () => {
      for await (const _ of packed.stream) void _;
    })();
    expect(
      await read.then(
        () => 'read to the end',
        (e: unknown) => e,
      ),
    ).to.be.instanceOf(SnapshotError);
    const err = await packed.manifest.then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).to.be.instanceOf(SnapshotError);
    expect((err as SnapshotError).path).to.equal('hostname');
  });

  it('after a crash between the two renames of a swap, puts the previous directory back', async () => {
    const target = join(root, 'restored');
    await mkdir(previousDir(target));
    await writeFile(join(previousDir(target), 'offset'), 'kept\n');
    await mkdir(join(root, '.restored.restore-abc123'));
    await recoverInterruptedSwap(target);
    expect(await readFile(join(target, 'offset'), 'utf8')).to.equal('kept\n');
    expect((await readdir(root)).sort()).to.deep.equal(['restored', 'src']);
  });
});

/** An archive written by hand, for what packSnapshot would never write. */
async function handMade(
  entries: { name: string; body?: string; type?: 'file' | 'symlink'; linkname?: string }[],
): Promise<Buffer> {
  const pack = tar.pack();
  for (const e of entries) {
    if (e.type === 'symlink') pack.entry({ name: e.name, type: 'symlink', linkname: e.linkname! });
    else pack.entry({ name: e.name }, e.body ?? '');
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const chunk of pack as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}

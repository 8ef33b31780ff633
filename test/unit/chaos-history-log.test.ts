// The run's history file (chaos/observe.ts HistoryLog): what the checker and the benchmarks'
// re-analysis read afterwards. Lines recorded while a write is under way go out together in
// the next one; none may be lost, reordered, or missing without flushed() saying so.
import { expect } from 'chai';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseHistory, type HistoryEvent } from '../../chaos/history.js';
import { HistoryLog } from '../../chaos/observe.js';

const leader = (t: number): HistoryEvent => ({
  kind: 'leader',
  t,
  identity: 'w1',
  node: 'a',
  token: String(t + 1),
});

describe('chaos: the history file', function () {
  let dir: string;
  beforeEach(async function () {
    dir = await mkdtemp(join(tmpdir(), 'history-log-'));
  });
  afterEach(async function () {
    await rm(dir, { recursive: true, force: true });
  });

  it('writes every event recorded, in the order recorded, however they fall into writes', async function () {
    const file = join(dir, 'history.jsonl');
    const log = new HistoryLog(file);
    for (let t = 0; t < 500; t++) log.add(leader(t)); // all before the first write starts
    await new Promise((resolve) => setImmediate(resolve));
    for (let t = 500; t < 1_000; t++) {
      log.add(leader(t));
      if (t % 97 === 0) await new Promise((resolve) => setImmediate(resolve)); // some while one is under way
    }
    await log.flushed();
    const written = parseHistory(await readFile(file, 'utf8'));
    expect(written.map((e) => e.t)).to.deep.equal(Array.from({ length: 1_000 }, (_, t) => t));
    expect(log.events).to.have.length(1_000);
  });

  it('says when a write failed, and keeps the events for the checker', async function () {
    const log = new HistoryLog(join(dir, 'no-such-directory', 'history.jsonl'));
    log.add(leader(1));
    log.add(leader(2));
    const err = await log.flushed().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as NodeJS.ErrnoException | undefined)?.code).to.equal('ENOENT');
    expect(log.events.map((e) => e.t)).to.deep.equal([1, 2]);
  });

  it('goes on writing after a failed write (the file has a hole, and flushed() still says so)', async function () {
    const file = join(dir, 'later', 'history.jsonl');
    const log = new HistoryLog(file);
    log.add(leader(1));
    await log.flushed().catch(() => undefined);
    await mkdir(join(dir, 'later'));
    log.add(leader(2));
    const err = await log.flushed().then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((err as NodeJS.ErrnoException | undefined)?.code).to.equal('ENOENT');
    expect(parseHistory(await readFile(file, 'utf8')).map((e) => e.t)).to.deep.equal([2]);
  });
});

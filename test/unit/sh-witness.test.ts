// The shell witness's records judged for S1: an overlap is found from the services' own lines,
// and a login with no logout is open until its process was seen dead.
import { expect } from 'chai';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readShLogins, shOverlaps } from '../support/sh-witness.js';

async function records(lines: string[]): Promise<Map<string, string>> {
  const file = join(await mkdtemp(join(tmpdir(), 'sh-witness-')), 'id.log');
  await writeFile(file, lines.join('\n') + '\n');
  return new Map([['id', file]]);
}

describe('the shell witness records', () => {
  it('a successor that logged in before the holder logged out overlaps it', async () => {
    const files = await records(['login a 5 100 10.00', 'login b 9 200 11.50', 'logout a 5 100 11.60']);
    const overlaps = shOverlaps(await readShLogins(files));
    expect(overlaps.map((o) => [o.a.node, o.b.node])).to.deep.equal([['a', 'b']]);
  });

  it('a successor after the logout (beyond the last tick) does not', async () => {
    const files = await records(['login a 5 100 10.00', 'logout a 5 100 11.50', 'login b 9 200 11.52']);
    expect(shOverlaps(await readShLogins(files))).to.deep.equal([]);
  });

  it('a logout and a login within one tick count as overlapping: rounding never hides one', async () => {
    const files = await records(['login a 5 100 10.00', 'logout a 5 100 11.50', 'login b 9 200 11.50']);
    expect(shOverlaps(await readShLogins(files))).to.have.length(1);
  });

  it('a login with no logout lasts until its process was seen dead, or for ever', async () => {
    const files = await records(['login a 5 100 10.00', 'login b 9 200 15.00']);
    expect(shOverlaps(await readShLogins(files)), 'never seen dead: open').to.have.length(1);
    expect(shOverlaps(await readShLogins(files, (pid) => (pid === 100 ? 14.0 : undefined)))).to.deep.equal(
      [],
    );
    expect(shOverlaps(await readShLogins(files, (pid) => (pid === 100 ? 15.5 : undefined)))).to.have.length(
      1,
    );
  });
});

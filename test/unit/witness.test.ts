import { expect } from 'chai';
import {
  describeProblems,
  judgeWitness,
  parseWitnessLines,
  tokenDecreases,
  witnessIntervals,
  witnessOverlaps,
  type WitnessLine,
} from '../support/witness.js';

const BEAT = 50;

/** A witness's lines: login at `from`, beats every 50 ms up to `last`, then a logout or nothing. */
function witness(
  node: string,
  token: string,
  pid: number,
  from: number,
  last: number,
  logout = true,
): WitnessLine[] {
  const lines: WitnessLine[] = [{ event: 'login', node, token, pid, mono: from }];
  for (let t = from + BEAT; t < last; t += BEAT) lines.push({ event: 'alive', node, token, pid, mono: t });
  lines.push({ event: logout ? 'logout' : 'alive', node, token, pid, mono: last });
  return lines;
}

const text = (lines: WitnessLine[]) => lines.map((l) => JSON.stringify(l)).join('\n') + '\n';
/** Lines of several processes as they land in a shared file: in time order. */
const merged = (...groups: WitnessLine[][]) => groups.flat().sort((x, y) => x.mono - y.mono);

describe('witness records (S1/S2 from the service side)', () => {
  it('an interval runs from the login to the logout line', () => {
    const [interval] = witnessIntervals(witness('a', '10', 100, 1000, 1600), { beatMs: BEAT });
    expect(interval).to.include({ node: 'a', token: '10', pid: 100, from: 1000, to: 1600, end: 'logout' });
  });

  it('a killed witness (no logout) counts as logged in for one beat past its last line', () => {
    const [interval] = witnessIntervals(witness('a', '10', 100, 1000, 1620, false), { beatMs: BEAT });
    expect(interval).to.include({ from: 1000, to: 1620 + BEAT, end: 'no-logout' });
  });

  it('a killed witness seen dead from outside ends at its death line, not a beat past its last', () => {
    const lines = witness('a', '10', 100, 1000, 1620, false);
    const dead: WitnessLine = { event: 'dead', node: 'a', token: '10', pid: 100, from: 1000, mono: 1625 };
    const [interval] = witnessIntervals([...lines, dead], { beatMs: BEAT });
    expect(interval).to.include({ from: 1000, to: 1625, end: 'dead' });
    // A successor that logged in 10 ms after the death overlaps nothing; 10 ms before it does.
    const after = witness('b', '14', 200, 1635, 2000);
    expect(judgeWitness(text(merged(lines, after, [dead])), { beatMs: BEAT }).overlaps).to.deep.equal([]);
    const before = witness('b', '14', 200, 1615, 2000);
    expect(judgeWitness(text(merged(lines, before, [dead])), { beatMs: BEAT }).overlaps).to.have.length(1);
  });

  it('a death line after a logout changes nothing; one for a process that never logged in is an error', () => {
    const lines = witness('a', '10', 100, 1000, 1600);
    const dead: WitnessLine = { event: 'dead', node: 'a', token: '10', pid: 100, from: 1000, mono: 1700 };
    const [interval] = witnessIntervals([...lines, dead], { beatMs: BEAT });
    expect(interval).to.include({ to: 1600, end: 'logout' });
    expect(() => witnessIntervals([{ ...dead, from: 999 }], { beatMs: BEAT })).to.throw(/never logged in/);
  });

  it('a login is dated from the process start; the login line itself counts as written when it was', () => {
    const [interval] = witnessIntervals(
      [{ event: 'login', node: 'b', token: '14', pid: 200, mono: 1000, writtenMono: 1700 }],
      { beatMs: BEAT },
    );
    // Killed right after writing its login line: logged in from its start to a beat past that line.
    expect(interval).to.include({ from: 1000, to: 1700 + BEAT, end: 'no-logout' });
  });

  it('a handover after the old service logged out has no overlap and a greater token', () => {
    const verdict = judgeWitness(
      text(merged(witness('a', '10', 100, 1000, 2000), witness('b', '14', 200, 2001, 3000))),
      { beatMs: BEAT },
    );
    expect(verdict.overlaps).to.deep.equal([]);
    expect(verdict.decreases).to.deep.equal([]);
    expect(verdict.intervals.map((i) => i.node)).to.deep.equal(['a', 'b']);
  });

  it('a successor logging in while the old service is still closing its session overlaps', () => {
    const verdict = judgeWitness(
      text(merged(witness('a', '10', 100, 1000, 2000), witness('b', '14', 200, 1965, 3000))),
      { beatMs: BEAT },
    );
    expect(verdict.overlaps).to.have.length(1);
    expect(verdict.overlaps[0]!.ms).to.be.closeTo(35, 1e-9);
    expect(describeProblems(verdict)[0]).to.match(
      /^S1: a \(pid 100, token 10\).*b \(pid 200, token 14\).*35\.0 ms/,
    );
  });

  it('a successor logging in within a beat of a killed service’s last line overlaps', () => {
    const overlaps = witnessOverlaps(
      witnessIntervals(
        merged(witness('a', '10', 100, 1000, 2000, false), witness('b', '14', 200, 2030, 3000)),
        {
          beatMs: BEAT,
        },
      ),
    );
    expect(overlaps.map((o) => [o.a.node, o.b.node, o.ms])).to.deep.equal([['a', 'b', 20]]);
  });

  it('compares every pair, not only neighbours: a long first interval overlapping the third is found', () => {
    // a runs long; b logs in and out inside it... and c after b, still inside a.
    const lines = merged(
      witness('a', '10', 100, 1000, 5000),
      witness('b', '14', 200, 2000, 2500),
      witness('c', '18', 300, 3000, 3500),
    );
    const overlaps = witnessOverlaps(witnessIntervals(lines, { beatMs: BEAT }));
    expect(overlaps.map((o) => `${o.a.node}-${o.b.node}`)).to.deep.equal(['a-b', 'a-c']);
  });

  it('finds the first and third overlapping where an adjacent-pairs check sees nothing', () => {
    // In login order: a, then a's own restart (same node), then c. An adjacent check skips
    // the same-node pair and finds the restart and c disjoint; a, never logged out and still
    // beating, overlaps c.
    const a: WitnessLine[] = [
      { event: 'login', node: 'a', token: '10', pid: 100, mono: 1000 },
      { event: 'alive', node: 'a', token: '10', pid: 100, mono: 1300 },
    ];
    const restart = witness('a', '10', 101, 1100, 1200);
    const c = witness('c', '18', 300, 1250, 1400);
    const overlaps = witnessOverlaps(witnessIntervals(merged(a, restart, c), { beatMs: BEAT }));
    const ac = overlaps.find((o) => o.a.pid === 100 && o.b.pid === 300);
    expect(ac, 'a (pid 100) and c (pid 300) overlap').to.not.equal(undefined);
    expect(ac!.ms).to.equal(1300 + BEAT - 1250);
    expect(overlaps.some((o) => o.a.pid === 101 && o.b.pid === 300)).to.equal(false);
  });

  it('a restart under the same term on the same node is a new process and must not overlap the old one', () => {
    const first = witness('a', '10', 100, 1000, 1500, false);
    const second = witness('a', '10', 101, 1700, 2000);
    const verdict = judgeWitness(text(merged(first, second)), { beatMs: BEAT });
    expect(verdict.overlaps).to.deep.equal([]);
    expect(verdict.decreases).to.deep.equal([]);
  });

  it('a reused pid with a new login is a new process', () => {
    const intervals = witnessIntervals(
      merged(witness('a', '10', 100, 1000, 1500), witness('b', '14', 100, 1600, 2000)),
      { beatMs: BEAT },
    );
    expect(intervals.map((i) => [i.node, i.from, i.to])).to.deep.equal([
      ['a', 1000, 1500],
      ['b', 1600, 2000],
    ]);
  });

  it('a login under a smaller token than any earlier login is a token decrease, adjacent or not', () => {
    const intervals = witnessIntervals(
      merged(
        witness('a', '20', 100, 1000, 1100),
        witness('b', '30', 200, 1200, 1300),
        witness('a', '25', 300, 1400, 1500),
      ),
      { beatMs: BEAT },
    );
    const decreases = tokenDecreases(intervals);
    expect(decreases.map((d) => [d.earlier.token, d.later.token])).to.deep.equal([['30', '25']]);
    // Compared as integers, not strings: 9 < 10.
    expect(
      tokenDecreases(
        witnessIntervals(merged(witness('a', '9', 1, 0, 10), witness('b', '10', 2, 20, 30)), {
          beatMs: BEAT,
        }),
      ),
    ).to.deep.equal([]);
  });

  it('skips a torn last line, refuses anything else that is not a witness record', () => {
    const good = text(witness('a', '10', 100, 1000, 1100));
    expect(parseWitnessLines(good + '{"event":"ali')).to.have.length(3);
    expect(() => parseWitnessLines('{"event":"alive"}\n' + good)).to.throw(/not a witness record/);
    expect(() => parseWitnessLines('garbage\n' + good)).to.throw(/not JSON/);
  });

  it('a line from a process that never logged in, or after its logout, is an error', () => {
    expect(() =>
      witnessIntervals([{ event: 'alive', node: 'a', token: '1', pid: 5, mono: 1 }], { beatMs: BEAT }),
    ).to.throw(/before any login/);
    const afterLogout = [
      ...witness('a', '1', 5, 0, 100),
      { event: 'alive' as const, node: 'a', token: '1', pid: 5, mono: 150 },
    ];
    expect(() => witnessIntervals(afterLogout, { beatMs: BEAT })).to.throw(/after its logout/);
  });
});

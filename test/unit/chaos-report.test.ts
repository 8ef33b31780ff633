// The run's HTML report: a person must see at a glance where a gap or an overlap was. These
// check what the page says and marks, not how it looks.
import { expect } from 'chai';
import { check } from '../../chaos/checker.js';
import { HISTORY_VERSION, type HistoryEvent } from '../../chaos/history.js';
import { renderHtml } from '../../chaos/report.js';

const config: HistoryEvent = {
  kind: 'config',
  t: 0,
  v: HISTORY_VERSION,
  ttlMs: 5_000,
  failoverMarginMs: 3_000,
  switchoverSlackMs: 1_000,
  observeSlackMs: 500,
};
const w = (t: number, node: string, token: string, what: 'login' | 'alive' | 'logout' | 'exit') =>
  ({ kind: 'witness', t, identity: 'w1', node, token, what }) as const;
const ping = (t: number, ...nodes: string[]) =>
  ({
    kind: 'ping',
    t,
    identity: 'w1',
    responders: nodes.map((node) => ({ node, token: node === 'a' ? '5' : '9' })),
  }) as const;

function page(events: HistoryEvent[]): string {
  return renderHtml(events, check(events), 'a <test> run', 'summary & more');
}

describe('chaos report: the HTML timeline', function () {
  const handover: HistoryEvent[] = [
    config,
    { kind: 'leader', t: 10, identity: 'w1', node: 'a', token: '5' },
    w(20, 'a', '5', 'login'),
    ...Array.from({ length: 20 }, (_, i) => ping(100 + i * 50, 'a')),
    { kind: 'nemesis', t: 1_000, id: 'f1', action: 'kill', targets: ['a'], phase: 'start' },
    w(1_010, 'a', '5', 'exit'),
    { kind: 'nemesis', t: 1_020, id: 'f1', action: 'kill', targets: ['a'], phase: 'end' },
    { kind: 'leader', t: 6_000, identity: 'w1', node: 'b', token: '9' },
    w(6_100, 'b', '9', 'login'),
    ping(6_500, 'b'),
  ];

  it('a safe run: one bar per term on its node, the fault shaded, PINGs merged into runs, the verdict green', function () {
    const html = page(handover);
    expect(html).to.contain('No violation of S1–S5, L1, L2.');
    expect(html.match(/class="span( open)?"/g)).to.have.length(2);
    expect(html).to.contain('w1 logged in on a, token 5: 0.02 s → 1.01 s (exit)');
    expect(html).to.contain('w1 logged in on b, token 9: 6.10 s → no end recorded');
    expect(html).to.match(/class="fault"><title>f1 kill a \(20 ms\)/);
    // Twenty PINGs answered by a in a row are one mark, titled with their count.
    expect(html).to.contain('20 PING(s): a (5)');
    expect(html).to.not.contain('class="violation"');
  });

  it('an overlap: red marks at the proving events, the violation listed with them, escaped', function () {
    const overlap = [
      ...handover.filter((e) => !(e.kind === 'witness' && e.what === 'exit')),
      ping(6_600, 'a', 'b'),
    ].sort((a, b) => a.t - b.t);
    const html = page(overlap);
    expect(html).to.not.contain('No violation');
    expect(html.match(/class="violation"/g)?.length).to.be.at.least(3);
    expect(html).to.contain('<b>S1</b>: w1: b (token 9) logged in at 6.100 s while a (token 5)');
    expect(html).to.contain('2 nodes answered one PING at 6.600 s');
    expect(html).to.contain('class="ping many"');
    expect(html).to.contain('a &lt;test&gt; run');
    expect(html).to.contain('summary &amp; more');
  });
});

// An agent's metrics stay bounded (pkg/agent/metrics.ts): per-identity series for the first
// `identityLimit` identities only, totals without an identity label for all of them.
import { expect } from 'chai';
import { AgentMetrics } from '../../pkg/agent/metrics.js';

async function scrape(m: AgentMetrics): Promise<string[]> {
  return (await m.registry.metrics()).split('\n').filter((l) => l.startsWith('understudy_'));
}

describe('agent metrics: per-identity series up to a cap, totals for every identity', function () {
  let metrics: AgentMetrics;
  afterEach(() => metrics?.close());

  it('gives series only to the first identities within the cap', async function () {
    metrics = new AgentMetrics(2);
    for (const id of ['a', 'b', 'c']) metrics.added(id, 'standby');
    metrics.transition({ identity: 'c', from: 'standby', to: 'campaigning' });
    metrics.request('c', 'ok');
    metrics.retryChanged({
      identity: 'c',
      retrying: true,
      source: 'campaign',
      retry: undefined,
      previous: undefined,
    });
    const lines = await scrape(metrics);
    expect(lines).to.include('understudy_identity_state{identity="a",state="standby"} 1');
    expect(lines).to.include('understudy_identity_state{identity="b",state="standby"} 1');
    expect(lines.filter((l) => l.includes('identity="c"'))).to.deep.equal([]);
  });

  it('counts every identity in the totals, over the cap too', async function () {
    metrics = new AgentMetrics(1);
    for (const id of ['a', 'b', 'c']) metrics.added(id, 'standby');
    metrics.transition({ identity: 'b', from: 'standby', to: 'campaigning' });
    metrics.transition({ identity: 'c', from: 'standby', to: 'campaigning' });
    metrics.request('c', 'ok');
    metrics.retryChanged({
      identity: 'c',
      retrying: true,
      source: 'campaign',
      retry: { what: 'reading', error: 'timeout', since: 0, attempts: 1 },
      previous: undefined,
    });
    const lines = await scrape(metrics);
    expect(lines).to.include.members([
      'understudy_identities{state="standby"} 1',
      'understudy_identities{state="campaigning"} 2',
      'understudy_identities{state="leader"} 0',
      'understudy_identities_retrying 1',
      'understudy_transitions_total{from="standby",to="campaigning"} 2',
      'understudy_requests_total{outcome="ok"} 1',
      'understudy_retry_reasons_total{kind="campaign"} 1',
    ]);
    // The one identity within the cap keeps its own state series.
    expect(lines).to.include('understudy_identity_state{identity="a",state="standby"} 1');
  });
});

// The agent's health listener as a supervisor sees it: liveness is the process answering,
// health is the agent's own judgement, and the two differ when etcd or NATS is gone.
import { expect } from 'chai';
import { AgentMetrics } from '../../pkg/agent/metrics.js';
import { startHealthServer, type HealthView } from '../../pkg/agent/health.js';

describe('agent health listener (pkg/agent/health.ts)', function () {
  it('answers /livez 200 while /healthz is 503 for an etcd outage: a restart would not help', async function () {
    const view: HealthView = {
      problems: () => ['no etcd session: etcd does not answer'],
      status: () => ({}),
      leader: async () => ({ leader: false, state: 'standby', reason: 'not logged in' }),
    };
    const server = await startHealthServer('127.0.0.1:0', view, new AgentMetrics());
    try {
      const base = `http://127.0.0.1:${server.port}`;
      expect((await fetch(`${base}/livez`)).status).to.equal(200);
      const health = await fetch(`${base}/healthz`);
      expect(health.status).to.equal(503);
      expect(((await health.json()) as { problems: string[] }).problems).to.deep.equal([
        'no etcd session: etcd does not answer',
      ]);
    } finally {
      await server.close();
    }
  });
});

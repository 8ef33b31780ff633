// The agent's only listening socket, and only when configured: local /livez, /healthz and /metrics
// for a supervisor (systemd, Kubernetes probes) and Prometheus, and /identities/<id>/leader
// for a load balancer's health check (like Patroni's /primary): 200 only while this node is
// logged in for the identity, may act, and its service passes the PING check; 503 otherwise. Bound to the configured address.
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import type { AgentMetrics } from './metrics.js';
import type { LeaderAnswer } from './runner.js';

/** The header the leader endpoint puts the fencing token in (a proxy may pass it on). */
export const TOKEN_HEADER = 'x-understudy-token';

export interface HealthView {
  /** Reasons the agent is unhealthy; empty when healthy. */
  problems(): string[];
  status(): unknown;
  /** Does this node answer for `identity` now? */
  leader(identity: string): Promise<LeaderAnswer>;
}

export async function startHealthServer(
  listen: string,
  view: HealthView,
  metrics: AgentMetrics,
): Promise<{ port: number; close(): Promise<void> }> {
  const app = new Hono();
  // Liveness (a Kubernetes livenessProbe, a watchdog): the process answers. Nothing outside it
  // counts: an etcd or NATS outage would otherwise restart every agent at once, for a fault
  // that a restart cannot fix and the lease already handles. /healthz says whether it is well.
  app.get('/livez', (c) => c.json({ alive: true }, 200));
  app.get('/healthz', (c) => {
    const problems = view.problems();
    return c.json(
      { healthy: problems.length === 0, problems, status: view.status() },
      problems.length === 0 ? 200 : 503,
    );
  });
  // Never cached: the answer changes the moment a term ends. HEAD works too (HAProxy's check).
  app.get('/identities/:identity/leader', async (c) => {
    const identity = c.req.param('identity');
    const answer = await view.leader(identity);
    c.header('cache-control', 'no-store');
    if (!answer.leader) return c.json({ identity, ...answer }, 503);
    c.header(TOKEN_HEADER, answer.token);
    return c.json({ identity, ...answer }, 200);
  });
  app.get('/metrics', async (c) =>
    c.body(await metrics.registry.metrics(), 200, { 'content-type': metrics.registry.contentType }),
  );
  const [host, portText] = [
    listen.slice(0, listen.lastIndexOf(':')),
    listen.slice(listen.lastIndexOf(':') + 1),
  ];
  let server: ServerType | undefined;
  const port = await new Promise<number>((resolve, reject) => {
    server = serve({ fetch: app.fetch, hostname: host, port: Number(portText) }, (info) =>
      resolve(info.port),
    );
    server.once('error', (err: Error) =>
      reject(new Error(`health.listen ${listen}: cannot listen: ${err.message}; choose a free address`)),
    );
  });
  return {
    port,
    close: () => new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve())),
  };
}

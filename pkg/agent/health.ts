// The agent's only listening socket, and only when configured: local /healthz and /metrics
// for a supervisor (systemd, Kubernetes probes) and Prometheus. Bound to the configured
// address, usually loopback.
import { serve, type ServerType } from '@hono/node-server';
import { Hono } from 'hono';
import type { AgentMetrics } from './metrics.js';

export interface HealthView {
  /** Reasons the agent is unhealthy; empty when healthy. */
  problems(): string[];
  status(): unknown;
}

export async function startHealthServer(
  listen: string,
  view: HealthView,
  metrics: AgentMetrics,
): Promise<{ port: number; close(): Promise<void> }> {
  const app = new Hono();
  app.get('/healthz', (c) => {
    const problems = view.problems();
    return c.json(
      { healthy: problems.length === 0, problems, status: view.status() },
      problems.length === 0 ? 200 : 503,
    );
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

// Readiness probes: a service is ready when it answers a real request, not when its port
// opens or a fixed time has passed.
import { Etcd3 } from 'etcd3';
import { connect, type ConnectionOptions } from 'nats';
import { waitFor } from './wait.js';

/** One probe attempt may take this long; a frozen server must not stall the wait. */
export const PROBE_CALL_MS = 2_000;

/** Linearizable read: answers only when the member is up and the cluster has a leader. */
export async function etcdAnswers(endpoint: string): Promise<void> {
  const client = new Etcd3({ hosts: endpoint });
  try {
    await client
      .get('understudy/testkit/probe')
      .options({ deadline: Date.now() + PROBE_CALL_MS })
      .string();
  } finally {
    client.close();
  }
}

/**
 * Connects and asks JetStream for the account: proves NATS is up with JetStream enabled.
 * `options` authenticate where the server authorizes users (test/support/nats-auth.ts).
 */
export async function natsAnswers(server: string, options: Partial<ConnectionOptions> = {}): Promise<void> {
  const nc = await connect({ servers: server, reconnect: false, timeout: PROBE_CALL_MS, ...options });
  try {
    const jsm = await nc.jetstreamManager({ timeout: PROBE_CALL_MS });
    await jsm.getAccountInfo();
  } finally {
    await nc.close();
  }
}

export function untilAnswers(probe: () => Promise<void>, what: string, timeoutMs: number): Promise<void> {
  return waitFor(async () => (await probe(), true), { what, timeoutMs, intervalMs: 100 }).then(
    () => undefined,
  );
}

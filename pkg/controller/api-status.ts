// API operations about the controller itself and the record: who is active, readiness, the
// audit history. Reads only.
import type { NatsConnection } from 'nats';
import { ApiError, type ControllerInfo, type HistoryQuery, type HistoryView } from '../api/schema.js';
import { readHistory, readRecentHistory } from '../history/index.js';
import type { ApiDeps } from './api-deps.js';

export const CONTROLLER_VERSION = '0.1.0';

export interface StatusDeps extends ApiDeps {
  nc: NatsConnection;
  isActive(): boolean;
  /** Why the controller's last round failed, while rounds keep failing. */
  lastRoundError(): string | undefined;
}

export class StatusApi {
  constructor(private readonly deps: StatusDeps) {}

  info(): ControllerInfo {
    const { name, cluster, isActive } = this.deps;
    const snap = cluster.last;
    const active = isActive() ? name : snap?.activeController;
    const url = active ? snap?.controllers.get(active)?.url : undefined;
    return {
      name,
      active: isActive(),
      ...(active ? { activeController: { name: active, ...(url ? { url } : {}) } } : {}),
      version: CONTROLLER_VERSION,
    };
  }

  async readiness(): Promise<{ ready: boolean; problems: string[] }> {
    const { cluster, nc, isActive } = this.deps;
    const problems: string[] = [];
    const read = await cluster.snapshot().then(
      () => true,
      (err: Error) => problems.push(`etcd: ${err.message}`) === 0,
    );
    // A round that fails for another reason than etcd (etcd answered just now) still counts.
    const roundError = this.deps.lastRoundError();
    if (read && roundError) problems.push(`controller round failing: ${roundError}`);
    if (nc.isClosed()) problems.push('NATS connection closed');
    if (!isActive() && !cluster.last?.activeController) problems.push('no active controller elected yet');
    return { ready: problems.length === 0, problems };
  }

  async history(identity: string | undefined, query: HistoryQuery): Promise<HistoryView> {
    const { etcd } = this.deps;
    try {
      if (identity) return { entries: await readHistory(etcd, identity, { limit: query.limit }) };
      // One read for all identities (not one per identity: 10,000 reads for one page).
      return { entries: await readRecentHistory(etcd, { limit: query.limit }) };
    } catch (err) {
      if (err instanceof ApiError) throw err;
      throw new ApiError('unavailable', `cannot read history from etcd (${(err as Error).message})`);
    }
  }

  async metrics(): Promise<{ contentType: string; body: string }> {
    const { registry } = this.deps.metrics;
    return { contentType: registry.contentType, body: await registry.metrics() };
  }
}

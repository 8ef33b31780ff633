// What every API operation module (api-*.ts, access-lists.ts) works with.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { ControllerConfig } from '../config/controller.js';
import type { Audit } from './audit.js';
import type { Cluster } from './cluster.js';
import type { ControllerMetrics } from './metrics.js';
import type { Prober } from './probes.js';
import type { ControllerKeys, GuardedWriter } from './store.js';
import type { WorkflowSupervisor } from './supervisor.js';

export interface ApiDeps {
  name: string;
  etcd: Etcd3;
  keys: ControllerKeys;
  /** Every write of an operation goes through it, guarded by the term requireActive() returned. */
  writer: GuardedWriter;
  cluster: Cluster;
  audit: Audit;
  supervisor: WorkflowSupervisor;
  prober: Prober;
  metrics: ControllerMetrics;
  config: ControllerConfig;
  clock: Clock;
  log: Logger;
}

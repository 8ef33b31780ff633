// A Prober wired to fakes for unit tests on a manual clock: the cluster view of a given
// snapshot and agents, a supervisor that records the workflows it is asked to start, and a
// PING answered by the test. Shared by the probe tests so each states only its scenario.
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { ManualClock } from '../../pkg/clock/index.js';
import { ControllerConfig } from '../../pkg/config/controller.js';
import type { SeenAgent } from '../../pkg/controller/agents.js';
import { Cluster } from '../../pkg/controller/cluster.js';
import { EventStream } from '../../pkg/controller/events.js';
import { ControllerMetrics } from '../../pkg/controller/metrics.js';
import type { Responder } from '../../pkg/controller/probe-rules.js';
import { Prober } from '../../pkg/controller/probes.js';
import type { ClusterSnapshot, ControllerKeys, GuardedWriter } from '../../pkg/controller/store.js';
import type { WorkflowRequest, WorkflowSupervisor } from '../../pkg/controller/supervisor.js';
import { LoopTrouble } from '../../pkg/controller/trouble.js';

export function fakeProber(opts: {
  clock: ManualClock;
  log: Logger;
  snap: ClusterSnapshot;
  agents: ReadonlyMap<string, SeenAgent>;
  ping: (identity: string) => Promise<Responder[]>;
  probes?: Record<string, unknown>;
}) {
  const { clock, log, snap, agents } = opts;
  const writer = {
    authority: () => ({ key: 'k', revision: '1', mayAct: () => true }),
  } as unknown as GuardedWriter;
  const cluster = new Cluster({
    name: 'c1',
    etcd: {} as never,
    keys: {} as ControllerKeys,
    writer,
    clock,
    isActive: () => true,
    agents: () => agents,
    heartbeatTimeoutMs: 6_000,
    startedAt: clock.wallMs() - 60_000,
  });
  cluster.last = snap;
  const started: Array<WorkflowRequest & { identity: string }> = [];
  const supervisor = {
    create: async (_s: ClusterSnapshot, identity: string, req: WorkflowRequest) => {
      started.push({ ...req, identity });
      return {};
    },
  } as unknown as WorkflowSupervisor;
  const metrics = new ControllerMetrics();
  const events = new EventStream(clock, log, metrics);
  const config = ControllerConfig.parse({
    name: 'c1',
    etcd: { endpoints: ['http://127.0.0.1:2379'] },
    nats: { servers: ['nats://127.0.0.1:4222'] },
    http: {},
    auth: { tokens: [{ name: 'admin', role: 'admin', token: 'admin-token-0123456789abcdef' }] },
    ...(opts.probes ? { probes: opts.probes } : {}),
  });
  const prober = new Prober({
    name: 'c1',
    nc: {} as NatsConnection,
    config,
    cluster,
    writer,
    supervisor,
    events,
    metrics,
    trouble: new LoopTrouble(log, metrics.loopFailures),
    clock,
    log,
    isActive: () => true,
    ping: (identity) => opts.ping(identity),
  });
  /** One controller round every 250 ms for `ms`. */
  const rounds = async (ms: number) => {
    for (let t = 0; t < ms; t += 250) {
      prober.startDue(snap);
      await clock.advance(250);
    }
  };
  return { prober, rounds, started, metrics, events };
}

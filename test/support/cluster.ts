// What an integration test file runs against: one harness with an etcd member and (unless the
// file says otherwise) a NATS server, the test's own clients of both, and the agents and
// controllers it starts there. A file starts one in `before` and closes it in `after`; after
// each test, afterTest() prints the processes' output if the test failed and stops them.
import type { Etcd3 } from 'etcd3';
import { connect, type NatsConnection } from 'nats';
import { connectEtcd } from '../../pkg/lease/index.js';
import { AgentProcess, type AgentOptions } from './agents.js';
import { ControllerProcess, type ControllerOptions } from './controllers.js';
import { Harness, type EtcdMember, type NatsServer } from './harness.js';
import type { LoggedProcess } from './logged-process.js';
import type { NatsAuthOptions } from './nats-auth.js';

/** How much of each process's log a failed test prints: its last transitions and errors. */
const FAILURE_TAIL_LINES = 60;

export interface ClusterOptions {
  /**
   * The NATS server: `false` for none (tests of etcd alone); `auth` as Harness.startNats takes
   * it (default: the harness's default, the shipped role users plus an observer).
   */
  nats?: false | { auth?: NatsAuthOptions | false };
  /** Open the test's own NATS connection (`nc`), unauthenticated: the observer, or open NATS. */
  connect?: boolean;
}

/** Where agents and controllers started here connect. */
type Endpoints = Pick<AgentOptions, 'etcd' | 'nats'>;

export class IntegrationCluster {
  private processes: LoggedProcess[] = [];

  private constructor(
    readonly harness: Harness,
    readonly etcd: EtcdMember,
    /** The test's etcd client. */
    readonly client: Etcd3,
    private readonly natsServer: NatsServer | undefined,
    private readonly natsConnection: NatsConnection | undefined,
  ) {}

  static async start(opts: ClusterOptions = {}): Promise<IntegrationCluster> {
    const harness = await Harness.create();
    try {
      const [etcd, nats] = await Promise.all([
        harness.startEtcd(),
        opts.nats === false ? undefined : harness.startNats('nats', opts.nats ?? {}),
      ]);
      const nc = opts.connect && nats ? await connect({ servers: nats.hostUrl }) : undefined;
      const client = connectEtcd({ endpoints: [etcd.hostEndpoint] });
      return new IntegrationCluster(harness, etcd, client, nats, nc);
    } catch (err) {
      await harness.close().catch(() => undefined); // the start's own error says what went wrong
      throw err;
    }
  }

  get nats(): NatsServer {
    if (!this.natsServer) throw new Error('this cluster was started without NATS ({ nats: false })');
    return this.natsServer;
  }

  /** The test's own NATS connection. */
  get nc(): NatsConnection {
    if (!this.natsConnection) throw new Error('start the cluster with { connect: true } to use its nc');
    return this.natsConnection;
  }

  get endpoints(): Endpoints {
    return { etcd: [this.etcd.hostEndpoint], nats: [this.nats.hostUrl] };
  }

  /** The agents started or tracked here and not stopped yet, oldest first. */
  get agents(): AgentProcess[] {
    return this.processes.filter((p): p is AgentProcess => p instanceof AgentProcess);
  }

  async startAgent(opts: Omit<AgentOptions, 'etcd' | 'nats'>): Promise<AgentProcess> {
    return this.track(await AgentProcess.start({ ...this.endpoints, ...opts }));
  }

  async startController(opts: Omit<ControllerOptions, 'etcd' | 'nats'>): Promise<ControllerProcess> {
    return this.track(await ControllerProcess.start({ ...this.endpoints, ...opts }));
  }

  /** A process the test started itself, reported and stopped with the others. */
  track<P extends LoggedProcess>(proc: P): P {
    this.processes.push(proc);
    return proc;
  }

  /** A process the test has stopped or killed itself: no longer reported or stopped here. */
  forget(proc: LoggedProcess): void {
    this.processes = this.processes.filter((p) => p !== proc);
  }

  /** Print the end of every process's log if `test` failed. */
  reportFailure(test: { state?: string } | undefined): void {
    if (test?.state !== 'failed') return;
    for (const p of this.processes) {
      const tail = p.output().split('\n').slice(-FAILURE_TAIL_LINES).join('\n');
      console.log(`--- ${p.name} output (last ${FAILURE_TAIL_LINES} lines) ---\n${tail}`);
    }
  }

  /** Stop every process started or tracked here. */
  async stopProcesses(): Promise<void> {
    const stopping = this.processes;
    this.processes = [];
    await Promise.all(stopping.map((p) => p.stop()));
  }

  /** For afterEach: the processes' output if `test` failed, then each process stopped. */
  async afterTest(test: { state?: string } | undefined): Promise<void> {
    this.reportFailure(test);
    await this.stopProcesses();
  }

  /** Stop the processes, close the test's clients and remove the containers. */
  async close(): Promise<void> {
    try {
      await this.stopProcesses();
      await this.natsConnection?.close();
      this.client.close();
    } finally {
      await this.harness.close(); // no container outlives the file, whatever failed above
    }
  }
}

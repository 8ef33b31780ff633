// A started container with the faults the chaos suite injects. testcontainers 11 starts and
// removes containers; the faults it lacks (SIGKILL, freeze, partition) go through dockerode.
import type { StartedTestContainer } from 'testcontainers';
import { docker } from './docker.js';
import { waitFor } from './wait.js';

export type ContainerState = 'running' | 'paused' | 'exited' | 'created' | 'restarting' | 'removing' | 'dead';

/** How long a graceful stop may take before Docker sends SIGKILL. */
const STOP_GRACE_S = 5;

export class ManagedContainer {
  constructor(
    readonly name: string,
    /** The name other containers use to reach this one on the harness network. */
    readonly alias: string,
    readonly started: StartedTestContainer,
    private readonly networkName: string,
    /** Waits until the service in the container answers again (after start/restart/unpause). */
    private readonly readiness: () => Promise<void> = async () => undefined,
  ) {}

  get id(): string {
    return this.started.getId();
  }

  /** Host port (on localhost) mapped to a container port. Fixed for the container's life. */
  hostPort(containerPort: number): number {
    return this.started.getMappedPort(containerPort);
  }

  private async handle() {
    return (await docker()).getContainer(this.id);
  }

  async state(): Promise<ContainerState> {
    const info = await (await this.handle()).inspect();
    return info.State.Status as ContainerState;
  }

  /** The main process's pid on the host (0 when not running). */
  async hostPid(): Promise<number> {
    return (await (await this.handle()).inspect()).State.Pid;
  }

  /** Send a signal to the container's main process; SIGKILL by default (abrupt host death). */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    await (await this.handle()).kill({ signal });
    if (signal === 'SIGKILL') {
      await waitFor(async () => (await this.state()) !== 'running', {
        what: `${this.name} to exit after SIGKILL`,
        timeoutMs: 10_000,
      });
    }
  }

  /** Graceful stop (SIGTERM, then SIGKILL after STOP_GRACE_S); the container is kept. */
  async stop(): Promise<void> {
    await (await this.handle()).stop({ t: STOP_GRACE_S }).catch(ignoreNotModified);
  }

  /** Start a stopped or killed container again and wait until its service answers. */
  async start(): Promise<void> {
    await (await this.handle()).start().catch(ignoreNotModified);
    await this.readiness();
  }

  async restart(): Promise<void> {
    await (await this.handle()).restart({ t: STOP_GRACE_S });
    await this.readiness();
  }

  /** Freeze every process in the container (SIGSTOP semantics via the cgroup freezer). */
  async pause(): Promise<void> {
    await (await this.handle()).pause();
  }

  async unpause(): Promise<void> {
    await (await this.handle()).unpause();
  }

  /**
   * Partition: cut the container from the harness network. Peers can no longer reach it by
   * alias or address, nor it them; established connections stall.
   */
  async disconnect(): Promise<void> {
    const network = (await docker()).getNetwork(this.networkName);
    await network.disconnect({ Container: this.id, Force: true });
  }

  /** Heal a partition. The aliases must be given again or name resolution breaks. */
  async reconnect(): Promise<void> {
    const network = (await docker()).getNetwork(this.networkName);
    await network.connect({ Container: this.id, EndpointConfig: { Aliases: [this.alias] } });
  }

  /** Run a command inside the container (no shell unless the image has one). */
  async exec(command: string[]): Promise<{ exitCode: number; output: string }> {
    const result = await this.started.exec(command);
    return { exitCode: result.exitCode, output: result.output };
  }

  async logs(): Promise<string> {
    const buffer = await (await this.handle()).logs({ stdout: true, stderr: true, follow: false });
    return demux(buffer);
  }

  /** Remove the container whatever its state. Idempotent. */
  async remove(): Promise<void> {
    await (await this.handle()).remove({ force: true, v: true }).catch((err: { statusCode?: number }) => {
      if (err.statusCode !== 404 && err.statusCode !== 409) throw err;
    });
  }
}

function ignoreNotModified(err: { statusCode?: number }): void {
  if (err.statusCode !== 304) throw err;
}

/** Docker multiplexes stdout/stderr in 8-byte-header frames when there is no TTY. */
export function demux(buffer: Buffer): string {
  const chunks: Buffer[] = [];
  let offset = 0;
  while (offset + 8 <= buffer.length) {
    const size = buffer.readUInt32BE(offset + 4);
    chunks.push(buffer.subarray(offset + 8, offset + 8 + size));
    offset += 8 + size;
  }
  return Buffer.concat(chunks).toString('utf8');
}

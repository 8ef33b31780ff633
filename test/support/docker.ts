// Access to the Docker engine beyond what testcontainers 11 offers (pause, kill, network
// disconnect), and the labels that let a later run find what an earlier one left behind.
import './env.js';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import type Dockerode from 'dockerode';
import { getContainerRuntimeClient } from 'testcontainers';

let dockerode: Promise<Dockerode> | undefined;

/** Drop the client (made or still being made): the next docker() makes a new one. */
export function forgetDocker(): void {
  dockerode = undefined;
}

export function docker(): Promise<Dockerode> {
  // A client that could not be made (the engine was down) is not kept: the next call tries again.
  dockerode ??= getContainerRuntimeClient()
    .then((client) => client.container.dockerode)
    .catch((err: unknown) => {
      dockerode = undefined;
      throw err;
    });
  return dockerode;
}

/** Start time of a process in clock ticks since boot: with the pid, it names a process uniquely. */
export function processStartTicks(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Field 22; the command name (field 2) may hold spaces, so count from its closing paren.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

export const LABEL_KIT = 'understudy.testkit';
export const LABEL_OWNER_PID = 'understudy.testkit.owner-pid';
export const LABEL_OWNER_START = 'understudy.testkit.owner-start';
export const LABEL_RUN = 'understudy.testkit.run';

/** Labels put on every container and network the harness creates. */
export function ownerLabels(run: string): Record<string, string> {
  return {
    [LABEL_KIT]: 'true',
    [LABEL_OWNER_PID]: String(process.pid),
    [LABEL_OWNER_START]: processStartTicks(process.pid) ?? 'unknown',
    [LABEL_RUN]: run,
  };
}

/** A TCP port free on localhost right now (the kernel picks it). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.on('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => {
        if (address && typeof address === 'object') resolve(address.port);
        else reject(new Error('could not allocate a free port'));
      });
    });
  });
}

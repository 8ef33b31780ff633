// Removes containers and networks left by harness runs whose process is gone (a crashed or
// killed test run). A run's resources are labelled with its owner's pid and start time, so a
// reused pid is not mistaken for the owner, and concurrent live runs are never touched.
import { docker, LABEL_KIT, LABEL_OWNER_PID, LABEL_OWNER_START, processStartTicks } from './docker.js';

function ownerAlive(labels: Record<string, string> | undefined): boolean {
  const pid = Number(labels?.[LABEL_OWNER_PID]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  const start = processStartTicks(pid);
  return start !== undefined && start === labels?.[LABEL_OWNER_START];
}

export interface ReapResult {
  containers: number;
  networks: number;
}

export async function reapOrphans(): Promise<ReapResult> {
  const engine = await docker();
  const filters = JSON.stringify({ label: [`${LABEL_KIT}=true`] });
  let containers = 0;
  for (const info of await engine.listContainers({ all: true, filters })) {
    if (ownerAlive(info.Labels)) continue;
    await engine
      .getContainer(info.Id)
      .remove({ force: true, v: true })
      .catch(() => undefined); // already gone
    containers++;
  }
  let networks = 0;
  for (const info of await engine.listNetworks({ filters })) {
    if (ownerAlive(info.Labels)) continue;
    await engine
      .getNetwork(info.Id)
      .remove()
      .catch(() => undefined);
    networks++;
  }
  return { containers, networks };
}

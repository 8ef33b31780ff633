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

function ownedByThisProcess(labels: Record<string, string> | undefined): boolean {
  return (
    labels?.[LABEL_OWNER_PID] === String(process.pid) &&
    labels[LABEL_OWNER_START] === processStartTicks(process.pid)
  );
}

/** Remove what runs whose process is gone left behind (before a run). */
export function reapOrphans(): Promise<ReapResult> {
  return reap((labels) => !ownerAlive(labels));
}

/**
 * Remove what this process started and still holds (after a run): a test that timed out never
 * reached its own cleanup, and no container may outlive the run.
 */
export function reapOwn(): Promise<ReapResult> {
  return reap(ownedByThisProcess);
}

async function reap(doomed: (labels: Record<string, string> | undefined) => boolean): Promise<ReapResult> {
  const engine = await docker();
  const filters = JSON.stringify({ label: [`${LABEL_KIT}=true`] });
  let containers = 0;
  for (const info of await engine.listContainers({ all: true, filters })) {
    if (!doomed(info.Labels)) continue;
    await engine
      .getContainer(info.Id)
      .remove({ force: true, v: true })
      .catch(() => undefined); // already gone
    containers++;
  }
  let networks = 0;
  for (const info of await engine.listNetworks({ filters })) {
    if (!doomed(info.Labels)) continue;
    await engine
      .getNetwork(info.Id)
      .remove()
      .catch(() => undefined);
    networks++;
  }
  return { containers, networks };
}

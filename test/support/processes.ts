// Facts about processes on this host, for tests that must prove a process is gone.
import { readFile } from 'node:fs/promises';

/**
 * True when `pid` no longer runs: gone (ESRCH), or a zombie waiting for its new parent to
 * reap it (an orphan of a killed agent is reparented and may linger as a zombie).
 */
export async function pidDead(pid: number): Promise<boolean> {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return true;
    throw err;
  }
  try {
    const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2).split(' ')[0];
    return state === 'Z' || state === 'X';
  } catch {
    return true; // vanished between the two checks
  }
}

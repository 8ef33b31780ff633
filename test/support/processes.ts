// Facts about processes on this host, for tests that must prove a process is gone.
import { readdir, readFile } from 'node:fs/promises';

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

/** Every process below `root` now (children, their children, …), by command name, from /proc. */
export async function descendantsOf(root: number): Promise<Map<number, string>> {
  const parentOf = new Map<number, number>();
  const names = new Map<number, string>();
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue; // exited while we looked
    const close = stat.lastIndexOf(')');
    parentOf.set(Number(entry), Number(stat.slice(close + 2).split(' ')[1]));
    names.set(Number(entry), stat.slice(stat.indexOf('(') + 1, close));
  }
  const below = new Map<number, string>();
  for (const [pid, name] of names) {
    for (let p = parentOf.get(pid); p !== undefined && p > 1; p = parentOf.get(p)) {
      if (p === root) {
        below.set(pid, name);
        break;
      }
    }
  }
  return below;
}

// S1 judged from the services' own records when they are many: the shell witness
// (test/fixtures/witness.sh) writes a login line at its start and a logout line when it
// stops; one killed (SIGKILL) writes none, and its login lasts until it was seen dead.
// Times are seconds since boot (10 ms resolution): a login is taken from the start of its
// tick and a logout to the end of its own, so rounding never hides an overlap.
import { readFile } from 'node:fs/promises';

/** One tick of /proc/uptime and /proc/<pid>/stat. */
const TICK_S = 0.01;

export interface ShLogin {
  identity: string;
  node: string;
  token: string;
  pid: number;
  /** Seconds since boot. */
  from: number;
  /** Seconds since boot; Infinity while neither a logout nor a death was seen. */
  to: number;
}

export interface ShOverlap {
  identity: string;
  a: ShLogin;
  b: ShLogin;
}

/** Seconds since boot, as the witnesses count. */
export async function uptimeS(): Promise<number> {
  return Number((await readFile('/proc/uptime', 'utf8')).split(' ')[0]);
}

/**
 * The logins recorded in `files` (identity → its witness file). `diedAt(pid)`: when a pid with
 * no logout line was seen dead (seconds since boot), or undefined (the login stays open).
 */
export async function readShLogins(
  files: Map<string, string>,
  diedAt: (pid: number) => number | undefined = () => undefined,
): Promise<ShLogin[]> {
  const logins: ShLogin[] = [];
  for (const [identity, file] of files) {
    const text = await readFile(file, 'utf8').catch(() => '');
    const byPid = new Map<number, ShLogin>();
    for (const line of text.split('\n')) {
      const [event, node, token, pid, at] = line.split(' ');
      if (!event || !node || !token || !pid || !at) continue;
      if (event === 'login') {
        byPid.set(Number(pid), { identity, node, token, pid: Number(pid), from: Number(at), to: Infinity });
      } else if (event === 'logout') {
        const login = byPid.get(Number(pid));
        if (login) login.to = Number(at) + TICK_S;
      }
    }
    for (const login of byPid.values()) {
      if (login.to === Infinity) login.to = diedAt(login.pid) ?? Infinity;
      logins.push(login);
    }
  }
  return logins;
}

/** Every pair of logins of one identity that were logged in at the same time. */
export function shOverlaps(logins: ShLogin[]): ShOverlap[] {
  const byIdentity = new Map<string, ShLogin[]>();
  for (const l of logins) byIdentity.set(l.identity, [...(byIdentity.get(l.identity) ?? []), l]);
  const found: ShOverlap[] = [];
  for (const [identity, list] of byIdentity) {
    const sorted = [...list].sort((x, y) => x.from - y.from);
    for (let i = 0; i < sorted.length; i++) {
      for (let j = i + 1; j < sorted.length && sorted[j]!.from < sorted[i]!.to; j++) {
        found.push({ identity, a: sorted[i]!, b: sorted[j]! });
      }
    }
  }
  return found;
}

// The Docker engine the container tests run on. It is test infrastructure, not the product:
// when it is gone mid-run it is started again here, loudly, instead of every later test hanging
// on a dead socket until its timeout. Seen once in CI: dockerd vanished while a topology was
// being removed (its log and the kernel's simply stop), and the four tests after it each waited
// out mocha's 240 s and left their containers behind.
import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { docker, forgetDocker } from './docker.js';
import { repoRoot } from './paths.js';

const run = promisify(execFile);

/** An engine that is up answers a ping in milliseconds; this only tells "gone" from "slow". */
const PING_TIMEOUT_MS = 5_000;
/** Pings before an engine is taken for hung and restarted (restarting stops its containers). */
const PING_ATTEMPTS = 2;
/** Making the client: `docker info` and a version check, seconds on a loaded machine. */
const CLIENT_TIMEOUT_MS = 30_000;
/** scripts/dockerd waits up to 60 s for a cold start; this leaves it that and more. */
const START_TIMEOUT_MS = 90_000;
const START_ATTEMPTS = 3;
/** A SIGKILLed dockerd is gone in well under a second. */
const EXIT_TIMEOUT_MS = 10_000;
/** Where scripts/dockerd keeps the engine's pid and log (UNDERSTUDY_MACHINE_DIR, scripts/lib.sh). */
const MACHINE_DIR = process.env.UNDERSTUDY_MACHINE_DIR ?? '/var/lib/understudy';
const DOCKERD_PIDFILE = join(MACHINE_DIR, 'dockerd.pid');
const DOCKERD_LOG = join(MACHINE_DIR, 'dockerd.log');

export function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function answers(): Promise<boolean> {
  try {
    // Making the client asks the engine several things (and a hung one hangs): bounded apart,
    // more generously than a ping, so a slow engine on a loaded machine is not taken for hung.
    const client = await within(docker(), CLIENT_TIMEOUT_MS, 'connecting to the Docker engine');
    for (let attempt = 1; ; attempt++) {
      try {
        await within(client.ping(), PING_TIMEOUT_MS, 'docker ping');
        return true;
      } catch (err) {
        if (attempt >= PING_ATTEMPTS) throw err;
      }
    }
  } catch {
    return false;
  }
}

/** The dockerd scripts/dockerd started, if it still runs (a hung one answers no ping). */
async function ourDockerd(): Promise<number | undefined> {
  const pid = Number((await readFile(DOCKERD_PIDFILE, 'utf8').catch(() => '')).trim());
  if (!Number.isInteger(pid) || pid <= 0) return undefined;
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.split('\0')[0]?.endsWith('dockerd') ? pid : undefined;
}

/** Children of `parent` whose command is `name` (from /proc). */
async function childrenNamed(parent: number, name: string): Promise<number[]> {
  const out: number[] = [];
  for (const entry of await readdir('/proc').catch(() => [])) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const ppid = Number(stat.slice(close + 2).split(' ')[1]);
    if (comm === name && ppid === parent) out.push(Number(entry));
  }
  return out;
}

async function gone(pid: number): Promise<void> {
  const deadline = Date.now() + EXIT_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (!(await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => ''))) return;
    await sleep(100);
  }
}

/**
 * Resolve once the Docker engine answers. An engine that is gone is started again with
 * scripts/dockerd; one that hangs (alive, no answer: a deadlock) is the one scripts/dockerd
 * started, so it is stopped by its recorded pid first. Both said on stderr, with where the
 * engine's log is. Throws, saying what to do, if it cannot be brought back.
 */
export async function ensureEngine(): Promise<void> {
  if (await answers()) return;
  // A client still being made from the hung engine would never be: the next one starts afresh.
  forgetDocker();
  const hung = await ourDockerd();
  process.stderr.write(
    `harness: the Docker engine ${hung ? `(pid ${hung}) hangs` : 'is gone'}; starting it again ` +
      `with scripts/dockerd (read ${DOCKERD_LOG} for why)\n`,
  );
  if (hung) {
    // Its containerd too: left behind, it makes the next dockerd's start time out (seen: 60 s).
    const own = [hung, ...(await childrenNamed(hung, 'containerd'))];
    for (const pid of own) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone by itself meanwhile: nothing to stop
      }
    }
    for (const pid of own) await gone(pid);
  }
  let last: Error | undefined;
  // A killed dockerd leaves its containerd behind for a moment, and the first start can time
  // out waiting for a containerd of its own (seen here): a second attempt finds it gone.
  for (let attempt = 1; attempt <= START_ATTEMPTS; attempt++) {
    try {
      await run('bash', [join(repoRoot, 'scripts', 'dockerd')], { timeout: START_TIMEOUT_MS });
      if (await answers()) {
        process.stderr.write(`harness: the Docker engine answers again (attempt ${attempt})\n`);
        return;
      }
    } catch (err) {
      last = err as Error;
    }
  }
  throw new Error(
    `the Docker engine is down and scripts/dockerd could not start it (${last?.message ?? 'no answer to a ping'}); read ${DOCKERD_LOG}, then run scripts/setup`,
  );
}

// 200 identities on two agents, each service taking a second to stop: start-up, a SIGKILL
// failover and a SIGTERM handover complete with no session stop, no lifeline kill and no two
// services of one identity logged in at once — judged from the services' own records.
import { expect } from 'chai';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REAPER_KILLED } from '../../pkg/identity/lifeline.js';
import { putSpec } from '../../pkg/spec/store.js';
import type { AgentProcess } from '../support/agents.js';
import { IntegrationCluster } from '../support/cluster.js';
import { repoRoot } from '../support/paths.js';
import { pidDead } from '../support/processes.js';
import { readShLogins, shOverlaps, uptimeS, type ShLogin } from '../support/sh-witness.js';
import { waitFor } from '../support/wait.js';

const IDENTITIES = 200;
/** Each service's logout takes this long after SIGTERM (a bot closing its session). */
const STOP_S = 1;
/** T = 6 s, D = 3 s, and a logout budget of 2 s that fits the one-second stop. */
const LEASE = { ttlSeconds: 6, selfFenceMs: 3_000, logoutBudgetMs: 2_000 };
/** Generous on a shared 2-core machine: these are bounds on waiting, not figures. */
const ALL_LOGGED_IN_MS = 180_000;

const SESSION_STOP = 'etcd session must stop: identities led on it log out now';
/** The agent's line for a service the lifeline killed, whichever way (REAPER_KILLED). */
const LIFELINE_KILL = (msg: unknown) => (Object.values(REAPER_KILLED) as unknown[]).includes(msg);

describe('200 identities on two agents, services that take a second to stop (real etcd, NATS, processes)', function () {
  this.timeout(15 * 60_000);
  let cluster: IntegrationCluster;
  const names = Array.from({ length: IDENTITIES }, (_, i) => `scale-${String(i).padStart(3, '0')}`);
  const files = new Map<string, string>();

  before(async function () {
    cluster = await IntegrationCluster.start();
    const dir = await mkdtemp(join(tmpdir(), 'understudy-scale-'));
    for (const name of names) {
      const file = join(dir, `${name}.log`);
      files.set(name, file);
      await putSpec(cluster.client, {
        name,
        service: {
          driver: 'process',
          command: ['/bin/sh', join(repoRoot, 'test/fixtures/witness.sh')],
          mode: 'cold',
          stopTimeoutMs: 1_800,
          env: { WITNESS_FILE: file, WITNESS_STOP_S: String(STOP_S) },
        },
        access: { open: true },
      });
    }
  });
  afterEach(async function () {
    await cluster?.afterTest(this.currentTest);
  });
  after(async function () {
    await cluster?.close();
  });

  const identities = Object.fromEntries(names.map((n) => [n, null]));
  const start = (node: string, priority: number) =>
    cluster.startAgent({ node, priority, identities, extra: { lease: LEASE } });

  /** Identities whose latest transition on `agent` is into `leader`. */
  function leading(agent: AgentProcess): Set<string> {
    const last = new Map<string, string>();
    for (const r of agent.records)
      if (typeof r.identity === 'string' && typeof r.to === 'string') last.set(r.identity, r.to);
    return new Set([...last].filter(([, to]) => to === 'leader').map(([id]) => id));
  }

  async function allLedBy(agents: AgentProcess[], what: string): Promise<void> {
    const led = () => new Set(agents.flatMap((agent) => [...leading(agent)])).size;
    await waitFor(() => led() === IDENTITIES, {
      what,
      timeoutMs: ALL_LOGGED_IN_MS,
      intervalMs: 500,
    });
  }

  /** Session stops other than a shutdown, and lifeline kills, in an agent's log. */
  function trouble(agent: AgentProcess): string[] {
    return agent.records
      .filter((r) => (r.msg === SESSION_STOP && r.reason !== 'closed') || LIFELINE_KILL(r.msg))
      .map((r) => `${agent.node}: ${String(r.msg)} (${String(r.reason ?? r.servicePid)})`);
  }

  function servicePids(agent: AgentProcess): Set<number> {
    return new Set(
      agent.records.filter((r) => typeof r.servicePid === 'number').map((r) => r.servicePid as number),
    );
  }

  /** Poll until every pid is dead, noting when each was first seen dead (seconds since boot). */
  async function watchDeaths(pids: Set<number>, seen: Map<number, number>, what: string): Promise<void> {
    await waitFor(
      async () => {
        for (const pid of pids) if (!seen.has(pid) && (await pidDead(pid))) seen.set(pid, await uptimeS());
        return [...pids].every((pid) => seen.has(pid));
      },
      { what, timeoutMs: 60_000, intervalMs: 50 },
    );
  }

  it('starts, fails over a SIGKILLed agent and hands over on SIGTERM with no session stop and no double login', async function () {
    const a = await start('a', 10);
    const b = await start('b', 0);
    // a, of higher priority, leads most; b may win a free key while a is busy logging in.
    await allLedBy([a, b], `all ${IDENTITIES} identities logged in on a or b`);

    // SIGKILL of a: its services die with it (the lifeline); b takes every identity over.
    const aServices = servicePids(a);
    const aTrouble = trouble(a);
    a.kill('SIGKILL');
    const seenDead = new Map<number, number>();
    await watchDeaths(aServices, seenDead, 'every service of the killed agent to be gone');
    cluster.forget(a);
    await allLedBy([b], `all ${IDENTITIES} identities taken over by b`);

    // SIGTERM of b (graceful leave): a started again takes every identity over.
    const a2 = await start('a', 10);
    await waitFor(() => a2.records.some((r) => r.msg === 'agent started'), {
      what: 'a again',
      timeoutMs: 60_000,
    });
    const bTrouble = trouble(b);
    // A service b could not log out before it exited dies with it: its end is when it was seen dead.
    const bServices = servicePids(b);
    const bGone = watchDeaths(bServices, seenDead, 'every service of the stopped agent to be gone');
    await b.stop(60_000);
    await bGone;
    cluster.forget(b);
    await allLedBy([a2], `all ${IDENTITIES} identities handed over to a`);

    const logins = await readShLogins(files, (pid) => seenDead.get(pid));
    const overlaps = shOverlaps(logins);
    expect(
      overlaps
        .slice(0, 5)
        .map(
          (o) =>
            `${o.identity}: ${o.a.node}/${o.a.token} ${o.a.from}–${o.a.to} and ${o.b.node}/${o.b.token} ${o.b.from}–${o.b.to}`,
        ),
      'no two services of one identity logged in at once',
    ).to.deep.equal([]);
    // Per identity: a (or b), then b, then a again; none left open but the last.
    const first = new Map<string, ShLogin>();
    for (const l of logins) if ((first.get(l.identity)?.from ?? Infinity) > l.from) first.set(l.identity, l);
    const ledFirstByB = [...first.values()].filter((l) => l.node === 'b').length;
    expect(logins.length).to.equal(3 * IDENTITIES - ledFirstByB);
    expect(logins.filter((l) => l.to === Infinity).length).to.equal(IDENTITIES);
    expect(
      [...aTrouble, ...bTrouble, ...trouble(b), ...trouble(a2)],
      'session stops and lifeline kills',
    ).to.deep.equal([]);
  });
});

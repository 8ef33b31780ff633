// The kit for users' own services: the matrix's handovers, run with the user's identity spec
// (their service instead of the witness) on the suite's topology, answering one question —
// is this service failover-ready?
//
//   logs out within its budget   on a planned switchover, the old node's logging-out lasts no
//                                longer than the logout budget (T × 0.9 − D by default)
//   is gone when its agent dies  the agent SIGKILLed alone: no process of the service is left
//                                on that host by the must-be-out instant (the lifeline's work,
//                                but a service that escapes its process group defeats it)
//   answers after a switchover,  PING answered by the new leader alone, under its new token
//   and after a failover         (the host killed), within T + the failover margin
//   never two at once            the checker over the run's history (PING, etcd, workflows)
//
//   npm run chaos -- kit --spec my-identity.yaml [--mount ./my-service] [--host-image IMAGE]
//
// The service runs in the agents' hosts (the host image: Node and a POSIX shell); --mount puts
// a directory of this machine at /kit in each host, read-only, for its program and files. A
// service needing another runtime runs with --host-image, an image of the user's own that has
// /usr/local/bin/node and /bin/sh besides.
import { isAbsolute, resolve } from 'node:path';
import type { IdentitySpec } from '../pkg/spec/schema.js';
import { readSpecFile } from '../pkg/spec/store.js';
import { docker } from '../test/support/docker.js';
import { waitFor } from '../test/support/wait.js';
import { check, formatViolation, type Report } from './checker.js';
import { Faults } from './faults.js';
import { monotonicMs, type EventOf } from './history.js';
import type { HistoryLog } from './observe.js';
import { runScenario, waitSteady } from './runner.js';
import { scenarioNamed } from './scenarios.js';
import { CHAOS_TTL_S, FAILOVER_MARGIN_MS } from './suite.js';
import { Topology } from './topology.js';

export const KIT_MOUNT = '/kit';

export interface KitOptions {
  specFile: string;
  mount?: string;
  hostImage?: string;
  log: HistoryLog;
}

export interface KitCheck {
  name: string;
  passed: boolean;
  detail: string;
}

export class KitError extends Error {}

/** The one spec of the file, or an error naming what is wrong. */
export async function kitSpec(file: string): Promise<IdentitySpec> {
  const specs = await readSpecFile(file);
  if (specs.length !== 1) {
    throw new KitError(
      `${file}: the kit checks one identity at a time, and this file holds ${specs.length}; give a file with one spec`,
    );
  }
  return specs[0]!;
}

/**
 * Processes left on an agent's host that are not the host's own: its init (the shell, or the
 * sleep it becomes once the agent is gone) and the dead agent's lifeline reaper with its timers.
 */
async function servicesLeft(top: Topology, node: string): Promise<string[]> {
  const host = top.agents.get(node)!;
  const listing = (await (
    await docker()
  )
    .getContainer(host.container.id)
    .top({ ps_args: '-eo pid,ppid,args' })) as {
    Processes: string[][];
  };
  const procs = listing.Processes.map(([pid, ppid, ...args]) => ({
    pid: pid!,
    ppid: ppid!,
    args: args.join(' '),
  }));
  const byPid = new Map(procs.map((p) => [p.pid, p]));
  const hostsOwn = (p: (typeof procs)[number]): boolean => {
    if (!byPid.has(p.ppid)) return true; // the host's init
    for (let at: typeof p | undefined = p; at; at = byPid.get(at.ppid)) {
      if (at.args.includes(REAPER_MARK)) return true;
    }
    return false;
  };
  return procs.filter((p) => !hostsOwn(p)).map((p) => p.args);
}

/** The reaper's script begins by ignoring the signals an agent's stop sends its group. */
const REAPER_MARK = "trap '' INT HUP TERM PIPE";

/** How long `node`'s logging-out of `identity` lasted, from the agent's transitions. */
function logoutMs(events: readonly EventOf<'transition'>[], identity: string, node: string, after: number) {
  const start = events.find(
    (e) => e.identity === identity && e.node === node && e.to === 'logging-out' && e.t >= after,
  );
  if (!start) return undefined;
  const end = events.find(
    (e) => e.identity === identity && e.node === node && e.from === 'logging-out' && e.t > start.t,
  );
  return end ? end.t - start.t : undefined;
}

export async function runKit(o: KitOptions): Promise<{ checks: KitCheck[]; report: Report }> {
  const spec = await kitSpec(o.specFile);
  const identity = { name: spec.name, hosts: { a: 10, b: 5, c: 0 } };
  const mount = o.mount ? (isAbsolute(o.mount) ? o.mount : resolve(o.mount)) : undefined;
  const top = await Topology.start({
    ttlSeconds: CHAOS_TTL_S,
    identities: [identity],
    specs: [spec],
    log: o.log,
    failoverMarginMs: FAILOVER_MARGIN_MS,
    ...(mount ? { agentMounts: [{ source: mount, target: KIT_MOUNT }] } : {}),
    ...(o.hostImage ? { hostImage: o.hostImage } : {}),
  });
  const checks: KitCheck[] = [];
  const transitions = () => o.log.events.filter((e): e is EventOf<'transition'> => e.kind === 'transition');
  try {
    const faults = new Faults(top);
    const { logoutBudgetMs, mustBeOutByMs } = top.timing;
    await waitSteady(top, 'the service logged in for the first time');

    // 1. A planned switchover: the old node's logout, and the new one answering.
    const before = await top.leaderOf(spec.name);
    const switched = await runScenario(
      top,
      faults,
      { ...scenarioNamed('switchover'), identity: spec.name },
      'kit-switchover',
    );
    const took = before ? logoutMs(transitions(), spec.name, before.node, switched.from) : undefined;
    checks.push({
      name: 'logs out within its budget',
      passed: took !== undefined && took <= logoutBudgetMs,
      detail:
        took === undefined
          ? `no logout of ${spec.name} on ${before?.node ?? '?'} was seen in the switchover`
          : `${Math.round(took)} ms on a switchover (budget ${logoutBudgetMs} ms)`,
    });
    checks.push({
      name: 'answers after a switchover',
      passed: switched.moved.includes(spec.name) && switched.problems.length === 0,
      detail:
        switched.problems.join('; ') ||
        `moved from ${before?.node} and answered PING alone under its new token`,
    });

    // 2. Its agent killed alone: nothing of the service may be left by the must-be-out instant.
    const leader = (await top.leaderOf(spec.name))!;
    const killedAt = monotonicMs();
    await faults.apply({ id: 'kit-agent-kill', at: 0, action: 'agent-kill', targets: [leader.node] });
    let left: string[] = [];
    const gone = await waitFor(async () => (left = await servicesLeft(top, leader.node)).length === 0, {
      what: 'the service to be gone',
      timeoutMs: mustBeOutByMs + 1_000,
      intervalMs: 50,
    }).then(
      () => monotonicMs() - killedAt,
      () => undefined,
    );
    checks.push({
      name: 'is gone when its agent dies',
      passed: gone !== undefined && gone <= mustBeOutByMs,
      detail:
        gone === undefined
          ? `still running on ${leader.node} ${mustBeOutByMs + 1_000} ms after its agent died: ${left.join(' | ').slice(0, 300)}`
          : `gone ${Math.round(gone)} ms after its agent was killed (must be out by ${mustBeOutByMs} ms)`,
    });
    await faults.recover();
    await waitSteady(top, 'after the agent was killed');

    // 3. A failover: its host killed.
    const failover = await runScenario(
      top,
      faults,
      { ...scenarioNamed('host-kill'), identity: spec.name },
      'kit-host-kill',
    );
    const answered = o.log.events.find(
      (e) =>
        e.kind === 'ping' &&
        e.t > failover.from &&
        e.responders.length === 1 &&
        !failover.fault.targets.includes(e.responders[0]!.node),
    );
    const answeredMs = answered ? answered.t - failover.from : undefined;
    checks.push({
      name: 'answers after a failover',
      passed: answeredMs !== undefined && answeredMs <= top.ttlMs + FAILOVER_MARGIN_MS,
      detail:
        answeredMs === undefined
          ? 'no other node answered PING after its host was killed'
          : `answered on another node ${Math.round(answeredMs)} ms after the host was killed (bound: T ${top.ttlMs} + ${FAILOVER_MARGIN_MS} ms)`,
    });
  } finally {
    await top.tail();
    await top.close();
  }
  const report = check(o.log.sorted());
  checks.push({
    name: 'never logged in twice',
    passed: report.violations.length === 0,
    detail:
      report.violations.length === 0
        ? 'no violation of S1-S5, L1, L2'
        : report.violations.map(formatViolation).join('\n'),
  });
  return { checks, report };
}

export function formatKit(spec: string, checks: readonly KitCheck[]): string {
  const ready = checks.every((c) => c.passed);
  return [
    `${spec}: ${ready ? 'failover-ready' : 'NOT failover-ready'}`,
    ...checks.map((c) => `  ${c.passed ? 'ok  ' : 'FAIL'}  ${c.name.padEnd(28)} ${c.detail}`),
  ].join('\n');
}

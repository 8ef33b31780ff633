// The nemesis's hands: each fault of the failure matrix done for real to the topology's hosts,
// written to the history as it begins and ends. Lasting faults hold for their duration and are
// lifted; a host that was killed stays dead until `recover` brings it back (the runner does so
// after the fault's settle time, so the failover is seen first).
//
// How each is done:
//   kill            docker kill of the agent's container: the host dies with everything on it
//   agent-kill      SIGKILL of the agent process alone: its service must die by the lifeline
//   agent-term      SIGTERM of the agent, as systemd stops it: a graceful leave
//   freeze          SIGSTOP / SIGCONT of the agent process alone (its service and reaper run on)
//   host-freeze     the cgroup freezer on the agent's container (everything on the host stops)
//   cpu-burn        a busy loop per core of this machine, run inside the agent's host (here
//                   every host shares the machine's cores, so the whole cluster is starved)
//   witness-kill    SIGKILL of the service the agent leads; witness-freeze: SIGSTOP / SIGCONT
//   cut-*           iptables in the agent's own network namespace, dropping both directions
//                   to and from the etcd members, the NATS server, or both
//   etcd-leader     SIGKILL of the raft leader's container; etcd-pause: one member frozen;
//   etcd-isolate    one member cut from its peers (clients still reach it); etcd-all: every
//                   member frozen at once; etcd-down: every member killed, restarted from its
//                   data after the duration
//   nats-restart    the NATS container restarted
//   controller-*    the active controller killed or frozen right after a switchover began
//   revoke          a raw etcd revoke of the lease behind a leader key (no controller, no record)
//   switchover / cancel / fence   through the active controller's API, as an operator
//   operator-race   two switchovers and a cancel of one identity and a fence of its leader's
//                   node, sent at once (each answer is kept in the history)
//   bad-input       malformed and unauthenticated API calls, and forged control messages on NATS
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { connectEtcd } from '../pkg/lease/index.js';
import { subjects } from '../pkg/identity/wire.js';
import { TEST_TOKENS } from '../test/support/controllers.js';
import { docker } from '../test/support/docker.js';
import type { ManagedContainer } from '../test/support/container.js';
import { waitFor } from '../test/support/wait.js';
import { monotonicMs } from './history.js';
import { FOLLOWER, type PlannedFault } from './nemesis.js';
import { WITNESS_SCRIPT, type Topology } from './topology.js';

const run = promisify(execFile);

/** Run `file args` with `input` on its standard input; rejects on failure, with its stderr. */
function runWithInput(file: string, args: string[], input: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = execFile(file, args, (err) => (err ? reject(err) : resolve()));
    // A process that exits before reading fails through the callback, not as an EPIPE thrown here.
    child.stdin?.on('error', () => undefined);
    child.stdin?.end(input);
  });
}

/** After the cluster is whole, the controller sees a fit standby again within this. */
const FIT_STANDBY_MS = 30_000;
/** An operator's API call must answer within this, or the fault is recorded as failed. */
const API_TIMEOUT_MS = 10_000;

/** An agent told to stop hands over and exits within this (its services' stop budgets, and more). */
const AGENT_LEAVE_MS = 60_000;

export class FaultError extends Error {}

/** The sentence a refusal carries (an RFC 9457 problem's detail or title). */
function problemDetail(body: unknown): string | undefined {
  const p = body as { detail?: unknown; title?: unknown } | undefined;
  return typeof p?.detail === 'string' ? p.detail : typeof p?.title === 'string' ? p.title : undefined;
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export class Faults {
  /** Things to bring back after a fault's settle time (killed hosts, members, controllers). */
  private readonly pending: Array<() => Promise<void>> = [];

  constructor(private readonly top: Topology) {}

  private mark(f: PlannedFault, phase: 'start' | 'end', liftFrom?: number): void {
    this.top.opts.log.add({
      kind: 'nemesis',
      t: monotonicMs(),
      id: f.id,
      action: f.action,
      targets: f.targets,
      phase,
      ...(liftFrom !== undefined ? { liftFrom } : {}),
    });
  }

  /** Do the fault; resolves once it is lifted (lasting faults) or done. */
  async apply(f: PlannedFault): Promise<void> {
    const hold = () => sleep(f.durationMs ?? 0);
    const target = f.targets[0]!;
    switch (f.action) {
      case 'kill': {
        const host = this.agent(target);
        this.mark(f, 'start');
        await host.container.kill('SIGKILL');
        await this.top.hostDied(target);
        this.mark(f, 'end');
        this.pending.push(() => this.top.restartAgent(target));
        return;
      }
      case 'agent-kill': {
        const pid = await this.agentPid(target);
        this.mark(f, 'start');
        process.kill(pid, 'SIGKILL');
        this.mark(f, 'end');
        // The container lives on (its shell outlives the agent): restarting it starts a new agent.
        this.pending.push(() => this.top.restartAgent(target));
        return;
      }
      case 'agent-term': {
        const pid = await this.agentPid(target);
        this.mark(f, 'start');
        process.kill(pid, 'SIGTERM');
        await waitFor(() => !alive(pid), {
          what: `agent ${target} to leave after SIGTERM`,
          timeoutMs: AGENT_LEAVE_MS,
        });
        this.mark(f, 'end');
        this.pending.push(() => this.top.restartAgent(target));
        return;
      }
      case 'freeze': {
        const pid = await this.agentPid(target);
        return this.lasting(
          f,
          () => process.kill(pid, 'SIGSTOP'),
          () => process.kill(pid, 'SIGCONT'),
        );
      }
      case 'host-freeze': {
        const host = this.agent(target);
        return this.lasting(
          f,
          () => host.container.pause(),
          () => host.container.unpause(),
        );
      }
      case 'cpu-burn': {
        const host = this.agent(target);
        const ms = Math.round(f.durationMs ?? 0);
        const loop = `const end = Date.now() + ${ms}; while (Date.now() < end) {}`;
        let burners: Array<Promise<unknown>> = [];
        return this.lasting(
          f,
          () => {
            burners = Array.from({ length: availableParallelism() }, () =>
              host.container.exec(['/usr/local/bin/node', '-e', loop]),
            );
          },
          () => Promise.all(burners),
        );
      }
      case 'witness-kill':
      case 'witness-freeze': {
        const pid = await this.servicePid(target);
        if (pid === undefined) return this.nothingToDo(f, `${target} runs no service`);
        this.mark(f, 'start');
        if (f.action === 'witness-kill') {
          process.kill(pid, 'SIGKILL');
        } else {
          process.kill(pid, 'SIGSTOP');
          try {
            await hold();
          } finally {
            try {
              process.kill(pid, 'SIGCONT');
            } catch {
              // killed meanwhile (its agent gave the identity up): nothing to resume
            }
          }
        }
        this.mark(f, 'end');
        return;
      }
      case 'cut-etcd':
      case 'cut-nats':
      case 'cut-both': {
        const host = this.agent(target);
        const peers = [
          ...(f.action !== 'cut-nats' ? this.top.etcd.members : []),
          ...(f.action !== 'cut-etcd' ? this.top.natsServers : []),
        ];
        await this.cut(host.container, peers, f, hold);
        return;
      }
      case 'etcd-leader': {
        const leader = await this.etcdLeader();
        this.mark({ ...f, targets: [leader.alias] }, 'start');
        await leader.kill('SIGKILL');
        this.mark({ ...f, targets: [leader.alias] }, 'end');
        this.pending.push(() => leader.start());
        return;
      }
      case 'etcd-pause': {
        const member =
          f.targets[0] === FOLLOWER
            ? await this.etcdFollower(f)
            : this.top.etcd.members[this.index(f, this.top.etcd.members.length)]!;
        return this.lasting(
          { ...f, targets: [member.alias] },
          () => member.pause(),
          () => member.unpause(),
        );
      }
      case 'etcd-isolate': {
        const member = this.top.etcd.members[this.index(f, this.top.etcd.members.length)]!;
        const others = this.top.etcd.members.filter((m) => m !== member);
        await this.cut(member, others, { ...f, targets: [member.alias] }, hold);
        return;
      }
      case 'etcd-all': {
        const members = this.top.etcd.members;
        return this.lasting(
          f,
          async () => void (await Promise.all(members.map((m) => m.pause()))),
          async () => void (await Promise.all(members.map((m) => m.unpause()))),
        );
      }
      case 'etcd-down': {
        const members = this.top.etcd.members;
        return this.lasting(
          f,
          async () => void (await Promise.all(members.map((m) => m.kill('SIGKILL')))),
          // Together: a member answers a linearizable read only once a quorum is back.
          async () => void (await Promise.all(members.map((m) => m.start()))),
        );
      }
      case 'nats-restart': {
        const server = this.top.natsServers[this.index(f, this.top.natsServers.length)]!;
        const marked = { ...f, targets: [server.alias] };
        this.mark(marked, 'start');
        await server.restart();
        this.mark(marked, 'end');
        return;
      }
      case 'controller-kill':
      case 'controller-freeze': {
        const active = await this.activeController();
        // Mid-workflow: a switchover of an identity led here has just begun.
        await this.startSwitchover(this.top.identities[this.index(f, this.top.identities.length)]!.name);
        const marked = { ...f, targets: [active.name] };
        if (f.action === 'controller-freeze') {
          return this.lasting(
            marked,
            () => active.container.pause(),
            () => active.container.unpause(),
          );
        }
        this.mark(marked, 'start');
        await active.container.kill('SIGKILL');
        this.mark(marked, 'end');
        this.pending.push(() => this.top.restartController(active.name));
        return;
      }
      case 'revoke': {
        const led = await this.ledBy(target);
        if (!led) return this.nothingToDo(f, `${target} leads nothing`);
        const kv = (await this.top.client.get(this.top.keys.leader(led)).exec()).kvs[0];
        if (!kv) return this.nothingToDo(f, `${led} has no leader key`);
        this.mark(f, 'start');
        await this.top.client.leaseClient.leaseRevoke({ ID: kv.lease });
        this.mark(f, 'end');
        return;
      }
      case 'switchover': {
        // As an operator would: once the controller shows a standby fit to take over (the
        // cluster may just have come back whole). Without one the call is made anyway, and
        // its refusal recorded.
        await this.untilFitStandby(target).catch(() => undefined);
        this.mark(f, 'start');
        const { status, body } = await this.startSwitchover(target);
        this.top.opts.log.add({
          kind: 'operator',
          t: monotonicMs(),
          id: f.id,
          call: `POST /v1/identities/${target}/switchover`,
          status,
          ...(status >= 300 ? { detail: (problemDetail(body) ?? `status ${status}`).slice(0, 500) } : {}),
        });
        this.mark(f, 'end');
        return;
      }
      case 'cancel': {
        this.mark(f, 'start');
        await this.startSwitchover(target);
        await this.api('DELETE', `/v1/identities/${target}/workflow`);
        this.mark(f, 'end');
        return;
      }
      case 'fence': {
        this.mark(f, 'start');
        await this.api('POST', `/v1/nodes/${target}/fence`, { reason: `chaos ${f.id}` });
        this.mark(f, 'end');
        this.pending.push(async () => {
          await this.api('POST', `/v1/nodes/${target}/unfence`, { reason: `chaos ${f.id} over` });
        });
        return;
      }
      case 'operator-race': {
        // A fair race: the controller sees a standby fit to take over, so at least one call
        // has every reason to be accepted.
        await this.untilFitStandby(target);
        const leader = (await this.top.leaderOf(target))?.node;
        type Call = { method: string; path: string; body?: unknown };
        const calls: Call[] = [
          { method: 'POST', path: `/v1/identities/${target}/switchover`, body: {} },
          { method: 'POST', path: `/v1/identities/${target}/switchover`, body: {} },
          { method: 'DELETE', path: `/v1/identities/${target}/workflow` },
          ...(leader
            ? [{ method: 'POST', path: `/v1/nodes/${leader}/fence`, body: { reason: `chaos ${f.id}` } }]
            : []),
        ];
        this.mark(f, 'start');
        // Queued before the calls: a fence accepted but answered late still holds.
        if (leader) {
          this.pending.push(async () => {
            await this.api('POST', `/v1/nodes/${leader}/unfence`, { reason: `chaos ${f.id} over` });
          });
        }
        const statuses = await Promise.all(
          calls.map(async ({ method, path, body }) => {
            const { status, detail } = await this.api(method, path, body).then(
              (res) => ({
                status: res.status,
                detail: res.status >= 300 ? problemDetail(res.body) : undefined,
              }),
              (err: Error) => ({ status: 0, detail: err.message }),
            );
            this.top.opts.log.add({
              kind: 'operator',
              t: monotonicMs(),
              id: f.id,
              call: `${method} ${path}`,
              status,
              ...(detail ? { detail: detail.slice(0, 500) } : {}),
            });
            return status;
          }),
        );
        this.mark(f, 'end');
        // Racing calls may be refused as conflicts (409); anything else is a broken API or race.
        const odd = statuses.filter((s) => s === 0 || (s >= 400 && s !== 409));
        if (odd.length > 0 || !statuses.some((s) => s < 300)) {
          throw new FaultError(
            `operators' race on ${target}: answers ${statuses.join(', ')} (want each accepted or 409, and at least one accepted)`,
          );
        }
        return;
      }
      case 'bad-input': {
        this.mark(f, 'start');
        await this.badInput();
        this.mark(f, 'end');
        return;
      }
    }
  }

  /**
   * A lasting fault: begun, held for its duration, lifted. Its end is marked whatever happens,
   * so a fault whose start failed never reads as lasting for ever; only what was begun is
   * lifted.
   */
  private async lasting(f: PlannedFault, begin: () => unknown, lift: () => unknown): Promise<void> {
    let begun = false;
    this.mark(f, 'start');
    try {
      await begin();
      begun = true;
      await sleep(f.durationMs ?? 0);
    } finally {
      const liftFrom = monotonicMs();
      if (begun) await lift();
      this.mark(f, 'end', begun ? liftFrom : undefined);
    }
  }

  /** Bring back what the faults so far left dead (hosts, members, controllers), and unfence. */
  async recover(): Promise<void> {
    // Each step leaves the list only once done: one that failed is tried again next time.
    while (this.pending.length > 0) {
      await this.pending[0]!();
      this.pending.shift();
    }
  }

  private nothingToDo(f: PlannedFault, why: string): void {
    this.top.opts.log.add({
      kind: 'nemesis',
      t: monotonicMs(),
      id: f.id,
      action: `${f.action} (skipped: ${why})`.slice(0, 100),
      targets: f.targets,
      phase: 'start',
    });
    this.top.opts.log.add({
      kind: 'nemesis',
      t: monotonicMs(),
      id: f.id,
      action: `${f.action} (skipped: ${why})`.slice(0, 100),
      targets: f.targets,
      phase: 'end',
    });
  }

  /** A fault's own choice among `n` things, fixed by its id (so a replay picks the same). */
  private index(f: PlannedFault, n: number): number {
    return Number(/\d+/.exec(f.id)?.[0] ?? 0) % n;
  }

  private agent(node: string) {
    const host = this.top.agents.get(node);
    if (!host) throw new FaultError(`no agent host '${node}' in this topology`);
    return host;
  }

  /**
   * Host pids of the container's Node processes running `script` (the host's shell, whose
   * arguments name the script too, is not one of them).
   */
  private async pidsIn(container: ManagedContainer, script: string): Promise<number[]> {
    const top = (await (await docker()).getContainer(container.id).top({ ps_args: '-eo pid,args' })) as {
      Processes: string[][];
    };
    return top.Processes.filter((p) => {
      const args = p.slice(1).join(' ').split(/\s+/);
      return args[0] === '/usr/local/bin/node' && args.includes(script);
    }).map((p) => Number(p[0]));
  }

  private async agentPid(node: string): Promise<number> {
    const [pid] = await this.pidsIn(this.agent(node).container, 'dist/cmd/agent/main.js');
    if (pid === undefined) throw new FaultError(`agent ${node}: no agent process found in its host`);
    return pid;
  }

  /** The host pid of the service this node leads (one of them), if any. */
  private async servicePid(node: string): Promise<number | undefined> {
    const led = await this.ledBy(node);
    if (!led) return undefined;
    for (const pid of await this.pidsIn(this.agent(node).container, WITNESS_SCRIPT)) {
      const environ = await readFile(`/proc/${pid}/environ`, 'utf8').catch(() => '');
      if (environ.split('\0').includes(`WITNESS_FILE=/chaos/witness-${led}.jsonl`)) return pid;
    }
    return undefined;
  }

  /** An identity `node` leads now (by the leader keys), if any. */
  private async ledBy(node: string): Promise<string | undefined> {
    for (const identity of this.top.identities) {
      if ((await this.top.leaderOf(identity.name))?.node === node) return identity.name;
    }
    return undefined;
  }

  private async ipOf(container: ManagedContainer): Promise<string> {
    const info = await (await docker()).getContainer(container.id).inspect();
    const ip = info.NetworkSettings.Networks[this.top.harness.networkName]?.IPAddress;
    if (!ip) throw new FaultError(`${container.alias} has no address on the harness network`);
    return ip;
  }

  /**
   * Drop everything between `host` and `peers`, in the host's own network namespace. Every
   * rule goes in, and comes out, in one iptables-restore transaction: the cut begins and ends
   * at once, and lasts what the fault says. One process per rule (12 of them for a cut from
   * three etcd members and three NATS servers, each way) stretched a 200 ms stall to 1.3–3.4 s
   * on these loaded cores, cutting the peers one after the other. The marks bracket the cut
   * as it was in place.
   */
  private async cut(
    host: ManagedContainer,
    peers: ManagedContainer[],
    f: PlannedFault,
    hold: () => Promise<void>,
  ): Promise<void> {
    const pid = String(await host.hostPid());
    const ips = await Promise.all(peers.map((p) => this.ipOf(p)));
    const rules = ips.flatMap((ip) => [
      ['INPUT', '-s', ip, '-j', 'DROP'],
      ['OUTPUT', '-d', ip, '-j', 'DROP'],
    ]);
    const restore = (verb: '-I' | '-D', some = rules) =>
      runWithInput(
        'nsenter',
        ['-t', pid, '-n', 'iptables-restore', '-w', '--noflush'],
        ['*filter', ...some.map((rule) => [verb, ...rule].join(' ')), 'COMMIT', ''].join('\n'),
      );
    await restore('-I');
    this.mark(f, 'start');
    try {
      await hold();
    } finally {
      // If the one transaction fails, each rule is lifted on its own: one that fails must not
      // leave the others in place.
      await restore('-D').catch(async () => {
        for (const rule of rules) await restore('-D', [rule]).catch(() => undefined);
      });
      this.mark(f, 'end');
    }
  }

  /** A member that is not the raft leader (see Scenario.member for why a row asks for one). */
  private async etcdFollower(f: PlannedFault) {
    const leader = await this.etcdLeader();
    const followers = this.top.etcd.members.filter((m) => m !== leader);
    return followers[this.index(f, followers.length)]!;
  }

  private async etcdLeader() {
    for (const member of this.top.etcd.members) {
      const client = connectEtcd({ endpoints: [member.hostEndpoint] });
      try {
        const status = await client.maintenance.status();
        if (status.leader === status.header.member_id) return member;
      } catch {
        // a member that does not answer is not the leader we can find
      } finally {
        client.close();
      }
    }
    throw new FaultError('no etcd member says it is the raft leader');
  }

  private async activeController() {
    let found: ReturnType<Topology['controllers']['get']>;
    await waitFor(
      async () => {
        for (const c of this.top.controllers.values()) {
          const res = await fetch(`${c.url}/v1/controller`, {
            headers: { authorization: `Bearer ${TEST_TOKENS.viewer}` },
            signal: AbortSignal.timeout(2_000),
          }).catch(() => undefined);
          const body = res?.ok ? ((await res.json()) as { active?: boolean }) : undefined;
          if (body?.active) {
            found = c;
            return true;
          }
        }
        return false;
      },
      { what: 'an active controller', timeoutMs: 30_000 },
    );
    return found!;
  }

  /** An operator's call to the active controller; a 4xx/5xx answer is kept (it is history too). */
  async api(method: string, path: string, body?: unknown): Promise<{ status: number; body: unknown }> {
    const active = await this.activeController();
    const res = await fetch(`${active.url}${path}`, {
      method,
      headers: {
        authorization: `Bearer ${TEST_TOKENS.operator}`,
        ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(API_TIMEOUT_MS),
    });
    const text = await res.text();
    return { status: res.status, body: text ? (JSON.parse(text) as unknown) : undefined };
  }

  /** Until the active controller shows a standby of `identity` fit to take over (FIT_STANDBY_MS). */
  private async untilFitStandby(identity: string): Promise<void> {
    await waitFor(
      async () => {
        const view = (await this.api('GET', `/v1/identities/${identity}`)).body as {
          standbys?: Array<{ registered: boolean; healthy: boolean; fenced: boolean; nofailover: boolean }>;
        };
        return (view.standbys ?? []).some((s) => s.registered && s.healthy && !s.fenced && !s.nofailover);
      },
      {
        what: `a fit standby of ${identity} in the controller's view`,
        timeoutMs: FIT_STANDBY_MS,
        intervalMs: 250,
      },
    );
  }

  private startSwitchover(identity: string) {
    return this.api('POST', `/v1/identities/${identity}/switchover`, {});
  }

  /**
   * Bad input from the network: API calls malformed, unauthenticated or aimed at what does not
   * exist, and forged control messages to every agent and identity on NATS (no controller's
   * signature). Every one must be refused and change nothing (the checker sees any move).
   */
  private async badInput(): Promise<void> {
    const active = await this.activeController();
    const calls: Array<[string, string, string | undefined, string | undefined]> = [
      ['POST', '/v1/identities/w1/switchover', '{"to": 42}', TEST_TOKENS.operator],
      ['POST', '/v1/identities/w1/switchover', '{not json', TEST_TOKENS.operator],
      ['POST', '/v1/identities/w1/switchover', '{}', undefined],
      ['POST', '/v1/identities/w1/switchover', '{}', TEST_TOKENS.viewer],
      ['POST', '/v1/identities/no-such/switchover', '{}', TEST_TOKENS.operator],
      ['POST', '/v1/nodes/a/fence', '{"reason": ""}', TEST_TOKENS.operator],
      ['DELETE', '/v1/identities/w1', undefined, 'forged-token'],
      ['PUT', '/v1/identities/w1', '{"name": "w1", "service": {"driver": "nope"}}', TEST_TOKENS.admin],
    ];
    for (const [method, path, body, token] of calls) {
      const res = await fetch(`${active.url}${path}`, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          'content-type': 'application/json',
        },
        ...(body !== undefined ? { body } : {}),
        signal: AbortSignal.timeout(API_TIMEOUT_MS),
      });
      await res.arrayBuffer();
      if (res.status < 400) {
        throw new FaultError(`bad input ${method} ${path} ${body ?? ''} was accepted (${res.status})`);
      }
    }
    const forged = [
      '{"op":"drain","identity":"w1"}',
      '{"op":"logout","identity":"w2","term":{"controller":"ctl-9","token":"1"}}',
      'not json at all',
      JSON.stringify({ op: 'unfence', sig: 'AAAA', payload: 'x'.repeat(2_000) }),
    ];
    for (const node of this.top.agents.keys()) {
      for (const message of forged) this.top.nc.publish(subjects.control(node), message);
    }
    await this.top.nc.flush();
  }
}

/** iptables must be on this host and able to enter a container's network namespace. */
export async function checkCutTools(): Promise<void> {
  await run('nsenter', ['--version']).catch(() => {
    throw new FaultError('nsenter is missing: install util-linux (the cuts run iptables in each host)');
  });
  await run('iptables', ['-w', '-L', '-n']).catch((err: Error) => {
    throw new FaultError(`iptables does not work here (${err.message}): install iptables, run as root`);
  });
}

// The chaos suite's cluster: every part a host of its own, in a container on the harness's
// Docker network (test/support/harness.ts), so a partition is a real one and a host's death
// takes everything on it.
//
//   etcd0..2      a 3-member etcd cluster
//   nats          NATS with JetStream and the shipped authorization (one nkey user per role
//                 and per node). nats-server 2.9 could form a JetStream cluster, but the
//                 harness's NATS faults (restart, cut) are about one server; see docs/chaos.md
//   ctl-1, ctl-2  two controllers (their API published on the host)
//   a, b, c       three agents, each in its own container (the "host" image: Node plus the sh,
//                 sleep, date and setpriv its lifeline uses), hosting several identities each
//
// Every identity runs the witness (chaos/witness.ts) as its service; the witnesses append
// their records to one directory on this host, mounted into every agent host at /chaos, which
// the topology tails into the run's history. Around it, from this host: a watcher of the
// leader keys and workflows in etcd, a PING sampler per identity, and the agents' own logs
// (their transitions). The host's monotonic clock is the history's: see history.ts, and
// checkClock below for how it is checked across containers.
import { createWriteStream, type WriteStream } from 'node:fs';
import { appendFile, mkdtemp, open, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import { PassThrough } from 'node:stream';
import type { Etcd3, Watcher } from 'etcd3';
import { connect, type NatsConnection } from 'nats';
import { stringify } from 'yaml';
import { Workflow } from '../pkg/api/workflows.js';
import { ControllerKeys } from '../pkg/controller/store.js';
import { connectEtcd } from '../pkg/lease/index.js';
import { CommitWatch } from './commits.js';
import { Keys, LeaderRecord } from '../pkg/lease/keys.js';
import { leaseTiming, type LeaseTiming } from '../pkg/lease/timing.js';
import type { IdentitySpecInput } from '../pkg/spec/schema.js';
import { putSpec } from '../pkg/spec/store.js';
import { TEST_TOKENS } from '../test/support/controllers.js';
import { docker } from '../test/support/docker.js';
import { within } from '../test/support/engine.js';
import {
  APP_DIR,
  Harness,
  type EtcdCluster,
  type NatsServer,
  type NodeProgram,
} from '../test/support/harness.js';
import { images } from '../test/support/images.js';
import { waitFor } from '../test/support/wait.js';
import { monotonicMs, type RunConfig } from './history.js';
import { CORE_TIMEOUT_MS, PACED_DRAIN_CAP_MS, Workload } from './workload.js';
import { samplePings, watchLeaders, watchLoginRecords, witnessEvents, type HistoryLog } from './observe.js';

/**
 * The witness as `npm run build` compiles it, run by plain node. Through tsx a cold start cost
 * ~0.5 s of CPU (the loader and esbuild's service) on the cores the handover it measures needs.
 */
export const WITNESS_SCRIPT = 'dist/chaos/witness.js';
/** Where the witnesses' records are, inside every agent host. */
const RECORDS_DIR = '/chaos';
const NATS_USERS_DIR = '/nats-users';
const CONTROLLER_PORT = 8480;
/**
 * A JetStream cluster of three, as production would run it: a NATS server lost or restarted
 * must cost nothing, and a single server cannot show that.
 */
export const DEFAULT_NATS_SERVERS = 3;
/** A cold agent or controller container: Node starting on a loaded 2-core machine. */
const COMPONENT_START_MS = 60_000;
/** How often the witnesses' files are read into the history. */
const TAIL_EVERY_MS = 100;
/** The PING sampler: one PING every 50 ms, each collecting answers for 300 ms (see observe.ts). */
const PING_EVERY_MS = 50;
const PING_WINDOW_MS = 300;
/** The workload: one request per identity every this often. */
const WORKLOAD_EVERY_MS = 500;
/** The witness's beat: a span's end is never more than this past its last record. */
export const WITNESS_BEAT_MS = 50;

export interface ChaosIdentity {
  name: string;
  /** Node → its priority for this identity (the highest leads when all are well). */
  hosts: Record<string, number>;
  /** The witness's knobs (its spec's service.env): WITNESS_STOP_DELAY_MS, WITNESS_IGNORE_SIGTERM... */
  witnessEnv?: Record<string, string>;
  /** Requests go to a durable inbox (JetStream): sent during a handover, answered after it. */
  durable?: boolean;
  /** The witness runs as a warm standby on every host (fd3 channel), not started at login. */
  warm?: boolean;
}

/** Three identities over three agents: every agent hosts two or three of them. */
export const DEFAULT_IDENTITIES: readonly ChaosIdentity[] = [
  { name: 'w1', hosts: { a: 10, b: 5, c: 0 } },
  { name: 'w2', hosts: { a: 5, b: 10 } },
  { name: 'w3', hosts: { b: 0, c: 10 }, durable: true },
];

export interface TopologyOptions {
  /** The agents' lease TTL (T); D is the agents' default, 0.7 T. */
  ttlSeconds: number;
  identities?: readonly ChaosIdentity[];
  /** Extra environment for every agent (e.g. an unsafe variant, inside the suite only). */
  agentEnv?: Record<string, string>;
  /**
   * NATS servers: a JetStream cluster of 3 (the default) or 1 (`npm run chaos -- … --nats 1`,
   * lighter, for a quick look).
   */
  natsServers?: number;
  /** Extra host directories for the agents' hosts (the kit mounts the user's service at /kit). */
  agentMounts?: Array<{ source: string; target: string }>;
  /** The agents' host image (default: images().host); it must have /usr/local/bin/node and /bin/sh. */
  hostImage?: string;
  /** A dist/ to run the agents from instead of the checkout's (an unsafe variant: variants.ts). */
  agentDist?: string;
  /** Specs instead of the witness (the user kit); their names must match `identities`. */
  specs?: IdentitySpecInput[];
  /** The PING sampler's period (default 50 ms); the benchmarks sample finer. */
  pingEveryMs?: number;
  /** A period of its own for some identities (a benchmark samples finer only what it measures). */
  pingEveryMsOf?: Readonly<Record<string, number>>;
  /** Durable requests per second to each durable identity (default: one every 500 ms). */
  durableRatePerS?: number;
  log: HistoryLog;
  /**
   * Keep every agent's and controller's own log here, one file each (`<name>.log`): what a
   * node said about itself (a fence's failed renewals, its gate's waits) beside the history
   * that judges it from outside. Each etcd member's log is copied here at close
   * (`etcd0.log`…): when every agent's renewals stall at once, only etcd says why (a raft
   * election, a slow disk).
   */
  logDir?: string;
  seed?: number;
  failoverMarginMs: number;
}

export interface AgentHost {
  node: string;
  container: NodeProgram;
  /** Identities hosted, with priorities. */
  identities: Record<string, number>;
}

export interface ControllerHost {
  name: string;
  container: NodeProgram;
  /** API base URL on this host. */
  url: string;
}

/** A witness's login as the tail saw it, until its logout or death line. */
interface OpenLogin {
  identity: string;
  node: string;
  token: string;
}

export class Topology {
  readonly agents = new Map<string, AgentHost>();
  readonly controllers = new Map<string, ControllerHost>();
  readonly keys = new Keys();
  private readonly stops: Array<() => Promise<void>> = [];
  /** Log streams of restarted containers, ended before the containers are removed. */
  private readonly follows: NodeJS.ReadableStream[] = [];
  private readonly openLogins = new Map<string, OpenLogin>();
  private readonly tailOffsets = new Map<string, number>();
  private tailing: Promise<void> = Promise.resolve();
  private closed = false;
  /** The close under way: a second close (a signal during it) waits for it, not past it. */
  private closing: Promise<void> | undefined;
  private workload: Workload | undefined;
  private readonly logFiles = new Map<string, WriteStream>();

  private constructor(
    readonly harness: Harness,
    readonly etcd: EtcdCluster,
    /** The NATS servers: one, or a JetStream cluster (natsServers). */
    readonly natsServers: NatsServer[],
    /** The host's own etcd client (all three members) and NATS connection (the observer). */
    readonly client: Etcd3,
    readonly nc: NatsConnection,
    readonly recordsDir: string,
    readonly identities: readonly ChaosIdentity[],
    readonly opts: TopologyOptions,
  ) {}

  get ttlMs(): number {
    return this.opts.ttlSeconds * 1000;
  }

  /** The first NATS server (the authorization is the same on all). */
  get nats(): NatsServer {
    return this.natsServers[0]!;
  }

  /** The agents' lease timing (their defaults for T): D, the logout budget, must-be-out. */
  get timing(): LeaseTiming {
    return leaseTiming({ ttlSeconds: this.opts.ttlSeconds });
  }

  /** When etcd committed anything (the agents' renewals), watched from outside. */
  commits: CommitWatch | undefined;

  get selfFenceMs(): number {
    return this.timing.selfFenceMs;
  }

  static async start(opts: TopologyOptions): Promise<Topology> {
    const identities = opts.identities ?? DEFAULT_IDENTITIES;
    const nodes = [...new Set(identities.flatMap((i) => Object.keys(i.hosts)))].sort();
    const harness = await Harness.create();
    let topology: Topology | undefined;
    try {
      const natsCount = opts.natsServers ?? DEFAULT_NATS_SERVERS;
      const [etcd, nats] = await Promise.all([
        harness.startEtcdCluster(3),
        natsCount > 1
          ? harness.startNatsCluster(natsCount, { auth: { nodes } })
          : harness.startNats('nats', { auth: { nodes } }).then((n) => [n]),
      ]);
      const client = connectEtcd({ endpoints: etcd.hostEndpoints });
      const nc = await connect({
        servers: nats.map((n) => n.hostUrl),
        maxReconnectAttempts: -1,
        reconnectTimeWait: 200,
      });
      const recordsDir = await mkdtemp(join(tmpdir(), 'understudy-chaos-'));
      topology = new Topology(harness, etcd, nats, client, nc, recordsDir, identities, opts);
      await topology.begin(nodes);
      return topology;
    } catch (err) {
      await (topology ? topology.close() : harness.close());
      throw err;
    }
  }

  private async begin(nodes: string[]): Promise<void> {
    const { log } = this.opts;
    log.add({
      kind: 'config',
      t: monotonicMs(),
      v: 1,
      ...(this.opts.seed !== undefined ? { seed: this.opts.seed } : {}),
      ttlMs: this.ttlMs,
      failoverMarginMs: this.opts.failoverMarginMs,
      // A workflow's steps are written by a controller that may itself be frozen or dying.
      switchoverSlackMs: 3_000,
      observeSlackMs: 1_000,
      loginRecordsObserved: true,
      requestTimeoutMs: CORE_TIMEOUT_MS,
    } satisfies RunConfig);
    const specs = this.opts.specs ?? this.identities.map((i) => this.witnessSpec(i));
    for (const spec of specs) await putSpec(this.client, spec);

    this.commits = await CommitWatch.start(this.etcd.hostEndpoints);
    const commits = this.commits;
    this.stops.push(() => commits.close());
    const leaders = await watchLeaders(
      this.client,
      this.identities.map((i) => i.name),
      log,
    );
    this.stops.push(() => leaders.cancel());
    const records = await watchLoginRecords(
      this.client,
      this.identities.map((i) => i.name),
      log,
    );
    this.stops.push(() => records.cancel());
    const fences = await watchFences(this.client, log, this.keys);
    this.stops.push(() => fences.cancel());
    const workflows = await watchWorkflows(this.client, log);
    this.stops.push(() => workflows.cancel());
    const tail = setInterval(() => void this.tail(), TAIL_EVERY_MS);
    this.stops.push(async () => {
      clearInterval(tail);
      await this.tail();
    });

    await Promise.all(['ctl-1', 'ctl-2'].map((name) => this.startController(name)));
    // Agents one after the other, highest priorities first: the first leaders are the wanted ones.
    for (const node of nodes) await this.startAgent(node);
    for (const identity of this.identities) {
      const sampler = samplePings(this.nc, identity.name, log, {
        everyMs: this.opts.pingEveryMsOf?.[identity.name] ?? this.opts.pingEveryMs ?? PING_EVERY_MS,
        windowMs: PING_WINDOW_MS,
      });
      this.stops.unshift(() => sampler.stop());
    }
    const workload = new Workload(
      this.nc,
      log,
      this.identities.map((i) => {
        const durable = Boolean(this.opts.specs?.find((s) => s.name === i.name)?.inbox?.durable ?? i.durable);
        const rate = durable ? this.opts.durableRatePerS : undefined;
        return { identity: i.name, durable, ...(rate ? { ratePerS: rate } : {}) };
      }),
      WORKLOAD_EVERY_MS,
    ).start();
    // First at the end: the answers still owed come while everything else still runs. A
    // paced load may leave a backlog being worked off: waited for while it shrinks.
    const quietMs = this.ttlMs + this.opts.failoverMarginMs;
    const capMs = this.opts.durableRatePerS ? PACED_DRAIN_CAP_MS : quietMs;
    this.workload = workload;
    this.stops.unshift(() => workload.stop(quietMs, capMs));
  }

  /**
   * The witness as a cold process service (logs in at its start, out at SIGTERM), or as a
   * warm standby on the fd3 channel (logs in and out when told).
   */
  witnessSpec(identity: ChaosIdentity): IdentitySpecInput {
    return {
      name: identity.name,
      service: {
        driver: 'process',
        command: ['/usr/local/bin/node', WITNESS_SCRIPT],
        cwd: APP_DIR,
        ...(identity.warm ? { mode: 'warm' as const, channel: 'fd3' as const } : { mode: 'cold' as const }),
        env: {
          WITNESS_FILE: `${RECORDS_DIR}/witness-${identity.name}.jsonl`,
          WITNESS_BEAT_MS: String(WITNESS_BEAT_MS),
          ...(identity.warm ? { WITNESS_MODE: 'warm' } : {}),
          ...identity.witnessEnv,
        },
        restart: { maxAttempts: 0 },
        startTimeoutMs: 30_000,
      },
      access: { open: true },
      // On a NATS cluster the inbox is kept on every server: a restart of one loses nothing.
      ...(identity.durable ? { inbox: { durable: true, replicas: this.natsServers.length } } : {}),
    };
  }

  private agentConfig(node: string): Record<string, unknown> {
    const hosted = Object.fromEntries(
      this.identities
        .filter((i) => node in i.hosts)
        .map((i) => [i.name, { priority: i.hosts[node] }] as const),
    );
    return {
      node,
      etcd: { endpoints: this.etcd.networkEndpoints },
      nats: {
        servers: this.natsServers.map((n) => n.networkUrl),
        nkeyFile: `${NATS_USERS_DIR}/${basename(this.nats.auth!.seedFile('agent', node))}`,
      },
      lease: { ttlSeconds: this.opts.ttlSeconds },
      identities: hosted,
      runDir: '/tmp/understudy',
      heartbeatIntervalMs: 1_000,
      // The suite runs this checkout's witness as root in a throwaway container.
      allow: { unrestricted: true },
      service: { allowRoot: true },
      logLevel: 'info',
    };
  }

  private mounts() {
    return [
      { source: this.recordsDir, target: RECORDS_DIR, mode: 'rw' as const },
      { source: this.nats.auth!.dir, target: NATS_USERS_DIR, mode: 'ro' as const },
    ];
  }

  private async startAgent(node: string): Promise<AgentHost> {
    await writeFile(join(this.recordsDir, `agent-${node}.yaml`), stringify(this.agentConfig(node)));
    const container = await this.harness.startNodeProgram({
      alias: node,
      image: this.opts.hostImage ?? images().host,
      script: 'dist/cmd/agent/main.js',
      args: ['--config', `${RECORDS_DIR}/agent-${node}.yaml`],
      // The host outlives its agent (a shell waits for it, then sleeps): an agent killed alone
      // leaves its service running, which only the lifeline may end.
      keepHostAlive: true,
      // What the shipped systemd unit's LimitNICE=-10 allows: the agent's renewal thread and
      // lifeline reaper run at nice -10, as deployed. A capability, not `--ulimit nice=30`:
      // raising a hard limit needs CAP_SYS_RESOURCE, which a Docker engine may lack (this
      // project's machines do: runc then cannot start the container).
      capabilities: ['SYS_NICE'],
      env: { ...this.opts.agentEnv },
      binds: [
        ...this.mounts(),
        ...(this.opts.agentDist
          ? [{ source: this.opts.agentDist, target: `${APP_DIR}/dist`, mode: 'ro' as const }]
          : []),
        ...(this.opts.agentMounts ?? []).map((m) => ({ ...m, mode: 'ro' as const })),
      ],
      onLine: (line) => this.agentLine(node, line),
    });
    const identities = Object.fromEntries(
      this.identities.filter((i) => node in i.hosts).map((i) => [i.name, i.hosts[node]!]),
    );
    const host: AgentHost = { node, container, identities };
    this.agents.set(node, host);
    await container.waitForLine(/"msg":"agent started"/, { timeoutMs: COMPONENT_START_MS });
    await this.checkClock(node, container);
    return host;
  }

  private async startController(name: string): Promise<ControllerHost> {
    const config = stringify({
      name,
      etcd: { endpoints: this.etcd.networkEndpoints },
      nats: {
        servers: this.natsServers.map((n) => n.networkUrl),
        nkeyFile: `${NATS_USERS_DIR}/${basename(this.nats.auth!.seedFile('controller'))}`,
      },
      http: { listen: `0.0.0.0:${CONTROLLER_PORT}` },
      auth: {
        tokens: Object.entries(TEST_TOKENS).map(([role, token]) => ({ name: `${role}-user`, role, token })),
      },
      lease: { ttlSeconds: 3 },
      switchover: { deadlineMs: 20_000, drainTimeoutMs: 3_000 },
      logLevel: 'info',
    });
    await writeFile(join(this.recordsDir, `controller-${name}.yaml`), config);
    const container = await this.harness.startNodeProgram({
      alias: name,
      script: 'dist/cmd/controller/main.js',
      args: ['--config', `${RECORDS_DIR}/controller-${name}.yaml`],
      binds: this.mounts(),
      ports: [CONTROLLER_PORT],
      onLine: (line) => this.controllerLine(name, line),
    });
    await container.waitForLine(/"msg":"controller API listening"/, { timeoutMs: COMPONENT_START_MS });
    const host = { name, container, url: `http://127.0.0.1:${container.hostPort(CONTROLLER_PORT)}` };
    this.controllers.set(name, host);
    return host;
  }

  /** The agent's transitions, from its JSON log, stamped when this host read them. */
  private agentLine(node: string, line: string): void {
    this.keepLine(node, line);
    if (!line.startsWith('{')) return;
    let record: { msg?: string; from?: string; to?: string; token?: string };
    try {
      record = JSON.parse(line) as typeof record;
    } catch {
      return;
    }
    const moved = /^(\S+): (\S+) → (\S+)$/.exec(record.msg ?? '');
    if (!moved || record.from === undefined || record.to === undefined) return;
    this.opts.log.add({
      kind: 'transition',
      t: monotonicMs(),
      identity: moved[1]!,
      node,
      from: record.from,
      to: record.to,
      ...(record.token ? { token: record.token } : {}),
    });
  }

  /** The controller's probe verdicts, from its JSON log (logged when a verdict changes). */
  private controllerLine(controller: string, line: string): void {
    this.keepLine(controller, line);
    if (!line.startsWith('{')) return;
    let record: { msg?: unknown; identity?: unknown; failures?: unknown };
    try {
      record = JSON.parse(line) as typeof record;
    } catch {
      return;
    }
    const { msg, identity, failures } = record;
    if (typeof identity !== 'string' || typeof failures !== 'number' || typeof msg !== 'string') return;
    try {
      this.opts.log.add({
        kind: 'probe',
        t: monotonicMs(),
        identity,
        controller,
        failures,
        verdict: msg.slice(0, 1_000),
      });
    } catch {
      // not a verdict after all (the history refuses it): nothing to record
    }
  }

  /**
   * Read what the witnesses appended since the last read into the history, keeping track of
   * which logins are still open (so a host's death can close them: see hostDied).
   */
  tail(): Promise<void> {
    this.tailing = this.tailing.then(async () => {
      for (const identity of this.identities) {
        const file = join(this.recordsDir, `witness-${identity.name}.jsonl`);
        const offset = this.tailOffsets.get(file) ?? 0;
        const handle = await open(file, 'r').catch(() => undefined);
        if (!handle) continue;
        try {
          const { size } = await handle.stat();
          if (size <= offset) continue;
          const buffer = Buffer.alloc(size - offset);
          await handle.read(buffer, 0, buffer.length, offset);
          const text = buffer.toString('utf8');
          // Only whole lines: a line being written is read next time.
          const end = text.lastIndexOf('\n') + 1;
          this.tailOffsets.set(file, offset + Buffer.byteLength(text.slice(0, end)));
          // Line by line: one bad record is said once and skipped, never blinds the rest.
          for (const line of text.slice(0, end).split('\n')) {
            let events;
            try {
              events = witnessEvents(line, identity.name);
              for (const event of events) if (event.kind === 'witness') this.opts.log.add(event);
            } catch (err) {
              process.stderr.write(
                `chaos: witness record of ${identity.name} skipped: ${(err as Error).message}\n`,
              );
              continue;
            }
            for (const event of events) {
              if (event.kind !== 'witness') continue;
              const key = `${event.identity}\0${event.node}\0${event.token}`;
              if (event.what === 'login') this.openLogins.set(key, event);
              else if (event.what !== 'alive') this.openLogins.delete(key);
            }
          }
        } finally {
          await handle.close();
        }
      }
    });
    return this.tailing;
  }

  /**
   * A host died (its container was killed and is seen stopped): every witness on it died with
   * it, including the recorder that would have written its death line. Close their logins
   * now: a time at or after the death, never before it, so no overlap is hidden.
   */
  async hostDied(node: string): Promise<void> {
    await this.tail();
    const t = monotonicMs();
    for (const [key, login] of this.openLogins) {
      if (login.node !== node) continue;
      this.openLogins.delete(key);
      this.opts.log.add({
        kind: 'witness',
        t,
        identity: login.identity,
        node,
        token: login.token,
        what: 'exit',
      });
    }
  }

  /** Start a killed agent host again, following its log anew. */
  async restartAgent(node: string): Promise<void> {
    const host = this.agents.get(node)!;
    // A host whose agent alone was killed still runs (its shell waits): it is restarted whole,
    // which ends whatever the dead agent left behind.
    if ((await host.container.state()) === 'running') {
      await host.container.kill('SIGKILL');
      await this.hostDied(node);
    }
    const since = Math.floor(Date.now() / 1000);
    await host.container.start();
    const lines: string[] = [];
    this.follows.push(
      await followLogs(host.container.id, since, (line) => {
        lines.push(line);
        this.agentLine(node, line);
      }),
    );
    await waitFor(() => lines.some((l) => l.includes('"msg":"agent started"')), {
      what: `agent ${node} to start again`,
      timeoutMs: COMPONENT_START_MS,
    });
    await this.checkClock(node, host.container);
  }

  async restartController(name: string): Promise<void> {
    const host = this.controllers.get(name)!;
    const since = Math.floor(Date.now() / 1000);
    await host.container.start();
    this.follows.push(await followLogs(host.container.id, since, (line) => this.controllerLine(name, line)));
    await waitFor(
      async () => {
        const res = await fetch(`${host.url}/livez`, { signal: AbortSignal.timeout(1_000) }).catch(
          () => undefined,
        );
        return res !== undefined && res.status < 500;
      },
      { what: `controller ${name} to answer again`, timeoutMs: COMPONENT_START_MS },
    );
  }

  /**
   * The shared clock, checked: a Node process in the container reads CLOCK_MONOTONIC between
   * two readings of this host's. With one clock its reading lies between them; the `clock`
   * event carries it against the nearer of the two, so any distance is real skew (at most the
   * round trip's own length is ever forgiven, never added).
   */
  private async checkClock(source: string, container: NodeProgram): Promise<void> {
    const before = monotonicMs();
    const { output } = await container.exec([
      '/usr/local/bin/node',
      '-e',
      'process.stdout.write(String(Number(process.hrtime.bigint()) / 1e6))',
    ]);
    const after = monotonicMs();
    const reading = Number(output.trim());
    if (!Number.isFinite(reading)) throw new Error(`clock check on ${source}: no reading (got '${output}')`);
    const t = reading < before ? before : reading > after ? after : reading;
    this.opts.log.add({ kind: 'clock', t, source, reading });
  }

  /** Current leader (node, token) of an identity, from etcd. */
  async leaderOf(identity: string): Promise<{ node: string; token: string } | undefined> {
    const res = await this.client.get(new Keys().leader(identity)).exec();
    const kv = res.kvs[0];
    if (!kv) return undefined;
    const record = LeaderRecord.safeParse(JSON.parse(kv.value.toString()));
    return record.success ? { node: record.data.node, token: kv.mod_revision } : undefined;
  }

  /** A node's own log line, kept in `logDir` when asked (a failed write never stops the run). */
  private keepLine(name: string, line: string): void {
    const dir = this.opts.logDir;
    if (!dir || this.closed) return;
    let file = this.logFiles.get(name);
    if (!file) {
      file = createWriteStream(join(dir, `${name}.log`), { flags: 'a' });
      file.on('error', () => undefined);
      this.logFiles.set(name, file);
    }
    file.write(`${line}\n`);
  }

  /** Each etcd member's log into `logDir`, appended (a bench runs one topology per T). Best effort. */
  private async keepEtcdLogs(): Promise<void> {
    const dir = this.opts.logDir;
    if (!dir) return;
    await Promise.all(
      this.etcd.members.map(async (member) => {
        const text = await within(containerLog(member.id), ETCD_LOG_READ_MS, `${member.alias}'s log`).catch(
          (err: unknown) => `(log not read: ${String(err)})\n`,
        );
        const header = `# ${member.alias} of a topology at T = ${this.opts.ttlSeconds} s, read at ${new Date().toISOString()}\n`;
        await appendFile(join(dir, `${member.alias}.log`), header + text).catch(() => undefined);
      }),
    );
  }

  /**
   * Stop observing and remove every container; the witnesses' files are kept unless asked.
   * `drain: false` (a run abandoned on a signal or its time limit) does not wait for owed answers.
   */
  close(opts: { keepRecords?: boolean; drain?: boolean } = {}): Promise<void> {
    if (opts.drain === false) this.workload?.abandonDrain();
    this.closing ??= this.closeOnce(opts);
    return this.closing;
  }

  private async closeOnce(opts: { keepRecords?: boolean }): Promise<void> {
    this.closed = true;
    for (const stop of this.stops) await stop().catch(() => undefined);
    await Promise.all([...this.logFiles.values()].map((f) => new Promise((resolve) => f.end(resolve))));
    await this.nc.close().catch(() => undefined);
    this.client.close();
    // Ours closed first, not cut by the removal: followers of containers being force-removed
    // are where the engine's own logs last spoke when it hung once in CI.
    for (const stream of this.follows) (stream as unknown as { destroy?: () => void }).destroy?.();
    await this.keepEtcdLogs();
    try {
      await this.harness.close();
    } finally {
      if (!opts.keepRecords) await rm(this.recordsDir, { recursive: true, force: true });
    }
  }
}

/** A close must not hang on the engine: reading a member's log is given up after this. */
const ETCD_LOG_READ_MS = 10_000;

/**
 * A container's whole log so far, every start of it (a killed member restarted keeps one log),
 * each line stamped by the engine. Docker frames a log without a TTY: an 8-byte header (stream,
 * 3 zero bytes, length big-endian) before each chunk.
 */
async function containerLog(id: string): Promise<string> {
  const d = await docker();
  const raw = (await d
    .getContainer(id)
    .logs({ follow: false, stdout: true, stderr: true, timestamps: true })) as unknown as Buffer;
  const chunks: Buffer[] = [];
  for (let at = 0; at + 8 <= raw.length;) {
    // Not a frame header (stream 0–2, then three zero bytes): a TTY's log, or no Docker framing.
    if (raw[at]! > 2 || raw[at + 1] !== 0 || raw[at + 2] !== 0 || raw[at + 3] !== 0) return raw.toString();
    const size = raw.readUInt32BE(at + 4);
    chunks.push(raw.subarray(at + 8, at + 8 + size));
    at += 8 + size;
  }
  return Buffer.concat(chunks).toString();
}

/** Follow a container's log from `since` (seconds) on; resolves once attached, with the stream. */
async function followLogs(
  id: string,
  since: number,
  onLine: (line: string) => void,
): Promise<NodeJS.ReadableStream> {
  const d = await docker();
  const stream = (await d
    .getContainer(id)
    .logs({ follow: true, stdout: true, stderr: true, since })) as NodeJS.ReadableStream;
  const out = new PassThrough();
  d.modem.demuxStream(stream, out, out);
  let partial = '';
  out.on('data', (chunk: Buffer) => {
    partial += chunk.toString();
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const part of parts) onLine(part);
  });
  stream.on('end', () => out.end());
  return stream;
}

/** Fences written and lifted (S4: a fenced node neither campaigns nor logs in). */
async function watchFences(etcd: Etcd3, log: HistoryLog, keys: Keys): Promise<Watcher> {
  const watcher = await etcd.watch().prefix(`${keys.prefix}/nodes/`).create();
  const nodeOf = (key: string) => /\/nodes\/([^/]+)\/fence$/.exec(key)?.[1];
  watcher.on('put', (kv) => {
    const node = nodeOf(kv.key.toString());
    if (node) log.add({ kind: 'fence', t: monotonicMs(), node, fenced: true });
  });
  watcher.on('delete', (kv) => {
    const node = nodeOf(kv.key.toString());
    if (node) log.add({ kind: 'fence', t: monotonicMs(), node, fenced: false });
  });
  return watcher;
}

/** Every step of every workflow, with its deadline on the history's clock. */
async function watchWorkflows(etcd: Etcd3, log: HistoryLog, keys = new ControllerKeys()): Promise<Watcher> {
  const watcher = await etcd.watch().prefix(keys.workflows()).create();
  const seen = new Map<string, string>();
  watcher.on('put', (kv) => {
    const parsed = Workflow.safeParse(JSON.parse(kv.value.toString()));
    if (!parsed.success) return;
    const w = parsed.data;
    if (seen.get(w.id) === w.state) return;
    seen.set(w.id, w.state);
    // Deadlines are wall-clock times: carried onto the monotonic clock at the moment seen.
    const deadline = monotonicMs() + (Date.parse(w.deadline) - Date.now());
    log.add({ kind: 'workflow', t: monotonicMs(), identity: w.identity, id: w.id, state: w.state, deadline });
  });
  return watcher;
}

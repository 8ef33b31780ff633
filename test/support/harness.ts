// The integration harness: real etcd, NATS and Node processes in containers on a private
// Docker network, with the faults of the chaos matrix. One Harness per test file (or chaos
// scenario); close() removes everything it started, and reapOrphans() removes what a crashed
// earlier run left.
import './env.js';
import { randomUUID } from 'node:crypto';
import type { Readable } from 'node:stream';
import { GenericContainer, type StartedTestContainer, type WaitStrategy } from 'testcontainers';
import { ManagedContainer } from './container.js';
import { docker, freePort, ownerLabels } from './docker.js';
import { ensureEngine, within } from './engine.js';
import { images } from './images.js';
import {
  createNatsAuth,
  forgetNatsAuth,
  natsAuthByDefault,
  registerNatsAuth,
  type NatsAuth,
  type NatsAuthOptions,
} from './nats-auth.js';
import { repoRoot } from './paths.js';
import { etcdAnswers, natsAnswers, untilAnswers } from './probes.js';

/** A cold container start on a loaded 2-core machine takes seconds; an etcd cluster must elect. */
const STARTUP_TIMEOUT_MS = 60_000;
/** A forced removal takes the engine well under a second; past this it hangs (a deadlock). */
const REMOVE_TIMEOUT_MS = 30_000;
const ETCD_CLIENT_PORT = 2379;
const ETCD_PEER_PORT = 2380;
const NATS_CLIENT_PORT = 4222;
const NATS_CLUSTER_PORT = 6222;
/** Where the authorization config is put in the NATS container. */
const NATS_AUTH_CONF = '/etc/understudy-nats-auth.conf';
/** A host's init: runs the program, says how it ended, then just keeps the host up. */
const KEEP_HOST_ALIVE = '"$@"; echo "program exited with status $?"; exec sleep 2147483647';
/** Where the repository is mounted in Node containers. */
export const APP_DIR = '/app';

export interface EtcdMember extends ManagedContainer {
  /** Endpoint for clients on the host, e.g. http://127.0.0.1:32768. */
  readonly hostEndpoint: string;
  /** Endpoint for containers on the harness network, e.g. http://etcd0:2379. */
  readonly networkEndpoint: string;
}

export interface EtcdCluster {
  members: EtcdMember[];
  hostEndpoints: string[];
  networkEndpoints: string[];
}

export interface NatsServer extends ManagedContainer {
  readonly hostUrl: string;
  readonly networkUrl: string;
  /** The role users when NATS runs with authorization (agents and controllers use them). */
  readonly auth: NatsAuth | undefined;
}

export interface NodeProgramOptions {
  /** Path of the program relative to the repository root (.ts runs through tsx). */
  script: string;
  args?: string[];
  env?: Record<string, string>;
  /** Alias on the harness network; defaults to a unique name. */
  alias?: string;
  /** Called with each line the program prints (stdout and stderr). */
  onLine?: (line: string) => void;
  /**
   * Run it under a shell that stays when it exits (the container, a host, lives on): what it
   * started outlives it, as on a machine whose agent died. Needs an image with /bin/sh.
   */
  keepHostAlive?: boolean;
  /** Image to run it in (default: the Node image; the chaos suite's agents use the host image). */
  image?: string;
  /** Host directories to mount besides the repository (e.g. a writable one for records). */
  binds?: Array<{ source: string; target: string; mode: 'ro' | 'rw' }>;
  /** Container ports to publish on the host (fixed for the container's life: see hostPort). */
  ports?: number[];
  /** Waits until the program serves (given the published ports), at start and after a restart. */
  readiness?: (ports: Map<number, number>, timeoutMs: number) => Promise<void>;
  /** Linux capabilities added to Docker's default set (e.g. SYS_NICE). */
  capabilities?: string[];
}

export interface NodeProgram extends ManagedContainer {
  /** Every line printed so far. */
  readonly lines: string[];
  /**
   * Resolves with the first line matching `pattern` among lines printed from index `from`
   * on (default 0: past lines count too). `lines.length` before an action makes it "after".
   */
  waitForLine(pattern: RegExp, opts?: { timeoutMs?: number; from?: number }): Promise<string>;
}

/** Waits by calling the readiness probe; works with any image, shell or not. */
class ProbeWait implements WaitStrategy {
  private timeoutMs = STARTUP_TIMEOUT_MS;
  private timeoutSet = false;
  constructor(private readonly ready: (timeoutMs: number) => Promise<void>) {}
  async waitUntilReady(): Promise<void> {
    await this.ready(this.timeoutMs);
  }
  withStartupTimeout(ms: number): this {
    this.timeoutMs = ms;
    this.timeoutSet = true;
    return this;
  }
  isStartupTimeoutSet(): boolean {
    return this.timeoutSet;
  }
  getStartupTimeout(): number {
    return this.timeoutMs;
  }
}

export class Harness {
  private readonly containers: ManagedContainer[] = [];
  private readonly natsAuths: Array<{ auth: NatsAuth; urls: string[] }> = [];
  private closed = false;

  private constructor(
    readonly run: string,
    readonly networkName: string,
  ) {}

  /** Create a harness with its own Docker network. */
  static async create(): Promise<Harness> {
    await ensureEngine();
    const run = randomUUID().slice(0, 8);
    const networkName = `understudy-test-${run}`;
    await (await docker()).createNetwork({ Name: networkName, Driver: 'bridge', Labels: ownerLabels(run) });
    return new Harness(run, networkName);
  }

  private async startContainer(opts: {
    kind: string;
    alias: string;
    image: string;
    entrypoint: string[];
    command: string[];
    ports?: number[];
    env?: Record<string, string>;
    files?: Array<{ content: string; target: string }>;
    bindRepo?: boolean;
    binds?: Array<{ source: string; target: string; mode: 'ro' | 'rw' }>;
    readiness?: (ports: Map<number, number>, timeoutMs: number) => Promise<void>;
    onStream?: (stream: Readable) => void;
    capabilities?: string[];
  }): Promise<{ started: StartedTestContainer; ports: Map<number, number>; name: string }> {
    if (this.closed) throw new Error('harness is closed');
    // Fixed host ports, so a stopped/restarted container keeps its address and clients reconnect.
    const ports = new Map<number, number>();
    for (const port of opts.ports ?? []) ports.set(port, await freePort());
    const name = `understudy-${this.run}-${opts.alias}`;
    let container = new GenericContainer(opts.image)
      .withName(name)
      .withLabels(ownerLabels(this.run))
      .withNetworkMode(this.networkName)
      .withNetworkAliases(opts.alias)
      .withEntrypoint(opts.entrypoint)
      .withCommand(opts.command)
      .withEnvironment(opts.env ?? {})
      .withExposedPorts(...[...ports].map(([container, host]) => ({ container, host })))
      .withStartupTimeout(STARTUP_TIMEOUT_MS);
    if (opts.readiness) {
      const readiness = opts.readiness;
      container = container.withWaitStrategy(new ProbeWait((timeoutMs) => readiness(ports, timeoutMs)));
    } else {
      container = container.withWaitStrategy(new ProbeWait(async () => undefined));
    }
    if (opts.files) container = container.withCopyContentToContainer(opts.files);
    const binds = [
      ...(opts.bindRepo ? [{ source: repoRoot, target: APP_DIR, mode: 'ro' as const }] : []),
      ...(opts.binds ?? []),
    ];
    if (binds.length > 0) container = container.withBindMounts(binds);
    if (opts.bindRepo) container = container.withWorkingDir(APP_DIR);
    if (opts.onStream) container = container.withLogConsumer(opts.onStream);
    if (opts.capabilities?.length) container = container.withAddedCapabilities(...opts.capabilities);
    let started: StartedTestContainer;
    try {
      started = await container.start();
    } catch (err) {
      // A container that failed its readiness wait is still there: remove it, keep the cause.
      await (
        await docker()
      )
        .getContainer(name)
        .remove({ force: true })
        .catch(() => undefined);
      throw new Error(
        `starting ${opts.kind} '${opts.alias}' (${opts.image}) failed: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    if (this.closed) {
      // Closed while this one was starting (a signal, a time limit): close() could not know it,
      // nor remove the network it holds.
      const engine = await docker();
      await engine
        .getContainer(name)
        .remove({ force: true })
        .catch(() => undefined);
      await engine
        .getNetwork(this.networkName)
        .remove()
        .catch(() => undefined); // another is still starting: the last one removes it
      throw new Error(`the harness was closed while ${opts.kind} '${opts.alias}' started; it is removed`);
    }
    return { started, ports, name };
  }

  /** Every container started so far, by its engine id: what a benchmark charges CPU time to. */
  containerAliases(): Map<string, string> {
    return new Map(this.containers.map((c) => [c.id, c.alias]));
  }

  private track<T extends ManagedContainer>(container: T): T {
    this.containers.push(container);
    return container;
  }

  /** A single-member etcd. */
  async startEtcd(alias = 'etcd'): Promise<EtcdMember> {
    return (await this.startEtcdMembers([alias]))[0]!;
  }

  /** An etcd cluster of `size` members (aliases etcd0..etcdN-1), started together. */
  async startEtcdCluster(size = 3, prefix = 'etcd'): Promise<EtcdCluster> {
    const aliases = Array.from({ length: size }, (_, i) => `${prefix}${i}`);
    const members = await this.startEtcdMembers(aliases);
    return {
      members,
      hostEndpoints: members.map((m) => m.hostEndpoint),
      networkEndpoints: members.map((m) => m.networkEndpoint),
    };
  }

  private async startEtcdMembers(aliases: string[]): Promise<EtcdMember[]> {
    const initialCluster = aliases.map((a) => `${a}=http://${a}:${ETCD_PEER_PORT}`).join(',');
    // Members of a new cluster wait for each other before serving: start them all at once.
    return Promise.all(
      aliases.map(async (alias) => {
        const readiness = (ports: Map<number, number>, timeoutMs: number) =>
          untilAnswers(
            () => etcdAnswers(`http://127.0.0.1:${ports.get(ETCD_CLIENT_PORT)}`),
            `etcd member ${alias} to answer a linearizable read`,
            timeoutMs,
          );
        const { started, ports, name } = await this.startContainer({
          kind: 'etcd',
          alias,
          image: images().etcd,
          entrypoint: ['/usr/local/bin/etcd'],
          command: [
            `--name=${alias}`,
            `--data-dir=/data/${alias}`,
            `--listen-client-urls=http://0.0.0.0:${ETCD_CLIENT_PORT}`,
            `--advertise-client-urls=http://${alias}:${ETCD_CLIENT_PORT}`,
            `--listen-peer-urls=http://0.0.0.0:${ETCD_PEER_PORT}`,
            `--initial-advertise-peer-urls=http://${alias}:${ETCD_PEER_PORT}`,
            `--initial-cluster=${initialCluster}`,
            `--initial-cluster-token=understudy-${this.run}`,
            '--initial-cluster-state=new',
            // A member cut from its peers and back must not force an election when it returns
            // (its raised term would depose a healthy leader): etcd 3.5's default, 3.4's advice.
            ...(aliases.length > 1 ? ['--pre-vote=true'] : []),
          ],
          ports: [ETCD_CLIENT_PORT],
          readiness,
        });
        const member = new ManagedContainer(name, alias, started, this.networkName, () =>
          readiness(ports, STARTUP_TIMEOUT_MS),
        ) as EtcdMember;
        Object.assign(member, {
          hostEndpoint: `http://127.0.0.1:${ports.get(ETCD_CLIENT_PORT)}`,
          networkEndpoint: `http://${alias}:${ETCD_CLIENT_PORT}`,
        });
        return this.track(member);
      }),
    );
  }

  /**
   * A NATS server with JetStream (state under /data, kept across stop/start). With `auth`
   * (the default unless UNDERSTUDY_TEST_NATS_AUTH=off) it runs the shipped authorization:
   * one nkey user per role (test/support/nats-auth.ts), which agents and controllers started
   * by the support code connect as; `auth: false` runs it open.
   */
  async startNats(alias = 'nats', opts: { auth?: NatsAuthOptions | false } = {}): Promise<NatsServer> {
    const auth = await this.natsAuth(opts.auth);
    try {
      return await this.startNatsMember(alias, auth);
    } catch (err) {
      await auth?.remove();
      throw err;
    }
  }

  /**
   * A NATS cluster of `size` servers (aliases nats0..) with JetStream clustered over their
   * routes, started together (JetStream answers once its servers have elected a meta leader),
   * sharing one authorization. Clients are given every server's URL.
   */
  async startNatsCluster(
    size = 3,
    opts: { auth?: NatsAuthOptions | false; prefix?: string } = {},
  ): Promise<NatsServer[]> {
    const auth = await this.natsAuth(opts.auth);
    const aliases = Array.from({ length: size }, (_, i) => `${opts.prefix ?? 'nats'}${i}`);
    const routes = aliases.map((a) => `nats://${a}:${NATS_CLUSTER_PORT}`).join(',');
    const started = await Promise.allSettled(
      aliases.map((alias) => this.startNatsMember(alias, auth, routes)),
    );
    const failed = started.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) {
      // The ones that did start are tracked and go with close(); the users' seeds go now.
      if (started.every((r) => r.status === 'rejected')) await auth?.remove();
      throw failed.reason;
    }
    return started.map((r) => (r as PromiseFulfilledResult<NatsServer>).value);
  }

  private async natsAuth(given: NatsAuthOptions | false | undefined): Promise<NatsAuth | undefined> {
    const wanted = given ?? (natsAuthByDefault() ? {} : false);
    return wanted === false ? undefined : createNatsAuth(wanted);
  }

  private async startNatsMember(
    alias: string,
    auth: NatsAuth | undefined,
    routes?: string,
  ): Promise<NatsServer> {
    // Readiness asks JetStream for the account: as the observer, or as an agent (the role
    // that may call $JS.API.INFO) when the config has no observer.
    const probeOptions =
      auth && !auth.observer ? await auth.options('agent', auth.users.find((u) => u.node)?.node) : {};
    const readiness = (ports: Map<number, number>, timeoutMs: number) =>
      untilAnswers(
        () => natsAnswers(`127.0.0.1:${ports.get(NATS_CLIENT_PORT)}`, probeOptions),
        `NATS ${alias} to answer with JetStream`,
        timeoutMs,
      );
    const started = await this.startContainer({
      kind: 'nats',
      alias,
      image: images().nats,
      entrypoint: ['/nats-server'],
      command: [
        ...(auth ? [`--config=${NATS_AUTH_CONF}`] : []),
        '--jetstream',
        '--store_dir=/data/jetstream',
        `--port=${NATS_CLIENT_PORT}`,
        `--server_name=${alias}`,
        ...(routes
          ? [
              '--cluster_name=understudy',
              `--cluster=nats://0.0.0.0:${NATS_CLUSTER_PORT}`,
              `--routes=${routes}`,
            ]
          : []),
      ],
      ports: [NATS_CLIENT_PORT],
      ...(auth ? { files: [{ content: auth.config, target: NATS_AUTH_CONF }] } : {}),
      readiness,
    });
    const { ports, name } = started;
    const server = new ManagedContainer(name, alias, started.started, this.networkName, () =>
      readiness(ports, STARTUP_TIMEOUT_MS),
    ) as NatsServer;
    const urls = [`nats://127.0.0.1:${ports.get(NATS_CLIENT_PORT)}`, `nats://${alias}:${NATS_CLIENT_PORT}`];
    Object.assign(server, { hostUrl: urls[0], networkUrl: urls[1], auth });
    if (auth) {
      registerNatsAuth(urls, auth);
      this.natsAuths.push({ auth, urls });
    }
    return this.track(server);
  }

  /**
   * Run a Node program of this repository in a container of the Node image, with the
   * repository (sources, node_modules, dist) mounted read-only at /app.
   */
  async startNodeProgram(opts: NodeProgramOptions): Promise<NodeProgram> {
    const alias = opts.alias ?? `node-${randomUUID().slice(0, 6)}`;
    const lines: string[] = [];
    const waiters = new Set<{ pattern: RegExp; from: number; resolve: (line: string) => void }>();
    const onLine = (line: string) => {
      lines.push(line);
      opts.onLine?.(line);
      for (const waiter of waiters) {
        if (lines.length > waiter.from && waiter.pattern.test(line)) {
          waiters.delete(waiter);
          waiter.resolve(line);
        }
      }
    };
    const entry = opts.script.endsWith('.ts') ? ['--import', 'tsx', opts.script] : [opts.script];
    const { started, name, ports } = await this.startContainer({
      kind: 'node program',
      alias,
      image: opts.image ?? images().node,
      ...(opts.keepHostAlive
        ? {
            entrypoint: ['/bin/sh', '-c', KEEP_HOST_ALIVE],
            command: ['host', '/usr/local/bin/node', ...entry, ...(opts.args ?? [])],
          }
        : { entrypoint: ['/usr/local/bin/node'], command: [...entry, ...(opts.args ?? [])] }),
      env: opts.env,
      bindRepo: true,
      ...(opts.binds ? { binds: opts.binds } : {}),
      ...(opts.ports ? { ports: opts.ports } : {}),
      ...(opts.readiness ? { readiness: opts.readiness } : {}),
      ...(opts.capabilities ? { capabilities: opts.capabilities } : {}),
      onStream: (stream) => {
        let partial = '';
        stream.on('data', (chunk: Buffer | string) => {
          partial += chunk.toString();
          const parts = partial.split('\n');
          partial = parts.pop() ?? '';
          for (const part of parts) onLine(part);
        });
        stream.on('end', () => partial && onLine(partial));
      },
    });
    const readiness = opts.readiness;
    const program = new ManagedContainer(
      name,
      alias,
      started,
      this.networkName,
      readiness ? () => readiness(ports, STARTUP_TIMEOUT_MS) : undefined,
    ) as NodeProgram;
    Object.assign(program, {
      lines,
      waitForLine: (pattern: RegExp, { timeoutMs = 30_000, from = 0 } = {}) => {
        const seen = lines.slice(from).find((line) => pattern.test(line));
        if (seen !== undefined) return Promise.resolve(seen);
        return new Promise<string>((resolve, reject) => {
          const waiter = { pattern, from, resolve };
          waiters.add(waiter);
          setTimeout(() => {
            if (waiters.delete(waiter)) {
              reject(
                new Error(
                  `timed out after ${timeoutMs} ms waiting for ${alias} to print ${pattern}; last lines:\n${lines.slice(-10).join('\n')}`,
                ),
              );
            }
          }, timeoutMs).unref();
        });
      },
    });
    return this.track(program);
  }

  private removeWithin(c: ManagedContainer): Promise<void> {
    return within(c.remove(), REMOVE_TIMEOUT_MS, `removing ${c.name}`);
  }

  /** Remove every container and the network. Safe to call twice and after failures. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    let results = await Promise.allSettled(this.containers.map((c) => this.removeWithin(c)));
    if (results.some((r) => r.status === 'rejected')) {
      // An engine that hangs (or went away) mid-removal is brought back, and the removal tried
      // once more: what this harness started must not outlive the test.
      await ensureEngine();
      results = await Promise.allSettled(this.containers.map((c) => this.removeWithin(c)));
    }
    for (const { auth, urls } of this.natsAuths) {
      forgetNatsAuth(urls);
      await auth.remove();
    }
    await within(
      docker().then((d) => d.getNetwork(this.networkName).remove()),
      REMOVE_TIMEOUT_MS,
      `removing network ${this.networkName}`,
    ).catch(() => undefined);
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length > 0) {
      throw new Error(`could not remove ${failed.length} container(s): ${String(failed[0]!.reason)}`);
    }
  }
}

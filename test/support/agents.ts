// Agents as real, separate processes on the host (cmd/agent through tsx), pointed at the
// harness's etcd and NATS. Each agent's JSON log is parsed so tests can wait for states.
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { entryPoint, repoRoot } from './paths.js';
import { LoggedProcess, type LogRecord } from './logged-process.js';
import { natsSeedFileFor } from './nats-auth.js';

export type AgentLogRecord = LogRecord;

export interface AgentOptions {
  node: string;
  etcd: string[];
  nats: string[];
  identities: Record<string, { priority?: number; nofailover?: boolean } | null>;
  ttlSeconds?: number;
  priority?: number;
  bootstrapSpecs?: string;
  /** Extra or overriding config fields. */
  extra?: Record<string, unknown>;
  env?: Record<string, string>;
  /** Raw config text instead of the generated one (malformed-config tests). */
  rawConfig?: string;
}

export class AgentProcess extends LoggedProcess {
  get node(): string {
    return this.name;
  }

  static async start(opts: AgentOptions): Promise<AgentProcess> {
    const dir = await mkdtemp(join(tmpdir(), `understudy-agent-${opts.node}-`));
    // On a harness NATS with authorization, the agent connects as its node's agent user.
    const nkeyFile = natsSeedFileFor(opts.nats, 'agent', opts.node);
    const config = {
      node: opts.node,
      etcd: { endpoints: opts.etcd },
      nats: { servers: opts.nats, ...(nkeyFile !== undefined && { nkeyFile }) },
      lease: { ttlSeconds: opts.ttlSeconds ?? 4 },
      priority: opts.priority ?? 0,
      identities: opts.identities,
      runDir: join(dir, 'run'),
      heartbeatIntervalMs: 1_000,
      // Test agents run this checkout's programs (node, fixtures) and, on CI, as root: what a
      // spec may run is not what most tests are about. Tests of the allow-list and of running
      // services unprivileged set their own sections through `extra`.
      allow: { unrestricted: true },
      service: { allowRoot: true },
      // info: every transition and warning; debug (control traffic) would only slow the parsing.
      logLevel: 'info',
      ...(opts.bootstrapSpecs ? { bootstrapSpecs: opts.bootstrapSpecs } : {}),
      ...opts.extra,
    };
    const file = join(dir, 'agent.yaml');
    await writeFile(file, opts.rawConfig ?? stringify(config));
    // Extra node flags for a look inside (e.g. "--cpu-prof --cpu-prof-dir=/tmp/prof", which
    // NODE_OPTIONS does not accept).
    const nodeArgs = process.env.UNDERSTUDY_AGENT_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    const argv = [...nodeArgs, ...entryPoint('agent'), '--config', file];
    const child = spawn(process.execPath, argv, {
      cwd: repoRoot,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new AgentProcess(opts.node, child, dir);
  }

  waitForStarted(): Promise<AgentLogRecord> {
    return this.waitForRecord((r) => r.msg === 'agent started', 'agent started');
  }

  /** Wait for a transition of `identity` into `state`. */
  waitForState(
    identity: string,
    state: string,
    opts: { timeoutMs?: number; from?: number } = {},
  ): Promise<AgentLogRecord> {
    return this.waitForRecord(
      (r) => r.identity === identity && r.to === state,
      `${identity} → ${state}`,
      opts,
    );
  }

  /** Pid of the identity's service process as last logged by the driver. */
  servicePid(identity: string): number | undefined {
    for (let i = this.records.length - 1; i >= 0; i--) {
      const r = this.records[i]!;
      if (r.identity === identity && typeof r.servicePid === 'number') return r.servicePid;
    }
    return undefined;
  }
}

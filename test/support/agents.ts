// Agents as real, separate processes on the host (cmd/agent through tsx), pointed at the
// harness's etcd and NATS. Each agent's JSON log is parsed so tests can wait for states.
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { repoRoot } from './paths.js';
import { waitFor, withTimeout } from './wait.js';

/** Agent start through tsx on a loaded 2-core machine. */
const AGENT_START_TIMEOUT_MS = 30_000;

export interface AgentLogRecord {
  level: string;
  msg: string;
  identity?: string;
  from?: string;
  to?: string;
  token?: string;
  [key: string]: unknown;
}

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

export class AgentProcess {
  readonly records: AgentLogRecord[] = [];
  readonly otherLines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private buffer = '';

  private constructor(
    readonly node: string,
    readonly child: ChildProcess,
    readonly dir: string,
  ) {
    const onData = (chunk: Buffer) => {
      this.buffer += chunk.toString();
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        try {
          this.records.push(JSON.parse(line) as AgentLogRecord);
        } catch {
          this.otherLines.push(line);
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  static async start(opts: AgentOptions): Promise<AgentProcess> {
    const dir = await mkdtemp(join(tmpdir(), `understudy-agent-${opts.node}-`));
    const config = {
      node: opts.node,
      etcd: { endpoints: opts.etcd },
      nats: { servers: opts.nats },
      lease: { ttlSeconds: opts.ttlSeconds ?? 4 },
      priority: opts.priority ?? 0,
      identities: opts.identities,
      runDir: join(dir, 'run'),
      heartbeatIntervalMs: 1_000,
      // info: every transition and warning; debug (control traffic) would only slow the parsing.
      logLevel: 'info',
      ...(opts.bootstrapSpecs ? { bootstrapSpecs: opts.bootstrapSpecs } : {}),
      ...opts.extra,
    };
    const file = join(dir, 'agent.yaml');
    await writeFile(file, opts.rawConfig ?? stringify(config));
    const child = spawn(process.execPath, ['--import', 'tsx', 'cmd/agent/main.ts', '--config', file], {
      cwd: repoRoot,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    return new AgentProcess(opts.node, child, dir);
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** All output as text (for failure messages). */
  output(): string {
    return [...this.otherLines, ...this.records.map((r) => JSON.stringify(r))].join('\n');
  }

  /** First record at index ≥ from matching the predicate. */
  async waitForRecord(
    match: (r: AgentLogRecord) => boolean,
    what: string,
    opts: { timeoutMs?: number; from?: number } = {},
  ): Promise<AgentLogRecord> {
    return waitFor(() => this.records.slice(opts.from ?? 0).find(match), {
      what: `${this.node}: ${what}`,
      timeoutMs: opts.timeoutMs ?? AGENT_START_TIMEOUT_MS,
      intervalMs: 20,
    });
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

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /** SIGTERM, then SIGKILL if it does not exit in time; removes its directory. */
  async stop(timeoutMs = 15_000): Promise<void> {
    this.kill('SIGTERM');
    await withTimeout(this.exited, timeoutMs, `${this.node} to exit after SIGTERM`).catch(() => {
      this.kill('SIGKILL');
      return this.exited;
    });
    await rm(this.dir, { recursive: true, force: true });
  }
}

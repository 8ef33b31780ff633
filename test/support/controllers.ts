// Controllers as real processes on the host (cmd/controller through tsx) pointed at the
// harness's etcd and NATS, and a small typed client for their HTTP API.
import { spawn } from 'node:child_process';
import { mkdtemp, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import type { Problem } from '../../pkg/api/schema.js';
import { LoggedProcess } from './logged-process.js';
import { natsSeedFileFor } from './nats-auth.js';
import { entryPoint, repoRoot } from './paths.js';

export const TEST_TOKENS = {
  admin: 'admin-token-0123456789abcdef',
  operator: 'operator-token-0123456789abcdef',
  viewer: 'viewer-token-0123456789abcdef',
} as const;

export interface ControllerOptions {
  name: string;
  etcd: string[];
  nats: string[];
  /** Extra or overriding config fields (probes, switchover, fencing...). */
  extra?: Record<string, unknown>;
  env?: Record<string, string>;
}

/** A free TCP port on 127.0.0.1 (the controller must know its URL before it listens). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

export class ControllerProcess extends LoggedProcess {
  private constructor(
    name: string,
    child: ReturnType<typeof spawn>,
    dir: string,
    readonly url: string,
  ) {
    super(name, child, dir);
  }

  static async start(opts: ControllerOptions): Promise<ControllerProcess> {
    const dir = await mkdtemp(join(tmpdir(), `understudy-controller-${opts.name}-`));
    const port = await freePort();
    // On a harness NATS with authorization, the controller connects as the controller user.
    const nkeyFile = natsSeedFileFor(opts.nats, 'controller');
    const config = {
      name: opts.name,
      etcd: { endpoints: opts.etcd },
      nats: { servers: opts.nats, ...(nkeyFile !== undefined && { nkeyFile }) },
      http: { listen: `127.0.0.1:${port}` },
      auth: {
        tokens: Object.entries(TEST_TOKENS).map(([role, token]) => ({ name: `${role}-user`, role, token })),
      },
      lease: { ttlSeconds: 3 },
      logLevel: 'info',
      ...opts.extra,
    };
    const file = join(dir, 'controller.yaml');
    await writeFile(file, stringify(config));
    // Extra node flags for a look inside, as UNDERSTUDY_AGENT_NODE_ARGS for agents.
    const nodeArgs = process.env.UNDERSTUDY_CONTROLLER_NODE_ARGS?.split(' ').filter(Boolean) ?? [];
    const child = spawn(process.execPath, [...nodeArgs, ...entryPoint('controller'), '--config', file], {
      cwd: repoRoot,
      env: { ...process.env, ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const c = new ControllerProcess(opts.name, child, dir, `http://127.0.0.1:${port}`);
    await c.waitForRecord((r) => r.msg === 'controller API listening', 'API listening');
    return c;
  }

  waitForActive(opts: { timeoutMs?: number } = {}) {
    return this.waitForRecord(
      (r) => r.msg === 'this controller is now the active one',
      'to become active',
      opts,
    );
  }

  api(role: keyof typeof TEST_TOKENS = 'operator'): Api {
    return new Api(this.url, TEST_TOKENS[role]);
  }
}

export interface ApiResponse<T> {
  status: number;
  body: T;
}

/** Bare HTTP calls: tests assert on statuses and problem documents, so nothing is hidden. */
export class Api {
  constructor(
    readonly url: string,
    private readonly token: string | undefined,
  ) {}

  async call<T = unknown>(
    method: string,
    path: string,
    body?: unknown,
    raw?: string,
  ): Promise<ApiResponse<T>> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
        ...(body !== undefined || raw !== undefined ? { 'content-type': 'application/json' } : {}),
      },
      ...(raw !== undefined ? { body: raw } : body !== undefined ? { body: JSON.stringify(body) } : {}),
      signal: AbortSignal.timeout(10_000),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : undefined) as T };
  }

  get<T = unknown>(path: string) {
    return this.call<T>('GET', path);
  }
  post<T = unknown>(path: string, body?: unknown) {
    return this.call<T>('POST', path, body ?? {});
  }
}

export type { Problem };

// What every controller command shares: options, the API's paths, the client, output, and
// asking before a disruptive move.
import { createInterface } from 'node:readline/promises';
import { type IdentityView } from '../api/schema.js';
import { ApiClient, parseControllerAllow, resolveToken } from './api-client.js';
import { CliError, EXIT } from './exit.js';
import { Output, type GlobalOptions } from './output.js';

export interface ControllerOptions extends GlobalOptions {
  /** Controller base URL (`--controller`, UNDERSTUDY_CONTROLLER). */
  controller: string;
  token?: string;
  tokenFile?: string;
  /** Controllers a standby may send writes on to (`--controller-allow`, comma-separated). */
  controllerAllow?: string;
}

/**
 * Poll period when the event stream is unavailable, and for fence progress: four looks a
 * second show each workflow step as it happens without loading the controller.
 */
export const POLL_INTERVAL_MS = 250;

/**
 * Waiting goes on this long past a workflow's deadline: the controller completes or rolls back
 * by the deadline, but its last write and our next look can lag (etcd, a controller failover).
 */
export const GIVE_UP_GRACE_MS = 10_000;

/** A fence that moves no identity is written at once; this much covers an etcd hiccup. */
export const FENCE_ONLY_WAIT_MS = 30_000;

const enc = encodeURIComponent;
const identityPath = (identity: string) => `/v1/identities/${enc(identity)}`;
export const routes = {
  controller: '/v1/controller',
  identities: '/v1/identities',
  identity: identityPath,
  switchover: (identity: string) => `${identityPath(identity)}/switchover`,
  failover: (identity: string) => `${identityPath(identity)}/failover`,
  pause: (identity: string) => `${identityPath(identity)}/pause`,
  resume: (identity: string) => `${identityPath(identity)}/resume`,
  snapshot: (identity: string) => `${identityPath(identity)}/snapshot`,
  snapshots: (identity: string) => `${identityPath(identity)}/snapshots`,
  clones: (identity: string) => `${identityPath(identity)}/clones`,
  workflow: (identity: string) => `${identityPath(identity)}/workflow`,
  acl: (identity: string) => `${identityPath(identity)}/acl`,
  approve: (identity: string, caller: string) =>
    `${identityPath(identity)}/acl/pending/${enc(caller)}/approve`,
  deny: (identity: string, caller: string) => `${identityPath(identity)}/acl/pending/${enc(caller)}/deny`,
  history: (identity: string) => `${identityPath(identity)}/history`,
  allHistory: '/v1/history',
  nodes: '/v1/nodes',
  fence: (node: string) => `/v1/nodes/${enc(node)}/fence`,
  unfence: (node: string) => `/v1/nodes/${enc(node)}/unfence`,
  apply: '/v1/apply',
};

export interface Context {
  api: ApiClient;
  out: Output;
}

export async function context(opts: ControllerOptions): Promise<Context> {
  const out = new Output(opts.output);
  const { token, tokenFrom } = await resolveToken(opts);
  const api = new ApiClient({
    ...{ baseUrl: opts.controller, token, tokenFrom, notice: (m: string) => out.notice(m) },
    allowedControllers: parseControllerAllow(opts.controllerAllow),
  });
  return { api, out };
}

/** Problem `field`s named as the options that set them. */
export const fieldsAsOptions =
  (options: Record<string, string>) =>
  (field: string): string =>
    options[field] ?? field;

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
export const sleep = (ms: number, signal: AbortSignal) =>
  new Promise<void>((resolve) => {
    const timer = setTimeout(done, ms);
    function done() {
      clearTimeout(timer);
      signal.removeEventListener('abort', done);
      resolve();
    }
    signal.addEventListener('abort', done, { once: true });
  });

/**
 * Ask before a disruptive move. Without a terminal there is no one to ask: scripts must say
 * `--yes`, so a pipeline can never switch an identity over by accident.
 */
export async function confirm(yes: boolean | undefined, question: () => Promise<string>): Promise<void> {
  if (yes) return;
  if (!process.stdin.isTTY) {
    throw new CliError(
      'not asking for confirmation (stdin is not a terminal): pass --yes to go ahead',
      EXIT.usage,
    );
  }
  const text = await question();
  const rl = createInterface({ input: process.stdin, output: process.stderr });
  try {
    const answer = await rl.question(`${text} [y/N] `);
    if (!/^y(es)?$/i.test(answer.trim())) throw new CliError('not confirmed; nothing changed', EXIT.failed);
  } finally {
    rl.close();
  }
}

export const leaderText = (view: IdentityView) =>
  view.leader ? `${view.leader} (token ${view.token ?? '?'}, health ${view.health})` : 'no leader';

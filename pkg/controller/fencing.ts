// The last escalation when an old leader cannot be proved out politely: an operator-supplied
// fence command (power off, cut a switch port...) or, on Kubernetes, deleting the node's pod.
// Either only adds certainty: the successor still waits out the self-fence deadline of a
// revoked lease, so a failing fence command never lets two nodes in (S1, S3).
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { Agent, request as httpsRequest } from 'node:https';
import type { ControllerConfig } from '../config/controller.js';

export interface FenceTarget {
  node: string;
  identity: string;
  token: string;
}

export interface FenceOutcome {
  ok: boolean;
  detail: string;
}

export type FenceAction = (target: FenceTarget) => Promise<FenceOutcome>;

/** The configured fence actions, in order (command first, then the pod delete). */
export function fenceActions(config: ControllerConfig['fencing']): FenceAction[] {
  const actions: FenceAction[] = [];
  if (config.command) actions.push((t) => runFenceCommand(config.command!, t, config.timeoutMs));
  if (config.kubernetes) actions.push((t) => deletePod(config.kubernetes!, t, config.timeoutMs));
  return actions;
}

/**
 * What the fence command inherits from the controller's environment: enough to find programs
 * and format text, nothing more. The controller's environment may hold its own secrets (API
 * tokens, etcd and NATS passwords); a fence script that needs a secret reads it from a file.
 */
export const FENCE_COMMAND_ENV = ['PATH', 'HOME', 'LANG', 'LC_ALL', 'TZ', 'TMPDIR'] as const;

function inheritedEnv(): Record<string, string> {
  const env: Record<string, string> = {};
  for (const name of FENCE_COMMAND_ENV) {
    const value = process.env[name];
    if (value !== undefined) env[name] = value;
  }
  return env;
}

/** Run the fence command with the target in its environment; exit 0 within the timeout means fenced. */
export function runFenceCommand(argv: string[], t: FenceTarget, timeoutMs: number): Promise<FenceOutcome> {
  return new Promise((resolve) => {
    execFile(
      argv[0]!,
      argv.slice(1),
      {
        timeout: timeoutMs,
        killSignal: 'SIGKILL',
        env: {
          ...inheritedEnv(),
          UNDERSTUDY_FENCE_NODE: t.node,
          UNDERSTUDY_FENCE_IDENTITY: t.identity,
          UNDERSTUDY_FENCE_TOKEN: t.token,
        },
        maxBuffer: 64 * 1024,
      },
      (err, stdout, stderr) => {
        const output = `${stdout}${stderr}`.trim().slice(0, 500);
        if (!err)
          return resolve({ ok: true, detail: `fence command exited 0${output ? `: ${output}` : ''}` });
        const why = (err as NodeJS.ErrnoException & { killed?: boolean }).killed
          ? `did not finish within ${timeoutMs} ms`
          : err.message.split('\n')[0];
        resolve({
          ok: false,
          detail: `fence command ${argv[0]} failed: ${why}${output ? `: ${output}` : ''}`,
        });
      },
    );
  });
}

/** Delete the node's pod (grace period 0) through the Kubernetes API; 404 counts as fenced. */
export async function deletePod(
  k: NonNullable<ControllerConfig['fencing']['kubernetes']>,
  t: FenceTarget,
  timeoutMs: number,
): Promise<FenceOutcome> {
  const host = process.env.KUBERNETES_SERVICE_HOST;
  const base =
    k.apiServer ?? (host ? `https://${host}:${process.env.KUBERNETES_SERVICE_PORT ?? '443'}` : undefined);
  if (!base) {
    return { ok: false, detail: 'no Kubernetes API: set fencing.kubernetes.apiServer or run in a pod' };
  }
  const pod = k.podName.replaceAll('{node}', t.node);
  let token: string;
  let ca: Buffer | undefined;
  try {
    token = (await readFile(k.tokenFile, 'utf8')).trim();
    ca = await readFile(k.caFile).catch(() => undefined);
  } catch (err) {
    return {
      ok: false,
      detail: `cannot read the service account token ${k.tokenFile}: ${(err as Error).message}`,
    };
  }
  const url = new URL(
    `/api/v1/namespaces/${encodeURIComponent(k.namespace)}/pods/${encodeURIComponent(pod)}?gracePeriodSeconds=0`,
    base,
  );
  const request = url.protocol === 'http:' ? httpRequest : httpsRequest;
  return new Promise((resolve) => {
    const req = request(
      url,
      {
        method: 'DELETE',
        headers: { authorization: `Bearer ${token}`, accept: 'application/json' },
        timeout: timeoutMs,
        ...(ca && url.protocol === 'https:' ? { agent: new Agent({ ca }) } : {}),
      },
      (res) => {
        res.resume();
        const status = res.statusCode ?? 0;
        if (status >= 200 && status < 300) resolve({ ok: true, detail: `pod ${k.namespace}/${pod} deleted` });
        else if (status === 404) resolve({ ok: true, detail: `pod ${k.namespace}/${pod} already gone` });
        else
          resolve({
            ok: false,
            detail: `deleting pod ${k.namespace}/${pod}: HTTP ${status}; check the controller's RBAC (pods: delete)`,
          });
      },
    );
    req.on('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on('error', (err) =>
      resolve({ ok: false, detail: `deleting pod ${k.namespace}/${pod}: ${err.message}` }),
    );
    req.end();
  });
}

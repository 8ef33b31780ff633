// Nodes and fencing: list nodes, fence a node (moving its identities away first) and unfence.
import { TERMINAL_STATES, type FenceResult, type NodeView, type Workflow } from '../api/schema.js';
import { CliError, EXIT } from './exit.js';
import { renderNodes, workflowHeadline, workflowOutcome } from './render.js';
import { formatDuration, toMs } from './time.js';
import {
  context,
  fieldsAsOptions,
  FENCE_ONLY_WAIT_MS,
  GIVE_UP_GRACE_MS,
  POLL_INTERVAL_MS,
  routes,
  sleep,
  type Context,
  type ControllerOptions,
} from './controller-context.js';
import { ProgressPrinter, Reachability, workflowBudgetMs } from './handover-commands.js';

export async function nodes(opts: ControllerOptions): Promise<number> {
  const { api, out } = await context(opts);
  const res = await api.get<{ nodes: NodeView[] }>(routes.nodes);
  out.result(res, () => renderNodes(res.nodes, Date.now()));
  return EXIT.ok;
}

export async function unfence(opts: ControllerOptions, node: string, reason?: string): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<NodeView>(routes.unfence(node), reason ? { reason } : {}, {
    describeField: fieldsAsOptions({ reason: '--reason' }),
  });
  out.result(view, () => `node ${node} unfenced: it may campaign and log in again`);
  return EXIT.ok;
}

export async function fence(
  opts: ControllerOptions,
  node: string,
  flags: { reason: string; wait: boolean },
): Promise<number> {
  const ctx = await context(opts);
  const started = await ctx.api.post<FenceResult>(
    routes.fence(node),
    { reason: flags.reason },
    {
      describeField: fieldsAsOptions({ reason: '--reason' }),
    },
  );
  if (started.fenced || !flags.wait) {
    ctx.out.result(started, () => fenceText(started, Date.now()));
    return EXIT.ok;
  }
  return waitForFence(ctx, started);
}

function fenceText(result: FenceResult, now: number): string {
  if (result.fenced)
    return `node ${result.node} fenced: it stays out until \`understudy unfence ${result.node}\``;
  return [
    `fence of ${result.node} pending: its identities move away first`,
    ...result.workflows.map((w) => `  ${workflowHeadline(w, now)}`),
    `follow it with: understudy nodes`,
  ].join('\n');
}

/** Poll the nodes until the fence is written, printing the handovers that make way for it. */
async function waitForFence(ctx: Context, started: FenceResult): Promise<number> {
  const { node } = started;
  const t0 = Date.now();
  ctx.out.progress(
    `fencing ${node}: moving ${started.workflows.map((w) => w.identity).join(', ') || 'nothing'} away first`,
  );
  const printers = new Map(
    started.workflows.map((w) => [w.id, new ProgressPrinter(ctx.out, toMs(w.createdAt) ?? t0, w.identity)]),
  );
  let workflows = started.workflows;
  workflows.forEach((w) => printers.get(w.id)?.show(w));
  const waitMs = Math.max(FENCE_ONLY_WAIT_MS, ...workflows.map(workflowBudgetMs)) + GIVE_UP_GRACE_MS;
  const signal = AbortSignal.timeout(waitMs);
  const reach = new Reachability(ctx.out);
  while (!signal.aborted) {
    workflows = await refreshWorkflows(ctx, workflows, reach, signal);
    workflows.forEach((w) => printers.get(w.id)?.show(w));
    const res = await reach.tolerate(signal, () =>
      ctx.api.get<{ nodes: NodeView[] }>(routes.nodes, { signal }),
    );
    const view = res?.nodes.find((n) => n.node === node);
    if (res && !view)
      throw new CliError(`node ${node} is no longer listed; see \`understudy nodes\``, EXIT.notFound);
    const result: FenceResult = { node, fenced: Boolean(view?.fenced && !view.fencePending), workflows };
    if (result.fenced) {
      ctx.out.result(result, () => `node ${node} fenced after ${formatDuration(Date.now() - t0)}`);
      return EXIT.ok;
    }
    const allEnded = workflows.every((w) => TERMINAL_STATES.has(w.state));
    if (view && !view.fenced && !view.fencePending && allEnded) {
      ctx.out.result(result, () => fenceFailedText(result));
      return EXIT.failed;
    }
    await sleep(POLL_INTERVAL_MS, signal);
  }
  ctx.out.result({ node, fenced: false, workflows }, () =>
    workflows.map((w) => `  ${workflowOutcome(w)}`).join('\n'),
  );
  ctx.out.warn(
    `gave up waiting for the fence of ${node} after ${formatDuration(waitMs)}; it is still pending: ` +
      'see `understudy nodes` and `understudy history`',
  );
  return EXIT.failed;
}

async function refreshWorkflows(
  ctx: Context,
  workflows: Workflow[],
  reach: Reachability,
  signal: AbortSignal,
): Promise<Workflow[]> {
  return Promise.all(
    workflows.map(async (w) => {
      if (TERMINAL_STATES.has(w.state)) return w;
      const now = await reach.tolerate(signal, () =>
        ctx.api.get<Workflow>(routes.workflow(w.identity), { signal }),
      );
      // Another workflow of the identity now: ours ended; its outcome is in the history.
      return now && now.id === w.id ? now : w;
    }),
  );
}

function fenceFailedText(result: FenceResult): string {
  const aborted = result.workflows.filter((w) => w.state === 'aborted');
  return [
    `fence of ${result.node} NOT applied: the controller dropped it after its handovers ended`,
    ...aborted.map((w) => `  ${workflowOutcome(w)}`),
    `move the identities by hand (understudy switchover) and fence again`,
  ].join('\n');
}

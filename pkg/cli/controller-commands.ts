// CLI commands that go through the controller's HTTP API (pkg/api/schema.ts), patronictl style:
// list, status, switchover/failover with live progress, pause/resume, fence/unfence, nodes,
// history, apply, access lists and which controller is active.
import { readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import YAML from 'yaml';
import {
  SwitchoverBody as SwitchoverBodySchema,
  TERMINAL_STATES,
  type AclChangeBody,
  type AclView,
  type ApplyResult,
  type ControllerInfo,
  type FailoverBody,
  type FenceResult,
  type HistoryView,
  type IdentityView,
  type NodeView,
  type SwitchoverBody,
  type Workflow,
} from '../api/schema.js';
import type { BlockedCaller } from '../spec/schema.js';
import { ApiClient, resolveToken } from './api-client.js';
import { CliError, EXIT, type GlobalOptions, type OutputFormat } from './nats-commands.js';
import {
  formatDuration,
  formatLocalTime,
  formatData,
  renderAcl,
  renderApplyResults,
  renderControllerInfo,
  renderHistory,
  renderIdentityList,
  renderIdentityStatus,
  renderNodes,
  stepLine,
  toMs,
  workflowHeadline,
  workflowOutcome,
} from './render.js';

export interface ControllerOptions extends GlobalOptions {
  /** Controller base URL (`--controller`, UNDERSTUDY_CONTROLLER). */
  controller: string;
  token?: string;
  tokenFile?: string;
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
const routes = {
  controller: '/v1/controller',
  identities: '/v1/identities',
  identity: identityPath,
  switchover: (identity: string) => `${identityPath(identity)}/switchover`,
  failover: (identity: string) => `${identityPath(identity)}/failover`,
  pause: (identity: string) => `${identityPath(identity)}/pause`,
  resume: (identity: string) => `${identityPath(identity)}/resume`,
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

// --- plumbing -----------------------------------------------------------------------------

/** Where a command's output goes: the result on stdout, progress and notices per format. */
class Output {
  constructor(readonly format: OutputFormat) {}

  /** The command's result: the API document as JSON/YAML, or its text view. */
  result(data: unknown, text: () => string): void {
    process.stdout.write(`${this.format === 'text' ? text() : formatData(this.format, data)}\n`);
  }

  /** Progress lines; JSON/YAML readers get only the final document. */
  progress(line: string): void {
    if (this.format === 'text') process.stdout.write(`${line}\n`);
  }

  /** Side remarks (following a standby to the active controller), text mode only. */
  notice(message: string): void {
    if (this.format === 'text') process.stderr.write(`understudy: ${message}\n`);
  }

  /** What went wrong and what to do next: always, on stderr. */
  warn(message: string): void {
    process.stderr.write(`understudy: ${message}\n`);
  }
}

interface Context {
  api: ApiClient;
  out: Output;
}

async function context(opts: ControllerOptions): Promise<Context> {
  const out = new Output(opts.output);
  const { token, tokenFrom } = await resolveToken(opts);
  const api = new ApiClient({ baseUrl: opts.controller, token, tokenFrom, notice: (m) => out.notice(m) });
  return { api, out };
}

/** Problem `field`s named as the options that set them. */
const fieldsAsOptions =
  (options: Record<string, string>) =>
  (field: string): string =>
    options[field] ?? field;

/** Resolves after `ms`, or at once when `signal` aborts (never rejects). */
const sleep = (ms: number, signal: AbortSignal) =>
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
async function confirm(yes: boolean | undefined, question: () => Promise<string>): Promise<void> {
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

const leaderText = (view: IdentityView) =>
  view.leader ? `${view.leader} (token ${view.token ?? '?'}, health ${view.health})` : 'no leader';

// --- identities ---------------------------------------------------------------------------

export async function list(opts: ControllerOptions): Promise<number> {
  const { api, out } = await context(opts);
  const res = await api.get<{ identities: IdentityView[] }>(routes.identities);
  out.result(res, () => renderIdentityList(res.identities, Date.now()));
  return EXIT.ok;
}

export async function status(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.get<IdentityView>(routes.identity(identity));
  out.result(view, () => renderIdentityStatus(view, Date.now()));
  return EXIT.ok;
}

export async function pauseIdentity(
  opts: ControllerOptions,
  identity: string,
  reason?: string,
): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<IdentityView>(routes.pause(identity), reason ? { reason } : {}, {
    describeField: fieldsAsOptions({ reason: '--reason' }),
  });
  out.result(view, () => `${identity} paused: no automatic failover until \`understudy resume ${identity}\``);
  return EXIT.ok;
}

export async function resumeIdentity(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<IdentityView>(routes.resume(identity));
  out.result(view, () => `${identity} resumed: automatic failover is on again`);
  return EXIT.ok;
}

// --- switchover, failover and their progress ----------------------------------------------

export interface SwitchoverFlags {
  to?: string;
  /** ISO time, already parsed and checked (render.parseAtTime). */
  at?: string;
  deadline?: number;
  reason?: string;
  wait: boolean;
  yes?: boolean;
}

/** `--deadline` bounds in seconds, read from the API schema (deadlineMs) so they cannot drift. */
const deadlineMs = SwitchoverBodySchema.shape.deadlineMs.unwrap();
export const DEADLINE_RANGE_S = {
  min: (deadlineMs.minValue ?? 0) / 1000,
  max: (deadlineMs.maxValue ?? Infinity) / 1000,
};

/** `--deadline <seconds>`; throws an Error saying the range, in seconds (the API says ms). */
export function parseDeadlineSeconds(value: string): number {
  const seconds = Number(value);
  if (!Number.isFinite(seconds) || seconds < DEADLINE_RANGE_S.min || seconds > DEADLINE_RANGE_S.max) {
    throw new Error(`must be a number of seconds from ${DEADLINE_RANGE_S.min} to ${DEADLINE_RANGE_S.max}`);
  }
  return seconds;
}

const MOVE_FIELDS = { to: '--to', at: '--at', deadlineMs: '--deadline', reason: '--reason' };

export async function switchover(
  opts: ControllerOptions,
  identity: string,
  flags: SwitchoverFlags,
): Promise<number> {
  const ctx = await context(opts);
  await confirm(flags.yes, async () => {
    const view = await ctx.api.get<IdentityView>(routes.identity(identity));
    const to = flags.to ?? 'the best healthy standby';
    const when = flags.at ? `at ${formatLocalTime(flags.at)}` : 'now';
    return `Switch ${identity} over from ${leaderText(view)} to ${to} ${when}?`;
  });
  const body: SwitchoverBody = {
    ...(flags.to ? { to: flags.to } : {}),
    ...(flags.at ? { at: flags.at } : {}),
    ...(flags.deadline ? { deadlineMs: Math.round(flags.deadline * 1000) } : {}),
    ...(flags.reason ? { reason: flags.reason } : {}),
  };
  const wf = await ctx.api.post<Workflow>(routes.switchover(identity), body, {
    describeField: fieldsAsOptions(MOVE_FIELDS),
  });
  return afterStart(ctx, wf, flags.wait);
}

export interface FailoverFlags {
  to: string;
  deadline?: number;
  reason?: string;
  wait: boolean;
  yes?: boolean;
}

export async function failover(
  opts: ControllerOptions,
  identity: string,
  flags: FailoverFlags,
): Promise<number> {
  const ctx = await context(opts);
  await confirm(flags.yes, async () => {
    const view = await ctx.api.get<IdentityView>(routes.identity(identity));
    return `Force ${identity} over to ${flags.to}? Leader now: ${leaderText(view)}.`;
  });
  const body: FailoverBody = {
    to: flags.to,
    ...(flags.deadline ? { deadlineMs: Math.round(flags.deadline * 1000) } : {}),
    ...(flags.reason ? { reason: flags.reason } : {}),
  };
  const wf = await ctx.api.post<Workflow>(routes.failover(identity), body, {
    describeField: fieldsAsOptions(MOVE_FIELDS),
  });
  return afterStart(ctx, wf, flags.wait);
}

export async function cancel(opts: ControllerOptions, identity: string): Promise<number> {
  const { api, out } = await context(opts);
  const wf = await api.delete<Workflow>(routes.workflow(identity));
  out.result(
    wf,
    () =>
      `cancel of ${wf.kind} ${wf.id} of ${identity} requested: it rolls back at its next step if it still ` +
      `can (now ${wf.state}); follow it with: understudy status ${identity}`,
  );
  return EXIT.ok;
}

/** A workflow was accepted: follow it, unless told not to or it starts later. */
async function afterStart(ctx: Context, wf: Workflow, wait: boolean): Promise<number> {
  const now = Date.now();
  const scheduled = wf.state === 'scheduled' || (toMs(wf.at) ?? 0) > now;
  if (!wait || scheduled) {
    const next = scheduled
      ? `cancel it with: understudy cancel ${wf.identity}`
      : `follow it with: understudy status ${wf.identity}`;
    ctx.out.result(wf, () => `${workflowHeadline(wf, now)}\n${next}`);
    return EXIT.ok;
  }
  return followWorkflow(ctx, wf);
}

/** Time the controller has to finish a workflow, from its own timestamps (no clock skew). */
const workflowBudgetMs = (wf: Workflow) => Math.max(0, (toMs(wf.deadline) ?? 0) - (toMs(wf.createdAt) ?? 0));

/** Prints each new step (and escalation) of a workflow once, however often it is seen. */
class ProgressPrinter {
  private steps = 0;
  private escalations = 0;
  private state: string | undefined;
  private cancelSeen = false;

  constructor(
    private readonly out: Output,
    private readonly startMs: number,
    private readonly label?: string,
  ) {}

  show(wf: Workflow): void {
    for (const step of wf.steps.slice(this.steps)) {
      this.out.progress(stepLine(step, this.startMs, this.label));
      this.state = step.state;
    }
    this.steps = Math.max(this.steps, wf.steps.length);
    for (const escalation of wf.escalation.slice(this.escalations)) {
      this.out.progress(
        stepLine({ state: 'escalate', at: wf.updatedAt, note: escalation }, this.startMs, this.label),
      );
    }
    this.escalations = Math.max(this.escalations, wf.escalation.length);
    if (wf.cancelRequested && !this.cancelSeen) {
      const { actor, at } = wf.cancelRequested;
      this.out.progress(
        stepLine({ state: 'cancel', at, note: `requested by ${actor}` }, this.startMs, this.label),
      );
      this.cancelSeen = true;
    }
    // A state the steps do not (yet) show still gets its line.
    if (wf.state !== this.state) {
      this.out.progress(stepLine({ state: wf.state, at: wf.updatedAt }, this.startMs, this.label));
      this.state = wf.state;
    }
  }
}

async function followWorkflow(ctx: Context, wf: Workflow): Promise<number> {
  const printer = new ProgressPrinter(ctx.out, toMs(wf.createdAt) ?? Date.now());
  ctx.out.progress(workflowHeadline(wf, Date.now()));
  const waitMs = workflowBudgetMs(wf) + GIVE_UP_GRACE_MS;
  const end = await watchWorkflow(ctx, wf, waitMs, (w) => printer.show(w));
  ctx.out.result(end.last, () => workflowOutcome(end.last));
  if (end.how === 'finished') return end.last.state === 'done' ? EXIT.ok : EXIT.failed;
  if (end.how === 'superseded' && end.current) {
    ctx.out.warn(
      `${wf.identity} now runs ${end.current.kind} ${end.current.id} (${end.current.state}), so ${wf.id} ended ` +
        `unseen: its outcome is in \`understudy history ${wf.identity}\``,
    );
  } else {
    ctx.out.warn(
      `gave up waiting after ${formatDuration(waitMs)}: ${wf.id} is still ${end.last.state}. The controller ` +
        `completes or rolls it back on its own; follow it with \`understudy status ${wf.identity}\``,
    );
  }
  return EXIT.failed;
}

interface WatchEnd {
  how: 'finished' | 'gave-up' | 'superseded';
  last: Workflow;
  /** With `superseded`: the identity's workflow now. */
  current?: Workflow;
}

async function watchWorkflow(
  ctx: Context,
  wf: Workflow,
  waitMs: number,
  onUpdate: (wf: Workflow) => void,
): Promise<WatchEnd> {
  onUpdate(wf);
  if (TERMINAL_STATES.has(wf.state)) return { how: 'finished', last: wf };
  const giveUp = AbortSignal.timeout(waitMs);
  let last = wf;
  for await (const update of workflowUpdates(ctx, wf, giveUp)) {
    if (update.id !== wf.id) return { how: 'superseded', last, current: update };
    last = update;
    onUpdate(update);
    if (TERMINAL_STATES.has(update.state)) return { how: 'finished', last };
  }
  return { how: 'gave-up', last };
}

/**
 * The workflow as it changes: from the identity's event stream, caught up once after
 * subscribing (steps taken between the POST and the subscription), and by polling when the
 * stream cannot be had or breaks. Ends when `signal` aborts.
 */
async function* workflowUpdates(ctx: Context, wf: Workflow, signal: AbortSignal): AsyncGenerator<Workflow> {
  const createdMs = toMs(wf.createdAt) ?? 0;
  try {
    const events = await ctx.api.events(wf.identity, signal);
    yield await ctx.api.get<Workflow>(routes.workflow(wf.identity), { signal });
    for await (const event of events) {
      if (event.type !== 'workflow' || event.workflow.identity !== wf.identity) continue;
      // A later workflow of the identity means ours is over; an older one is a late echo.
      if (event.workflow.id === wf.id || (toMs(event.workflow.createdAt) ?? 0) > createdMs)
        yield event.workflow;
    }
    if (signal.aborted) return;
    ctx.out.notice(`the event stream closed; polling every ${POLL_INTERVAL_MS} ms`);
  } catch (err) {
    if (signal.aborted) return;
    ctx.out.notice(`no event stream (${(err as Error).message}); polling every ${POLL_INTERVAL_MS} ms`);
  }
  yield* pollWorkflow(ctx, wf.identity, signal);
}

async function* pollWorkflow(ctx: Context, identity: string, signal: AbortSignal): AsyncGenerator<Workflow> {
  const reach = new Reachability(ctx.out);
  while (!signal.aborted) {
    const wf = await reach.tolerate(signal, () =>
      ctx.api.get<Workflow>(routes.workflow(identity), { signal }),
    );
    if (wf) yield wf;
    await sleep(POLL_INTERVAL_MS, signal);
  }
}

/**
 * While waiting, an unreachable controller is not the end: the standby controller takes the
 * workflow over (L2). Say so once and keep looking until the deadline; other errors stop.
 */
class Reachability {
  private down = false;
  constructor(private readonly out: Output) {}

  async tolerate<T>(signal: AbortSignal, look: () => Promise<T>): Promise<T | undefined> {
    try {
      const value = await look();
      if (this.down) this.out.notice('the controller answers again');
      this.down = false;
      return value;
    } catch (err) {
      if (signal.aborted) return undefined;
      if (!(err instanceof CliError) || err.exitCode !== EXIT.unavailable) throw err;
      if (!this.down) this.out.notice(`${err.message}; still trying until the deadline`);
      this.down = true;
      return undefined;
    }
  }
}

// --- nodes and fencing --------------------------------------------------------------------

export async function nodes(opts: ControllerOptions): Promise<number> {
  const { api, out } = await context(opts);
  const res = await api.get<{ nodes: NodeView[] }>(routes.nodes);
  out.result(res, () => renderNodes(res.nodes, Date.now()));
  return EXIT.ok;
}

export async function unfence(opts: ControllerOptions, node: string): Promise<number> {
  const { api, out } = await context(opts);
  const view = await api.post<NodeView>(routes.unfence(node));
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

// --- history, controller ------------------------------------------------------------------

export async function history(
  opts: ControllerOptions,
  identity: string | undefined,
  flags: { limit?: number },
): Promise<number> {
  const { api, out } = await context(opts);
  const res = await api.get<HistoryView>(identity ? routes.history(identity) : routes.allHistory, {
    query: { limit: flags.limit },
    describeField: fieldsAsOptions({ 'query.limit': '--limit' }),
  });
  out.result(res, () => renderHistory(res.entries));
  return EXIT.ok;
}

export async function controller(opts: ControllerOptions): Promise<number> {
  const { api, out } = await context(opts);
  const info = await api.get<ControllerInfo>(routes.controller);
  out.result(info, () => renderControllerInfo(info, api.baseUrl));
  return EXIT.ok;
}

// --- apply --------------------------------------------------------------------------------

/**
 * Identity specs from YAML text, in any of three layouts: one document holding a list of
 * specs, one map with an `identities:` list, or several `---` documents of one spec each.
 * A parse error names the file, line and column (exit 2).
 */
export function specsFromYaml(text: string, source: string): unknown[] {
  const docs = YAML.parseAllDocuments(text);
  for (const doc of docs) {
    const error = doc.errors[0];
    if (error) throw new CliError(`cannot parse ${source}: ${error.message.trimEnd()}`, EXIT.usage);
  }
  const specs = docs
    .map((doc) => doc.toJS() as unknown)
    .filter((value) => value !== null && value !== undefined)
    .flatMap((value) =>
      Array.isArray(value) ? value : isIdentitiesList(value) ? value.identities : [value],
    );
  if (specs.length === 0) throw new CliError(`${source} holds no identity specs`, EXIT.usage);
  return specs;
}

/** `{identities: [...]}` and nothing a spec would have (a spec has a `name`). */
const isIdentitiesList = (value: unknown): value is { identities: unknown[] } =>
  typeof value === 'object' &&
  value !== null &&
  Array.isArray((value as { identities?: unknown }).identities) &&
  !('name' in value);

async function readInput(file: string): Promise<string> {
  if (file === '-') {
    const chunks: Buffer[] = [];
    for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  return readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new CliError(`cannot read -f ${file} (${err.code ?? err.message})`, EXIT.usage);
  });
}

/** `specs.3.service.command` -> `specs.yaml spec #4 (msggateway): service.command`. */
function specField(source: string, specs: unknown[]) {
  return (field: string): string => {
    const match = /^specs\.(\d+)(?:\.(.+))?$/.exec(field);
    if (!match) return `${source}: ${field}`;
    const index = Number(match[1]);
    const name = (specs[index] as { name?: unknown } | undefined)?.name;
    const which = `${source} spec #${index + 1}${typeof name === 'string' ? ` (${name})` : ''}`;
    return match[2] ? `${which}: ${match[2]}` : which;
  };
}

export async function apply(
  opts: ControllerOptions,
  flags: { file: string; dryRun?: boolean },
): Promise<number> {
  const source = flags.file === '-' ? 'stdin' : flags.file;
  const specs = specsFromYaml(await readInput(flags.file), source);
  const { api, out } = await context(opts);
  const dryRun = flags.dryRun ?? false;
  const res = await api.post<{ results: ApplyResult[] }>(
    routes.apply,
    { specs, dryRun },
    {
      describeField: specField(source, specs),
    },
  );
  out.result(res, () => renderApplyResults(res.results, dryRun));
  return EXIT.ok;
}

// --- access lists -------------------------------------------------------------------------

export const ACL_USAGE = [
  'understudy acl <identity>                                 show the lists and pending requests',
  'understudy acl <identity> approve <caller>',
  'understudy acl <identity> deny <caller> [--block]',
  'understudy acl <identity> add <contacts|authorized|blocked> <name> [nkey]',
  'understudy acl <identity> remove <contacts|authorized|blocked> <name>',
  'understudy acl <identity> open|close',
].join('\n  ');

const usage = (problem: string) => new CliError(`${problem}; usage:\n  ${ACL_USAGE}`, EXIT.usage);

const ACL_LISTS = ['contacts', 'authorized', 'blocked'] as const;
type AclList = (typeof ACL_LISTS)[number];
const isAclList = (value: string | undefined): value is AclList => ACL_LISTS.includes(value as AclList);

/** A NATS user public key (pkg/spec PublicNkey): names are lowercase, so these never clash. */
const looksLikeNkey = (value: string) => /^U[A-Z2-7]{55}$/.test(value);

export interface AclRequest {
  path: string;
  body?: unknown;
  /** What was done, for the line above the lists. */
  done: string;
}

/** The request an `acl` command line stands for; undefined: just show. Pure, for tests. */
export function aclRequest(
  identity: string,
  action: string | undefined,
  args: readonly string[],
  flags: { block?: boolean },
): AclRequest | undefined {
  const want = (n: number, form: string) => {
    if (args.length !== n) throw usage(`acl ${action} takes ${form}`);
  };
  if (flags.block && action !== 'deny') throw usage('--block goes with deny');
  switch (action) {
    case undefined:
    case 'show':
      want(0, 'no arguments');
      return undefined;
    case 'approve':
      want(1, 'one caller name');
      return { path: routes.approve(identity, args[0]!), done: `${args[0]} approved` };
    case 'deny':
      want(1, 'one caller name');
      return {
        path: routes.deny(identity, args[0]!),
        body: { block: flags.block ?? false },
        done: `${args[0]} denied${flags.block ? ' and blocked' : ''}`,
      };
    case 'add':
      return aclAdd(identity, args);
    case 'remove': {
      want(2, 'a list and a name');
      const [list, name] = args as [string, string];
      if (!isAclList(list)) throw usage(`no list ${list}`);
      const body: AclChangeBody = { op: 'remove', list, name };
      return { path: routes.acl(identity), body, done: `${name} removed from ${list}` };
    }
    case 'open':
    case 'close':
      want(0, 'no arguments');
      return {
        path: routes.acl(identity),
        body: { op: 'open', open: action === 'open' } satisfies AclChangeBody,
        done: action === 'open' ? 'opened to every caller' : 'closed to callers on no list',
      };
    default:
      throw usage(`unknown acl action ${action}`);
  }
}

function aclAdd(identity: string, words: readonly string[]): AclRequest {
  const [list, name, nkey] = words;
  if (words.length < 2 || words.length > 3 || !isAclList(list) || !name) {
    throw usage(
      'acl add takes a list (contacts, authorized or blocked), a name and, for the first two, an nkey',
    );
  }
  let body: AclChangeBody;
  if (list === 'blocked') {
    // Block by name, by key, or both: a lone key is recognised by its shape.
    const caller: BlockedCaller = nkey ? { name, nkey } : looksLikeNkey(name) ? { nkey: name } : { name };
    body = { op: 'block', caller };
  } else {
    if (!nkey) throw usage(`${list} entries need the caller's nkey (U...)`);
    body = { op: 'add', list, caller: { name, nkey } };
  }
  return { path: routes.acl(identity), body, done: `${name} added to ${list}` };
}

export async function acl(
  opts: ControllerOptions,
  identity: string,
  action: string | undefined,
  args: string[],
  flags: { block?: boolean },
): Promise<number> {
  const request = aclRequest(identity, action, args, flags);
  const { api, out } = await context(opts);
  const view = request
    ? await api.post<AclView>(request.path, request.body, {
        describeField: fieldsAsOptions({ 'caller.nkey': '<nkey>', 'caller.name': '<name>', name: '<name>' }),
      })
    : await api.get<AclView>(routes.acl(identity));
  out.result(view, () => `${request ? `${identity}: ${request.done}\n` : ''}${renderAcl(view, Date.now())}`);
  return EXIT.ok;
}

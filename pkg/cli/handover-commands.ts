// Switchover, failover and cancel, and following a workflow live until it ends (events, or
// polling when the stream is unavailable; an unreachable controller is waited out).
import {
  SwitchoverBody as SwitchoverBodySchema,
  TERMINAL_STATES,
  type FailoverBody,
  type IdentityView,
  type SwitchoverBody,
  type Workflow,
} from '../api/schema.js';
import { CliError, EXIT } from './exit.js';
import { stepLine, workflowHeadline, workflowOutcome } from './render.js';
import { formatDuration, formatLocalTime, toMs } from './time.js';
import {
  confirm,
  context,
  fieldsAsOptions,
  GIVE_UP_GRACE_MS,
  leaderText,
  POLL_INTERVAL_MS,
  routes,
  sleep,
  type Context,
  type ControllerOptions,
} from './controller-context.js';
import { type Output } from './output.js';

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
export const workflowBudgetMs = (wf: Workflow) =>
  Math.max(0, (toMs(wf.deadline) ?? 0) - (toMs(wf.createdAt) ?? 0));

/** Prints each new step (and escalation) of a workflow once, however often it is seen. */
export class ProgressPrinter {
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
export class Reachability {
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

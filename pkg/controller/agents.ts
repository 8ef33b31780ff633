// The controller's side of the agent control plane: heartbeats in, control requests out,
// both over NATS (agents only make outbound connections). Heartbeats are debug-level noise;
// every control exchange is logged at debug with its request and reply.
import { headers, type NatsConnection, type Subscription } from 'nats';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import {
  ControlReply,
  Heartbeat,
  isSupportedVersion,
  PROTOCOL_VERSION,
  type ControlErrorCode,
  type ControlRequest,
} from '../control/protocol.js';
import { signControl } from '../control/signing.js';
import { subjects, SUBJECT_ROOT } from '../identity/wire.js';
import type { UserSigner } from '../keys/index.js';
import { NAME_PATTERN } from '../lease/keys.js';

/** A control request the agent refused or did not answer. */
export class AgentControlError extends Error {
  constructor(
    readonly node: string,
    readonly code: ControlErrorCode | 'no-answer',
    message: string,
  ) {
    super(message);
    this.name = 'AgentControlError';
  }
}

export interface SeenAgent {
  heartbeat: Heartbeat;
  /** Local receive time (ms): freshness is judged on our clock, not the agent's. */
  receivedAt: number;
}

/** A request without its version, kept per operation (a plain Omit would merge the union). */
type Body = ControlRequest extends infer R ? (R extends ControlRequest ? Omit<R, 'v'> : never) : never;
type Op<K extends ControlRequest['op']> = Omit<Extract<ControlRequest, { op: K }>, 'v' | 'op' | 'term'>;

/**
 * An agent silent this long is forgotten (it no longer shows as a dead node): a day covers any
 * maintenance window, and the map of nodes cannot grow without bound from names that come and go.
 */
export const FORGET_SILENT_AGENT_MS = 24 * 3_600_000;
/**
 * Most agents tracked at once: ten times the 100 agents the design is sized for. Heartbeats of
 * further new nodes are ignored (and said so) until silent ones are forgotten.
 */
export const MAX_TRACKED_AGENTS = 1_000;

export class AgentLink {
  private readonly seen = new Map<string, SeenAgent>();
  private readonly refused = new Map<string, string>();
  /** Requests waiting for a node's first heartbeat (its instance), by node. */
  private readonly awaitingInstance = new Map<string, Set<() => void>>();
  private sub: Subscription | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly logger: Logger,
    /** Signs every control request (pkg/control/signing.ts); its key is in our member record. */
    private readonly signer: UserSigner,
    private readonly onHeartbeat: (node: string, beat: Heartbeat) => void = () => undefined,
    /** Receive times are wall-clock ms: they are shown to operators as lastHeartbeat. */
    private readonly clock: Clock = systemClock,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(subjects.heartbeats(), {
      callback: (err, msg) => {
        if (!err) this.receive(msg.subject, msg.string());
      },
    });
  }

  /** One heartbeat: the node is the one its subject names, never what the body claims. */
  receive(subject: string, raw: string): void {
    const verdict = readHeartbeat(subject, raw);
    if (!verdict.ok) return this.refuse(verdict.source, verdict.why);
    const { node, beat } = verdict;
    const now = this.clock.wallMs();
    this.forgetSilent(now);
    if (!this.seen.has(node) && this.seen.size >= MAX_TRACKED_AGENTS) {
      return this.refuse(
        'too-many-agents',
        `already tracking ${MAX_TRACKED_AGENTS} agents; heartbeats of new nodes are ignored until silent ones are forgotten (after ${FORGET_SILENT_AGENT_MS / 3_600_000} h). Check for a publisher inventing node names`,
      );
    }
    this.seen.set(node, { heartbeat: beat, receivedAt: now });
    for (const wake of this.awaitingInstance.get(node) ?? []) wake();
    this.logger.trace({ node }, 'heartbeat');
    this.onHeartbeat(node, beat);
  }

  private forgetSilent(now: number): void {
    for (const [node, agent] of this.seen) {
      if (now - agent.receivedAt > FORGET_SILENT_AGENT_MS) {
        this.seen.delete(node);
        this.logger.info(
          { node },
          `forgetting agent ${node}: silent for over ${FORGET_SILENT_AGENT_MS / 3_600_000} h`,
        );
      }
    }
  }

  /** Heartbeats we cannot use make the node look dead: say why, once per source. */
  private refuse(source: string, why: string): void {
    if (this.refused.get(source) === why) return;
    if (this.refused.size >= MAX_TRACKED_AGENTS) this.refused.clear();
    this.refused.set(source, why);
    this.logger.warn({ source }, `ignoring heartbeats from ${source}: ${why}`);
  }

  /** The instance of `node` from its next heartbeat, or undefined after `timeoutMs`. */
  private nextInstance(node: string, timeoutMs: number): Promise<string | undefined> {
    return new Promise((resolve) => {
      const waiters = this.awaitingInstance.get(node) ?? new Set<() => void>();
      this.awaitingInstance.set(node, waiters);
      const done = () => {
        cancel();
        waiters.delete(wake);
        if (waiters.size === 0) this.awaitingInstance.delete(node);
        resolve(this.instanceOf(node));
      };
      const wake = () => {
        if (this.instanceOf(node) !== undefined) done();
      };
      waiters.add(wake);
      const cancel = this.clock.after(timeoutMs, done);
    });
  }

  /** The instance `node` announced in its last heartbeat (requests are signed for it). */
  instanceOf(node: string): string | undefined {
    return this.seen.get(node)?.heartbeat.instance;
  }

  agents(): ReadonlyMap<string, SeenAgent> {
    return this.seen;
  }

  /**
   * State-changing requests name the election `term` they are sent under (the Authority's
   * revision captured when the step began): the agent obeys only the current term, so a
   * controller that froze after its own term check and resumed deposed is refused
   * (`stale-controller`).
   */
  drain(node: string, term: string, req: Op<'drain'>, timeoutMs: number): Promise<unknown> {
    // A drain's target goes only to an agent that said it takes one: an older agent refuses
    // the field, and drains as before when it is left out (the controller moves the key).
    const { to, workflow, ...plain } = req;
    const body =
      to !== undefined && this.seen.get(node)?.heartbeat.handsOver ? { ...plain, to, workflow } : plain;
    return this.request(node, { ...body, op: 'drain', term }, timeoutMs);
  }

  undrain(node: string, term: string, req: Op<'undrain'>, timeoutMs: number): Promise<unknown> {
    return this.request(node, { ...req, op: 'undrain', term }, timeoutMs);
  }

  snapshot(node: string, term: string, req: Op<'snapshot'>, timeoutMs: number): Promise<unknown> {
    return this.request(node, { ...req, op: 'snapshot', term }, timeoutMs);
  }

  status(node: string, timeoutMs: number): Promise<unknown> {
    return this.request(node, { op: 'status' }, timeoutMs);
  }

  private async request(node: string, body: Body, timeoutMs: number): Promise<unknown> {
    const request = { v: PROTOCOL_VERSION, ...body };
    // A controller that just started has heard no heartbeat yet: wait for one (agents send one
    // every heartbeatIntervalMs), within the request's own time.
    const asked = this.clock.monotonicMs();
    const instance = this.instanceOf(node) ?? (await this.nextInstance(node, timeoutMs));
    const remainingMs = Math.max(1, timeoutMs - (this.clock.monotonicMs() - asked));
    if (instance === undefined) {
      throw new AgentControlError(
        node,
        'no-answer',
        `agent ${node} sent no heartbeat naming its instance within ${timeoutMs} ms, so no request can be signed for it; ` +
          `check that it runs and reaches NATS (an agent older than this controller: upgrade it)`,
      );
    }
    const text = JSON.stringify(request);
    const signed = signControl(this.signer, { node, instance }, text, this.clock.wallMs());
    const h = headers();
    for (const [name, value] of Object.entries(signed)) h.set(name, value);
    this.logger.debug({ node, request }, 'control request sent');
    let raw: string;
    try {
      const msg = await this.nc.request(subjects.control(node), text, {
        timeout: remainingMs,
        headers: h,
      });
      raw = msg.string();
    } catch (err) {
      this.logger.debug({ node, op: body.op, err: (err as Error).message }, 'control request not answered');
      throw new AgentControlError(
        node,
        'no-answer',
        `agent ${node} did not answer ${body.op} within ${timeoutMs} ms (${(err as Error).message})`,
      );
    }
    this.logger.debug({ node, reply: raw.slice(0, 500) }, 'control reply received');
    let reply: ControlReply;
    try {
      reply = ControlReply.parse(JSON.parse(raw));
    } catch {
      throw new AgentControlError(node, 'failed', `agent ${node} sent an unreadable control reply`);
    }
    if (!reply.ok)
      throw new AgentControlError(node, reply.error.code, `agent ${node}: ${reply.error.message}`);
    return reply.result;
  }

  stop(): void {
    this.sub?.unsubscribe();
  }
}

export type HeartbeatVerdict =
  { ok: true; node: string; beat: Heartbeat } | { ok: false; source: string; why: string };

const HEARTBEAT_SUBJECT = new RegExp(`^${SUBJECT_ROOT}\\.agent\\.([^.]+)\\.heartbeat$`);

/**
 * Read one heartbeat. The node is taken from the subject (which NATS permissions can restrict
 * per agent user) and must be a valid node name; a body naming another node is refused, so one
 * agent cannot speak for another.
 */
export function readHeartbeat(subject: string, raw: string): HeartbeatVerdict {
  const node = HEARTBEAT_SUBJECT.exec(subject)?.[1];
  if (node === undefined || !NAME_PATTERN.test(node)) {
    return {
      ok: false,
      source: 'bad-subject',
      why: `heartbeat on ${subject.slice(0, 100)}: not a valid node name in the subject`,
    };
  }
  let beat: Heartbeat;
  try {
    const parsed = Heartbeat.safeParse(JSON.parse(raw));
    if (!parsed.success) return { ok: false, source: node, why: 'unreadable heartbeat' };
    beat = parsed.data;
  } catch {
    return { ok: false, source: node, why: 'heartbeat is not JSON' };
  }
  if (beat.node !== node) {
    return {
      ok: false,
      source: node,
      why: `heartbeat on ${node}'s subject claims to be from ${beat.node.slice(0, 63)}`,
    };
  }
  if (!isSupportedVersion(beat.v)) {
    return {
      ok: false,
      source: node,
      why: `agent speaks control protocol ${beat.v}, this controller ${PROTOCOL_VERSION}: upgrade the older of the two`,
    };
  }
  return { ok: true, node, beat };
}

// The controller's side of the agent control plane: heartbeats in, control requests out,
// both over NATS (agents only make outbound connections). Heartbeats are debug-level noise;
// every control exchange is logged at debug with its request and reply.
import type { NatsConnection, Subscription } from 'nats';
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
import { subjects } from '../identity/wire.js';

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

export class AgentLink {
  private readonly seen = new Map<string, SeenAgent>();
  private readonly refused = new Map<string, string>();
  private sub: Subscription | undefined;

  constructor(
    private readonly nc: NatsConnection,
    private readonly logger: Logger,
    private readonly onHeartbeat: (node: string, beat: Heartbeat) => void = () => undefined,
    /** Receive times are wall-clock ms: they are shown to operators as lastHeartbeat. */
    private readonly clock: Clock = systemClock,
  ) {}

  start(): void {
    this.sub = this.nc.subscribe(subjects.heartbeats(), {
      callback: (err, msg) => {
        if (err) return;
        let beat: Heartbeat;
        try {
          const parsed = Heartbeat.safeParse(JSON.parse(msg.string()));
          if (!parsed.success) return this.refuse(msg.subject, 'unreadable heartbeat');
          beat = parsed.data;
        } catch {
          return this.refuse(msg.subject, 'heartbeat is not JSON');
        }
        if (!isSupportedVersion(beat.v)) {
          return this.refuse(
            beat.node,
            `agent speaks control protocol ${beat.v}, this controller ${PROTOCOL_VERSION}: upgrade the older of the two`,
          );
        }
        this.seen.set(beat.node, { heartbeat: beat, receivedAt: this.clock.wallMs() });
        this.logger.trace({ node: beat.node }, 'heartbeat');
        this.onHeartbeat(beat.node, beat);
      },
    });
  }

  /** Heartbeats we cannot use make the node look dead: say why, once per source. */
  private refuse(source: string, why: string): void {
    if (this.refused.get(source) === why) return;
    this.refused.set(source, why);
    this.logger.warn({ source }, `ignoring heartbeats from ${source}: ${why}`);
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
    return this.request(node, { ...req, op: 'drain', term }, timeoutMs);
  }

  undrain(node: string, term: string, req: Op<'undrain'>, timeoutMs: number): Promise<unknown> {
    return this.request(node, { ...req, op: 'undrain', term }, timeoutMs);
  }

  status(node: string, timeoutMs: number): Promise<unknown> {
    return this.request(node, { op: 'status' }, timeoutMs);
  }

  private async request(node: string, body: Body, timeoutMs: number): Promise<unknown> {
    const request = { v: PROTOCOL_VERSION, ...body };
    this.logger.debug({ node, request }, 'control request sent');
    let raw: string;
    try {
      const msg = await this.nc.request(subjects.control(node), JSON.stringify(request), {
        timeout: timeoutMs,
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

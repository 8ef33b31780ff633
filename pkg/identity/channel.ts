// The control channel between the agent and a process service (`channel: fd3`): JSON lines
// on the service's file descriptor 3, a UNIX socket pair. One message per line, each line one
// JSON object with a `type`. The agent drives login, logout, requests and status; the service
// answers. Both ends read this file, so they agree; the agent's end (ChannelClient) is at the
// bottom.
//
// Objects are parsed leniently (unknown fields are dropped, not refused): a service built
// against a newer understudy may add fields, and an agent one version back must still work.
import type { Socket } from 'node:net';
import type { Logger } from 'pino';
import { z } from 'zod';
import { systemClock, type Clock } from '../clock/index.js';
import type { LoginContext, ServiceReply, ServiceRequest } from './driver.js';

/** Longest line either side accepts; a longer one is discarded and reported. */
export const MAX_LINE_BYTES = 1024 * 1024;

/** Fencing tokens are etcd revisions (64-bit): decimal strings, since JSON numbers lose them. */
const Token = z.string().regex(/^\d+$/, 'must be a decimal string (the fencing token)');

/** Must match ServiceReply['error'] in driver.ts (checked below). */
export const ReplyError = z.enum(['bad-request', 'unknown-command', 'unavailable', 'internal']);
export type ReplyError = z.infer<typeof ReplyError>;
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const _replyErrorsMatchDriver: Same<ReplyError, NonNullable<ServiceReply['error']>> = true;

// ---- agent → service ------------------------------------------------------------------

export const LoginMessage = z.object({
  type: z.literal('login'),
  identity: z.string().min(1),
  node: z.string().min(1),
  token: Token,
  /** Path of the 0600 credential file; the secret itself never travels on the channel. */
  credentialFile: z.string().min(1).optional(),
});
export const LogoutMessage = z.object({ type: z.literal('logout') });
export const RequestMessage = z.object({
  type: z.literal('request'),
  id: z.string().min(1),
  /** The whole request line, e.g. `RATE USD`. */
  command: z.string(),
  caller: z.string().optional(),
});
export const StatusRequestMessage = z.object({ type: z.literal('status'), id: z.string().min(1) });
/**
 * Make the state directory consistent on disk and hold further writes until `snapshot-done`
 * with the same id (a service that cannot, or does not know this message, stays silent and is
 * copied as it is). A service must resume by itself if `snapshot-done` never comes
 * (SNAPSHOT_HOLD_MAX_MS): an agent that dies mid-copy must not freeze it.
 */
export const SnapshotMessage = z.object({ type: z.literal('snapshot'), id: z.string().min(1) });
export const SnapshotDoneMessage = z.object({ type: z.literal('snapshot-done'), id: z.string().min(1) });

/** Longest a service holds its writes for a snapshot before resuming on its own. */
export const SNAPSHOT_HOLD_MAX_MS = 120_000;

export const AgentMessage = z.discriminatedUnion('type', [
  LoginMessage,
  LogoutMessage,
  RequestMessage,
  StatusRequestMessage,
  SnapshotMessage,
  SnapshotDoneMessage,
]);
export type AgentMessage = z.infer<typeof AgentMessage>;

// ---- service → agent ------------------------------------------------------------------

/** Sent once after start, when the service can take a login (warm standby is ready). */
export const ReadyMessage = z.object({ type: z.literal('ready') });
/** The service runs under the shared name for this token's term. */
export const LoggedInMessage = z.object({ type: z.literal('logged-in'), token: Token });
export const LoggedOutMessage = z.object({ type: z.literal('logged-out') });
export const ReplyMessage = z.object({
  type: z.literal('reply'),
  id: z.string().min(1),
  body: z.string(),
  error: ReplyError.optional(),
});
export const StatusReplyMessage = z.object({
  type: z.literal('status'),
  id: z.string().min(1),
  fields: z.record(z.string(), z.unknown()),
});

/** The state directory is consistent on disk and no write happens until `snapshot-done`. */
export const SnapshotReadyMessage = z.object({ type: z.literal('snapshot-ready'), id: z.string().min(1) });

export const ServiceMessage = z.discriminatedUnion('type', [
  ReadyMessage,
  LoggedInMessage,
  LoggedOutMessage,
  ReplyMessage,
  StatusReplyMessage,
  SnapshotReadyMessage,
]);
export type ServiceMessage = z.infer<typeof ServiceMessage>;

/** The login message for a term: the credential's path travels, never the secret. */
export function loginMessage(ctx: LoginContext): AgentMessage {
  return {
    type: 'login',
    identity: ctx.identity,
    node: ctx.node,
    token: String(ctx.token),
    ...(ctx.credentialFile ? { credentialFile: ctx.credentialFile } : {}),
  };
}

/** One message as a line. JSON.stringify escapes newlines inside strings, so it stays one line. */
export function encodeMessage(message: AgentMessage | ServiceMessage): string {
  return `${JSON.stringify(message)}\n`;
}

export type Decoded<T> = { ok: true; message: T } | { ok: false; problem: string };

/** Parse one line against a schema; never throws. */
export function decodeLine<T>(schema: z.ZodType<T>, line: string): Decoded<T> {
  let json: unknown;
  try {
    json = JSON.parse(line);
  } catch (err) {
    return { ok: false, problem: `not JSON (${(err as Error).message})` };
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const where = issue?.path.length ? issue.path.join('.') : 'message';
    return { ok: false, problem: `${where}: ${issue?.message ?? 'invalid'}` };
  }
  return { ok: true, message: parsed.data };
}

/**
 * Splits a byte stream into lines (`\n`, an optional `\r` before it is dropped; blank lines are
 * skipped). Lines are decoded as UTF-8 only once complete, so a character split across chunks
 * survives. A line longer than `maxLineBytes` is discarded up to its newline and reported: a
 * peer cannot make us buffer without bound, and one bad line does not end the stream.
 */
export class LineFramer {
  private parts: Buffer[] = [];
  private size = 0;
  /** Inside an over-long line: drop bytes until the next newline. */
  private discarding = false;

  constructor(
    private readonly onLine: (line: string) => void,
    private readonly onInvalid: (problem: string) => void,
    private readonly maxLineBytes = MAX_LINE_BYTES,
  ) {}

  push(chunk: Buffer | string): void {
    let data = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
    for (;;) {
      const newline = data.indexOf(0x0a);
      if (newline < 0) {
        this.append(data);
        return;
      }
      this.append(data.subarray(0, newline));
      this.finishLine();
      data = data.subarray(newline + 1);
    }
  }

  /** The stream ended: a last line without its newline is incomplete, so it is reported, not used. */
  end(): void {
    if (this.discarding) {
      this.discarding = false;
    } else if (this.size > 0) {
      this.onInvalid(`stream ended inside a line (${this.size} bytes without a newline)`);
    }
    this.parts = [];
    this.size = 0;
  }

  private append(bytes: Buffer): void {
    if (this.discarding || bytes.length === 0) return;
    if (this.size + bytes.length > this.maxLineBytes) {
      this.onInvalid(`line longer than ${this.maxLineBytes} bytes, discarded`);
      this.parts = [];
      this.size = 0;
      this.discarding = true;
      return;
    }
    this.parts.push(bytes);
    this.size += bytes.length;
  }

  private finishLine(): void {
    if (this.discarding) {
      this.discarding = false;
      return;
    }
    let line = Buffer.concat(this.parts, this.size).toString('utf8');
    this.parts = [];
    this.size = 0;
    if (line.endsWith('\r')) line = line.slice(0, -1);
    if (line.trim() === '') return;
    this.onLine(line);
  }
}

/** A framer that parses each line against `schema`; bad lines go to `onInvalid` with the reason. */
export function messageReader<T>(
  schema: z.ZodType<T>,
  onMessage: (message: T) => void,
  onInvalid: (problem: string, line?: string) => void,
  maxLineBytes = MAX_LINE_BYTES,
): LineFramer {
  return new LineFramer(
    (line) => {
      const decoded = decodeLine(schema, line);
      if (decoded.ok) onMessage(decoded.message);
      else onInvalid(decoded.problem, line);
    },
    (problem) => onInvalid(problem),
    maxLineBytes,
  );
}

// ---- the agent's end of the control channel ---------------------------------------------

/** The service's answers the driver waits for. */
export type ControlReply = 'ready' | 'logged-in' | 'logged-out';

/**
 * The agent's end of fd 3: sends login, logout, requests and status asks, and matches what the
 * service sends back to whoever waits for it. When the channel closes every waiter is answered
 * (a control reply with undefined, a request with 'unavailable'), so nothing waits for ever.
 */
export class ChannelClient {
  closed = false;
  private readonly waiters = new Set<{
    type: ControlReply;
    resolve: (m: ServiceMessage | undefined) => void;
  }>();
  private readonly replies = new Map<string, Set<(reply: ServiceReply) => void>>();
  /** Status questions in flight; undefined when the channel closed before the answer. */
  private readonly statuses = new Map<string, (fields: Record<string, unknown> | undefined) => void>();
  private readonly quiescing = new Map<string, () => void>();
  private statusSeq = 0;
  private snapshotSeq = 0;
  /** When the service last said anything (monotonic ms): proof its loop was running then. */
  private lastHeardMs = -Infinity;

  constructor(
    private readonly socket: Socket,
    private readonly log: Logger,
    onClose: () => void,
    private readonly clock: Clock = systemClock,
  ) {
    const reader = messageReader(
      ServiceMessage,
      (message) => this.dispatch(message),
      (problem, line) =>
        log.warn({ problem, line: line?.slice(0, 200) }, 'ignoring an invalid line from the service on fd 3'),
    );
    socket.on('data', (chunk: Buffer) => reader.push(chunk));
    socket.on('end', () => reader.end());
    socket.on('error', (err) => log.debug({ err: err.message }, 'control channel error'));
    socket.on('close', () => {
      this.closed = true;
      for (const waiter of this.waiters) waiter.resolve(undefined);
      this.waiters.clear();
      for (const [, waiting] of this.replies) {
        for (const resolve of waiting)
          resolve({ body: 'the service stopped before answering', error: 'unavailable' });
      }
      this.replies.clear();
      for (const [, resolve] of this.statuses) resolve(undefined);
      this.statuses.clear();
      for (const [, resolve] of this.quiescing) resolve();
      this.quiescing.clear();
      onClose();
    });
  }

  send(message: AgentMessage): boolean {
    if (this.closed || !this.socket.writable) return false;
    this.socket.write(encodeMessage(message));
    return true;
  }

  /** The next message of `type`, or undefined if the channel closes first. */
  next(type: ControlReply): { message: Promise<ServiceMessage | undefined>; cancel: () => void } {
    if (this.closed) return { message: Promise.resolve(undefined), cancel: () => undefined };
    let entry!: { type: ControlReply; resolve: (m: ServiceMessage | undefined) => void };
    const message = new Promise<ServiceMessage | undefined>((resolve) => {
      entry = { type, resolve };
      this.waiters.add(entry);
    });
    return { message, cancel: () => this.waiters.delete(entry) };
  }

  /**
   * Send a request and await its reply. A request whose id is already waiting for an answer (a
   * redelivered durable request) is not sent twice: both callers get the one answer.
   */
  request(req: ServiceRequest, timeoutMs: number): Promise<ServiceReply> {
    if (this.closed) return Promise.resolve({ body: 'the service is not running', error: 'unavailable' });
    return new Promise((resolve) => {
      let waiting = this.replies.get(req.id);
      const first = waiting === undefined;
      if (!waiting) this.replies.set(req.id, (waiting = new Set()));
      const set = waiting;
      const answer = (reply: ServiceReply) => {
        cancelTimer();
        resolve(reply);
      };
      const cancelTimer = this.clock.after(timeoutMs, () => {
        set.delete(answer);
        if (set.size === 0 && this.replies.get(req.id) === set) this.replies.delete(req.id);
        resolve({ body: `the service did not answer within ${timeoutMs} ms`, error: 'unavailable' });
      });
      set.add(answer);
      if (first) {
        const sent = this.send({
          type: 'request',
          id: req.id,
          command: req.command,
          ...(req.caller !== undefined ? { caller: req.caller } : {}),
        });
        if (!sent) answer({ body: 'the service is not running', error: 'unavailable' });
      }
    });
  }

  async status(timeoutMs: number): Promise<Record<string, unknown>> {
    return (await this.askStatus(timeoutMs)) ?? {};
  }

  /** Does the service answer on its channel within `timeoutMs`? (a hung service does not) */
  async answers(timeoutMs: number): Promise<boolean> {
    return (await this.askStatus(timeoutMs)) !== undefined;
  }

  /**
   * Ask the service to hold its state still for a snapshot. Resolves with the function that
   * lets it go on once it says so, or undefined when it does not within `timeoutMs` (it cannot
   * quiesce: it is copied as it is, and the manifest says so).
   */
  quiesce(timeoutMs: number): Promise<(() => void) | undefined> {
    const id = `snapshot-${++this.snapshotSeq}`;
    const release = () => void this.send({ type: 'snapshot-done', id });
    return new Promise((resolve) => {
      const cancelTimer = this.clock.after(timeoutMs, () => {
        this.quiescing.delete(id);
        // A late `snapshot-ready` finds nobody waiting: let the service go on at once.
        this.quiescing.set(id, () => {
          this.quiescing.delete(id);
          release();
        });
        resolve(undefined);
      });
      this.quiescing.set(id, () => {
        cancelTimer();
        this.quiescing.delete(id);
        resolve(this.closed ? undefined : release);
      });
      if (!this.send({ type: 'snapshot', id })) {
        cancelTimer();
        this.quiescing.delete(id);
        resolve(undefined);
      }
    });
  }

  /** A status round trip; undefined when the service does not answer in time. */
  private askStatus(timeoutMs: number): Promise<Record<string, unknown> | undefined> {
    const id = `status-${++this.statusSeq}`;
    return new Promise((resolve) => {
      const cancelTimer = this.clock.after(timeoutMs, () => {
        this.statuses.delete(id);
        resolve(undefined);
      });
      this.statuses.set(id, (fields) => {
        cancelTimer();
        this.statuses.delete(id);
        resolve(fields);
      });
      if (!this.send({ type: 'status', id })) {
        cancelTimer();
        this.statuses.delete(id);
        resolve(undefined);
      }
    });
  }

  /** Whether the service said anything (a reply, a status, a confirmation) in the last `ms`. */
  heardWithin(ms: number): boolean {
    return !this.closed && this.clock.monotonicMs() - this.lastHeardMs <= ms;
  }

  private dispatch(message: ServiceMessage): void {
    this.lastHeardMs = this.clock.monotonicMs();
    switch (message.type) {
      case 'reply': {
        const waiting = this.replies.get(message.id);
        if (!waiting) {
          this.log.debug({ id: message.id }, 'reply to a request nobody waits for (timed out?)');
          return;
        }
        this.replies.delete(message.id);
        const reply: ServiceReply = {
          body: message.body,
          ...(message.error ? { error: message.error } : {}),
        };
        for (const resolve of waiting) resolve(reply);
        return;
      }
      case 'status':
        this.statuses.get(message.id)?.(message.fields);
        return;
      case 'snapshot-ready':
        this.quiescing.get(message.id)?.();
        return;
      default: {
        const waiter = [...this.waiters].find((w) => w.type === message.type);
        if (!waiter) {
          this.log.debug({ type: message.type }, 'unsolicited control message from the service');
          return;
        }
        this.waiters.delete(waiter);
        waiter.resolve(message);
      }
    }
  }
}

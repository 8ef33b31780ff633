// The control channel between the agent and a process service (`channel: fd3`): JSON lines
// on the service's file descriptor 3, a UNIX socket pair. One message per line, each line one
// JSON object with a `type`. The agent drives login, logout, requests and status; the service
// answers. Both ends read this file, so they agree.
//
// Objects are parsed leniently (unknown fields are dropped, not refused): a service built
// against a newer understudy may add fields, and an agent one version back must still work.
import { z } from 'zod';
import type { ServiceReply } from './driver.js';

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

export const AgentMessage = z.discriminatedUnion('type', [
  LoginMessage,
  LogoutMessage,
  RequestMessage,
  StatusRequestMessage,
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

export const ServiceMessage = z.discriminatedUnion('type', [
  ReadyMessage,
  LoggedInMessage,
  LoggedOutMessage,
  ReplyMessage,
  StatusReplyMessage,
]);
export type ServiceMessage = z.infer<typeof ServiceMessage>;

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

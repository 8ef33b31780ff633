// The CLI's client of the controller's HTTP API (pkg/api/schema.ts): bearer auth, a timeout on
// every call, problem+json turned into CliErrors with an exit code and a next step, writes
// sent on to the active controller when a standby answers, and the /v1/events SSE stream.
import { readFile } from 'node:fs/promises';
import { ApiEvent, Problem } from '../api/schema.js';
import { mayFollow } from './controller-follow.js';
import { CliError, EXIT } from './exit.js';

export { mayFollow, parseControllerAllow, type FollowDecision } from './controller-follow.js';

/** Where `cmd/controller` listens by default (pkg/config/controller.ts `http.listen`). */
export const DEFAULT_CONTROLLER_URL = 'http://127.0.0.1:8480';

/**
 * Budget of one API call. The controller answers from etcd with 2 s per etcd call and a write
 * takes a few of them; 10 s covers that with room, and a script never hangs on a dead peer.
 */
export const REQUEST_TIMEOUT_MS = 10_000;

/**
 * An event stream silent this long is taken for dead (a frozen controller or a cut network
 * sends no FIN): the controller writes a keepalive comment every 15 s (SSE_KEEPALIVE_MS in
 * pkg/http/events.ts), so two missed keepalives plus margin.
 */
export const EVENTS_IDLE_TIMEOUT_MS = 35_000;

/** Longest error body quoted back to the operator when it is not problem+json (a proxy page). */
const BODY_EXCERPT_CHARS = 200;

type Method = 'GET' | 'POST' | 'PUT' | 'DELETE';

export interface ApiClientOptions {
  /** Controller base URL (`--controller` / UNDERSTUDY_CONTROLLER). */
  baseUrl: string;
  token?: string;
  /** Where the token came from, named when it is refused: `--token-file /etc/x`. */
  tokenFrom?: string;
  timeoutMs?: number;
  /** Silence after which an event stream counts as broken (default EVENTS_IDLE_TIMEOUT_MS). */
  eventsIdleTimeoutMs?: number;
  /**
   * Controllers (URLs; scheme, host and port count) a standby's `not-active` answer may send
   * the call on to, with the token: `--controller-allow` / UNDERSTUDY_CONTROLLER_ALLOW. A
   * standby, or whoever answers in its place, could otherwise collect the token by naming
   * any URL. Empty: never follow.
   */
  allowedControllers?: readonly string[];
  /** Operator notices (following a standby to the active controller); text mode only. */
  notice?: (message: string) => void;
}

export interface RequestOptions {
  body?: unknown;
  query?: Record<string, string | number | undefined>;
  /** Say which option or file a problem's `field` is (`deadlineMs` -> `--deadline`). */
  describeField?: (field: string) => string;
  /** Stop early (the CLI gave up waiting); the request's own timeout still applies. */
  signal?: AbortSignal;
}

/** A problem+json (or other HTTP error) answer, kept whole for callers that look at the code. */
export class ApiProblemError extends CliError {
  constructor(
    message: string,
    exitCode: number,
    readonly status: number,
    readonly problem?: Problem,
  ) {
    super(message, exitCode);
    this.name = 'ApiProblemError';
  }
}

/** The exit code of an HTTP error status (see EXIT). */
export function exitCodeForStatus(status: number): number {
  if (status === 400 || status === 422) return EXIT.usage;
  if (status === 401 || status === 403) return EXIT.unauthorized;
  if (status === 404) return EXIT.notFound;
  if (status === 409) return EXIT.conflict;
  if (status === 502 || status === 503 || status === 504) return EXIT.unavailable;
  return EXIT.failed;
}

/** `--controller`: a URL, or `host:port` (http assumed); no trailing slash. */
export function normalizeBaseUrl(value: string): string {
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : `http://${value}`;
  let url: URL;
  try {
    url = new URL(withScheme);
  } catch {
    throw new CliError(
      `--controller ${value} is not a URL; give one like ${DEFAULT_CONTROLLER_URL}`,
      EXIT.usage,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new CliError(`--controller ${value} must be an http:// or https:// URL`, EXIT.usage);
  }
  return url.toString().replace(/\/+$/, '');
}

/**
 * The bearer token: `--token`, else `--token-file`, else UNDERSTUDY_TOKEN. Both flags at once
 * is a mistake worth stopping on; an explicit file beats the environment.
 */
export async function resolveToken(
  flags: { token?: string; tokenFile?: string },
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ token?: string; tokenFrom?: string }> {
  if (flags.token && flags.tokenFile) {
    throw new CliError('give --token or --token-file, not both', EXIT.usage);
  }
  if (flags.token) return { token: flags.token.trim(), tokenFrom: '--token' };
  if (flags.tokenFile) {
    const from = `--token-file ${flags.tokenFile}`;
    const text = await readFile(flags.tokenFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new CliError(
        `cannot read ${from} (${err.code ?? err.message}); give the file holding the API token`,
        EXIT.usage,
      );
    });
    const token = text.trim();
    if (!token) throw new CliError(`${from} is empty; it must hold the API token`, EXIT.usage);
    return { token, tokenFrom: from };
  }
  const fromEnv = env.UNDERSTUDY_TOKEN?.trim();
  return fromEnv ? { token: fromEnv, tokenFrom: 'UNDERSTUDY_TOKEN' } : {};
}

/** Why a fetch failed, in words that say what to do: always exit 8 (unavailable). */
export function connectionError(err: unknown, baseUrl: string, timeoutMs: number): CliError {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  const code = e.cause?.code;
  const unavailable = (message: string) => new CliError(message, EXIT.unavailable);
  if (e.name === 'TimeoutError') {
    return unavailable(
      `the controller at ${baseUrl} did not answer within ${timeoutMs / 1000}s; ` +
        'it may be overloaded or etcd slow: retry, or check it with `understudy controller`',
    );
  }
  if (code === 'ECONNREFUSED') {
    return unavailable(
      `cannot reach the controller at ${baseUrl} (connection refused): start the controller, ` +
        'or pass --controller (or set UNDERSTUDY_CONTROLLER) with its address',
    );
  }
  if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    return unavailable(`cannot resolve the host of ${baseUrl}: check --controller or UNDERSTUDY_CONTROLLER`);
  }
  return unavailable(
    `lost or could not open the connection to the controller at ${baseUrl} ` +
      `(${code ?? e.cause?.message ?? e.message}): retry, or check --controller`,
  );
}

export class ApiClient {
  /** The controller being talked to; moves to the active one after a `not-active` answer. */
  baseUrl: string;
  private readonly timeoutMs: number;

  constructor(private readonly options: ApiClientOptions) {
    this.baseUrl = normalizeBaseUrl(options.baseUrl);
    this.timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
  }

  get<T>(path: string, options: RequestOptions = {}): Promise<T> {
    return this.request<T>('GET', path, options);
  }

  post<T>(path: string, body?: unknown, options: RequestOptions = {}): Promise<T> {
    return this.request<T>('POST', path, { ...options, body });
  }

  put<T>(path: string, body: unknown, options: RequestOptions = {}): Promise<T> {
    return this.request<T>('PUT', path, { ...options, body });
  }

  delete<T>(path: string, options: RequestOptions = {}): Promise<T> {
    return this.request<T>('DELETE', path, options);
  }

  /**
   * One call. A standby controller answers writes with `not-active` naming the active one:
   * the call is sent there once if the operator listed it (mayFollow), and not in a loop (two
   * controllers that each point at the other mean an election is under way, and the operator
   * should hear that).
   */
  async request<T>(method: Method, path: string, options: RequestOptions = {}): Promise<T> {
    const first = await this.send(method, path, options);
    if (first.ok) return this.readBody<T>(first);
    const problem = await this.readError(first);
    if (problem.problem?.code !== 'not-active' || !problem.problem.active?.url) {
      throw this.problemError(problem, options);
    }
    const standby = this.baseUrl;
    const active = problem.problem.active;
    const follow = mayFollow(standby, active.url!, this.options.allowedControllers ?? []);
    if (!follow.follow) {
      throw new ApiProblemError(follow.reason, EXIT.unavailable, problem.status, problem.problem);
    }
    this.baseUrl = follow.url;
    this.options.notice?.(
      `the controller at ${standby} is a standby; sending this to the active controller ${active.name} at ${this.baseUrl}`,
    );
    const second = await this.send(method, path, options);
    if (second.ok) return this.readBody<T>(second);
    const again = await this.readError(second);
    if (again.problem?.code === 'not-active') {
      throw new ApiProblemError(
        `${standby} and ${this.baseUrl} both say they are not the active controller: an election ` +
          'is under way; retry in a few seconds (`understudy controller` shows which one is active)',
        EXIT.unavailable,
        again.status,
        again.problem,
      );
    }
    throw this.problemError(again, options);
  }

  /**
   * Subscribe to `GET /v1/events` (optionally one identity's). Resolves once the controller
   * has answered with the stream, so a failure to subscribe is an error here, not mid-loop;
   * the events then end when `signal` aborts or the controller closes the stream.
   */
  async events(identity: string | undefined, signal: AbortSignal): Promise<AsyncGenerator<ApiEvent>> {
    // The stream lives as long as the caller wants, so the timeout covers only the wait for the
    // controller's answer (headers), not the body: AbortSignal.timeout cannot be cleared.
    const connecting = new AbortController();
    const timer = setTimeout(
      () => connecting.abort(new DOMException('connect timed out', 'TimeoutError')),
      this.timeoutMs,
    );
    let res: Response;
    try {
      res = await fetch(this.url('/v1/events', { identity }), {
        headers: this.headers({ accept: 'text/event-stream' }),
        signal: AbortSignal.any([signal, connecting.signal]),
      });
    } catch (err) {
      throw signal.aborted ? err : connectionError(err, this.baseUrl, this.timeoutMs);
    } finally {
      clearTimeout(timer);
    }
    if (!res.ok) throw this.problemError(await this.readError(res), {});
    if (!res.body || !(res.headers.get('content-type') ?? '').includes('text/event-stream')) {
      await res.body?.cancel();
      throw new CliError(
        `${this.baseUrl}/v1/events did not answer with an event stream; is --controller an understudy controller?`,
        EXIT.failed,
      );
    }
    return decodeEvents(
      readSse(res.body, signal, this.options.eventsIdleTimeoutMs ?? EVENTS_IDLE_TIMEOUT_MS),
    );
  }

  private url(path: string, query: RequestOptions['query'] = {}): string {
    const params = new URLSearchParams();
    for (const [key, value] of Object.entries(query)) if (value !== undefined) params.set(key, String(value));
    const search = params.toString();
    return `${this.baseUrl}${path}${search ? `?${search}` : ''}`;
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return {
      accept: 'application/json',
      ...extra,
      ...(this.options.token ? { authorization: `Bearer ${this.options.token}` } : {}),
    };
  }

  private async send(method: Method, path: string, options: RequestOptions): Promise<Response> {
    const timeout = AbortSignal.timeout(this.timeoutMs);
    const hasBody = options.body !== undefined;
    try {
      return await fetch(this.url(path, options.query), {
        method,
        headers: this.headers(hasBody ? { 'content-type': 'application/json' } : {}),
        ...(hasBody ? { body: JSON.stringify(options.body) } : {}),
        signal: options.signal ? AbortSignal.any([timeout, options.signal]) : timeout,
      });
    } catch (err) {
      throw connectionError(err, this.baseUrl, this.timeoutMs);
    }
  }

  private async text(res: Response): Promise<string> {
    try {
      return await res.text();
    } catch (err) {
      throw connectionError(err, this.baseUrl, this.timeoutMs);
    }
  }

  private async readBody<T>(res: Response): Promise<T> {
    const text = await this.text(res);
    if (res.status === 204 || text === '') return undefined as T;
    try {
      return JSON.parse(text) as T;
    } catch {
      throw new CliError(
        `the controller at ${this.baseUrl} answered HTTP ${res.status} with something other than JSON; ` +
          'is --controller an understudy controller?',
        EXIT.failed,
      );
    }
  }

  private async readError(res: Response): Promise<{ status: number; problem?: Problem; text: string }> {
    const text = await this.text(res);
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      return { status: res.status, text };
    }
    const parsed = Problem.safeParse(json);
    if (parsed.success) return { status: res.status, problem: parsed.data, text };
    // Not our problem shape (another server version, a proxy): still quote its detail if any.
    const detail = (json as { detail?: unknown } | null)?.detail;
    return { status: res.status, text: typeof detail === 'string' ? detail : text };
  }

  private problemError(
    error: { status: number; problem?: Problem; text: string },
    options: RequestOptions,
  ): ApiProblemError {
    const { status, problem } = error;
    const exitCode = exitCodeForStatus(status);
    const detail = problem
      ? problem.detail
      : `HTTP ${status}${error.text ? `: ${error.text.trim().slice(0, BODY_EXCERPT_CHARS)}` : ''}`;
    const at = this.baseUrl;
    let message: string;
    if (status === 401) {
      message = this.options.token
        ? `the controller at ${at} refused the token from ${this.options.tokenFrom ?? '--token'}: ${detail}`
        : `the controller at ${at} wants an API token: set UNDERSTUDY_TOKEN or pass --token-file (${detail})`;
    } else if (status === 403) {
      message = `the token from ${this.options.tokenFrom ?? '--token'} may not do this: ${detail}`;
    } else if (problem?.code === 'not-active') {
      message =
        `${detail}; the active controller is ${problem.active?.name ?? 'unknown'} and it advertises ` +
        'no URL: pass --controller with its address';
    } else {
      message = problem?.field ? withField(detail, problem.field, options.describeField) : detail;
    }
    return new ApiProblemError(message, exitCode, status, problem);
  }
}

/**
 * The problem's detail with its field named as the operator knows it: `to: must be...` in the
 * detail becomes `--to: must be...`; a detail that does not name the field gets it in front.
 */
export function withField(detail: string, field: string, describe?: (field: string) => string): string {
  const name = describe?.(field) ?? field;
  if (detail.includes(`${field}:`)) return detail.replace(`${field}:`, `${name}:`);
  return `${name}: ${detail}`;
}

// --- server-sent events -------------------------------------------------------------------

/** One SSE message: `event:` (default `message`), the joined `data:` lines, the last `id:`. */
export interface SseMessage {
  event: string;
  data: string;
  id?: string;
}

/**
 * Incremental parser of the text/event-stream format (WHATWG HTML, "server-sent events"):
 * feed it decoded text in any chunking; it returns the messages completed so far.
 */
export class SseParser {
  private buffer = '';
  private event = '';
  private data: string[] = [];
  private lastId: string | undefined;
  private started = false;

  push(text: string): SseMessage[] {
    this.buffer += text;
    if (!this.started && this.buffer.length > 0) {
      this.started = true;
      if (this.buffer.startsWith('\uFEFF')) this.buffer = this.buffer.slice(1);
    }
    const out: SseMessage[] = [];
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const c = this.buffer[i];
      if (c !== '\n' && c !== '\r') continue;
      // A CR at the very end may be the first half of CRLF: wait for the next chunk.
      if (c === '\r' && i === this.buffer.length - 1) break;
      this.line(this.buffer.slice(start, i), out);
      if (c === '\r' && this.buffer[i + 1] === '\n') i++;
      start = i + 1;
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** End of stream: a lone trailing CR ends its line; an event without its blank line is dropped. */
  end(): SseMessage[] {
    const out: SseMessage[] = [];
    if (this.buffer.endsWith('\r')) this.line(this.buffer.slice(0, -1), out);
    this.buffer = '';
    return out;
  }

  private line(line: string, out: SseMessage[]): void {
    if (line === '') {
      this.dispatch(out);
      return;
    }
    if (line.startsWith(':')) return; // comment (keepalive)
    const colon = line.indexOf(':');
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') this.event = value;
    else if (field === 'data') this.data.push(value);
    else if (field === 'id' && !value.includes('\0')) this.lastId = value;
    // `retry` and unknown fields are ignored: the CLI does not reconnect by itself.
  }

  private dispatch(out: SseMessage[]): void {
    if (this.data.length > 0) {
      out.push({
        event: this.event || 'message',
        data: this.data.join('\n'),
        ...(this.lastId !== undefined ? { id: this.lastId } : {}),
      });
    }
    this.event = '';
    this.data = [];
  }
}

/**
 * Messages from an SSE body until it ends; ends quietly when `signal` aborts, and fails when
 * nothing at all (not even a keepalive) arrives for `idleMs`.
 */
export async function* readSse(
  body: ReadableStream<Uint8Array>,
  signal?: AbortSignal,
  idleMs?: number,
): AsyncGenerator<SseMessage> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SseParser();
  try {
    for (;;) {
      const { done, value } = await withIdleLimit(reader.read(), idleMs);
      if (done) break;
      yield* parser.push(decoder.decode(value, { stream: true }));
    }
    yield* parser.push(decoder.decode());
    yield* parser.end();
  } catch (err) {
    if (signal?.aborted) return;
    throw err;
  } finally {
    await reader.cancel().catch(() => undefined);
  }
}

async function withIdleLimit<T>(read: Promise<T>, idleMs: number | undefined): Promise<T> {
  if (idleMs === undefined) return read;
  let timer: NodeJS.Timeout | undefined;
  const silence = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(new Error(`the event stream sent nothing for ${idleMs / 1000}s`)),
      idleMs,
    );
  });
  try {
    return await Promise.race([read, silence]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * API events from SSE messages. `data:` is the event JSON; its `type` may also come only as
 * `event:`. Messages that are not valid events (another server version) are skipped.
 */
export async function* decodeEvents(messages: AsyncIterable<SseMessage>): AsyncGenerator<ApiEvent> {
  for await (const message of messages) {
    let json: unknown;
    try {
      json = JSON.parse(message.data);
    } catch {
      continue;
    }
    if (json && typeof json === 'object' && !('type' in json)) json = { type: message.event, ...json };
    const parsed = ApiEvent.safeParse(json);
    if (parsed.success) yield parsed.data;
  }
}

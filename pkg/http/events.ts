// The event stream (server-sent events): what the core publishes, filtered per identity,
// bounded per client.
import { streamSSE, type SSEStreamingApi } from 'hono/streaming';
import { ApiError, type ApiEvent, type ControllerApi } from '../api/schema.js';
import { Name } from '../lease/keys.js';
import type { Call } from './validate.js';

/**
 * An SSE stream sends a comment this often when nothing happens: proxies and load balancers
 * drop connections idle for 30-60 s, and a client only notices a dead controller when a
 * write it expected does not arrive.
 */
export const SSE_KEEPALIVE_MS = 15_000;

/**
 * Events queued for one SSE client that does not read them. Past this the stream is cut: a
 * stalled client must not grow the controller's memory without bound; it reconnects and
 * re-reads the state instead.
 */
export const SSE_MAX_QUEUED = 1_000;

/** The SSE route: its streams are cut at once on close (clients reconnect elsewhere). */
export const EVENTS_PATH = '/v1/events';
/** The dashboard's stream of HTML fragments (pkg/dashboard), cut on close the same way. */
export const DASHBOARD_STREAM_PATH = '/ui/stream';
export const STREAM_PATHS: ReadonlySet<string> = new Set([EVENTS_PATH, DASHBOARD_STREAM_PATH]);

export async function events(call: Call): Promise<Response> {
  const identity = call.c.req.query('identity');
  if (identity !== undefined) {
    const parsed = Name.safeParse(identity);
    if (!parsed.success) {
      throw new ApiError(
        'bad-request',
        `query.identity '${identity}': ${parsed.error.issues[0]!.message}`,
        'query.identity',
      );
    }
  }
  const wanted = identity === undefined ? () => true : (e: ApiEvent) => concerns(e, identity);
  return streamSSE(
    call.c,
    (stream) =>
      pumpEvents(stream, call.api, (e) => (wanted(e) ? [{ event: e.type, data: JSON.stringify(e) }] : [])),
    async (err) => {
      call.logger.error({ err }, 'event stream failed; the client gets an error event and reconnects');
    },
  );
}

/** One SSE message (the stream numbers them). */
export interface SseMessage {
  event: string;
  data: string;
}

/**
 * Streams the core's events, each turned into zero or more messages by `toMessages`, until
 * the client goes away. There is no replay (Last-Event-ID is not honoured): a client that
 * reconnects re-reads the state it cares about. The dashboard's stream (pkg/dashboard) sends
 * HTML through the same pump.
 */
export async function pumpEvents(
  stream: SSEStreamingApi,
  api: ControllerApi,
  toMessages: (e: ApiEvent) => SseMessage[],
): Promise<void> {
  let id = 0;
  let queued = 0;
  // Writes are chained so events go out in the order the core published them.
  let writing = Promise.resolve();
  const written = () => {
    queued--;
  };
  const enqueue = (write: () => Promise<unknown>) => {
    if (queued >= SSE_MAX_QUEUED) return stream.abort();
    queued++;
    writing = writing.then(write).then(written, written);
  };
  const unsubscribe = api.subscribe((event) => {
    let messages: SseMessage[];
    try {
      messages = toMessages(event);
    } catch {
      // This runs inside the core's publish: a bad render must not reach the controller's
      // round or the other subscribers. The client re-reads the state when it reconnects.
      return stream.abort();
    }
    for (const message of messages) {
      const numbered = { ...message, id: String(++id) };
      enqueue(() => stream.writeSSE(numbered));
    }
  });
  const keepalive = setInterval(() => enqueue(() => stream.write(': keepalive\n\n')), SSE_KEEPALIVE_MS);
  try {
    await new Promise<void>((resolve) => {
      if (stream.aborted) resolve();
      stream.onAbort(resolve);
    });
  } finally {
    clearInterval(keepalive);
    unsubscribe();
  }
}

/** Node events describe a host, not an identity: a filtered stream leaves them out. */
function concerns(event: ApiEvent, identity: string): boolean {
  switch (event.type) {
    case 'identity':
      return event.identity.identity === identity;
    case 'workflow':
      return event.workflow.identity === identity;
    case 'alarm':
      return event.identity === identity;
    case 'node':
      return false;
  }
}

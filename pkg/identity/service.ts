// The service's end of the control channel (channel.ts), for process services written in
// TypeScript: open fd 3, say `ready`, turn login/logout/request/status messages into handler
// calls, and exit when the agent goes away. That last part is a second lifeline for our own
// services: the agent's end of fd 3 closes however the agent dies, so EOF means "stop now".
import { fstatSync } from 'node:fs';
import { Socket } from 'node:net';
import {
  AgentMessage,
  encodeMessage,
  MAX_LINE_BYTES,
  messageReader,
  SNAPSHOT_HOLD_MAX_MS,
  type ServiceMessage,
} from './channel.js';
import type { LoginContext, ServiceReply, ServiceRequest } from './driver.js';

/** The agent is gone: nothing to report to, and no one may think we are still logged in. */
const AGENT_GONE_EXIT = 0;
/** Login or logout failed: exiting tells the agent at once (it sees the exit), not after a timeout. */
const CONTROL_FAILED_EXIT = 1;

export interface ChannelHandlers {
  /** Log in under the shared name for this term; throw if you cannot (the process then exits). */
  onLogin(ctx: LoginContext): Promise<void> | void;
  /** Log out; throw if you cannot (the process then exits, which also ends the login). */
  onLogout(): Promise<void> | void;
  /** Answer one request. A throw becomes an `internal` error reply. */
  onRequest(req: ServiceRequest): Promise<ServiceReply> | ServiceReply;
  /** Extra STATUS fields. */
  onStatus?(): Promise<Record<string, unknown>> | Record<string, unknown>;
  /**
   * Make the state directory consistent on disk and hold writes until the returned function is
   * called (the agent copied it, or SNAPSHOT_HOLD_MAX_MS passed). Without it the service is
   * copied as it runs.
   */
  onSnapshot?(): Promise<() => void> | (() => void);
}

export interface ServeOptions {
  /** The channel's descriptor; the agent always uses 3. */
  fd?: number;
  /** How to end the process (tests replace it). Default: process.exit. */
  exit?: (code: number) => void;
  /** Where protocol problems are reported. Default: stderr (the agent logs it). */
  warn?: (message: string) => void;
}

export interface ChannelServer {
  readonly loggedIn: boolean;
}

/**
 * Serve the control channel. Throws at once, saying why, when fd 3 is not a socket: the program
 * was started by hand rather than by an agent with `channel: fd3`.
 */
export function serveChannel(handlers: ChannelHandlers, opts: ServeOptions = {}): ChannelServer {
  const fd = opts.fd ?? 3;
  const exit = opts.exit ?? ((code: number) => process.exit(code));
  const warn = opts.warn ?? ((message: string) => process.stderr.write(`understudy channel: ${message}\n`));
  let isSocket = false;
  try {
    isSocket = fstatSync(fd).isSocket();
  } catch {
    // not open at all
  }
  if (!isSocket) {
    throw new Error(
      `fd ${fd} is not the understudy control channel: run this program as a process service with 'channel: fd3' (the agent opens it), not by hand`,
    );
  }
  const socket = new Socket({ fd, readable: true, writable: true });
  const state = { loggedIn: false };
  let ended = false;

  const send = (message: ServiceMessage) => {
    if (ended || !socket.writable) return;
    let line = encodeMessage(message);
    if (Buffer.byteLength(line) > MAX_LINE_BYTES && message.type === 'reply') {
      line = encodeMessage({
        type: 'reply',
        id: message.id,
        body: `reply too large for the control channel (over ${MAX_LINE_BYTES} bytes)`,
        error: 'internal',
      });
    }
    socket.write(line);
  };

  const agentGone = () => {
    if (ended) return;
    ended = true;
    exit(AGENT_GONE_EXIT);
  };

  // Login and logout run one at a time, in order: a logout right behind a login must find the
  // login finished. Requests and status run concurrently with them and with each other.
  let control: Promise<void> = Promise.resolve();
  /** Holds of the state directory, by snapshot id: each ends at `snapshot-done` or its timer. */
  const holds = new Map<string, () => void>();
  const serially = (step: () => Promise<void>) => {
    control = control.then(step);
  };

  const dispatch = (message: AgentMessage) => {
    switch (message.type) {
      case 'login':
        serially(async () => {
          try {
            await handlers.onLogin({
              identity: message.identity,
              node: message.node,
              token: BigInt(message.token),
              ...(message.credentialFile ? { credentialFile: message.credentialFile } : {}),
            });
          } catch (err) {
            warn(`login failed, exiting: ${(err as Error).message}`);
            ended = true;
            exit(CONTROL_FAILED_EXIT);
            return;
          }
          state.loggedIn = true;
          send({ type: 'logged-in', token: message.token });
        });
        return;
      case 'logout':
        serially(async () => {
          try {
            await handlers.onLogout();
          } catch (err) {
            warn(`logout failed, exiting: ${(err as Error).message}`);
            ended = true;
            exit(CONTROL_FAILED_EXIT);
            return;
          }
          state.loggedIn = false;
          send({ type: 'logged-out' });
        });
        return;
      case 'request': {
        const req: ServiceRequest = {
          id: message.id,
          command: message.command,
          ...(message.caller !== undefined ? { caller: message.caller } : {}),
        };
        void (async () => {
          let reply: ServiceReply;
          try {
            reply = await handlers.onRequest(req);
          } catch (err) {
            reply = {
              body: `the service failed on this request: ${(err as Error).message}`,
              error: 'internal',
            };
          }
          send({
            type: 'reply',
            id: message.id,
            body: reply.body,
            ...(reply.error ? { error: reply.error } : {}),
          });
        })();
        return;
      }
      case 'status':
        void (async () => {
          let fields: Record<string, unknown> = {};
          try {
            fields = (await handlers.onStatus?.()) ?? {};
          } catch (err) {
            warn(`status failed: ${(err as Error).message}`);
          }
          send({ type: 'status', id: message.id, fields });
        })();
        return;
      case 'snapshot': {
        const onSnapshot = handlers.onSnapshot;
        if (!onSnapshot) return; // cannot quiesce: the agent copies the directory as it is
        void (async () => {
          let resume: () => void;
          try {
            resume = await onSnapshot();
          } catch (err) {
            warn(`cannot hold the state for a snapshot: ${(err as Error).message}`);
            return;
          }
          const timer = setTimeout(() => end(), SNAPSHOT_HOLD_MAX_MS);
          timer.unref();
          const end = () => {
            if (!holds.delete(message.id)) return;
            clearTimeout(timer);
            resume();
          };
          holds.set(message.id, end);
          send({ type: 'snapshot-ready', id: message.id });
        })();
        return;
      }
      case 'snapshot-done':
        holds.get(message.id)?.();
        return;
    }
  };

  const reader = messageReader(AgentMessage, dispatch, (problem) =>
    warn(`ignoring an invalid line: ${problem}`),
  );
  socket.on('data', (chunk: Buffer) => reader.push(chunk));
  socket.on('end', agentGone);
  socket.on('close', agentGone);
  socket.on('error', (err) => {
    warn(`channel error: ${err.message}`);
    agentGone();
  });
  send({ type: 'ready' });

  return {
    get loggedIn() {
      return state.loggedIn;
    },
  };
}

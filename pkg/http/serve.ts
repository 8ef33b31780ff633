// Listening (HTTP or HTTPS) and closing without letting a stuck request or an open event
// stream hold a controller's shutdown up.
import { readFile } from 'node:fs/promises';
import type { Server as HttpServer, IncomingMessage, ServerResponse } from 'node:http';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { serve } from '@hono/node-server';
import type { Hono } from 'hono';
import { STREAM_PATHS } from './events.js';

/**
 * On close, in-flight requests get this long to finish before their connections are cut, so
 * a stuck request cannot hold a controller's shutdown (and its successor) up.
 */
const CLOSE_GRACE_MS = 2_000;

export interface HttpServerHandle {
  /** Base URL, e.g. http://127.0.0.1:8480 (wildcard hosts are shown as localhost). */
  url: string;
  /** The port actually bound (the real one when asked for port 0). */
  port: number;
  /** Stops accepting, lets in-flight requests finish briefly, then cuts what remains (SSE). */
  close(): Promise<void>;
}

export async function serveHttp(
  app: Hono,
  opts: { listen: string; tls?: { cert: string; key: string } },
): Promise<HttpServerHandle> {
  const { host, port } = parseListen(opts.listen);
  const tls = opts.tls ? await readTls(opts.tls) : undefined;
  const fetch = app.fetch;
  return new Promise((resolve, reject) => {
    const onListening = (info: { port: number }) => {
      server.off('error', onError);
      const scheme = tls ? 'https' : 'http';
      const close = closer(server, trackEventStreams(server));
      resolve({ url: `${scheme}://${urlHost(host)}:${info.port}`, port: info.port, close });
    };
    const server = (
      tls
        ? serve(
            { fetch, hostname: host, port, createServer: createHttpsServer, serverOptions: tls },
            onListening,
          )
        : serve({ fetch, hostname: host, port }, onListening)
    ) as HttpServer | HttpsServer;
    const onError = (err: Error) =>
      reject(
        new Error(`cannot listen on ${opts.listen}: ${err.message}; free the port or change http.listen`),
      );
    server.once('error', onError);
  });
}

/**
 * Whether `listen` (`host:port`) is reachable from this host only. Bearer tokens sent to a
 * controller listening beyond loopback without TLS cross the network in clear text.
 */
export function listensOnLoopbackOnly(listen: string): boolean {
  const { host } = parseListen(listen);
  return host === 'localhost' || host === '::1' || /^127\.\d+\.\d+\.\d+$/.test(host);
}

/** `host:port` or `[v6]:port`. */
function parseListen(listen: string): { host: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(listen);
  const port = Number(match?.[3]);
  if (!match || port > 65_535) {
    throw new Error(`http.listen '${listen}' is not host:port (e.g. 127.0.0.1:8480, [::1]:8480, 0.0.0.0:0)`);
  }
  return { host: (match[1] ?? match[2])!, port };
}

function urlHost(host: string): string {
  if (host === '0.0.0.0' || host === '::') return 'localhost';
  return host.includes(':') ? `[${host}]` : host;
}

async function readTls(files: { cert: string; key: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const read = async (field: 'cert' | 'key') => {
    try {
      return await readFile(files[field]);
    } catch (err) {
      throw new Error(`cannot read http.tls.${field} ${files[field]}: ${(err as Error).message}`);
    }
  };
  return { cert: await read('cert'), key: await read('key') };
}

/** Open SSE responses: they never end on their own, so close() ends them instead of waiting. */
function trackEventStreams(server: HttpServer | HttpsServer): Set<ServerResponse> {
  const streams = new Set<ServerResponse>();
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (!STREAM_PATHS.has(new URL(req.url ?? '/', 'http://any').pathname)) return;
    streams.add(res);
    res.once('close', () => streams.delete(res));
  });
  return streams;
}

function closer(server: HttpServer | HttpsServer, streams: Set<ServerResponse>): () => Promise<void> {
  let closing: Promise<void> | undefined;
  return () =>
    (closing ??= new Promise<void>((resolve, reject) => {
      const cutOff = setTimeout(() => server.closeAllConnections(), CLOSE_GRACE_MS);
      cutOff.unref();
      server.close((err) => {
        clearTimeout(cutOff);
        if (err) reject(err);
        else resolve();
      });
      server.closeIdleConnections();
      for (const res of streams) res.destroy();
    }));
}

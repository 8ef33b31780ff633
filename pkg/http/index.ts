// The controller's HTTP edge: the API server (pkg/api says what it serves).
export { createApp, MAX_BODY_BYTES, type AppOptions } from './app.js';
export { SSE_KEEPALIVE_MS, SSE_MAX_QUEUED } from './events.js';
export { listensOnLoopbackOnly, serveHttp, type HttpServerHandle } from './serve.js';

// The controller's HTTP API, as data: every request body and query, every response shape, the
// roles and the error document. The server (pkg/http), the OpenAPI document and the CLI
// (pkg/cli) all read these files, so they cannot drift apart. One file per subject; this one
// gathers them.
export * from './problem.js';
export * from './identities.js';
export * from './workflows.js';
export * from './events.js';
export * from './routes.js';
export * from './snapshots.js';
export * from './clones.js';

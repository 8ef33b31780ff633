// Snapshots of a service's state directory: taking one as a stream (pack.ts), what it claims
// (manifest.ts), restoring it atomically after checking every file (restore.ts), and keeping
// it where standbys find it, under the fencing token of the term that took it (store.ts).
export * from './manifest.js';
export * from './pack.js';
export * from './restore.js';
export * from './store.js';

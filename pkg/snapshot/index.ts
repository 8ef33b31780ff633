// Snapshots of a service's state directory: taking one as a stream (pack.ts), what it claims
// (manifest.ts), and restoring it atomically after checking every file (restore.ts).
export * from './manifest.js';
export * from './pack.js';
export * from './restore.js';

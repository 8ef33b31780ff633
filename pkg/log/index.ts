// One root logger per process. Redaction is configured here and only here: pino's `redact`
// given to child() replaces the parent's list instead of adding to it, so a child with its
// own list would leak what the root hides (LIBRARY-NOTES.md).
import { pino, type Logger, type LevelWithSilent } from 'pino';

/** Paths that may hold secrets anywhere in a log record (credentials, nkey seeds, passwords). */
export const REDACTED_PATHS = [
  'credential',
  '*.credential',
  'secret',
  '*.secret',
  'seed',
  '*.seed',
  'password',
  '*.password',
  'pass',
  '*.pass',
  'authorization',
  '*.authorization',
  'headers.authorization',
  'bearer',
  '*.bearer',
];

export interface LoggerOptions {
  name: string;
  level?: LevelWithSilent;
  /** Extra fields on every record (node, component). */
  base?: Record<string, unknown>;
  /** Write here instead of stdout (tests). */
  destination?: NodeJS.WritableStream;
}

export function createLogger(opts: LoggerOptions): Logger {
  const options = {
    name: opts.name,
    level: opts.level ?? (process.env.UNDERSTUDY_LOG_LEVEL as LevelWithSilent | undefined) ?? 'info',
    base: { pid: process.pid, ...opts.base },
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    timestamp: pino.stdTimeFunctions.isoTime,
    formatters: { level: (label: string) => ({ level: label }) },
  };
  return opts.destination ? pino(options, opts.destination as never) : pino(options);
}

export type { Logger };

/**
 * A server URL as it may be logged or shown: `nats://user:secret@host:4222` becomes
 * `nats://[redacted]@host:4222`. Userinfo is a credential, and URLs travel in messages and
 * strings that path-based redaction never sees. Anything that is not a URL is returned as is.
 */
export function withoutUserinfo(url: string): string {
  return url.replace(/^([a-z][a-z0-9+.-]*:\/\/)[^@/?#]*@/i, '$1[redacted]@');
}

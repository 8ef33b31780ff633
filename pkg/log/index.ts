// One root logger per process. Redaction is configured here and only here: pino's `redact`
// given to child() replaces the parent's list instead of adding to it, so a child with its
// own list would leak what the root hides (LIBRARY-NOTES.md). Records are JSON lines; on a
// terminal they are shown readable (pino-pretty, in this thread: a transport would start a
// worker thread per process), redacted the same way, since pino redacts before formatting.
import { pino, type Logger, type LevelWithSilent } from 'pino';
import pretty from 'pino-pretty';

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
  /** Default: JSON, or pretty on a terminal (logFormat); JSON to a given destination. */
  format?: LogFormat;
}

export type LogFormat = 'json' | 'pretty';

/**
 * JSON unless a person is watching: pretty on a terminal. UNDERSTUDY_LOG_FORMAT=json|pretty
 * decides instead (json for a terminal piped into jq; pretty under a supervisor that keeps
 * the text). Anything else is refused, naming the variable.
 */
export function logFormat(isTTY: boolean, env: NodeJS.ProcessEnv = process.env): LogFormat {
  const asked = env.UNDERSTUDY_LOG_FORMAT;
  if (asked === undefined || asked === '') return isTTY ? 'pretty' : 'json';
  if (asked === 'json' || asked === 'pretty') return asked;
  throw new Error(`UNDERSTUDY_LOG_FORMAT must be json or pretty, not '${asked}'; unset it for the default`);
}

/** The readable form of the records, written to `destination`. */
export function prettyStream(destination: NodeJS.WritableStream, colorize: boolean) {
  return pretty({
    destination,
    colorize,
    sync: true,
    translateTime: 'SYS:HH:MM:ss.l',
    ignore: 'pid,hostname',
    singleLine: true,
  });
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
  const tty = !opts.destination && process.stdout.isTTY === true;
  const format = opts.format ?? (opts.destination ? 'json' : logFormat(tty));
  if (format === 'pretty') return pino(options, prettyStream(opts.destination ?? process.stdout, tty));
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

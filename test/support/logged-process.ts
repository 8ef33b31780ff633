// A real process of ours (agent, controller) run through tsx, whose JSON log lines are parsed
// so tests can wait for what it reports.
import type { ChildProcess } from 'node:child_process';
import { rm } from 'node:fs/promises';
import { waitFor, withTimeout } from './wait.js';

/** Start through tsx on a loaded 2-core machine. */
export const PROCESS_START_TIMEOUT_MS = 30_000;

export interface LogRecord {
  level: string;
  msg: string;
  identity?: string;
  from?: string;
  to?: string;
  token?: string;
  [key: string]: unknown;
}

export class LoggedProcess {
  readonly records: LogRecord[] = [];
  readonly otherLines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  private buffer = '';

  protected constructor(
    readonly name: string,
    readonly child: ChildProcess,
    readonly dir: string,
  ) {
    const onData = (chunk: Buffer) => {
      this.buffer += chunk.toString();
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl);
        this.buffer = this.buffer.slice(nl + 1);
        try {
          this.records.push(JSON.parse(line) as LogRecord);
        } catch {
          this.otherLines.push(line);
        }
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  }

  get pid(): number {
    return this.child.pid!;
  }

  /** All output as text (for failure messages). */
  output(): string {
    return [...this.otherLines, ...this.records.map((r) => JSON.stringify(r))].join('\n');
  }

  /** First record at index ≥ from matching the predicate. */
  async waitForRecord(
    match: (r: LogRecord) => boolean,
    what: string,
    opts: { timeoutMs?: number; from?: number } = {},
  ): Promise<LogRecord> {
    return waitFor(() => this.records.slice(opts.from ?? 0).find(match), {
      what: `${this.name}: ${what}`,
      timeoutMs: opts.timeoutMs ?? PROCESS_START_TIMEOUT_MS,
      intervalMs: 20,
    });
  }

  kill(signal: NodeJS.Signals): void {
    if (this.child.exitCode === null && this.child.signalCode === null) this.child.kill(signal);
  }

  /** SIGTERM, then SIGKILL if it does not exit in time; removes its directory. */
  async stop(timeoutMs = 15_000): Promise<void> {
    this.kill('SIGTERM');
    await withTimeout(this.exited, timeoutMs, `${this.name} to exit after SIGTERM`).catch(() => {
      this.kill('SIGKILL');
      return this.exited;
    });
    await rm(this.dir, { recursive: true, force: true });
  }
}

// A service process's one-letter state from /proc/<pid>/stat, through a descriptor held for
// the process's life. Every led service is checked each heartbeat and on every PING: opening,
// reading and closing the file each time (four system calls and a string) was the largest
// part of an idle agent's CPU; one positioned read of an open descriptor is one call. The
// descriptor names the process it was opened for, never a later one with the same pid.
import { closeSync, openSync, readSync } from 'node:fs';

/** Enough for the state field: it follows the command name, at most 16 bytes plus the pid. */
const HEAD_BYTES = 128;
const CLOSE_PAREN = 0x29;

export class ProcStat {
  private fd: number | undefined;
  private readonly buf = Buffer.alloc(HEAD_BYTES);

  /** Opened at once; where /proc is not there (or the process is already gone) state() says undefined. */
  constructor(pid: number) {
    try {
      this.fd = openSync(`/proc/${pid}/stat`, 'r');
    } catch {
      this.fd = undefined;
    }
  }

  /** 'R', 'S', 'T', 'Z', …; undefined when it cannot be read (no /proc, process reaped). */
  state(): string | undefined {
    if (this.fd === undefined) return undefined;
    let n: number;
    try {
      n = readSync(this.fd, this.buf, 0, HEAD_BYTES, 0);
    } catch {
      return undefined;
    }
    // The command name (field 2) may hold spaces and parentheses: the state follows the last ')'.
    const close = this.buf.subarray(0, n).lastIndexOf(CLOSE_PAREN);
    if (close < 0 || close + 2 >= n) return undefined;
    return String.fromCharCode(this.buf[close + 2]!);
  }

  /**
   * Gone from the kernel (reaped): a read of the descriptor fails with ESRCH once the process it
   * was opened for no longer exists, whatever now holds its pid. False when it cannot tell.
   */
  gone(): boolean {
    if (this.fd === undefined) return false;
    try {
      readSync(this.fd, this.buf, 0, HEAD_BYTES, 0);
      return false;
    } catch (err) {
      return (err as NodeJS.ErrnoException).code === 'ESRCH';
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    try {
      closeSync(this.fd);
    } catch {
      // Already closed: nothing held.
    }
    this.fd = undefined;
  }
}

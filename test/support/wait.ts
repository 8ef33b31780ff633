// Waiting on conditions, never on the clock alone. Every wait is bounded and, when it gives
// up, says what it was waiting for and the last reason the condition was false.

export interface WaitOptions {
  /** What is awaited, for the error message ("etcd at localhost:1234 to answer"). */
  what: string;
  timeoutMs: number;
  /** Time between two checks; small against timeoutMs, large enough not to spin. */
  intervalMs?: number;
}

export class WaitTimeoutError extends Error {
  constructor(
    readonly what: string,
    readonly timeoutMs: number,
    readonly lastError: unknown,
  ) {
    const last =
      lastError instanceof Error ? lastError.message : lastError ? String(lastError) : 'still false';
    super(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${last})`);
    this.name = 'WaitTimeoutError';
  }
}

export const delay = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Poll `check` until it returns a value other than `false`/`undefined` (or resolves without
 * throwing, when it returns nothing meaningful) and return that value.
 */
export async function waitFor<T>(
  check: () => Promise<T | false | undefined> | T | false | undefined,
  opts: WaitOptions,
): Promise<T> {
  const interval = opts.intervalMs ?? 50;
  const deadline = Date.now() + opts.timeoutMs;
  let lastError: unknown;
  for (;;) {
    try {
      const value = await check();
      if (value !== false && value !== undefined) return value;
      lastError = undefined;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) throw new WaitTimeoutError(opts.what, opts.timeoutMs, lastError);
    await delay(Math.min(interval, Math.max(0, deadline - Date.now())));
  }
}

/** Resolve with `promise`, or reject naming `what` if it does not settle within `ms`. */
export async function withTimeout<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new WaitTimeoutError(what, ms, undefined)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A promise a test settles when it likes. */
export function deferred<T>() {
  let resolve!: (v: T) => void;
  let reject!: (e: Error) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

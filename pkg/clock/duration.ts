// Durations as operators write them in specs and configs: whole numbers, bounded, and refused
// with a message that names the bound and its size ("at most 3600000 ms (1 h)"). The field
// itself is named by whoever reports the issue (its path).
import { z } from 'zod';

/**
 * The longest delay a Node timer holds: setTimeout takes a signed 32-bit count of ms and fires
 * *at once* (with only a warning) above it, so a timeout of 2^31 ms acts like 1 ms. Every
 * duration in a spec or config is bounded well below this; the helpers refuse a larger bound.
 */
export const TIMER_MAX_MS = 2 ** 31 - 1;

/** 90000 → "90000 ms (1.5 min)": the raw value to type, and a size to recognise. */
export function formatMs(ms: number): string {
  const human =
    ms >= 86_400_000
      ? `${+(ms / 86_400_000).toFixed(2)} days`
      : ms >= 3_600_000
        ? `${+(ms / 3_600_000).toFixed(2)} h`
        : ms >= 60_000
          ? `${+(ms / 60_000).toFixed(2)} min`
          : ms >= 1_000
            ? `${+(ms / 1_000).toFixed(2)} s`
            : undefined;
  return human ? `${ms} ms (${human})` : `${ms} ms`;
}

/** A schema's own bounds are checked where it is built: a wrong one fails at import, loudly. */
function assertBounds(helper: string, min: number, max: number, limit: number): void {
  if (!(Number.isInteger(min) && Number.isInteger(max) && 0 <= min && min <= max && max <= limit)) {
    throw new Error(`${helper}(${min}, ${max}): bounds must be integers with 0 ≤ min ≤ max ≤ ${limit}`);
  }
}

/**
 * A whole number of milliseconds in [min, max]. The error names the bound it broke; the field
 * is named by whoever reports the issue (its path). `max` is this field's sensible limit, and
 * never above TIMER_MAX_MS, so a value that passes can always be given to setTimeout.
 */
export function durationMs(min: number, max: number) {
  assertBounds('durationMs', min, max, TIMER_MAX_MS);
  const range = `between ${formatMs(min)} and ${formatMs(max)}`;
  return z
    .number({ error: `must be a number of milliseconds ${range}` })
    .int(`must be a whole number of milliseconds ${range}`)
    .min(min, `must be at least ${formatMs(min)}; raise it`)
    .max(max, `must be at most ${formatMs(max)}; lower it`);
}

/** A whole number of seconds in [min, max]; as with durationMs, max × 1000 ms fits a timer. */
export function durationSeconds(min: number, max: number) {
  assertBounds('durationSeconds', min, max, Math.floor(TIMER_MAX_MS / 1000));
  const range = `between ${min} s and ${max} s`;
  return z
    .number({ error: `must be a number of seconds ${range}` })
    .int(`must be a whole number of seconds ${range}`)
    .min(min, `must be at least ${min} s; raise it`)
    .max(max, `must be at most ${max} s; lower it`);
}

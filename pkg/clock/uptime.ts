// /proc/uptime (CLOCK_BOOTTIME) in ms: the clock a shell can read with a builtin, no fork. The
// lifeline's reaper keeps its kill deadlines on it, and the chaos witness's death recorder
// dates deaths on it; both read it here the way their shells do (seconds and hundredths).
import { readFileSync } from 'node:fs';

/**
 * /proc/uptime counts hundredths of a second: a reading is up to this much behind the true
 * time. Whoever sets an instant on it from another clock allows for it.
 */
export const UPTIME_RESOLUTION_MS = 10;

/** The reading in ms, whole seconds and hundredths, no rounding; throws, quoting it, if odd. */
export function uptimeMs(text?: string): number {
  const raw = text ?? readUptime();
  const m = /^(\d+)\.(\d{2})\s/.exec(raw);
  if (!m) throw new Error(`unexpected /proc/uptime: ${JSON.stringify(raw.slice(0, 40))}`);
  return Number(m[1]) * 1000 + Number(m[2]) * 10;
}

function readUptime(): string {
  return readFileSync('/proc/uptime', 'utf8');
}

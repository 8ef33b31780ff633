// Durations and times as operators read and type them: "3m 20s", "5 s ago", local
// times, and the --at forms (HH:MM or ISO 8601). Pure: callers pass `now`.
const SECOND = 1_000;
const MINUTE = 60 * SECOND;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** A duration for humans, two units at most: `850ms`, `3.2s`, `2m 5s`, `3h 2m`, `4d 3h`. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms)) return '-';
  const abs = Math.max(0, ms);
  if (abs < SECOND) return `${Math.round(abs)}ms`;
  if (abs < MINUTE) return `${(abs / SECOND).toFixed(1)}s`;
  const [d, h, m, s] = [
    Math.floor(abs / DAY),
    Math.floor((abs % DAY) / HOUR),
    Math.floor((abs % HOUR) / MINUTE),
    Math.floor((abs % MINUTE) / SECOND),
  ];
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${m}m`;
  return `${m}m ${s}s`;
}

/** Elapsed time of a workflow step: `+0.12s`, `+12.30s`, `+2m03.5s`. */
export function formatElapsed(ms: number): string {
  const abs = Math.max(0, ms);
  if (abs < MINUTE) return `+${(abs / SECOND).toFixed(2)}s`;
  const minutes = Math.floor(abs / MINUTE);
  const seconds = ((abs % MINUTE) / SECOND).toFixed(1).padStart(4, '0');
  return `+${minutes}m${seconds}s`;
}

/** Milliseconds of an API time: ISO strings and wall-clock ms (history) alike. */
export function toMs(at: string | number | undefined): number | undefined {
  if (at === undefined) return undefined;
  const ms = typeof at === 'number' ? at : Date.parse(at);
  return Number.isFinite(ms) ? ms : undefined;
}

/** `2h 3m ago`, `in 5m 0s`, `just now`; `-` when there is no time. */
export function formatAgo(at: string | number | undefined, now: number): string {
  const ms = toMs(at);
  if (ms === undefined) return '-';
  const diff = now - ms;
  if (Math.abs(diff) < SECOND) return 'just now';
  return diff > 0 ? `${formatDuration(diff)} ago` : `in ${formatDuration(-diff)}`;
}

const two = (n: number) => String(n).padStart(2, '0');

/** Local wall-clock time `YYYY-MM-DD HH:MM:SS`, as an operator reads their own clock. */
export function formatLocalTime(at: string | number | undefined): string {
  const ms = toMs(at);
  if (ms === undefined) return '-';
  const d = new Date(ms);
  return (
    `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`
  );
}

/** Local time and how long ago: `2026-05-01 10:32:05 (2h 3m ago)`. */
export function formatWhen(at: string | number | undefined, now: number): string {
  return toMs(at) === undefined ? '-' : `${formatLocalTime(at)} (${formatAgo(at, now)})`;
}

/**
 * Slack before a time counts as past: a `--at 03:00` typed at 03:00:40 means "now", not an
 * error, but one typed at 03:05 is a mistake (the operator meant tomorrow, or another zone).
 */
export const AT_PAST_SLACK_MS = MINUTE;

const HH_MM = /^(\d{1,2}):(\d{2})$/;
const ISO_TIME = /^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?$/i;

const validCalendar = (y: number, mo: number, d: number, h: number, mi: number, s: number) =>
  mo >= 1 &&
  mo <= 12 &&
  d >= 1 &&
  new Date(Date.UTC(y, mo - 1, d)).getUTCDate() === d &&
  h < 24 &&
  mi < 60 &&
  s < 60;

/**
 * `--at`: an ISO time (with an offset, or local without one) or `HH:MM` today, local time.
 * Returns the ISO (UTC) string the API wants; throws an Error saying what is wrong.
 */
export function parseAtTime(value: string, now: number): string {
  const text = value.trim();
  let ms: number;
  const hhmm = HH_MM.exec(text);
  const iso = ISO_TIME.exec(text);
  if (hhmm) {
    const [h, m] = [Number(hhmm[1]), Number(hhmm[2])];
    if (h > 23 || m > 59) throw new Error(`${value} is not a time of day (HH:MM, 00:00 to 23:59)`);
    const at = new Date(now);
    at.setHours(h, m, 0, 0);
    ms = at.getTime();
  } else if (iso) {
    const [y, mo, d, h, mi, s] = [1, 2, 3, 4, 5, 6].map((i) => Number(iso[i] ?? 0)) as [
      number,
      number,
      number,
      number,
      number,
      number,
    ];
    if (!validCalendar(y, mo, d, h, mi, s)) throw new Error(`${value} is not a valid date and time`);
    // Without an offset Date.parse reads the time as local, which is what an operator means.
    ms = Date.parse(text.replace(' ', 'T'));
  } else {
    throw new Error(
      `${value} is not a time: give HH:MM (today, local), 2026-11-21T03:00 (local) or 2026-11-21T03:00:00Z`,
    );
  }
  if (!Number.isFinite(ms)) throw new Error(`${value} is not a valid date and time`);
  if (ms < now - AT_PAST_SLACK_MS) {
    throw new Error(`${value} (${formatLocalTime(ms)}) is in the past; give a future time or leave --at out`);
  }
  return new Date(ms).toISOString();
}

// How late this process's event loop runs: the figure that tells whether per-identity work
// is crowding out everything else. Measured by perf_hooks.monitorEventLoopDelay (a libuv
// timer sampled every RESOLUTION_MS, so it costs nothing that grows with identities).
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';

/** Sampling period of the delay monitor: finer than any deadline it is meant to explain. */
const RESOLUTION_MS = 10;
/** Period of the probe behind `currentMs`: what admissions look at before each login. */
const PROBE_MS = 25;
/** The "recent" figure covers this long: long enough to see a storm, short enough to see it end. */
export const RECENT_WINDOW_MS = 10_000;

export class LoopDelay {
  private readonly histogram: IntervalHistogram;
  private readonly timer: NodeJS.Timeout;
  private readonly probe: NodeJS.Timeout;
  private probeDue = performance.now() + PROBE_MS;
  private lateMs = 0;
  private worstNs = 0;
  /** The maximum of the window before the current one, so "recent" never reads 0 right after a roll. */
  private previousMaxNs = 0;

  constructor() {
    this.histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });
    this.histogram.enable();
    this.timer = setInterval(() => this.roll(), RECENT_WINDOW_MS);
    this.timer.unref();
    this.probe = setInterval(() => {
      const now = performance.now();
      this.lateMs = Math.max(0, now - this.probeDue);
      this.probeDue = now + PROBE_MS;
    }, PROBE_MS);
    this.probe.unref();
  }

  /**
   * How late the loop ran its latest probe, in ms, or how late the next one already is: a
   * loop held right now reads as late at once, not only after it is free again.
   */
  get currentMs(): number {
    return Math.max(this.lateMs, performance.now() - this.probeDue);
  }

  /** The worst delay seen since this monitor started, in ms. */
  get worstMs(): number {
    return Math.max(this.worstNs, this.histogram.max) / 1e6;
  }

  /** The worst delay of the last one to two windows, in ms. */
  get recentMs(): number {
    return Math.max(this.previousMaxNs, this.histogram.max) / 1e6;
  }

  private roll(): void {
    const max = this.histogram.max;
    this.worstNs = Math.max(this.worstNs, max);
    this.previousMaxNs = max;
    this.histogram.reset();
  }

  close(): void {
    clearInterval(this.timer);
    clearInterval(this.probe);
    this.histogram.disable();
  }
}

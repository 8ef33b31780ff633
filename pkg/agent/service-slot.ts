// The identity's service driver on this node: made from the spec, replaced when the service
// definition changes, and prepared before each campaign. A warm service that does not start
// leaves the node unhealthy (it ranks last) and is reported as a retry until it starts.
import type { IdentityDriver } from '../identity/driver.js';
import type { IdentitySpec } from '../spec/schema.js';
import { serviceKey } from './decide.js';
import { RetryStreak, type Retry } from './retries.js';

/** Budget to close a replaced driver when no session tells the logout budget. */
const DRIVER_CLOSE_FALLBACK_MS = 1_000;

export interface ServiceSlotDeps {
  makeDriver(spec: IdentitySpec): IdentityDriver;
  /** The logout budget of the current session, if one is alive. */
  logoutBudgetMs(): number | undefined;
  /** The driver gave up restarting the service (the term must end). */
  failed(reason: string): void;
  /** The warm service is failing to start (once per attempt; the board dedupes), or no longer. */
  report(retry: Retry | undefined): void;
  wallMs(): number;
  /** A service that would not stop when replaced or closed: the operator must look at it. */
  stopFailed(err: Error): void;
}

export class ServiceSlot {
  private current: IdentityDriver | undefined;
  private key: string | undefined;
  private prepared = true;
  private readonly streak: RetryStreak;

  constructor(private readonly deps: ServiceSlotDeps) {
    this.streak = new RetryStreak(
      'starting the warm service (this node ranks last until it does)',
      deps.wallMs,
    );
  }

  get driver(): IdentityDriver | undefined {
    return this.current;
  }

  /** False while a warm service fails to start. */
  get healthy(): boolean {
    return this.prepared;
  }

  /** The driver for `spec`, made (or remade after a service change) and prepared. */
  async ensure(spec: IdentitySpec): Promise<IdentityDriver> {
    const key = serviceKey(spec);
    if (this.current && this.key === key) {
      // A warm service that failed to start is tried again before each campaign.
      if (!this.prepared) await this.prepare(this.current);
      return this.current;
    }
    if (this.current) {
      await this.current
        .close(this.deps.logoutBudgetMs() ?? DRIVER_CLOSE_FALLBACK_MS)
        .catch((err: Error) => this.deps.stopFailed(err));
    }
    const driver = this.deps.makeDriver(spec);
    this.current = driver;
    this.key = key;
    this.streak.reset();
    // Crashes and restarts are logged by the driver; only giving up concerns the term.
    driver.on('failed', (e: { reason: string }) => this.deps.failed(e.reason));
    await this.prepare(driver);
    return driver;
  }

  private async prepare(driver: IdentityDriver): Promise<void> {
    try {
      await driver.prepare();
      this.prepared = true;
      this.streak.reset();
      this.deps.report(undefined);
    } catch (err) {
      this.prepared = false;
      this.deps.report(this.streak.failed(err));
    }
  }

  /** Stop everything, including a warm process. */
  async close(budgetMs: number): Promise<void> {
    await this.current?.close(budgetMs).catch((err: Error) => this.deps.stopFailed(err));
  }
}

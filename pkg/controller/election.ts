// Controllers elect one active controller with the same lease code the agents use
// (pkg/lease): an "identity" named `active` under the controllers' own prefix. Only the
// active controller drives workflows and fences; every controller serves reads. Every write
// the active one makes is guarded by its election token (store.ts GuardedWriter), so a
// deposed controller that wakes up cannot undo its successor's decisions.
import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { Candidate, Session, type FencingToken, type Leadership } from '../lease/index.js';
import { ControllerKeys, type ControllerMember } from './store.js';

/** The election's "identity" name. */
export const ACTIVE = 'active';
/** Pause after a failed round (etcd away) before campaigning again. */
const RETRY_MS = 1_000;

export class ControllerElection extends EventEmitter {
  private leadership: Leadership | undefined;
  private session: Session | undefined;
  private readonly abort = new AbortController();
  private loop: Promise<void> | undefined;
  /** Why the last round failed, so a failure repeating every second is logged once. */
  private lastFailure: string | undefined;

  constructor(
    private readonly client: Etcd3,
    private readonly keys: ControllerKeys,
    private member: ControllerMember,
    private readonly ttlSeconds: number,
    private readonly logger: Logger,
    private readonly clock: Clock = systemClock,
  ) {
    super();
  }

  /** Start campaigning; `url` is published so standbys can point clients at the active one. */
  start(url?: string): void {
    if (url) this.member = { ...this.member, url };
    this.loop ??= this.run();
  }

  /** The election token while this controller may act as the active one. */
  get token(): FencingToken | undefined {
    return this.leadership?.mayAct() ? this.leadership.token : undefined;
  }

  get active(): boolean {
    return this.token !== undefined;
  }

  private async run(): Promise<void> {
    const signal = this.abort.signal;
    while (!signal.aborted) {
      try {
        const session = await Session.open(this.client, {
          node: this.member.name,
          timing: { ttlSeconds: this.ttlSeconds },
          clock: this.clock,
        });
        this.session = session;
        await this.client
          .put(this.keys.controllerMember(this.member.name))
          .value(JSON.stringify(this.member))
          .lease(session.leaseId)
          .options(within(ETCD_CALL_MS));
        const candidate = new Candidate(session, { identity: ACTIVE, keys: this.keys.election });
        const leadership = await candidate.campaign(signal);
        // A predecessor that did not resign may still be acting until its deadline: wait it out.
        await leadership.clearance();
        if (!leadership.mayAct())
          throw new Error('the election term ended while waiting out the previous one');
        // Acting as the active controller is this term's "login": recorded before the first
        // side effect, so a successor waits this term out unless it resigns cleanly.
        await leadership.setLoggedIn(true);
        this.leadership = leadership;
        this.lastFailure = undefined;
        this.logger.info({ token: String(leadership.token) }, 'this controller is now the active one');
        this.emit('active', leadership.token);
        const lost = await Promise.race([
          leadership.whenLost(),
          new Promise<undefined>((r) => signal.addEventListener('abort', () => r(undefined), { once: true })),
        ]);
        this.leadership = undefined;
        if (lost) {
          this.logger.warn({ reason: lost.reason }, 'this controller lost the election: standing by');
          this.emit('standby');
        } else {
          await leadership.resign({ loggedOut: true });
        }
      } catch (err) {
        this.leadership = undefined;
        if (signal.aborted) break;
        const reason = (err as Error).message;
        if (reason !== this.lastFailure) {
          this.logger.warn(
            { err: reason },
            'controller election round failed; retrying (logged again only if the reason changes)',
          );
        }
        this.lastFailure = reason;
        await this.clock.sleep(RETRY_MS, signal);
      } finally {
        if (!this.leadership) {
          await this.session?.close().catch(() => undefined);
          this.session = undefined;
        }
      }
    }
  }

  async stop(): Promise<void> {
    this.abort.abort();
    await this.loop;
    await this.session?.close().catch(() => undefined);
  }
}

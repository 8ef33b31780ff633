// The in-process driver: a TypeScript handler served under the identity on NATS, for users
// who embed understudy as a library. "Logging in" is enabling the handler for a term; the
// agent's responder does the NATS side (presence, access lists, replies with the token).
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import { systemClock, type Clock } from '../clock/index.js';
import type { IdentityDriver, LoginContext, ServiceReply, ServiceRequest } from './driver.js';

export interface HandlerRequest extends ServiceRequest {
  identity: string;
  /** The term's fencing token: attach it to side effects (fenced writes). */
  token: bigint;
}

export type ServiceHandler = (req: HandlerRequest) => Promise<string | ServiceReply> | string | ServiceReply;

export interface NatsServiceHandlers {
  handle: ServiceHandler;
  /** Called at login (e.g. open the session under the shared name). */
  login?: (ctx: LoginContext) => Promise<void> | void;
  /** Called at logout; must return once nothing acts under the identity any more. */
  logout?: () => Promise<void> | void;
  status?: () => Promise<Record<string, unknown>> | Record<string, unknown>;
}

export class NatsServiceDriver extends EventEmitter implements IdentityDriver {
  readonly mode = 'warm' as const;
  private context: LoginContext | undefined;

  private readonly clock: Clock;

  constructor(
    private readonly handlers: NatsServiceHandlers | ServiceHandler,
    private readonly opts: {
      /** Where a logout handler's failure is reported (the runner only learns "not confirmed"). */
      logger?: Logger;
      /** Logout budgets and request timeouts run on it (default: the system clock). */
      clock?: Clock;
    } = {},
  ) {
    super();
    this.clock = opts.clock ?? systemClock;
  }

  private get h(): NatsServiceHandlers {
    return typeof this.handlers === 'function' ? { handle: this.handlers } : this.handlers;
  }

  get pid(): number | undefined {
    return this.context ? process.pid : undefined;
  }

  async prepare(): Promise<void> {}

  async login(ctx: LoginContext): Promise<void> {
    await this.h.login?.(ctx);
    this.context = ctx;
  }

  async logout(budgetMs: number): Promise<boolean> {
    this.context = undefined;
    if (!this.h.logout) return true;
    let cancel: (() => void) | undefined;
    const outcome = await Promise.race([
      // A handler that throws at once is a failed logout too, not an exception for the runner.
      new Promise<void>((resolve) => resolve(this.h.logout?.())).then(
        () => true,
        (err: unknown) => {
          this.opts.logger?.error(
            { err: err instanceof Error ? err.message : String(err) },
            'the service handler failed to log out: treat it as possibly still logged in',
          );
          return false;
        },
      ),
      new Promise<boolean>((resolve) => (cancel = this.clock.after(budgetMs, () => resolve(false)))),
    ]);
    cancel?.();
    return outcome;
  }

  async handle(req: ServiceRequest, timeoutMs: number): Promise<ServiceReply> {
    const ctx = this.context;
    if (!ctx) return { body: 'not logged in', error: 'unavailable' };
    let cancel: (() => void) | undefined;
    try {
      const result = await Promise.race([
        Promise.resolve(this.h.handle({ ...req, identity: ctx.identity, token: ctx.token })),
        new Promise<ServiceReply>(
          (resolve) =>
            (cancel = this.clock.after(timeoutMs, () =>
              resolve({ body: `no answer within ${timeoutMs} ms`, error: 'unavailable' }),
            )),
        ),
      ]);
      return typeof result === 'string' ? { body: result } : result;
    } catch (err) {
      return { body: `handler failed: ${(err as Error).message}`, error: 'internal' };
    } finally {
      cancel?.();
    }
  }

  async status(): Promise<Record<string, unknown>> {
    try {
      return (await this.h.status?.()) ?? {};
    } catch {
      return {};
    }
  }

  async close(budgetMs: number): Promise<void> {
    if (this.context) await this.logout(budgetMs);
  }
}

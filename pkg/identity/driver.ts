// The contract between the agent's per-identity state machine and whatever runs the service
// under the shared name. The state machine decides *when* (it holds the lease); a driver only
// knows *how* to start, stop and talk to the service.
import type { EventEmitter } from 'node:events';

export interface LoginContext {
  identity: string;
  node: string;
  /** The term's fencing token: the service attaches it to side effects (fenced writes). */
  token: bigint;
  /** Path of a 0600 file holding the credential, when the identity has one. */
  credentialFile?: string;
  /**
   * May the term still act (its session short of the self-fence deadline, its key still ours,
   * its logout not begun)? A driver calls it synchronously right before it starts a process or
   * sends a login under the term: a restart after a crash comes from a timer, and after a
   * freeze that timer can fire when the term is already over (S3: never log in without the
   * key). Absent, the term is taken to last until logout() (tests, fixtures).
   */
  mayAct?: () => boolean;
  /** Aborted when the term's logout begins: a restart still pending under the term is cancelled. */
  signal?: AbortSignal;
}

/** True while a service may still be started or logged in under `ctx` (see LoginContext.mayAct). */
export function termMayAct(ctx: LoginContext): boolean {
  // The signal first: once logout has begun, the term's own predicate is not even asked.
  if (ctx.signal?.aborted) return false;
  return ctx.mayAct?.() ?? true;
}

export interface ServiceRequest {
  /** Unique per request (durable requests reuse their message id). */
  id: string;
  /** The whole request line, e.g. `RATE USD`. */
  command: string;
  /** Authenticated caller name, if the request was signed. */
  caller?: string;
}

export interface ServiceReply {
  body: string;
  /** Set when the service refuses or fails the request (see wire.ts ErrorCode). */
  error?: 'bad-request' | 'unknown-command' | 'unavailable' | 'internal';
}

/**
 * Events:
 * - `failed` ({ reason }): the logged-in service stopped on its own and will not come back
 *   (restart attempts exhausted). The state machine logs out and resigns.
 * - `restarting` ({ attempt, delayMs, reason }): the service crashed while logged in and is
 *   being restarted under the same term. Never emitted once the term may no longer act: a
 *   crash after the term ended leaves the service down until logout (the runner is on its way).
 */
export interface IdentityDriver extends EventEmitter {
  /** How the driver starts the service: warm services run before login, cold ones at login. */
  readonly mode: 'warm' | 'cold';
  /** Start whatever runs while standing by (a warm process). Idempotent. */
  prepare(): Promise<void>;
  /** Log in: resolves once the service runs under the shared name; rejects if it cannot. */
  login(ctx: LoginContext): Promise<void>;
  /**
   * Log out within `budgetMs`: resolves true once the service is confirmed out (stopped, or
   * a warm service confirmed logout), false if that could not be confirmed in time. After
   * `false`, the caller must treat the service as possibly still logged in.
   */
  logout(budgetMs: number): Promise<boolean>;
  /** Answer a service command; only called while logged in. Never rejects. */
  handle(req: ServiceRequest, timeoutMs: number): Promise<ServiceReply>;
  /** Extra STATUS fields from the service (empty when it has none). Never rejects. */
  status(timeoutMs: number): Promise<Record<string, unknown>>;
  /**
   * Can the logged-in service serve right now (not frozen, answering its channel)? Checked
   * before answering PING, so presence means a working service, not just a live agent.
   * Drivers without a separate service process omit it.
   */
  alive?(timeoutMs: number): Promise<boolean>;
  /**
   * Ask the running service to make its state directory consistent and hold it still for a
   * snapshot; resolves with the function that lets it go on, or undefined when it cannot (not
   * running, no channel, or no answer within `timeoutMs`). Drivers without a process omit it.
   */
  quiesce?(timeoutMs: number): Promise<(() => void) | undefined>;
  /** Stop everything, including a warm process. Resolves once it is gone. */
  close(budgetMs: number): Promise<void>;
  /**
   * Kill the logged-in service `ms` from now unless pushed back (a dead-man's switch run by a
   * process outside the agent, so it fires even when the agent is frozen); undefined disarms.
   * With a `deadline` name the service joins that shared deadline (one per etcd session, which
   * the agent pushes back once per renewal) and `ms` only counts until the first push.
   * Drivers without an external process ignore it.
   */
  armDeadline?(ms: number | undefined, deadline?: string): void;
  /** Pid of the service process, if any (for operators and tests). */
  readonly pid: number | undefined;
}

// The agent's side of "what a spec may run" (pkg/identity/exec-policy.ts decides): what the
// runner asks before it campaigns, logged once per reason, and the login port that asks again
// before a credential file named by the spec is read (its contents are never read if refused).
import type { Logger } from 'pino';
import type { ExecPolicy } from '../identity/exec-policy.js';
import { ReasonLog } from '../identity/reason-log.js';
import type { IdentitySpec } from '../spec/schema.js';
import type { LoginPort } from './port.js';

/** A spec this node refuses is looked at again this often: a binary installed later counts. */
export const REFUSED_RECHECK_MS = 30_000;
/**
 * An allowed spec is not looked at again before each campaign within this long. The check
 * resolves paths on disk (PATH search, realpath of every entry), and a runner campaigns again
 * after every lost term or stopped session: in a storm, thousands of checks a second. The
 * check that decides what runs is made again right before each spawn (process-start.ts).
 */
export const ALLOWED_REUSE_MS = 30_000;

/** What the runner needs of the policy (a fake in unit tests). */
export type SpecPolicy = Pick<ExecPolicy, 'check' | 'credential'>;

export class SpecGate {
  /** A refused spec is logged once per reason, and once when it is allowed again. */
  private readonly refusals: ReasonLog;

  /** The spec last found allowed, and when (monotonic ms). */
  private allowed: { spec: IdentitySpec; at: number } | undefined;

  constructor(
    private readonly policy: SpecPolicy,
    log: Logger,
    private readonly who: { identity: string; node: string },
    /** Told whether the spec is refused, after every check (a gauge follows it). */
    private readonly changed?: (r: { identity: string; what: 'spec'; refused: boolean }) => void,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.refusals = new ReasonLog(
      log,
      "accepting the spec on this node (the agent config's allow and service sections)",
      'error',
    );
  }

  /** Why this node refuses to run or read what `spec` names (undefined: it may). */
  async refusal(spec: IdentitySpec): Promise<string | undefined> {
    const allowed = this.allowed;
    if (allowed?.spec === spec && this.now() - allowed.at < ALLOWED_REUSE_MS) return undefined;
    const verdict = await this.policy.check(spec, this.who);
    this.allowed = verdict.ok ? { spec, at: this.now() } : undefined;
    if (verdict.ok) this.refusals.ok();
    else this.refusals.fail(verdict.reason, { field: verdict.field });
    this.changed?.({ identity: this.who.identity, what: 'spec', refused: !verdict.ok });
    return verdict.ok ? undefined : verdict.reason;
  }

  /** `port`, with a spec's credential file read only when the allow-list lets this node read it. */
  guard(port: LoginPort): LoginPort {
    return guardCredentialRead(port, this.policy);
  }
}

export function guardCredentialRead(port: LoginPort, policy: SpecPolicy): LoginPort {
  return {
    ...port,
    async fetchCredential(spec, token) {
      const source = spec.credential;
      if (source.source === 'file') {
        const verdict = await policy.credential(source.path);
        if (!verdict.ok) throw new Error(`credential not read: ${verdict.reason}`);
      }
      return port.fetchCredential(spec, token);
    },
  };
}

// The agent's side of "what a spec may run" (pkg/identity/exec-policy.ts decides): what the
// runner asks before it campaigns, and the login port that asks again before a credential file
// named by the spec is read. The credential's contents are never read for a refused path.
import type { ExecPolicy } from '../identity/exec-policy.js';
import type { LoginPort } from './port.js';

/** What the runner needs of the policy (a fake in unit tests). */
export type SpecPolicy = Pick<ExecPolicy, 'check' | 'credential'>;

/** `port`, with a spec's credential file read only when the allow-list lets this node read it. */
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

// Callers of an identity as the access and replay tests build them: a name with a fresh nkey,
// what the authenticator says of a request it signed, and what its headers claim.
import { generateCallerKey, type AuthResult } from '../../pkg/identity/access.js';

/** The fixed "now" of these tests: requests are signed and checked at it unless a test moves it. */
export const T0 = 1_700_000_000_000;

export interface TestCaller {
  name: string;
  publicKey: string;
  seed: string;
}

/** A caller named `name` with a key of its own. */
export function newCaller(name: string): TestCaller {
  return { name, ...generateCallerKey() };
}

/** The authenticator's result for a request `who` signed at T0. */
export function verified(who: Pick<TestCaller, 'name' | 'publicKey'>): AuthResult {
  return { kind: 'verified', name: who.name, key: who.publicKey, nonce: 'nonce-0001', signedAt: T0 };
}

/** The name and key `who` claims in its request headers, as decide() reads them. */
export function claims(who: Pick<TestCaller, 'name' | 'publicKey'>): { name: string; key: string } {
  return { name: who.name, key: who.publicKey };
}

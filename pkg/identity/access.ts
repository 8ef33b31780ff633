// Who is calling an identity, and what may they do. Pure logic: the agent feeds it the headers
// and body of each request before any handler sees the message (DESIGN "Login": access lists
// are enforced before a handler sees a message). Proving who signed is authenticator.ts; this
// file decides what the proven (or claimed) caller may do.
import { MAX_PENDING_PER_IDENTITY } from '../spec/pending.js';
import type { AccessLists } from '../spec/schema.js';
import type { AuthResult } from './authenticator.js';
import { CONTACT_VERBS, OPEN_VERBS, type ErrorCode } from './wire.js';

// The signing and verifying API, re-exported where callers have always found it.
export {
  claimedCaller,
  CLOCK_WINDOW_MS,
  FUTURE_SKEW_MS,
  MIN_INBOX_DUPLICATE_WINDOW_MS,
  REPLAY_CACHE_MAX_ENTRIES,
  RequestAuthenticator,
  type AuthenticateInput,
  type AuthResult,
  type HeaderLookup,
} from './authenticator.js';
export { generateCallerKey, isUserPublicKey } from '../keys/nkey.js';
export { canonicalPayload, newNonce, SIGNATURE_VERSION, signRequest } from './request-signing.js';

/**
 * Must this request be checked against (and recorded in) the replay cache? Only when the
 * signature is what lets it through: a verified caller acting as a contact or an authorized
 * caller. Anything allowed to anyone (PING, HELP, an open identity) would be allowed unsigned
 * too, so its replay grants nothing; refused and dropped requests do nothing. This is also what
 * keeps floods out: only keys an admin put on a list can add entries (replay.ts).
 */
export function needsReplayCheck(decision: Decision, auth: AuthResult): boolean {
  return decision.action === 'allow' && auth.kind === 'verified' && decision.role !== 'anyone';
}

export type Decision =
  | { action: 'drop' }
  | { action: 'allow'; caller?: string; role: 'contact' | 'authorized' | 'anyone' }
  | { action: 'refuse'; code: ErrorCode; message: string; pending?: { name: string; nkey: string } };

const isBlocked = (lists: AccessLists, who: { name?: string | undefined; key?: string | undefined }) =>
  lists.blocked.some(
    (b) => (b.name !== undefined && b.name === who.name) || (b.nkey !== undefined && b.nkey === who.key),
  );

/**
 * What to do with a request. `claimed` is what the headers claim (claimedCaller), `auth` what
 * the signature proves, `verb` the request's verb. `identity` only words the messages.
 * Rules, in order: blocked → drop; invalid signature → unauthenticated; a verified name or key
 * on file with a different counterpart → unauthenticated; PING/HELP → anyone; STATUS →
 * contacts; service commands → open identities, contacts and authorized callers.
 */
export function decide(
  lists: AccessLists,
  claimed: { name?: string; key?: string },
  auth: AuthResult,
  verb: string,
  identity = 'this identity',
): Decision {
  // Checked before the signature: dropping costs the claimer only its own message, and a
  // blocked caller learns nothing, not even whether its signature was good.
  if (isBlocked(lists, claimed) || (auth.kind === 'verified' && isBlocked(lists, auth)))
    return { action: 'drop' };

  if (auth.kind === 'invalid') {
    return {
      action: 'refuse',
      code: 'unauthenticated',
      message: `request not authenticated: ${auth.reason}`,
    };
  }

  const verified = auth.kind === 'verified' ? auth : undefined;
  let role: 'contact' | 'authorized' | undefined;
  if (verified !== undefined) {
    const onFile = [...lists.contacts, ...lists.authorized];
    const byName = onFile.find((c) => c.name === verified.name);
    if (byName !== undefined && byName.nkey !== verified.key) {
      return {
        action: 'refuse',
        code: 'unauthenticated',
        message:
          `key does not match the one on file for ${verified.name}; sign with the nkey registered for ` +
          `${verified.name}, or ask an admin of ${identity} to update it`,
      };
    }
    const byKey = onFile.find((c) => c.nkey === verified.key);
    if (byKey !== undefined && byKey.name !== verified.name) {
      return {
        action: 'refuse',
        code: 'unauthenticated',
        message: `this key is on file for caller '${byKey.name}', not '${verified.name}'; send requests as ${byKey.name}`,
      };
    }
    const matches = (c: { name: string; nkey: string }) =>
      c.name === verified.name && c.nkey === verified.key;
    if (lists.contacts.some(matches)) role = 'contact';
    else if (lists.authorized.some(matches)) role = 'authorized';
  }
  const caller = verified?.name;
  const allow = (r: 'contact' | 'authorized' | 'anyone'): Decision => ({
    action: 'allow',
    ...(caller !== undefined && { caller }),
    role: r,
  });

  const v = verb.toUpperCase();
  if (OPEN_VERBS.has(v)) return allow(role ?? 'anyone');

  if (CONTACT_VERBS.has(v)) {
    if (role === 'contact') return allow('contact');
    const how =
      verified === undefined
        ? `sign requests with your nkey, and ask an admin of ${identity} to add you as a contact`
        : `ask an admin of ${identity} to add ${verified.name} as a contact`;
    return {
      action: 'refuse',
      code: 'not-a-contact',
      message: `${v} is for the contacts of ${identity} only; ${how}`,
    };
  }

  if (role !== undefined) return allow(role);
  if (lists.open) return allow('anyone');
  if (verified !== undefined) {
    return {
      action: 'refuse',
      code: 'not-authorized',
      message:
        `${verified.name} is not authorized to use ${identity}; your request for authorization is recorded as pending ` +
        `(while fewer than ${MAX_PENDING_PER_IDENTITY} are); an admin of ${identity} can approve it`,
      pending: { name: verified.name, nkey: verified.key },
    };
  }
  return {
    action: 'refuse',
    code: 'not-authorized',
    message: `${identity} answers only authorized callers; sign requests with your NATS user nkey (Understudy-* signature headers) so an admin can authorize you`,
  };
}

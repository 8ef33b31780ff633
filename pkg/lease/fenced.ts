// Fenced writes (S2): a write guarded by the writer's fencing token is applied only while
// that token is still the identity's current term. A resumed old leader's write fails.
import type { Etcd3 } from 'etcd3';
import { StaleTokenError, type FencingToken } from './errors.js';
import { ETCD_CALL_MS, within } from './etcd.js';
import { Keys } from './keys.js';

/** Put `key` = `value` only if `token` is still the current term of `identity`. */
export async function fencedPut(
  client: Etcd3,
  opts: { identity: string; token: FencingToken; key: string; value: string | Buffer; keys?: Keys },
): Promise<{ revision: bigint }> {
  const leaderKey = (opts.keys ?? new Keys()).leader(opts.identity);
  const result = await client
    .if(leaderKey, 'Mod', '==', String(opts.token))
    .then(client.put(opts.key).value(opts.value))
    .options(within(ETCD_CALL_MS))
    .commit();
  if (!result.succeeded) throw new StaleTokenError(opts.identity, opts.token);
  return { revision: BigInt(result.header.revision) };
}

/**
 * Is `token` the current term of `identity`? For systems downstream that keep their own
 * data: reject a request whose token is not current (or lower than one already seen).
 */
export async function isTokenCurrent(
  client: Etcd3,
  identity: string,
  token: FencingToken,
  keys = new Keys(),
): Promise<boolean> {
  const kv = (await client.get(keys.leader(identity)).options(within(ETCD_CALL_MS)).exec()).kvs[0];
  return kv !== undefined && BigInt(kv.mod_revision) === token;
}

/**
 * The check a downstream store applies without etcd: accept a token only if it is not lower
 * than the highest it has seen. Tokens are etcd revisions, globally monotonic across terms.
 */
export class TokenGate {
  private highest: FencingToken = 0n;
  admit(token: FencingToken): boolean {
    if (token < this.highest) return false;
    this.highest = token;
    return true;
  }
  get current(): FencingToken {
    return this.highest;
  }
}

// Where the CLI finds the node keys that verify replies (pkg/identity/presence.ts): keys the
// operator pins with --trust-node-key NODE=KEY, else the controller's GET /v1/nodes (each
// node's key registered for its live session), else none. Without keys the CLI still shows
// what answered, but marks it unverified and exits with EXIT.unverified: anyone on NATS can
// answer on an identity's subject, so an unverified reply proves nothing.
import type { NodeView } from '../api/schema.js';
import type { NodeKeySource, TrustedNodeKey } from '../identity/presence.js';
import { isUserPublicKey } from '../keys/index.js';
import { NAME_PATTERN } from '../lease/keys.js';
import { context, routes, type ControllerOptions } from './controller-context.js';
import { CliError, EXIT } from './exit.js';

/**
 * How stale the controller's list of node keys may get in a long-running command: a second
 * covers a node that restarted and took over (the TTL is seconds), at one API call a second.
 */
export const NODE_KEYS_REFRESH_MS = 1_000;

export interface KeyOptions extends ControllerOptions {
  /** `--trust-node-key NODE=KEY`, repeatable. */
  trustNodeKey?: string[];
}

/** Where the keys came from, for the operator. */
export interface CliKeys {
  keys?: NodeKeySource;
  /** 'pinned' (--trust-node-key), 'controller', or why there are none. */
  source: string;
}

/** Parse --trust-node-key values (pure); a bad one names itself and what is expected. */
export function parseTrustedKeys(values: readonly string[]): Map<string, TrustedNodeKey> {
  const keys = new Map<string, TrustedNodeKey>();
  for (const value of values) {
    const eq = value.indexOf('=');
    const node = eq < 0 ? '' : value.slice(0, eq);
    const key = eq < 0 ? '' : value.slice(eq + 1);
    if (!NAME_PATTERN.test(node) || !isUserPublicKey(key)) {
      throw new CliError(
        `--trust-node-key '${value.slice(0, 80)}' must be NODE=KEY: a node name and its public nkey ('U' + 55 characters, as GET /v1/nodes shows it)`,
        EXIT.usage,
      );
    }
    keys.set(node, { key });
  }
  return keys;
}

/** The key source for this invocation (see the top of this file). Never throws for lack of keys. */
export async function cliKeys(opts: KeyOptions, now: () => number = Date.now): Promise<CliKeys> {
  const pinned = parseTrustedKeys(opts.trustNodeKey ?? []);
  if (pinned.size > 0) return { keys: async (node) => pinned.get(node), source: 'pinned' };
  try {
    const { api } = await context(opts);
    const fetchKeys = async () => {
      const res = await api.get<{ nodes: NodeView[] }>(routes.nodes);
      return new Map(
        res.nodes.flatMap((n) =>
          n.key !== undefined && isUserPublicKey(n.key) ? [[n.node, { key: n.key }]] : [],
        ),
      );
    };
    let known = await fetchKeys();
    let fetchedAt = now();
    let refreshing: Promise<void> | undefined;
    // A node's key changes when its agent starts a new session: a long `watch` reads the list
    // again at most every NODE_KEYS_REFRESH_MS, so a restarted node is not taken for a forger.
    const refresh = () =>
      (refreshing ??= fetchKeys()
        .then((fresh) => void (known = fresh))
        .catch(() => undefined) // keep the last list; the next refresh tries again
        .finally(() => {
          fetchedAt = now();
          refreshing = undefined;
        }));
    return {
      keys: async (node) => {
        if (now() - fetchedAt >= NODE_KEYS_REFRESH_MS) await refresh();
        return known.get(node);
      },
      source: 'controller',
    };
  } catch (err) {
    return {
      source:
        `no node keys (the controller at ${opts.controller} could not be asked: ${(err as Error).message}); ` +
        'give --trust-node-key NODE=KEY, or a reachable --controller with a token',
    };
  }
}

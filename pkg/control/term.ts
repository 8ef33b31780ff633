// The agent's side of "every side effect of the controller is guarded by its election term".
// The controller checks its own term right before it sends a request, but a controller that
// freezes (SIGSTOP, GC pause, suspended VM) between that check and the send would, on resume,
// send it anyway. So the request names the term it was sent under, and the agent reads the
// controller election key from etcd before acting: only a request of the current term is
// obeyed. What remains is the agent's own read-to-act window (milliseconds, no freeze of the
// controller involved); whatever a stale drain could start there, the transfer that would
// follow is itself a txn guarded by the controller's term.
import { Keys } from '../lease/keys.js';
import { ControlError, type MutatingRequest } from './protocol.js';

/** The controllers' election "identity" (pkg/controller/election.ts ACTIVE). */
const ACTIVE = 'active';

/**
 * The controller election key: its mod revision is the active controller's term. Same key as
 * pkg/controller/store.ts `ControllerKeys.election.leader('active')`, for the same prefix.
 */
export function controllerElectionKey(prefix = 'understudy'): string {
  return new Keys(`${prefix}/controllers`).leader(ACTIVE);
}

export type TermVerdict = { act: true } | { act: false; error: ControlError };

/**
 * May the agent act on this state-changing request? `current` is the controller election
 * key's mod revision as just read from etcd (undefined: no controller holds the election).
 *
 * - a term that is the current one: act;
 * - any other term (older, or one that never was): refuse, `stale-controller`;
 * - no term: refuse, `bad-request` naming `term`. Controllers have sent it since protocol 2;
 *   a request without one is from no controller this agent should obey (the unchecked
 *   exception for version 1 controllers is gone: it let a raw NATS request drain a leader).
 */
export function judgeControllerTerm(
  request: Pick<MutatingRequest, 'v' | 'op' | 'term'>,
  current: bigint | undefined,
): TermVerdict {
  const { v, op, term } = request;
  if (term === undefined) {
    return {
      act: false,
      error: new ControlError(
        'bad-request',
        `${op} under control protocol ${v} must carry the sending controller's election term in "term"; ` +
          `only the active controller sends ${op} (use the controller's API, not a raw request)`,
        'term',
      ),
    };
  }
  if (current !== undefined && BigInt(term) === current) return { act: true };
  return {
    act: false,
    error: new ControlError(
      'stale-controller',
      `controller term ${term} is no longer current (current: ${
        current === undefined ? 'none, no controller is active' : String(current)
      }); ignoring ${op}. Nothing to do: the active controller decides now and sends its own requests`,
      'term',
    ),
  };
}

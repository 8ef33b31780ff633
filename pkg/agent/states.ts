// The per-identity state machine of an agent, in one place: the states, the transitions
// allowed between them, and why each exists. Any other move is refused (machine.ts); which
// move to make is decided in decide.ts.
//
//   standby ⇄ campaigning → waiting-out → logging-in → leader → logging-out → standby
//                                              ↑                     │
//                                              └──── drained ←───────┘   (controller drain)
//   any waiting state → fenced → standby (unfenced);  everything ends in stopped.

export const IDENTITY_STATES = [
  /** Not logged in; another node leads, or this node is not eligible right now (see detail). */
  'standby',
  /** No leader: competing for the leader key (staggered by rank). */
  'campaigning',
  /** Won the key; waiting until the previous term is provably logged out (S3). */
  'waiting-out',
  /** Login record written, service starting under the shared name. */
  'logging-in',
  /** Logged in and answering for the identity. */
  'leader',
  /** Stopping the service; must finish within the logout budget / self-fence deadline. */
  'logging-out',
  /** Logged out but still holding the key, for the controller to transfer it (switchover). */
  'drained',
  /** This node is fenced: it neither campaigns nor logs in until an operator unfences it (S4). */
  'fenced',
  /** The agent is shutting down; terminal. */
  'stopped',
] as const;
export type IdentityState = (typeof IDENTITY_STATES)[number];

export const TRANSITIONS: Readonly<Record<IdentityState, readonly IdentityState[]>> = {
  // A campaign may win while the observer still shows the previous holder (a key transferred
  // to this node in a switchover, or the observer's watch behind the campaign's read).
  standby: ['campaigning', 'waiting-out', 'fenced', 'stopped'],
  campaigning: ['standby', 'waiting-out', 'fenced', 'stopped'],
  // The term can end while waiting (key revoked, session lost): back to standby unlogged.
  'waiting-out': ['logging-in', 'standby', 'fenced', 'stopped'],
  // A failed login still passes through logging-out: the service may have half started.
  'logging-in': ['leader', 'logging-out'],
  leader: ['logging-out'],
  'logging-out': ['standby', 'drained', 'fenced', 'stopped'],
  // Transferred away → standby; drain aborted or hold expired → log back in; fence/stop.
  drained: ['standby', 'logging-in', 'fenced', 'stopped'],
  fenced: ['standby', 'stopped'],
  stopped: [],
};

/** States in which the service may be running under the shared name. */
export const LOGGED_IN_STATES: ReadonlySet<IdentityState> = new Set(['logging-in', 'leader', 'logging-out']);

export function canMove(from: IdentityState, to: IdentityState): boolean {
  return from === to || TRANSITIONS[from].includes(to);
}

// Where pkg/lease keeps its state in etcd, and the records stored there. One place, so the
// controller, the agent and operators reading etcd agree on the layout.
import { z } from 'zod';

/** Identity and node names: they become etcd key segments and NATS subject tokens. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9_-]{0,62}$/;
export const Name = z
  .string()
  .regex(NAME_PATTERN, 'must be 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit');

export function assertName(kind: 'identity' | 'node', value: string): void {
  const parsed = Name.safeParse(value);
  if (!parsed.success) throw new Error(`${kind} name '${value}': ${parsed.error.issues[0]!.message}`);
}

/**
 * A duration read back from etcd: positive, and no longer than the longest TTL a session may
 * have (3,600 s), so a corrupt record can never make a wait overflow a timer.
 */
const Millis = z.number().int().positive().max(3_600_000);

export class Keys {
  constructor(readonly prefix = 'understudy') {}
  leader(identity: string): string {
    return `${this.prefix}/identities/${identity}/leader`;
  }
  candidates(identity: string): string {
    return `${this.prefix}/identities/${identity}/candidates/`;
  }
  candidate(identity: string, node: string): string {
    return `${this.candidates(identity)}${node}`;
  }
  /**
   * The login state of the identity's latest term that logged in. Not bound to any lease: it
   * outlives the term, so a successor can tell a term that may still be logged in from one
   * that confirmed its logout or never logged in, even after the holder's lease is gone.
   */
  login(identity: string): string {
    return `${this.prefix}/identities/${identity}/login`;
  }
  /** How the last term ended (resigned after logout, transferred, or revoked). */
  termEnd(identity: string): string {
    return `${this.prefix}/identities/${identity}/term-end`;
  }
  /**
   * One key per agent session, bound to its lease and rewritten at every renewal: the only
   * sign of a holder's renewals that other nodes can see (etcd keepalives leave no trace).
   */
  sessions(): string {
    return `${this.prefix}/sessions/`;
  }
  session(leaseId: string): string {
    return `${this.sessions()}${leaseId}`;
  }
  /**
   * What a node that ended another's lapsed lease saw (lapse.ts): the holder's last renewal,
   * and that its T had passed since. Bound to the revoking node's own lease, so records go
   * with the session that measured them.
   */
  lapse(leaseId: string): string {
    return `${this.prefix}/lapses/${leaseId}`;
  }
  fence(node: string): string {
    return `${this.prefix}/nodes/${node}/fence`;
  }
  /**
   * A node held off one identity: it may neither campaign for it nor log in as it while the
   * key exists. The controller writes these during a handover, bound to a lease of its own
   * with the handover's deadline as TTL, so they lapse by themselves if it dies.
   */
  holdOffs(identity: string): string {
    return `${this.prefix}/identities/${identity}/holdoff/`;
  }
  holdOff(identity: string, node: string): string {
    return `${this.holdOffs(identity)}${node}`;
  }
  /**
   * A standby drifted from what the identity runs (spec, access lists, service version or
   * state): it may not campaign for the identity, nor be transferred to, while the key
   * exists. Written by the active controller, bound to no lease: a controller that dies does
   * not let a stale standby in, and the key is removed once the standby is back in sync.
   */
  drifts(identity: string): string {
    return `${this.prefix}/identities/${identity}/drift/`;
  }
  drift(identity: string, node: string): string {
    return `${this.drifts(identity)}${node}`;
  }
}

/**
 * Value of an identity's leader key (bound to the holder's lease). Written once per term
 * (creation or transfer), so the key's mod revision *is* the term's fencing token.
 */
export const LeaderRecord = z.strictObject({
  node: z.string(),
  leaseId: z.string(),
  /** The holder's T and T × (1 − drift): how long a successor must wait it out when unconfirmed. */
  ttlMs: Millis,
  mustBeOutByMs: Millis,
  /** Wall-clock ms when this term began (informational). */
  since: z.number(),
});
export type LeaderRecord = z.infer<typeof LeaderRecord>;

/**
 * The login state of one term: `true` is written before its service starts, `false` only once
 * the service is confirmed stopped. Names the holder's lease and TTL, so a successor that
 * never saw the term can still wait it out.
 */
export const LoginRecord = z.strictObject({
  node: z.string(),
  token: z.string(),
  loggedIn: z.boolean(),
  at: z.number(),
  leaseId: z.string(),
  ttlMs: Millis,
});
export type LoginRecord = z.infer<typeof LoginRecord>;

export const CandidateRecord = z.strictObject({
  node: z.string(),
  leaseId: z.string(),
  ttlMs: Millis,
  mustBeOutByMs: Millis,
  priority: z.number().int(),
  healthy: z.boolean(),
});
export type CandidateRecord = z.infer<typeof CandidateRecord>;

/** Value of an agent's session key. */
export const SessionRecord = z.strictObject({
  node: z.string(),
  ttlMs: Millis,
  mustBeOutByMs: Millis,
});
export type SessionRecord = z.infer<typeof SessionRecord>;

export const TermEnd = z.strictObject({
  token: z.string(),
  node: z.string(),
  leaseId: z.string(),
  how: z.enum(['resigned', 'transferred', 'revoked']),
  /** The holder confirmed its service is logged out. */
  loggedOut: z.boolean(),
  /** The holder's lease TTL: how long after `at` it may still have been logged in. */
  holderTtlMs: Millis,
  /** Wall-clock ms of the record (for people reading it). */
  at: z.number(),
  actor: z.string().optional(),
});
export type TermEnd = z.infer<typeof TermEnd>;

/**
 * Written by a node about to revoke another's lease, in the transaction that checks the
 * holder's session key was last written at `sessionRevision`: that write was a renewal the
 * writer saw, `sinceMs` before, on its own clock.
 */
export const LapseRecord = z.strictObject({
  /** The holder's node, for people reading it. */
  node: z.string(),
  /** The node that measured the lapse and ends the lease. */
  by: z.string(),
  /** mod_revision of the holder's session key when the writer checked it: its last renewal. */
  sessionRevision: z.string().regex(/^[1-9][0-9]*$/),
  /** How long before the record the writer saw that renewal, on its own monotonic clock. */
  sinceMs: z.number().int().nonnegative(),
  /** Wall-clock ms of the record (for people reading it). */
  at: z.number(),
});
export type LapseRecord = z.infer<typeof LapseRecord>;

export const FenceRecord = z.strictObject({
  reason: z.string().min(1),
  actor: z.string().min(1),
  at: z.number(),
});
export type FenceRecord = z.infer<typeof FenceRecord>;

export const DriftRecord = z.strictObject({
  /** What differs, one sentence each (e.g. "spec revision 41, the identity runs 57"). */
  reasons: z.array(z.string().min(1)).min(1),
  actor: z.string().min(1),
  at: z.number(),
});
export type DriftRecord = z.infer<typeof DriftRecord>;

export const HoldOffRecord = z.strictObject({
  reason: z.string().min(1),
  actor: z.string().min(1),
  at: z.number(),
  /** The workflow that holds the node off, if any. */
  workflow: z.string().optional(),
});
export type HoldOffRecord = z.infer<typeof HoldOffRecord>;

export function decode<T>(
  schema: z.ZodType<T>,
  raw: Buffer | string | null | undefined,
  where: string,
): T | undefined {
  if (raw === null || raw === undefined) return undefined;
  const text = raw.toString();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new Error(`${where}: not JSON: ${text.slice(0, 80)}`);
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) throw new Error(`${where}: ${z.prettifyError(parsed.error)}`);
  return parsed.data;
}

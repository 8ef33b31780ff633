// Clones through the API: register a node as a cold standby of an identity, list the clones
// with their age and drift, forget one.
import { z } from 'zod';
import { Name } from '../lease/keys.js';
import { CloneRecord } from '../spec/clone.js';

export const CloneBody = z.strictObject({
  /** The node to become a cold standby (its agent then starts with --clone IDENTITY). */
  node: Name,
  reason: z.string().min(1).max(500).optional(),
});
export type CloneBody = z.infer<typeof CloneBody>;

export const CloneView = CloneRecord.extend({
  /** Milliseconds since the clone was made. */
  ageMs: z.number().int(),
  /** Its agent sends heartbeats now (its fingerprint is then the live one, not the bundle's). */
  live: z.boolean(),
  drifted: z.boolean(),
  /** What differs from what the identity runs now (empty when in sync). */
  drift: z.array(z.string()),
});
export type CloneView = z.infer<typeof CloneView>;

export const CloneList = z.strictObject({ identity: z.string(), clones: z.array(CloneView) });
export type CloneList = z.infer<typeof CloneList>;

// What the controller reports: history, the event stream and the controller's own info.
import { z } from 'zod';
import { HistoryEntry } from '../history/index.js';
import { IdentityView, NodeView } from './identities.js';
import { Workflow } from './workflows.js';

// --- history and events -------------------------------------------------------------------

export const HistoryQuery = z.strictObject({
  limit: z.coerce.number().int().min(1).max(2_000).default(100),
});
export type HistoryQuery = z.infer<typeof HistoryQuery>;

export const HistoryView = z.object({ entries: z.array(HistoryEntry) });
export type HistoryView = z.infer<typeof HistoryView>;

/** What GET /v1/events streams (SSE: `event:` is `type`, `data:` is this JSON). */
export const ApiEvent = z.discriminatedUnion('type', [
  z.object({ type: z.literal('identity'), at: z.string(), identity: IdentityView }),
  z.object({ type: z.literal('workflow'), at: z.string(), workflow: Workflow }),
  z.object({ type: z.literal('node'), at: z.string(), node: NodeView }),
  z.object({
    type: z.literal('alarm'),
    at: z.string(),
    alarm: z.enum([
      'split-brain',
      'leader-unresponsive',
      'probe-failover-paused',
      'fence-command-failed',
      /** A standby was held back from elections as drifted (docs/state.md). */
      'standby-drifted',
      /** The leader is gone and every live standby is drifted: whenNoneInSync decided. */
      'no-in-sync-standby',
    ]),
    identity: z.string().optional(),
    node: z.string().optional(),
    message: z.string(),
  }),
]);
export type ApiEvent = z.infer<typeof ApiEvent>;

export const ControllerInfo = z.object({
  name: z.string(),
  active: z.boolean(),
  activeController: z.object({ name: z.string(), url: z.string().optional() }).optional(),
  version: z.string(),
});
export type ControllerInfo = z.infer<typeof ControllerInfo>;

// CLI commands that go through the controller's HTTP API (pkg/api), patronictl style: one file
// per subject, gathered here for cmd/understudy.
export {
  type ControllerOptions,
  POLL_INTERVAL_MS,
  GIVE_UP_GRACE_MS,
  FENCE_ONLY_WAIT_MS,
} from './controller-context.js';
export * from './identity-commands.js';
export * from './handover-commands.js';
export * from './fence-commands.js';
export * from './acl-commands.js';
export * from './state-commands.js';

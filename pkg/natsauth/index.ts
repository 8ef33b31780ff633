// NATS authorization the ecosystem's way: one nkey user per role with subject permissions
// (docs/nats-authorization.md).
export {
  REPLAY_BUCKET,
  SNAPSHOT_BUCKET,
  ROLES,
  rolePermissions,
  type Direction,
  type Permissions,
  type Role,
  type RoleScope,
  type Rule,
} from './permissions.js';
export { renderAuthorization, roleUser, type AuthUser } from './render.js';
export {
  authUsers,
  ensureUserSeed,
  parseUserSpec,
  provisionUsers,
  readUserSeed,
  type ProvisionedUser,
  type RoleUserSpec,
} from './keys.js';
export { covers, permits } from './match.js';
export { renderTable } from './table.js';

// NATS authorization for test topologies: the role users of pkg/natsauth (seed files in a
// temporary directory), the server config the harness starts NATS with, and a registry from
// server URL to those users, so agents and controllers started by the support code connect
// as the right role without each test saying so.
//
// By default the test config also maps connections without credentials to a test-only
// observer user that may do anything: tests keep their own raw connections (publishing forged
// control requests to prove the agent refuses them, reading streams) while agents,
// controllers and clients run under their shipped role users. Acceptance tests of the
// permissions turn the observer off to get exactly the shipped configuration.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect, nkeyAuthenticator, type ConnectionOptions, type NatsConnection } from 'nats';
import {
  authUsers,
  provisionUsers,
  readUserSeed,
  renderAuthorization,
  type AuthUser,
  type ProvisionedUser,
  type Role,
  type RoleUserSpec,
} from '../../pkg/natsauth/index.js';

/** The user unauthenticated test connections become (never in a shipped configuration). */
export const OBSERVER_USER = 'test-observer';

export interface NatsAuthOptions {
  /** Per-node agent users (only their own heartbeat and control subjects); default: one shared agent user. */
  nodes?: string[];
  /** Scope every agent user to these identities (default: any identity). */
  identities?: string[];
  /** Map connections without credentials to an all-powerful observer (default true). */
  observer?: boolean;
}

export interface NatsAuth {
  readonly dir: string;
  readonly users: readonly ProvisionedUser[];
  /** The nats-server configuration (authorization block, and no_auth_user with the observer). */
  readonly config: string;
  readonly observer: boolean;
  /** The seed file of a role's user; for an agent, its node's user or else the shared one. */
  seedFile(role: Role, node?: string): string;
  /** Connection options that authenticate as that user. */
  options(role: Role, node?: string): Promise<Pick<ConnectionOptions, 'authenticator'>>;
  remove(): Promise<void>;
}

/**
 * Is authorization on for NATS servers the harness starts (unless a test says)? Yes, unless
 * UNDERSTUDY_TEST_NATS_AUTH=off: to tell a permissions problem from anything else, run a
 * failing test both ways.
 */
export function natsAuthByDefault(): boolean {
  return process.env.UNDERSTUDY_TEST_NATS_AUTH !== 'off';
}

export async function createNatsAuth(opts: NatsAuthOptions = {}): Promise<NatsAuth> {
  const dir = await mkdtemp(join(tmpdir(), 'understudy-nats-users-'));
  const scope = opts.identities ? { identities: opts.identities } : {};
  const specs: RoleUserSpec[] = [
    { name: 'controller', role: 'controller' },
    ...(opts.nodes ?? [undefined]).map((node) =>
      node === undefined
        ? { name: 'agent', role: 'agent' as const, ...scope }
        : { name: `agent-${node}`, role: 'agent' as const, node, ...scope },
    ),
    { name: 'client', role: 'client' },
  ];
  const users = await provisionUsers(dir, specs);
  const observer = opts.observer ?? true;
  const server: AuthUser[] = authUsers(users);
  if (observer) {
    server.push({
      name: `${OBSERVER_USER} (tests only: connections without credentials, every permission)`,
      user: OBSERVER_USER,
      permissions: {
        publish: { allow: [{ subject: '>', why: "the test's own probes and forgeries" }], deny: [] },
        subscribe: { allow: [{ subject: '>', why: 'the test observes everything' }], deny: [] },
      },
    });
  }
  const config = renderAuthorization(server) + (observer ? `no_auth_user: "${OBSERVER_USER}"\n` : '');
  const seedFile = (role: Role, node?: string): string => {
    const user =
      (role === 'agent' && node !== undefined && users.find((u) => u.role === 'agent' && u.node === node)) ||
      users.find((u) => u.role === role && u.node === undefined);
    if (!user) {
      throw new Error(
        `no NATS user for ${role}${node ? ` of node ${node}` : ''}: start NATS with nodes including '${node}' (or without nodes for a shared agent user)`,
      );
    }
    return user.seedFile;
  };
  return {
    dir,
    users,
    config,
    observer,
    seedFile,
    options: async (role, node) => ({
      authenticator: nkeyAuthenticator(await readUserSeed(seedFile(role, node), `${role} seed`)),
    }),
    remove: () => rm(dir, { recursive: true, force: true }),
  };
}

/** Server URL (host and network) → the users of that server. */
const registry = new Map<string, NatsAuth>();

export function registerNatsAuth(urls: readonly string[], auth: NatsAuth): void {
  for (const url of urls) registry.set(url, auth);
}

export function forgetNatsAuth(urls: readonly string[]): void {
  for (const url of urls) registry.delete(url);
}

/** The users of the first of `urls` the harness started with authorization; undefined: open NATS. */
export function natsAuthFor(urls: readonly string[]): NatsAuth | undefined {
  for (const url of urls) {
    const auth = registry.get(url);
    if (auth) return auth;
  }
  return undefined;
}

/** The seed file a component of `role` connects to these servers with (undefined: open NATS). */
export function natsSeedFileFor(urls: readonly string[], role: Role, node?: string): string | undefined {
  return natsAuthFor(urls)?.seedFile(role, node);
}

/** Connect to a harness NATS as a role's user (as the client user by default). */
export async function connectAs(
  url: string,
  role: Role = 'client',
  opts: Partial<ConnectionOptions> & { node?: string } = {},
): Promise<NatsConnection> {
  const { node, ...rest } = opts;
  const auth = natsAuthFor([url]);
  if (!auth) throw new Error(`NATS at ${url} was not started with authorization; connect() to it directly`);
  return connect({ servers: url, ...(await auth.options(role, node)), ...rest });
}

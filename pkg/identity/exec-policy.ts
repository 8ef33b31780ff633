// What this node lets identity specs run, and as whom: the agent config's `allow` and
// `service` sections, applied where a spec would act. The runner asks before it campaigns (a
// refused spec never wins the lease); the process driver asks again right before each spawn
// and spawns the executable found then; the login asks before reading a credential file, and
// cmd/agent before importing a module. One policy per agent config (execPolicy()).
import { resolve } from 'node:path';
import type { IdentitySpec, ProcessService } from '../spec/schema.js';
import { ALLOWED, mayRun, type AllowField, type AllowList, type Verdict } from './allow.js';
import { findCommand, resolveAllow, resolveFile, targetsOf } from './allow-resolve.js';
import { resolveRunAs, type RunAs, type ServiceUserSettings } from './run-as.js';
import { serviceEnvironment } from './service-process.js';

export interface ExecSettings {
  allow: AllowList;
  service: ServiceUserSettings;
}

/** A refusal: the field that caused it (a spec field, or `service.user` of the agent config). */
export type Refusal = { ok: false; field: AllowField | 'service.user'; reason: string };

/** What a spawn needs once allowed: the executable to run and who runs it. */
export type Launch = { ok: true; argv: string[]; runAs: RunAs | undefined } | Refusal;

export class ExecPolicy {
  constructor(readonly settings: ExecSettings) {}

  /** Everything a spec names, and who would run its process: refused before any campaign. */
  async check(spec: IdentitySpec, who: { identity: string; node: string }): Promise<Verdict | Refusal> {
    if (spec.service.driver === 'process') {
      const user = await this.runAs();
      if (!user.ok) return user;
    }
    const service = spec.service;
    const targets = await targetsOf(
      spec,
      {
        path: service.driver === 'process' ? serviceEnvironment(service, who, undefined).PATH : undefined,
        cwd: service.driver === 'process' ? serviceCwd(service) : process.cwd(),
      },
      who.node,
    );
    return mayRun(targets, await resolveAllow(this.settings.allow));
  }

  /** Who runs process services (resolved at each call: an account created later counts). */
  async runAs(): Promise<{ ok: true; switchTo?: RunAs } | Refusal> {
    const d = await resolveRunAs(this.settings.service);
    return d.ok ? d : { ok: false, field: 'service.user', reason: d.reason };
  }

  /** Right before a spawn: the allowed executable (absolute, PATH already searched) and user. */
  async launch(service: ProcessService, env: NodeJS.ProcessEnv): Promise<Launch> {
    const user = await this.runAs();
    if (!user.ok) return user;
    const found = await findCommand(service.command[0]!, env.PATH, serviceCwd(service));
    const verdict = mayRun({ 'service.command': found }, await resolveAllow(this.settings.allow));
    if (!verdict.ok) return verdict;
    // Spawn the path found (not argv[0] again): no second PATH search can lead elsewhere.
    const path = 'path' in found && found.path ? found.path : service.command[0]!;
    return { ok: true, argv: [path, ...service.command.slice(1)], runAs: user.switchTo };
  }

  /** Before reading a spec's credential file. */
  async credential(path: string): Promise<Verdict> {
    const found = await resolveFile(path, process.cwd());
    return mayRun({ 'credential.path': found }, await resolveAllow(this.settings.allow));
  }

  /** Before importing a spec's module. */
  async module(path: string): Promise<Verdict> {
    const found = await resolveFile(path, process.cwd());
    return mayRun({ 'service.module': found }, await resolveAllow(this.settings.allow));
  }
}

export function serviceCwd(service: ProcessService): string {
  return resolve(process.cwd(), service.cwd ?? '.');
}

const policies = new WeakMap<ExecSettings, ExecPolicy>();

/** The one policy of an agent config (the runner and the drivers share it). */
export function execPolicy(config: ExecSettings): ExecPolicy {
  let policy = policies.get(config);
  if (!policy) policies.set(config, (policy = new ExecPolicy(config)));
  return policy;
}

export { ALLOWED };

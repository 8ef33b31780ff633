// API operations on an identity's access lists (who may contact it, who is authorized, who
// is blocked) and on pending authorization requests. Every change is a compare-and-swap on
// the spec that also compares the election term, and is audited around the change.
import {
  ApiError,
  type AclChangeBody,
  type AclView,
  type ApproveBody,
  type DenyBody,
} from '../api/schema.js';
import type { IdentitySpec } from '../spec/schema.js';
import { AccessListError, approvePending, denyPending, listPending, putSpec } from '../spec/store.js';
import type { ApiDeps } from './api-deps.js';

/** Attempts at a compare-and-swap update of a spec before reporting a conflict. */
const CAS_ATTEMPTS = 5;

type Access = IdentitySpec['access'];

/** The access lists after `change` (pure); removing a caller that is not listed is an error. */
export function changedAccess(identity: string, current: Access, change: AclChangeBody): Access {
  const access = structuredClone(current);
  if (change.op === 'open') access.open = change.open;
  else if (change.op === 'remove') {
    const before = access[change.list].length;
    access[change.list] = access[change.list].filter(
      (c: { name?: string; nkey?: string }) => c.name !== change.name && c.nkey !== change.name,
    ) as never;
    if (access[change.list].length === before) {
      throw new ApiError('not-found', `${change.name} is not on ${identity}'s ${change.list} list`, 'name');
    }
  } else if (change.op === 'block') access.blocked = [...access.blocked, change.caller];
  else
    access[change.list] = [
      ...access[change.list].filter((c) => c.name !== change.caller.name),
      change.caller,
    ];
  return access;
}

export class AccessListApi {
  constructor(private readonly deps: ApiDeps) {}

  async getAcl(identity: string): Promise<AclView> {
    const snap = await this.deps.cluster.read();
    const stored = snap.specs.get(identity);
    if (!stored) throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
    return {
      identity,
      access: stored.spec.access,
      pending: await listPending(this.deps.etcd, identity, this.deps.keys.specs),
    };
  }

  async changeAcl(identity: string, change: AclChangeBody, actor: string): Promise<AclView> {
    const { cluster, audit, etcd, keys } = this.deps;
    const term = await cluster.requireActive();
    for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
      const snap = await cluster.read();
      const stored = snap.specs.get(identity);
      if (!stored) throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
      const access = changedAccess(identity, stored.spec.access, change);
      if (attempt === 0)
        await audit.action(term, identity, actor, `access list change: ${JSON.stringify(change)}`);
      const revision = await putSpec(
        etcd,
        { ...stored.spec, access },
        { expectRevision: stored.revision, keys: keys.specs, authority: term },
      ).catch((err: unknown) => cluster.refusal(err));
      if (revision !== undefined) return this.getAcl(identity);
    }
    throw new ApiError('conflict', `${identity}'s spec kept changing; try again`);
  }

  async approve(identity: string, caller: string, body: ApproveBody, actor: string): Promise<AclView> {
    const term = await this.deps.cluster.requireActive();
    const { etcd, keys } = this.deps;
    return this.deps.audit.around(
      term,
      identity,
      actor,
      `approval of ${caller}${body.key ? ` (key ${body.key})` : ''}`,
      `authorization of ${caller} approved`,
      () =>
        this.decide(identity, () =>
          approvePending(etcd, identity, caller, {
            keys: keys.specs,
            authority: term,
            ...(body.key !== undefined && { nkey: body.key }),
          }),
        ),
    );
  }

  async deny(identity: string, caller: string, body: DenyBody, actor: string): Promise<AclView> {
    const term = await this.deps.cluster.requireActive();
    const { etcd, keys } = this.deps;
    return this.deps.audit.around(
      term,
      identity,
      actor,
      `denial of ${caller}${body.key ? ` (key ${body.key})` : ''}${body.block ? ' with its key blocked' : ''}`,
      `authorization of ${caller} denied${body.block ? ' and its key blocked' : ''}`,
      () =>
        this.decide(identity, () =>
          denyPending(etcd, identity, caller, {
            block: body.block,
            keys: keys.specs,
            authority: term,
            ...(body.key !== undefined && { nkey: body.key }),
          }),
        ),
    );
  }

  /** Run a pending-request decision; its refusals become API errors. */
  private async decide(identity: string, fn: () => Promise<unknown>): Promise<AclView> {
    try {
      await fn();
    } catch (err) {
      if (err instanceof AccessListError) {
        throw new ApiError(
          err.code === 'conflict' || err.code === 'ambiguous' ? 'conflict' : 'not-found',
          err.message,
          err.code === 'no-pending' ? 'path.caller' : err.code === 'no-spec' ? 'path.identity' : undefined,
        );
      }
      return this.deps.cluster.refusal(err);
    }
    return this.getAcl(identity);
  }
}

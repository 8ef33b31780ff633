// API operations on identities and their specs: list and read them, apply specs, delete one.
// Spec writes carry the election term (pkg/spec compares it in the same txn).
import {
  ApiError,
  type ApplyBody,
  type ApplyResult,
  type IdentityList,
  type IdentityListQuery,
  type IdentityView,
} from '../api/schema.js';
import { deleteSpec, parseSpec, putSpec, SpecError } from '../spec/store.js';
import type { ApiDeps } from './api-deps.js';
import { identityKeys, identityView, runningWorkflow } from './view.js';

export class SpecApi {
  constructor(private readonly deps: ApiDeps) {}

  /**
   * A page of identities in name order. Names and the leader filter are read off the snapshot;
   * a view (the costly part: standbys, health) is built only for names that pass them, and
   * only until the page is full, except with a health filter, which needs every view to count.
   */
  async listIdentities(query: IdentityListQuery): Promise<IdentityList> {
    const { cluster, prober } = this.deps;
    const snap = await cluster.read();
    const view = cluster.view(snap);
    const names = cluster
      .identityNames(snap)
      .filter(
        (id) =>
          (query.prefix === undefined || id.startsWith(query.prefix)) &&
          (query.leader === undefined || identityKeys(snap, id).leader?.record.node === query.leader),
      );
    const page = (matching: string[], viewOf: (id: string) => IdentityView): IdentityList => {
      const rest = query.after === undefined ? matching : matching.filter((id) => id > query.after!);
      const identities = rest.slice(0, query.limit).map(viewOf);
      const next = rest.length > query.limit ? identities[identities.length - 1]?.identity : undefined;
      return { identities, total: matching.length, ...(next !== undefined ? { next } : {}) };
    };
    const viewOf = (id: string) => identityView(view, id, prober.state(id));
    if (!query.health) return page(names, viewOf);
    const wanted = new Set(query.health);
    const views = new Map(names.map((id) => [id, viewOf(id)]));
    const matching = names.filter((id) => wanted.has(views.get(id)!.health));
    return page(matching, (id) => views.get(id)!);
  }

  async getIdentity(identity: string): Promise<IdentityView> {
    const { cluster, prober } = this.deps;
    const snap = await cluster.read();
    cluster.requireIdentity(snap, identity);
    return identityView(cluster.view(snap), identity, prober.state(identity));
  }

  async getSpec(identity: string): Promise<{ spec: unknown; revision: string }> {
    const snap = await this.deps.cluster.read();
    const stored = snap.specs.get(identity);
    if (!stored) throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
    return { spec: stored.spec, revision: String(stored.revision) };
  }

  async apply(body: ApplyBody, actor: string): Promise<ApplyResult[]> {
    // Validate everything before writing anything: a bad document changes nothing.
    const specs = body.specs.map((doc, i) => {
      try {
        return parseSpec(doc, `specs.${i}`);
      } catch (err) {
        if (err instanceof SpecError) {
          throw new ApiError(
            'bad-request',
            err.message,
            `specs.${i}${err.field && err.field !== '(root)' ? `.${err.field}` : ''}`,
          );
        }
        throw err;
      }
    });
    const names = specs.map((s) => s.name);
    const dup = names.find((n, i) => names.indexOf(n) !== i);
    if (dup)
      throw new ApiError(
        'bad-request',
        `identity ${dup} appears twice in one apply`,
        `specs.${names.lastIndexOf(dup)}.name`,
      );
    const { cluster, audit, etcd } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    const results: ApplyResult[] = [];
    for (const spec of specs) {
      const stored = snap.specs.get(spec.name);
      if (stored && JSON.stringify(stored.spec) === JSON.stringify(spec)) {
        results.push({ identity: spec.name, action: 'unchanged', revision: String(stored.revision) });
        continue;
      }
      if (body.dryRun) {
        results.push({
          identity: spec.name,
          action: stored ? 'updated' : 'created',
          revision: String(stored?.revision ?? 0n),
        });
        continue;
      }
      await audit.action(term, spec.name, actor, stored ? 'spec updated' : 'spec created');
      const revision = await putSpec(etcd, spec, {
        expectRevision: stored?.revision ?? 0n,
        keys: this.deps.keys.specs,
        authority: term,
      }).catch((err: unknown) => cluster.refusal(err));
      if (revision === undefined) {
        throw new ApiError(
          'conflict',
          `${spec.name} changed while applying; read it again and re-apply (earlier identities in this apply were written)`,
          `specs.${specs.indexOf(spec)}`,
        );
      }
      results.push({
        identity: spec.name,
        action: stored ? 'updated' : 'created',
        revision: String(revision),
      });
    }
    return results;
  }

  async deleteIdentity(identity: string, actor: string): Promise<void> {
    const { cluster, audit, etcd } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    if (!snap.specs.has(identity))
      throw new ApiError('not-found', `no spec stored for ${identity}`, 'path.identity');
    if (runningWorkflow(snap, identity)) {
      throw new ApiError(
        'conflict',
        `${identity} has a workflow in progress; wait for it or cancel it first`,
      );
    }
    await audit.action(term, identity, actor, 'spec deleted: its leader logs out');
    await deleteSpec(etcd, identity, { keys: this.deps.keys.specs, authority: term }).catch((err: unknown) =>
      cluster.refusal(err),
    );
  }
}

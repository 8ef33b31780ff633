// POST/GET/DELETE /v1/identities/:id/clones: cold standbys. A clone records the bundle a new
// node needs to take over as a faithful copy; its agent, started with --clone, pulls it. The
// list judges each clone with the same drift rules as running standbys (drift.ts): against
// its live heartbeat when its agent runs, else against the bundle it was made with.
import { ApiError } from '../api/problem.js';
import type { CloneBody, CloneList, CloneView } from '../api/clones.js';
import type { HeartbeatIdentity } from '../control/protocol.js';
import { cloneKey, CloneRecord, listClones, readClone } from '../spec/clone.js';
import { accessFingerprint } from '../spec/fingerprint.js';
import type { ApiDeps } from './api-deps.js';
import { judgeDrift } from './drift.js';
import { NotActiveError, type ClusterSnapshot } from './store.js';
import { freshAgent, heartbeatEntry, identityKeys, type ViewContext } from './view.js';

export class CloneApi {
  constructor(private readonly deps: ApiDeps) {}

  async clone(identity: string, body: CloneBody, actor: string): Promise<CloneView> {
    const { cluster, audit, writer, keys, clock } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    const stored = snap.specs.get(identity);
    if (!stored) throw new ApiError('not-found', `no identity named ${identity}`, 'path.identity');
    const { spec, revision } = stored;
    const node = body.node;
    if (spec.candidates && !(node in spec.candidates)) {
      throw new ApiError(
        'conflict',
        `${identity}'s spec lists its candidates and ${node} is not one: add it to candidates (understudy apply) first, so the clone may take over`,
        'node',
      );
    }
    const keysOf = identityKeys(snap, identity);
    if (keysOf.leader?.record.node === node) {
      throw new ApiError(
        'conflict',
        `${node} leads ${identity}: a clone is a standby on another node`,
        'node',
      );
    }
    const ctx = cluster.view(snap);
    const leaderNode = keysOf.leader?.record.node;
    const declared = spec.service.driver === 'process' ? spec.service.version : undefined;
    const version =
      declared !== undefined
        ? `declared:${declared}`
        : leaderNode
          ? heartbeatEntry(freshAgent(ctx, leaderNode), identity)?.version
          : undefined;
    const newest = keysOf.snapshots?.[0];
    const record: CloneRecord = {
      identity,
      node,
      createdAt: new Date(clock.wallMs()).toISOString(),
      actor,
      ...(body.reason ? { reason: body.reason } : {}),
      bundle: {
        specRevision: String(revision),
        credential: spec.credential,
        access: spec.access,
        accessDigest: accessFingerprint(spec.access),
        ...(version !== undefined ? { version } : {}),
        ...(newest ? { snapshot: newest } : {}),
      },
    };
    await audit.action(
      term,
      identity,
      actor,
      `clone to ${node} registered${body.reason ? `: ${body.reason}` : ''}`,
    );
    const written = await writer
      .write(
        [
          this.deps.etcd
            .put(cloneKey(keys.prefix, identity, node))
            .value(JSON.stringify(CloneRecord.parse(record))),
        ],
        term,
      )
      .catch((err: Error) => {
        throw new ApiError('unavailable', `etcd did not record the clone (${err.message}); retry`);
      });
    if (!written) await cluster.refusal(new NotActiveError(`clone of ${identity} to ${node} not recorded`));
    return this.view(record, snap, ctx);
  }

  async listClones(identity: string): Promise<CloneList> {
    const { cluster, etcd, keys } = this.deps;
    const snap = await cluster.read();
    if (!snap.specs.has(identity))
      throw new ApiError('not-found', `no identity named ${identity}`, 'path.identity');
    const ctx = cluster.view(snap);
    const clones = await listClones(etcd, identity, keys.prefix);
    return { identity, clones: clones.map((c) => this.view(c, snap, ctx)) };
  }

  async deleteClone(identity: string, node: string, actor: string): Promise<void> {
    const { cluster, audit, writer, etcd, keys } = this.deps;
    const term = await cluster.requireActive();
    if (!(await readClone(etcd, identity, node, keys.prefix))) {
      throw new ApiError('not-found', `no clone of ${identity} is registered for ${node}`, 'path.node');
    }
    await audit.action(term, identity, actor, `clone on ${node} forgotten`);
    const deleted = await writer
      .delete(cloneKey(keys.prefix, identity, node), undefined, term)
      .catch((err: Error) => {
        throw new ApiError('unavailable', `etcd did not delete the clone (${err.message}); retry`);
      });
    if (!deleted) await cluster.refusal(new NotActiveError('clone not deleted'));
  }

  /** A clone with its age and drift, judged on its live heartbeat or else on its bundle. */
  private view(clone: CloneRecord, snap: ClusterSnapshot, ctx: ViewContext): CloneView {
    const stored = snap.specs.get(clone.identity);
    const now = this.deps.clock.wallMs();
    const keysOf = identityKeys(snap, clone.identity);
    const beat = heartbeatEntry(freshAgent(ctx, clone.node), clone.identity);
    const leaderNode = keysOf.leader?.record.node;
    const leaderVersion = leaderNode
      ? heartbeatEntry(freshAgent(ctx, leaderNode), clone.identity)?.version
      : undefined;
    const fromBundle: Pick<HeartbeatIdentity, 'specRevision' | 'access' | 'version' | 'snapshot'> = {
      specRevision: clone.bundle.specRevision,
      access: clone.bundle.accessDigest,
      ...(clone.bundle.version !== undefined ? { version: clone.bundle.version } : {}),
      ...(clone.bundle.snapshot
        ? {
            snapshot: {
              object: clone.bundle.snapshot.object,
              token: clone.bundle.snapshot.token,
              takenAt: clone.bundle.snapshot.takenAt,
              how: 'restored',
            },
          }
        : {}),
    };
    const state = stored?.spec.state;
    const verdict = stored
      ? judgeDrift(
          clone.node,
          beat ?? fromBundle,
          {
            specRevision: stored.revision,
            access: accessFingerprint(stored.spec.access),
            version:
              stored.spec.service.driver === 'process' && stored.spec.service.version !== undefined
                ? `declared:${stored.spec.service.version}`
                : (leaderVersion ?? clone.bundle.version),
            snapshots: keysOf.snapshots ?? [],
            // A bundle does not catch up by itself: only a spec change not yet seen by a live agent gets time.
            specCurrentForMs: Number.POSITIVE_INFINITY,
          },
          {
            checks: state?.drift ?? { spec: true, access: true, version: true, snapshot: false },
            maxLagMs: state?.maxLagMs ?? Number.POSITIVE_INFINITY,
          },
          now,
        )
      : undefined;
    const reasons = verdict?.known && verdict.drifted ? verdict.reasons : [];
    return {
      ...clone,
      ageMs: Math.max(0, now - Date.parse(clone.createdAt)),
      live: beat !== undefined,
      drifted: reasons.length > 0,
      drift: reasons,
    };
  }
}

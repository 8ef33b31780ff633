// POST /v1/identities/:id/snapshot and GET …/snapshots: the leader snapshots its state
// directory when asked (the controller signs the request, as for drains), and the records kept
// in etcd are listed. The store refuses a snapshot whose term no longer holds the identity,
// so a leader deposed while copying publishes nothing.
import type { Etcd3 } from 'etcd3';
import { ApiError } from '../api/problem.js';
import { SnapshotRecord, type SnapshotBody, type SnapshotList } from '../api/snapshots.js';
import { Keys } from '../lease/keys.js';
import { listSnapshots } from '../snapshot/store.js';
import { AgentControlError, type AgentLink } from './agents.js';
import type { Cluster } from './cluster.js';
import { identityKeys } from './view.js';

/**
 * How long the leader may take to copy and upload its state directory when asked. Generous:
 * a directory of a few GB on a busy JetStream takes tens of seconds; the store's own stall
 * watchdog (30 s without a byte) fails a stuck copy sooner.
 */
export const SNAPSHOT_REQUEST_MS = 120_000;

export class SnapshotApi {
  constructor(
    private readonly deps: { etcd: Etcd3; keys: { prefix: string }; cluster: Cluster; agents: AgentLink },
  ) {}

  async snapshot(identity: string, body: SnapshotBody, actor: string): Promise<SnapshotRecord> {
    const { cluster, agents } = this.deps;
    const term = await cluster.requireActive();
    const snap = await cluster.read();
    const spec = snap.specs.get(identity)?.spec;
    if (!spec) throw new ApiError('not-found', `no identity named ${identity}`, 'path.identity');
    if (!spec.state) {
      throw new ApiError(
        'conflict',
        `${identity} keeps no state: set state.dir in its spec (and allow it in the agents' allow.stateDirs) first`,
      );
    }
    const leader = identityKeys(snap, identity).leader?.record.node;
    if (!leader) {
      throw new ApiError(
        'conflict',
        `${identity} has no leader: only a logged-in leader snapshots its state`,
      );
    }
    let result: unknown;
    try {
      result = await agents.snapshot(
        leader,
        term.revision,
        { identity, actor: body.reason ? `${actor}: ${body.reason}`.slice(0, 200) : actor },
        SNAPSHOT_REQUEST_MS,
      );
    } catch (err) {
      if (err instanceof AgentControlError && err.code === 'no-answer') {
        throw new ApiError(
          'unavailable',
          `${err.message}; is ${leader}'s agent running and connected to NATS?`,
        );
      }
      if (err instanceof AgentControlError && err.code === 'not-leader') {
        throw new ApiError('conflict', `${err.message}; the leader changed: look again and retry`);
      }
      throw new ApiError('unavailable', `the snapshot on ${leader} failed: ${(err as Error).message}`);
    }
    const parsed = SnapshotRecord.safeParse(result);
    if (!parsed.success) {
      throw new ApiError(
        'internal',
        `agent ${leader} answered the snapshot in a shape this controller does not read`,
      );
    }
    return parsed.data;
  }

  async listSnapshots(identity: string): Promise<SnapshotList> {
    const snap = await this.deps.cluster.read();
    if (!snap.specs.has(identity))
      throw new ApiError('not-found', `no identity named ${identity}`, 'path.identity');
    return {
      identity,
      snapshots: await listSnapshots(this.deps.etcd, identity, new Keys(this.deps.keys.prefix)),
    };
  }
}

// `understudy-agent --clone ID`: a new host with only its connection settings and its name
// becomes a warm standby of ID. It pulls the bundle the controller recorded for it, restores
// the newest good snapshot into its state directory (verified file by file), checks what it
// can of the rest, and only then starts hosting the identity. What it cannot fix itself (an
// older binary, a missing credential file) is said plainly; the drift hold keeps it out of
// elections until it is fixed.
import type { Etcd3 } from 'etcd3';
import type { Logger } from 'pino';
import { resolveFile } from '../identity/allow-resolve.js';
import { serviceVersion } from '../identity/version.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import type { ExecPolicy } from '../identity/exec-policy.js';
import { decideCatchUp, heldOf, readHeld, writeHeld } from '../snapshot/held.js';
import { recoverInterruptedSwap } from '../snapshot/restore.js';
import type { SnapshotStore } from '../snapshot/store.js';
import { cloneKey, readClone } from '../spec/clone.js';
import { stateDirFor } from '../spec/schema.js';
import { getSpec } from '../spec/store.js';

export class CloneError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CloneError';
  }
}

export interface CloneBootstrap {
  identity: string;
  node: string;
  etcd: Etcd3;
  store: Pick<SnapshotStore, 'restoreLatest' | 'list'>;
  /** What this node lets specs run and where they may keep state (the agent config's allow). */
  policy: Pick<ExecPolicy, 'check'>;
  /** Who the restored directory belongs to (the service's user, when services run as one). */
  owner?: () => Promise<{ uid: number; gid: number } | undefined>;
  log: Logger;
  prefix?: string;
}

/** Resolves with what was done, one sentence each; rejects (CloneError) when it cannot stand by. */
export async function bootstrapClone(o: CloneBootstrap): Promise<string[]> {
  const { identity, node, log } = o;
  const prefix = o.prefix ?? 'understudy';
  const clone = await readClone(o.etcd, identity, node, prefix);
  if (!clone) {
    throw new CloneError(
      `no clone of ${identity} is registered for ${node}: run \`understudy clone ${identity} --to ${node}\` first, then start this agent again`,
    );
  }
  const stored = await getSpec(o.etcd, identity);
  if (!stored) throw new CloneError(`${identity} has no spec in etcd any more; nothing to clone`);
  const { spec, revision } = stored;
  const said: string[] = [];
  said.push(
    String(revision) === clone.bundle.specRevision
      ? `spec revision ${revision}, as recorded in the clone`
      : `the spec moved on since the clone was made (revision ${clone.bundle.specRevision} → ${revision}): this node runs the current one`,
  );
  // The same gate the runner applies: a spec this node refuses touches nothing here, least of
  // all a state directory its allow.stateDirs does not list.
  const verdict = await o.policy.check(spec, { identity, node });
  if (!verdict.ok) {
    throw new CloneError(`this node refuses ${identity}'s spec (${verdict.field}): ${verdict.reason}`);
  }
  if (spec.state) {
    const dir = stateDirFor(spec.state, node);
    await recoverInterruptedSwap(dir);
    const held = await readHeld(dir);
    const decision = decideCatchUp(held, (await o.store.list(identity))[0]);
    if (!decision.restore) {
      said.push(decision.reason);
    } else {
      let restored;
      try {
        // Never below what the directory already holds (a restart with --clone kept on).
        const owner = await o.owner?.();
        restored = await o.store.restoreLatest(identity, dir, {
          ...(held ? { above: held } : {}),
          ...(owner ? { owner } : {}),
        });
      } catch (err) {
        const problem = `cannot restore the state of ${identity} into ${dir}: ${(err as Error).message}`;
        if (!held) {
          throw new CloneError(
            `${problem}. Take a new snapshot on the leader (understudy snapshot ${identity}) and start this agent again`,
          );
        }
        // It holds state already: stand by with it; the drift checks hold it back if it lags.
        log.error({ identity }, `${problem}; standing by with the state it holds (${held.object})`);
        said.push(problem);
        restored = undefined;
      }
      if (restored) {
        for (const r of restored.refused) said.push(`refused snapshot ${r.record.object}: ${r.reason}`);
        await writeHeld(dir, heldOf(restored.record, 'restored'));
        said.push(
          `restored snapshot ${restored.record.object} (term ${restored.record.token}, ${restored.manifest.entries.length} entries, every file verified) into ${dir}`,
        );
      }
    }
  }
  const version = await serviceVersion(spec, { identity, node }).catch(() => undefined);
  if (clone.bundle.version !== undefined && version !== clone.bundle.version) {
    const problem = `this node would run service version ${version ?? '(executable not found)'}, the leader ran ${clone.bundle.version} when the clone was made: install the same build, or it stays held back as drifted`;
    log.error({ identity }, problem);
    said.push(problem);
  }
  if (spec.credential.source === 'file') {
    const found = await resolveFile(spec.credential.path, process.cwd());
    if (!('real' in found)) {
      const problem = `the credential file ${spec.credential.path} is not on this node: provision it before this node can log in`;
      log.error({ identity }, problem);
      said.push(problem);
    }
  }
  const marked = { ...clone, bootstrappedAt: new Date().toISOString() };
  await o.etcd
    .put(cloneKey(prefix, identity, node))
    .value(JSON.stringify(marked))
    .options(within(ETCD_CALL_MS))
    .exec()
    .catch((err: Error) =>
      log.warn({ err: err.message }, 'could not record the bootstrap in the clone record'),
    );
  return said;
}

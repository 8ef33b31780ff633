// What the controller keeps in etcd, and how it reads the whole cluster at one revision. The
// controller holds no state of its own that matters: workflows, pauses and pending node
// fences live here, so a standby controller that takes over resumes from exactly this.
import type { Etcd3, IKeyValue, IOperation } from 'etcd3';
import { z } from 'zod';
import { Workflow } from '../api/schema.js';
import type { Authority } from '../lease/admin.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { readPrefixes } from '../lease/paged.js';
import {
  CandidateRecord,
  DriftRecord,
  FenceRecord,
  HoldOffRecord,
  Keys,
  LeaderRecord,
  LeaseOperationError,
  LoginRecord,
  TermEnd,
  type FencingToken,
} from '../lease/index.js';
import { parseSpec, SpecKeys } from '../spec/store.js';
import type { IdentitySpec } from '../spec/schema.js';
import { SnapshotRecord } from '../snapshot/record.js';

export class ControllerKeys {
  readonly lease: Keys;
  readonly specs: SpecKeys;
  constructor(readonly prefix = 'understudy') {
    this.lease = new Keys(prefix);
    this.specs = new SpecKeys(prefix);
  }
  /** The controllers' own election: an "identity" named `active` under its own prefix. */
  get election(): Keys {
    return new Keys(`${this.prefix}/controllers`);
  }
  controllerMember(name: string): string {
    return `${this.prefix}/controllers/members/${name}`;
  }
  /** The running or last workflow of an identity: one at a time per identity. */
  workflows(): string {
    return `${this.prefix}/workflows/`;
  }
  workflow(identity: string): string {
    return `${this.workflows()}${identity}`;
  }
  pauses(): string {
    return `${this.prefix}/paused/`;
  }
  paused(identity: string): string {
    return `${this.pauses()}${identity}`;
  }
  /** A node fence an operator asked for, applied once the node's identities have moved away. */
  fenceIntents(): string {
    return `${this.prefix}/node-fences/`;
  }
  fenceIntent(node: string): string {
    return `${this.fenceIntents()}${node}`;
  }
  identitiesRoot(): string {
    return `${this.prefix}/identities/`;
  }
  nodesRoot(): string {
    return `${this.prefix}/nodes/`;
  }
}

export const PauseRecord = z.strictObject({ reason: z.string(), actor: z.string(), at: z.number() });
export type PauseRecord = z.infer<typeof PauseRecord>;

export const FenceIntent = z.strictObject({
  reason: z.string(),
  actor: z.string(),
  at: z.number(),
  /** Workflow ids moving the node's identities away. */
  workflows: z.array(z.string()),
});
export type FenceIntent = z.infer<typeof FenceIntent>;

export const ControllerMember = z.strictObject({
  name: z.string(),
  url: z.string().optional(),
  /**
   * The controller's public signing key ('U...'): agents obey control requests signed by the
   * active controller's key only (pkg/control/signing.ts). On the member's session lease.
   */
  key: z.string().optional(),
  startedAt: z.number(),
});
export type ControllerMember = z.infer<typeof ControllerMember>;

/** One identity's leadership keys, read at the snapshot's revision. */
export interface IdentityKeys {
  leader?: { record: LeaderRecord; token: FencingToken };
  /** Login record of the current term only (a record of an earlier term is dropped). */
  login?: LoginRecord;
  candidates: Map<string, CandidateRecord>;
  termEnd?: TermEnd;
  holdOffs: Map<string, HoldOffRecord>;
  /** Standbys held back as drifted (a malformed record still holds: campaigns check the key). */
  drifts?: Map<string, DriftRecord>;
  /** Snapshots kept of the identity's state, newest first. */
  snapshots?: SnapshotRecord[];
}

export interface ClusterSnapshot {
  revision: bigint;
  specs: Map<string, { spec: IdentitySpec; revision: bigint }>;
  /** Stored specs that do not validate (the agents keep their last good copy). */
  invalidSpecs: Map<string, string>;
  identities: Map<string, IdentityKeys>;
  fences: Map<string, FenceRecord>;
  paused: Map<string, PauseRecord>;
  workflows: Map<string, { workflow: Workflow; revision: bigint }>;
  fenceIntents: Map<string, { intent: FenceIntent; revision: bigint }>;
  controllers: Map<string, ControllerMember>;
  activeController?: string;
}

function parseJson<T>(schema: z.ZodType<T>, kv: IKeyValue): T | undefined {
  try {
    const parsed = schema.safeParse(JSON.parse(kv.value.toString()));
    return parsed.success ? parsed.data : undefined;
  } catch {
    return undefined;
  }
}

/** A cluster with nothing in it, as seen at `revision` (filled in by readSnapshot). */
export function emptySnapshot(revision: bigint): ClusterSnapshot {
  return {
    revision,
    specs: new Map(),
    invalidSpecs: new Map(),
    identities: new Map(),
    fences: new Map(),
    paused: new Map(),
    workflows: new Map(),
    fenceIntents: new Map(),
    controllers: new Map(),
  };
}

/** The key prefixes a snapshot is made of, in the order buildSnapshot takes their ranges. */
export function snapshotPrefixes(keys: ControllerKeys): string[] {
  return [
    keys.specs.specs(),
    keys.identitiesRoot(),
    keys.nodesRoot(),
    keys.pauses(),
    keys.workflows(),
    keys.fenceIntents(),
    `${keys.prefix}/controllers/`,
    `${keys.prefix}/snapshots/`,
  ];
}

/**
 * Does buildSnapshot use this key? Under the prefixes it reads, the controllers' own election
 * sessions are rewritten every tenth of their TTL: a mirror that counted them as changes would
 * rebuild its snapshot ten times a second with nothing changed.
 */
export function snapshotUses(keys: ControllerKeys, key: string): boolean {
  if (key.startsWith(`${keys.prefix}/controllers/`)) {
    return key === keys.election.leader('active') || key.startsWith(`${keys.prefix}/controllers/members/`);
  }
  return snapshotPrefixes(keys).some((p) => key.startsWith(p));
}

/**
 * How a stored value becomes a record (undefined: unreadable). The mirror passes one that
 * remembers each key-value it already parsed, so an unchanged key costs nothing the next time.
 */
export interface SnapshotParser {
  json<T>(schema: z.ZodType<T>, kv: IKeyValue): T | undefined;
  spec(kv: IKeyValue, key: string): IdentitySpec;
}

export const plainParser: SnapshotParser = {
  json: parseJson,
  spec: (kv, key) => parseSpec(JSON.parse(kv.value.toString()), key),
};

/** Everything the controller decides on, read at one revision. */
export async function readSnapshot(client: Etcd3, keys: ControllerKeys): Promise<ClusterSnapshot> {
  // Paged, at one revision: at 10,000 identities one request would miss its deadline.
  const { ranges, revision } = await readPrefixes(client, snapshotPrefixes(keys));
  return buildSnapshot(keys, revision, ranges);
}

/** A snapshot from the key-values under each of snapshotPrefixes(keys), seen at `revision`. */
export function buildSnapshot(
  keys: ControllerKeys,
  revision: bigint,
  ranges: IKeyValue[][],
  parse: SnapshotParser = plainParser,
): ClusterSnapshot {
  const parseJson = parse.json.bind(parse);
  const snap = emptySnapshot(revision);
  for (const kv of ranges[0] ?? []) {
    const key = kv.key.toString();
    const identity = key.slice(keys.specs.specs().length);
    try {
      snap.specs.set(identity, {
        spec: parse.spec(kv, key),
        revision: BigInt(kv.mod_revision),
      });
    } catch (err) {
      snap.invalidSpecs.set(identity, (err as Error).message);
    }
  }
  const identity = (id: string) => {
    let entry = snap.identities.get(id);
    if (!entry) snap.identities.set(id, (entry = { candidates: new Map(), holdOffs: new Map() }));
    return entry;
  };
  const logins = new Map<string, LoginRecord>();
  for (const kv of ranges[1] ?? []) {
    const [id, kind, node] = kv.key.toString().slice(keys.identitiesRoot().length).split('/');
    if (!id) continue;
    if (kind === 'leader') {
      const record = parseJson(LeaderRecord, kv);
      if (record) identity(id).leader = { record, token: BigInt(kv.mod_revision) };
    } else if (kind === 'login') {
      const record = parseJson(LoginRecord, kv);
      if (record) logins.set(id, record);
    } else if (kind === 'candidates' && node) {
      const record = parseJson(CandidateRecord, kv);
      if (record) identity(id).candidates.set(node, record);
    } else if (kind === 'term-end') {
      const record = parseJson(TermEnd, kv);
      if (record) identity(id).termEnd = record;
    } else if (kind === 'holdoff' && node) {
      const record = parseJson(HoldOffRecord, kv);
      if (record) identity(id).holdOffs.set(node, record);
    } else if (kind === 'drift' && node) {
      const entry = identity(id);
      (entry.drifts ??= new Map()).set(
        node,
        parseJson(DriftRecord, kv) ?? { reasons: ['unreadable drift record'], actor: 'unknown', at: 0 },
      );
    }
  }
  for (const [id, login] of logins) {
    const entry = snap.identities.get(id);
    if (entry?.leader && login.token === String(entry.leader.token)) entry.login = login;
  }
  for (const kv of ranges[2] ?? []) {
    const [node, kind] = kv.key.toString().slice(keys.nodesRoot().length).split('/');
    if (node && kind === 'fence') {
      // A malformed fence record still fences (the agent reads it that way too).
      snap.fences.set(
        node,
        parseJson(FenceRecord, kv) ?? { reason: 'unreadable fence record', actor: 'unknown', at: 0 },
      );
    }
  }
  for (const kv of ranges[3] ?? []) {
    const record = parseJson(PauseRecord, kv);
    if (record) snap.paused.set(kv.key.toString().slice(keys.pauses().length), record);
  }
  for (const kv of ranges[4] ?? []) {
    const workflow = parseJson(Workflow, kv);
    if (workflow) snap.workflows.set(workflow.identity, { workflow, revision: BigInt(kv.mod_revision) });
  }
  for (const kv of ranges[5] ?? []) {
    const intent = parseJson(FenceIntent, kv);
    if (intent) {
      snap.fenceIntents.set(kv.key.toString().slice(keys.fenceIntents().length), {
        intent,
        revision: BigInt(kv.mod_revision),
      });
    }
  }
  const electionLeader = keys.election.leader('active');
  for (const kv of ranges[6] ?? []) {
    const key = kv.key.toString();
    if (key === electionLeader) {
      snap.activeController = parseJson(LeaderRecord, kv)?.node;
    } else if (key.startsWith(`${keys.prefix}/controllers/members/`)) {
      const member = parseJson(ControllerMember, kv);
      if (member) snap.controllers.set(member.name, member);
    }
  }
  // Keys sort by token then time (pkg/snapshot/store.ts), so reversed they are newest first.
  for (const kv of [...(ranges[7] ?? [])].reverse()) {
    const [id] = kv.key.toString().slice(`${keys.prefix}/snapshots/`.length).split('/');
    if (!id || !(snap.specs.has(id) || snap.identities.has(id))) continue;
    const record = parseJson(SnapshotRecord, kv);
    // A record filed under another identity's prefix is not that identity's state.
    if (record?.identity === id) (identity(id).snapshots ??= []).push(record);
  }
  return snap;
}

/**
 * Writes made by the active controller only: each is guarded by its election token, so a
 * controller that was deposed (frozen, partitioned) and comes back cannot overwrite what its
 * successor decided (S2 for the control plane).
 */
export class GuardedWriter {
  constructor(
    private readonly client: Etcd3,
    private readonly keys: ControllerKeys,
    private readonly token: () => FencingToken | undefined,
    private readonly name = 'this controller',
  ) {}

  /**
   * The compare every write carries: the election key still has the revision of `term` (by
   * default the current one). A step that captured its term at the start passes it, so a
   * write cannot land under a later term this controller won in the meantime.
   */
  private guard(term: Authority = this.authority()) {
    return this.client.if(term.key, 'Mod', '==', term.revision);
  }

  /**
   * This controller's current election term as an Authority for pkg/lease operations: etcd
   * writes compare the election key's revision, lease calls ask `mayAct()` right before. The
   * term is captured now: once it ends (even if this controller wins a later one) every
   * operation started under it refuses. Throws NotActiveError when not active.
   */
  authority(): Authority {
    const token = this.token();
    if (token === undefined) throw new NotActiveError();
    return {
      key: this.keys.election.leader('active'),
      revision: String(token),
      mayAct: () => this.token() === token,
      describe: `controller ${this.name} (election term ${token})`,
    };
  }

  /** True while this controller is active (checked synchronously: a resumed freeze reads false). */
  mayAct(): boolean {
    return this.token() !== undefined;
  }

  /**
   * Put `value` at `key` if its mod revision is still `expectRevision` (0n: absent), with
   * `ops` in the same txn (written only together with it).
   */
  async put(
    key: string,
    value: unknown,
    expectRevision: bigint,
    ops: IOperation[] = [],
    term?: Authority,
  ): Promise<bigint | undefined> {
    const res = await this.guard(term)
      .and(key, 'Mod', '==', String(expectRevision))
      .then(this.client.put(key).value(JSON.stringify(value)), ...ops)
      .options(within(ETCD_CALL_MS))
      .commit();
    return res.succeeded ? BigInt(res.header.revision) : undefined;
  }

  /**
   * Put every entry, each only if its key still has `expectRevision` (0: absent), in one
   * transaction under `term`: all or none. The revision written, or undefined when a compare
   * failed (nothing written).
   */
  async putAll(
    entries: ReadonlyArray<{ key: string; value: unknown; expectRevision: bigint }>,
    term?: Authority,
  ): Promise<bigint | undefined> {
    let txn = this.guard(term);
    for (const e of entries) txn = txn.and(e.key, 'Mod', '==', String(e.expectRevision));
    const res = await txn
      .then(...entries.map((e) => this.client.put(e.key).value(JSON.stringify(e.value))))
      .options(within(ETCD_CALL_MS))
      .commit();
    return res.succeeded ? BigInt(res.header.revision) : undefined;
  }

  /** Write `ops` while this controller is active; false when its term ended (nothing written). */
  async write(ops: IOperation[], term?: Authority): Promise<boolean> {
    const res = await this.guard(term)
      .then(...ops)
      .options(within(ETCD_CALL_MS))
      .commit();
    return res.succeeded;
  }

  /**
   * Does `term` still hold, as etcd sees it now? Tells a lost compare of `put` (someone else
   * changed the key) from a refusal because the term ended.
   */
  async holds(term: Authority): Promise<boolean> {
    const kv = (await this.client.get(term.key).options(within(ETCD_CALL_MS)).exec()).kvs[0];
    return kv !== undefined && kv.mod_revision === term.revision;
  }

  async delete(key: string, expectRevision?: bigint, term?: Authority): Promise<boolean> {
    let txn = this.guard(term);
    if (expectRevision !== undefined) txn = txn.and(key, 'Mod', '==', String(expectRevision));
    const res = await txn.then(this.client.delete().key(key)).options(within(ETCD_CALL_MS)).commit();
    return res.succeeded;
  }
}

export class NotActiveError extends Error {
  /** `what`: the action refused ("drain of x not done"), for the log. */
  constructor(what?: string) {
    super(`this controller is not the active one (its election term ended)${what ? `: ${what}` : ''}`);
    this.name = 'NotActiveError';
  }
}

/**
 * A refusal because this controller's election term ended: from its own writer, or from a
 * pkg/lease or pkg/spec call given its Authority. Nothing was done; the active controller
 * decides now. (pkg/controller/workflow.ts keeps its own copy of this check.)
 */
export function isTermEnded(err: unknown): boolean {
  return err instanceof NotActiveError || (err instanceof LeaseOperationError && err.code === 'no-authority');
}

// Identity specs, credentials and pending authorization requests in etcd. Specs are written
// by operators (`understudy apply -f`, or an agent's bootstrap file) and watched by every
// agent, so a change reaches all nodes without a restart.
import { readFile } from 'node:fs/promises';
import type { Etcd3, IKeyValue } from 'etcd3';
import { parseAllDocuments } from 'yaml';
import { LeaseOperationError, type Authority } from '../lease/admin.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { assertName } from '../lease/keys.js';
import { ResyncingWatch } from '../lease/watch.js';
import { admitPending, choosePending } from './pending.js';
import { IdentitySpec, PendingRequest, type Caller, type IdentitySpecInput } from './schema.js';

/** Optimistic retries of a read-modify-write on a spec (approvals racing with applies). */
const CAS_ATTEMPTS = 5;

export class SpecKeys {
  constructor(readonly prefix = 'understudy') {}
  specs(): string {
    return `${this.prefix}/specs/`;
  }
  spec(identity: string): string {
    return `${this.specs()}${identity}`;
  }
  credential(identity: string): string {
    return `${this.prefix}/secrets/${identity}/credential`;
  }
  pendingAll(identity: string): string {
    return `${this.prefix}/acl-pending/${identity}/`;
  }
  /** One record per (caller name, key) that asked: an approval acts on exactly that pair. */
  pending(identity: string, caller: string, nkey: string): string {
    return `${this.pendingAll(identity)}${caller}/${nkey}`;
  }
}

export class SpecError extends Error {
  constructor(
    message: string,
    readonly field: string,
  ) {
    super(message);
    this.name = 'SpecError';
  }
}

/** Validate a spec; the error names the first bad field (and `where` the spec came from). */
export function parseSpec(input: unknown, where = 'spec'): IdentitySpec {
  const parsed = IdentitySpec.safeParse(input);
  if (parsed.success) return parsed.data;
  const issue = parsed.error.issues[0]!;
  const field = issue.path.map(String).join('.') || '(root)';
  const name =
    typeof input === 'object' && input !== null && 'name' in input ? ` '${String(input.name)}'` : '';
  throw new SpecError(`${where}${name}: ${field}: ${issue.message}`, field);
}

export interface StoredSpec {
  spec: IdentitySpec;
  /** etcd mod revision of the spec: pass it back to update without losing a concurrent change. */
  revision: bigint;
}

/**
 * Spec writes made for a controller carry its election term (`authority`): the txn compares
 * the election key too, so a deposed controller writes nothing. When such a txn fails, this
 * tells a term that ended (thrown as `no-authority`) from a spec that changed meanwhile.
 */
async function refuseUnlessHeld(
  client: Etcd3,
  authority: Authority | undefined,
  what: string,
): Promise<void> {
  if (!authority) return;
  const kv = (await client.get(authority.key).options(within(ETCD_CALL_MS)).exec()).kvs[0];
  if (kv !== undefined && kv.mod_revision === authority.revision) return;
  throw new LeaseOperationError(
    `${authority.describe ?? 'the caller'} no longer holds its term: ${what} not done; the active controller decides now`,
    'no-authority',
  );
}

function decodeSpec(kv: IKeyValue, key: string): IdentitySpec {
  let json: unknown;
  try {
    json = JSON.parse(kv.value.toString());
  } catch {
    throw new SpecError(`${key}: not JSON`, '(root)');
  }
  return parseSpec(json, key);
}

export async function getSpec(
  client: Etcd3,
  identity: string,
  keys = new SpecKeys(),
): Promise<StoredSpec | undefined> {
  assertName('identity', identity);
  const res = await client.get(keys.spec(identity)).options(within(ETCD_CALL_MS)).exec();
  const kv = res.kvs[0];
  return kv ? { spec: decodeSpec(kv, keys.spec(identity)), revision: BigInt(kv.mod_revision) } : undefined;
}

export async function listSpecs(client: Etcd3, keys = new SpecKeys()): Promise<StoredSpec[]> {
  const res = await client.getAll().prefix(keys.specs()).options(within(ETCD_CALL_MS)).exec();
  return res.kvs.map((kv) => ({
    spec: decodeSpec(kv, kv.key.toString()),
    revision: BigInt(kv.mod_revision),
  }));
}

/**
 * Write a spec (validated first: a bad spec changes nothing). With `expectRevision`, only if
 * the stored spec is still at that revision (0n: only if absent). Returns the new revision,
 * or undefined when the expectation failed. With `authority`, only while it holds (see
 * refuseUnlessHeld).
 */
export async function putSpec(
  client: Etcd3,
  input: IdentitySpecInput | IdentitySpec,
  opts: { expectRevision?: bigint; keys?: SpecKeys; authority?: Authority } = {},
): Promise<bigint | undefined> {
  const spec = parseSpec(input);
  const keys = opts.keys ?? new SpecKeys();
  const key = keys.spec(spec.name);
  const put = client.put(key).value(JSON.stringify(spec));
  if (opts.expectRevision === undefined && !opts.authority) {
    const res = await put.options(within(ETCD_CALL_MS)).exec();
    return BigInt(res.header.revision);
  }
  let txn =
    opts.expectRevision !== undefined
      ? client.if(key, 'Mod', '==', String(opts.expectRevision))
      : client.if(opts.authority!.key, 'Mod', '==', opts.authority!.revision);
  if (opts.authority) txn = txn.and(opts.authority.key, 'Mod', '==', opts.authority.revision);
  const res = await txn.then(put).options(within(ETCD_CALL_MS)).commit();
  if (res.succeeded) return BigInt(res.header.revision);
  await refuseUnlessHeld(client, opts.authority, `write of ${spec.name}'s spec`);
  return undefined;
}

/** Delete a spec; false when there was none. With `authority`, only while it holds. */
export async function deleteSpec(
  client: Etcd3,
  identity: string,
  opts: { keys?: SpecKeys; authority?: Authority } = {},
): Promise<boolean> {
  assertName('identity', identity);
  const key = (opts.keys ?? new SpecKeys()).spec(identity);
  if (!opts.authority) {
    const res = await client.delete().key(key).options(within(ETCD_CALL_MS)).exec();
    return Number(res.deleted) > 0;
  }
  const res = await client
    .if(opts.authority.key, 'Mod', '==', opts.authority.revision)
    .then(client.delete().key(key))
    .options(within(ETCD_CALL_MS))
    .commit();
  if (!res.succeeded) await refuseUnlessHeld(client, opts.authority, `deletion of ${identity}'s spec`);
  return Number(res.responses[0]?.response_delete_range?.deleted ?? 0) > 0;
}

/** Read specs from a YAML file: one spec per document, or a list of specs in one document. */
export async function readSpecFile(path: string): Promise<IdentitySpec[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new SpecError(`spec file ${path}: cannot read it: ${(err as Error).message}`, '(file)');
  }
  const docs = parseAllDocuments(text);
  const specs: IdentitySpec[] = [];
  for (const [i, doc] of (Array.isArray(docs) ? docs : [docs]).entries()) {
    if (doc.errors.length > 0) {
      throw new SpecError(
        `spec file ${path}, document ${i + 1}: ${doc.errors[0]!.message.split('\n')[0]}`,
        '(yaml)',
      );
    }
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    for (const [j, item] of (Array.isArray(value) ? value : [value]).entries()) {
      specs.push(
        parseSpec(
          item,
          `spec file ${path}, document ${i + 1}${Array.isArray(value) ? `, item ${j + 1}` : ''}`,
        ),
      );
    }
  }
  return specs;
}

/** Write each spec only where etcd has none: several agents may bootstrap the same file. */
export async function bootstrapSpecs(
  client: Etcd3,
  specs: IdentitySpec[],
  keys = new SpecKeys(),
): Promise<{ created: string[]; present: string[] }> {
  const created: string[] = [];
  const present: string[] = [];
  for (const spec of specs) {
    const written = await putSpec(client, spec, { expectRevision: 0n, keys });
    (written === undefined ? present : created).push(spec.name);
  }
  return { created, present };
}

// Pending authorization requests.

/** The limit of pending records was reached: nothing was written (pending.ts). */
export class PendingLimitError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'PendingLimitError';
  }
}

/**
 * Record a pending request once per (caller, key) (a flood of retries writes nothing more);
 * true when it was new. Throws PendingLimitError, writing nothing, when the identity already
 * keeps MAX_PENDING_PER_IDENTITY records. The count is read before the write, so requests
 * racing on several nodes may pass it by a few; only the leader records, so races are rare.
 */
export async function recordPending(
  client: Etcd3,
  identity: string,
  pending: PendingRequest,
  keys = new SpecKeys(),
): Promise<boolean> {
  const record = PendingRequest.parse(pending);
  const key = keys.pending(identity, record.name, record.nkey);
  const [count, existing] = await Promise.all([
    client.getAll().prefix(keys.pendingAll(identity)).options(within(ETCD_CALL_MS)).count(),
    client.get(key).options(within(ETCD_CALL_MS)).string(),
  ]);
  if (existing !== null) return false;
  const admission = admitPending(identity, count);
  if (!admission.record) throw new PendingLimitError(admission.reason);
  const res = await client
    .if(key, 'Create', '==', 0)
    .then(client.put(key).value(JSON.stringify(record)))
    .options(within(ETCD_CALL_MS))
    .commit();
  return res.succeeded;
}

/** Every pending record of `identity` with its etcd key (records that do not parse are left out). */
async function pendingRecords(
  client: Etcd3,
  identity: string,
  keys: SpecKeys,
): Promise<Array<{ key: string; record: PendingRequest }>> {
  const raw = await client.getAll().prefix(keys.pendingAll(identity)).options(within(ETCD_CALL_MS)).strings();
  return Object.entries(raw).flatMap(([key, v]) => {
    let value: unknown;
    try {
      value = JSON.parse(v);
    } catch {
      return [];
    }
    const parsed = PendingRequest.safeParse(value);
    return parsed.success ? [{ key, record: parsed.data }] : [];
  });
}

export async function listPending(
  client: Etcd3,
  identity: string,
  keys = new SpecKeys(),
): Promise<PendingRequest[]> {
  return (await pendingRecords(client, identity, keys)).map((r) => r.record);
}

export class AccessListError extends Error {
  constructor(
    message: string,
    readonly code: 'no-spec' | 'no-pending' | 'conflict' | 'ambiguous',
  ) {
    super(message);
    this.name = 'AccessListError';
  }
}

/**
 * Approve a pending request: the caller joins the spec's authorized list with the key it
 * signed with, and the pending record goes, in one txn guarded by the spec's revision. Every
 * node enforces the new list as soon as its spec watch delivers it.
 */
export async function approvePending(
  client: Etcd3,
  identity: string,
  caller: string,
  opts: { keys?: SpecKeys; authority?: Authority; nkey?: string } = {},
): Promise<Caller> {
  const keys = opts.keys ?? new SpecKeys();
  const [entry] = await decidePending(client, identity, caller, 'approve', keys, opts.authority, opts.nkey);
  return entry!;
}

/**
 * Deny the pending requests of `caller` (only the one with `nkey`, when given); with `block`,
 * their keys also join the blocked list.
 */
export async function denyPending(
  client: Etcd3,
  identity: string,
  caller: string,
  opts: { block?: boolean; keys?: SpecKeys; authority?: Authority; nkey?: string } = {},
): Promise<Caller[]> {
  const decision = opts.block ? 'block' : 'deny';
  return decidePending(
    client,
    identity,
    caller,
    decision,
    opts.keys ?? new SpecKeys(),
    opts.authority,
    opts.nkey,
  );
}

async function decidePending(
  client: Etcd3,
  identity: string,
  caller: string,
  decision: 'approve' | 'deny' | 'block',
  keys: SpecKeys,
  authority: Authority | undefined,
  nkey: string | undefined,
): Promise<Caller[]> {
  assertName('identity', identity);
  for (let attempt = 0; attempt < CAS_ATTEMPTS; attempt++) {
    const stored = await getSpec(client, identity, keys);
    if (!stored) throw new AccessListError(`identity ${identity} has no spec; apply one first`, 'no-spec');
    const all = await pendingRecords(client, identity, keys);
    const choice = choosePending(
      identity,
      caller,
      all.map((r) => r.record),
      decision,
      stored.spec.access,
      nkey,
    );
    if (!choice.ok) throw new AccessListError(choice.message, choice.code);
    const chosen = all.filter((r) => choice.records.includes(r.record));
    const entries: Caller[] = chosen.map((r) => ({ name: r.record.name, nkey: r.record.nkey }));
    const access = structuredClone(stored.spec.access);
    if (decision === 'approve') {
      // Exactly the pair that asked (choosePending refused a name on file with another key).
      access.authorized = [...access.authorized.filter((c) => c.name !== caller), entries[0]!];
    } else if (decision === 'block') {
      access.blocked = [...access.blocked, ...entries.map((e) => ({ nkey: e.nkey }))];
    }
    const next = { ...stored.spec, access };
    let txn = client.if(keys.spec(identity), 'Mod', '==', String(stored.revision));
    for (const r of chosen) txn = txn.and(r.key, 'Create', '>', 0);
    if (authority) txn = txn.and(authority.key, 'Mod', '==', authority.revision);
    const res = await txn
      .then(
        ...chosen.map((r) => client.delete().key(r.key)),
        // A deny leaves the spec as it is; rewriting it unchanged keeps the txn one shape.
        client.put(keys.spec(identity)).value(JSON.stringify(decision === 'deny' ? stored.spec : next)),
      )
      .options(within(ETCD_CALL_MS))
      .commit();
    if (res.succeeded) return entries;
    await refuseUnlessHeld(client, authority, `decision on ${caller}'s request for ${identity}`);
  }
  throw new AccessListError(
    `${identity}: the spec kept changing while deciding ${caller}'s request; try again`,
    'conflict',
  );
}

export interface SpecEvents {
  put: (spec: IdentitySpec, revision: bigint) => void;
  delete: (identity: string) => void;
  /** A stored spec that does not validate: kept out, the last good one stays in force. */
  invalid: (identity: string, error: Error) => void;
  /** etcd did not answer a read or watch; the watcher retries by itself. */
  trouble?: (err: Error, attempt: number) => void;
  /**
   * The identities whose specs matter (default: all). Others are neither decoded nor
   * reported: an agent hosting 2,000 of 10,000 identities validated all 10,000 specs at every
   * read of the prefix, and logged the invalid ones it does not even host.
   */
  wants?: (identity: string) => boolean;
}

/**
 * Every spec now and every later change, in order. After a watch error (compaction, cancel)
 * it re-reads everything (ResyncingWatch) and reports what changed meanwhile.
 */
export class SpecWatcher {
  private watch: ResyncingWatch | undefined;
  private readonly known = new Map<string, bigint>();

  private constructor(
    private readonly keys: SpecKeys,
    private readonly on: SpecEvents,
  ) {}

  static async start(client: Etcd3, on: SpecEvents, keys = new SpecKeys()): Promise<SpecWatcher> {
    const w = new SpecWatcher(keys, on);
    w.watch = await ResyncingWatch.start(
      client,
      { prefix: keys.specs() },
      {
        snapshot: (kvs) => w.snapshot(kvs),
        put: (kv) => w.deliver(kv),
        delete: (kv) => {
          const identity = w.identityOf(kv.key.toString());
          if (!on.wants || on.wants(identity)) w.gone(identity);
        },
        ...(on.trouble ? { trouble: on.trouble } : {}),
      },
    );
    return w;
  }

  private identityOf(key: string): string {
    return key.slice(this.keys.specs().length);
  }

  private snapshot(kvs: IKeyValue[]): void {
    const present = new Set<string>();
    for (const kv of kvs) {
      present.add(this.identityOf(kv.key.toString()));
      this.deliver(kv);
    }
    for (const identity of [...this.known.keys()]) if (!present.has(identity)) this.gone(identity);
  }

  private deliver(kv: IKeyValue): void {
    const key = kv.key.toString();
    const identity = this.identityOf(key);
    if (this.on.wants && !this.on.wants(identity)) return;
    const revision = BigInt(kv.mod_revision);
    if (this.known.get(identity) === revision) return;
    try {
      const spec = decodeSpec(kv, key);
      this.known.set(identity, revision);
      this.on.put(spec, revision);
    } catch (err) {
      this.on.invalid(identity, err as Error);
    }
  }

  private gone(identity: string): void {
    this.known.delete(identity);
    this.on.delete(identity);
  }

  async close(): Promise<void> {
    await this.watch?.close();
  }
}

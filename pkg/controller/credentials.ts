// Credentials released only to the lease holder: every controller (active or standby: the
// checks are etcd reads, not decisions) answers `understudy.credential.<identity>` in one queue
// group. It reads the node's key, the identity's leader key, its spec and the sealed credential
// in one etcd transaction, lets decideRelease (pkg/credentials/release.ts) decide, then opens
// the credential with the key only controllers hold and answers encrypted to the requester's
// ephemeral key. Refusals are answered with a code and a sentence, logged at warn and counted;
// the secret is never logged.
import { readFileSync, statSync } from 'node:fs';
import type { Etcd3, IKeyValue } from 'etcd3';
import type { Msg, NatsConnection, Subscription } from 'nats';
import type { Logger } from 'pino';
import { Counter } from 'prom-client';
import type { Clock } from '../clock/index.js';
import {
  CREDENTIAL_QUEUE,
  CREDENTIAL_SUBJECT_WILDCARD,
  CredentialRequest,
  REQUEST_WINDOW_MS,
  sealReply,
  signReply,
  type CredentialReply,
  type RefusalCode,
} from '../credentials/protocol.js';
import { decideRelease, precheck, type ReleaseState } from '../credentials/release.js';
import { nodeKeyPath, parseNodeKey, type UserSigner } from '../keys/index.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { LeaderRecord, NAME_PATTERN } from '../lease/keys.js';
import { CREDENTIAL_KEY_BYTES, openCredential } from '../spec/credential-store.js';
import type { ControllerMetrics } from './metrics.js';
import type { ControllerKeys } from './store.js';

/**
 * Requests checked at once. Each costs one etcd read; past this a flood is answered `busy` at
 * once instead of queueing reads that would slow the controller's own loop.
 */
const MAX_IN_FLIGHT = 64;
/**
 * Nonces remembered. Only requests whose signature verified under a live node's key get in,
 * so this is many times the logins a cluster makes in two request windows.
 */
const MAX_NONCES = 10_000;

/**
 * The controller's credential key: 32 random bytes (raw, or 64 hex digits) in a file only its
 * owner can read. Read once at start; every error names the field and what to do.
 */
export function loadCredentialKey(file: string, field = 'credentials.keyFile'): Buffer {
  const make = `make one with \`head -c ${CREDENTIAL_KEY_BYTES} /dev/urandom > ${file} && chmod 600 ${file}\` and give every controller the same file`;
  let mode: number;
  try {
    mode = statSync(file).mode;
  } catch (err) {
    throw new Error(`${field}: cannot read ${file} (${(err as NodeJS.ErrnoException).code}); ${make}`);
  }
  if ((mode & 0o077) !== 0) {
    throw new Error(
      `${field}: ${file} is readable by others (mode ${(mode & 0o777).toString(8)}); run chmod 600 ${file}`,
    );
  }
  const raw = readFileSync(file);
  if (raw.length === CREDENTIAL_KEY_BYTES) return raw;
  const text = raw.toString('latin1').trim();
  if (/^[0-9a-fA-F]{64}$/.test(text)) return Buffer.from(text, 'hex');
  throw new Error(
    `${field}: ${file} must hold ${CREDENTIAL_KEY_BYTES} random bytes (or 64 hex digits), it holds ${raw.length} bytes; ${make}`,
  );
}

/**
 * Nonces of authenticated requests, each kept for two request windows (a request signed a
 * window ahead stays valid until a window past its time). In memory only, which is enough: a
 * replay that reaches another controller of the queue group, or this one after a restart, is
 * still answered only while the requester's term holds, and the answer is encrypted to the
 * ephemeral key the original request signed, which a replayer does not have.
 */
export class NonceCache {
  private readonly until = new Map<string, number>();
  constructor(
    private readonly ttlMs = 2 * REQUEST_WINDOW_MS,
    private readonly max = MAX_NONCES,
  ) {}

  has(nonce: string, nowMs: number): boolean {
    const until = this.until.get(nonce);
    return until !== undefined && until > nowMs;
  }

  add(nonce: string, nowMs: number): void {
    // Insertion order is expiry order (one TTL for all): drop from the front.
    for (const [n, until] of this.until) {
      if (until > nowMs && this.until.size < this.max) break;
      this.until.delete(n);
    }
    this.until.set(nonce, nowMs + this.ttlMs);
  }

  get size(): number {
    return this.until.size;
  }
}

export interface CredentialServerDeps {
  nc: NatsConnection;
  etcd: Etcd3;
  keys: ControllerKeys;
  /** The credential key (loadCredentialKey). */
  key: Buffer;
  /** This controller's signing key (its member record): replies are signed with it. */
  signer: UserSigner;
  name: string;
  log: Logger;
  clock: Clock;
  metrics: ControllerMetrics;
}

const SUBJECT_PREFIX = CREDENTIAL_SUBJECT_WILDCARD.slice(0, -1);

export class CredentialServer {
  private sub: Subscription | undefined;
  private inFlight = 0;
  private readonly nonces = new NonceCache();
  private readonly outcomes: Counter<'outcome'>;

  constructor(private readonly deps: CredentialServerDeps) {
    this.outcomes = new Counter({
      name: 'understudy_credential_requests_total',
      help: 'Credential requests answered by this controller, by outcome (released, or the refusal code)',
      labelNames: ['outcome'],
      registers: [deps.metrics.registry],
    });
  }

  start(): void {
    this.sub = this.deps.nc.subscribe(CREDENTIAL_SUBJECT_WILDCARD, {
      queue: CREDENTIAL_QUEUE,
      callback: (err, msg) => {
        if (err) {
          this.deps.log.error({ err: err.message }, 'credential subscription failed');
          return;
        }
        void this.handle(msg);
      },
    });
    void this.warnUnsealed();
  }

  stop(): void {
    this.sub?.unsubscribe();
    this.sub = undefined;
  }

  private async handle(msg: Msg): Promise<void> {
    const identity = msg.subject.slice(SUBJECT_PREFIX.length);
    // A request without a reply subject could not receive anything: not worth an etcd read.
    if (!msg.reply)
      return this.refuse(msg, identity, undefined, 'bad-request', 'the request has no reply subject');
    if (this.inFlight >= MAX_IN_FLIGHT) {
      return this.refuse(msg, identity, undefined, 'busy', 'too many credential requests at once; retry');
    }
    this.inFlight++;
    try {
      await this.answer(msg, identity);
    } catch (err) {
      this.deps.log.error({ identity, err: (err as Error).message }, 'credential request failed');
      this.refuse(msg, identity, undefined, 'unavailable', 'the controller failed to answer; retry');
    } finally {
      this.inFlight--;
    }
  }

  private async answer(msg: Msg, identity: string): Promise<void> {
    if (!NAME_PATTERN.test(identity)) {
      return this.refuse(
        msg,
        identity,
        undefined,
        'bad-request',
        'the subject does not name a valid identity',
      );
    }
    let request: CredentialRequest;
    try {
      const parsed = CredentialRequest.safeParse(JSON.parse(new TextDecoder().decode(msg.data)));
      if (!parsed.success) {
        const issue = parsed.error.issues[0]!;
        return this.refuse(
          msg,
          identity,
          undefined,
          'bad-request',
          `${issue.path.join('.') || '(body)'}: ${issue.message}`,
        );
      }
      request = parsed.data;
    } catch {
      return this.refuse(msg, identity, undefined, 'bad-request', 'the request is not JSON');
    }
    const now = this.deps.clock.wallMs();
    const early = precheck(identity, request, now);
    if (early && !early.release) return this.refuse(msg, identity, request.node, early.code, early.reason);
    let read: { state: ReleaseState; raw: Buffer | undefined };
    try {
      read = await this.read(identity, request.node);
    } catch (err) {
      return this.refuse(
        msg,
        identity,
        request.node,
        'unavailable',
        `etcd does not answer (${(err as Error).message}); retry`,
      );
    }
    const decision = decideRelease({
      subjectIdentity: identity,
      request,
      nowMs: now,
      nonceSeen: this.nonces.has(request.nonce, now),
      state: read.state,
    });
    if (decision.authenticated) this.nonces.add(request.nonce, now);
    if (!decision.release) return this.refuse(msg, identity, request.node, decision.code, decision.reason);
    const opened = openCredential(this.deps.key, identity, read.raw);
    if (!opened.ok) {
      return this.refuse(msg, identity, request.node, 'unreadable-credential', opened.reason);
    }
    const context = { identity, node: request.node, token: request.token, nonce: request.nonce };
    const sealed = sealReply(opened.secret, request.replyKey, context);
    opened.secret.fill(0);
    const reply: CredentialReply = {
      v: 1,
      ok: true,
      controller: this.deps.name,
      sealed,
      sig: signReply(this.deps.signer, this.deps.name, context, sealed),
    };
    msg.respond(JSON.stringify(reply));
    this.outcomes.inc({ outcome: 'released' });
    this.deps.log.info(
      { identity, node: request.node, token: request.token },
      `credential released: ${decision.reason}`,
    );
  }

  /** The node's key, the identity's leader key, spec and credential, at one revision. */
  private async read(
    identity: string,
    node: string,
  ): Promise<{ state: ReleaseState; raw: Buffer | undefined }> {
    const { etcd, keys } = this.deps;
    const res = await etcd
      .if(keys.lease.leader(identity), 'Create', '>', -1) // always true: reads at one revision
      .then(
        etcd.get(nodeKeyPath(node, keys.prefix)),
        etcd.get(keys.lease.leader(identity)),
        etcd.get(keys.specs.spec(identity)),
        etcd.get(keys.specs.credential(identity)),
      )
      .options(within(ETCD_CALL_MS))
      .commit();
    const kv = (i: number): IKeyValue | undefined => res.responses[i]?.response_range?.kvs[0];
    const [nodeKv, leaderKv, specKv, credentialKv] = [kv(0), kv(1), kv(2), kv(3)];
    const state: ReleaseState = { stored: credentialKv !== undefined };
    const record = parseNodeKey(nodeKv?.value.toString());
    // Trusted only when bound to the lease it names (registerNodeKey binds it).
    if (record && record.node === node && nodeKv && record.lease === nodeKv.lease) state.nodeKey = record;
    if (leaderKv) {
      const holder = leaderNode(leaderKv);
      if (holder !== undefined) {
        state.leader = { node: holder, leaseId: leaderKv.lease, token: leaderKv.mod_revision };
      }
    }
    const source = credentialSource(specKv);
    if (source !== undefined) state.source = source;
    return { state, raw: credentialKv?.value };
  }

  private refuse(
    msg: Msg,
    identity: string,
    node: string | undefined,
    code: RefusalCode,
    reason: string,
  ): void {
    this.outcomes.inc({ outcome: code });
    this.deps.log.warn({ identity, node, code }, `credential refused: ${reason}`);
    if (msg.reply) {
      const reply: CredentialReply = { v: 1, ok: false, code, reason };
      msg.respond(JSON.stringify(reply));
    }
  }

  /** At start: say which stored credentials cannot be released (plain text from an older version...). */
  private async warnUnsealed(): Promise<void> {
    const prefix = `${this.deps.keys.prefix}/secrets/`;
    try {
      const all = await this.deps.etcd.getAll().prefix(prefix).options(within(ETCD_CALL_MS)).buffers();
      for (const [key, value] of Object.entries(all)) {
        const identity = key.slice(prefix.length).split('/')[0] ?? '';
        const opened = openCredential(this.deps.key, identity, value);
        if (opened.ok) opened.secret.fill(0);
        else this.deps.log.warn({ identity, code: opened.code }, opened.reason);
      }
    } catch (err) {
      this.deps.log.warn({ err: (err as Error).message }, 'could not check the stored credentials at start');
    }
  }
}

/** The holder named by a leader key's value (pkg/lease LeaderRecord), if readable. */
function leaderNode(kv: IKeyValue): string | undefined {
  try {
    return LeaderRecord.safeParse(JSON.parse(kv.value.toString())).data?.node;
  } catch {
    return undefined;
  }
}

function credentialSource(kv: IKeyValue | undefined): ReleaseState['source'] {
  if (!kv) return undefined;
  try {
    const source = (JSON.parse(kv.value.toString()) as { credential?: { source?: unknown } }).credential
      ?.source;
    if (source === 'file' || source === 'etcd') return source;
    return 'none';
  } catch {
    return undefined;
  }
}

// API operations on stored credentials: store one (sealed with the controllers' key) and
// delete one. Written by the active controller under its election term and audited with the
// actor, never the secret. No operation returns a credential.
import { ApiError } from '../api/schema.js';
import type { CredentialBody, CredentialResult } from '../api/credentials.js';
import { keyId, MAX_CREDENTIAL_BYTES, sealCredential } from '../spec/credential-store.js';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import type { ApiDeps } from './api-deps.js';
import { NotActiveError } from './store.js';

export class CredentialApi {
  constructor(
    private readonly deps: ApiDeps,
    /** The credential key (credentials.keyFile); undefined when this controller has none. */
    private readonly key: Buffer | undefined,
  ) {}

  private requireKey(): Buffer {
    if (this.key) return this.key;
    throw new ApiError(
      'conflict',
      'this controller has no credentials.keyFile, so it cannot seal credentials: set credentials.keyFile ' +
        '(32 random bytes, mode 0600, the same file on every controller) in its config and restart it',
    );
  }

  async setCredential(identity: string, body: CredentialBody, actor: string): Promise<CredentialResult> {
    const { cluster, audit, writer, etcd, keys } = this.deps;
    const term = await cluster.requireActive();
    const key = this.requireKey();
    const secret = Buffer.from(body.value, 'base64');
    if (secret.length === 0 || secret.length > MAX_CREDENTIAL_BYTES) {
      throw new ApiError(
        'bad-request',
        `value: the credential must be 1 to ${MAX_CREDENTIAL_BYTES} bytes once decoded`,
        'value',
      );
    }
    const sealed = JSON.stringify(sealCredential(key, identity, secret));
    secret.fill(0);
    await audit.action(term, identity, actor, 'credential stored (sealed)');
    const written = await writer
      .write([etcd.put(keys.specs.credential(identity)).value(sealed)], term)
      .catch((err: Error) => {
        throw new ApiError('unavailable', `etcd did not take the credential (${err.message}); retry`);
      });
    if (!written) await cluster.refusal(new NotActiveError('credential not stored'));
    const kv = (await etcd.get(keys.specs.credential(identity)).options(within(ETCD_CALL_MS)).exec()).kvs[0];
    return { identity, revision: kv?.mod_revision ?? '0', keyId: keyId(key) };
  }

  async deleteCredential(identity: string, actor: string): Promise<void> {
    const { cluster, audit, writer, etcd, keys } = this.deps;
    const term = await cluster.requireActive();
    const path = keys.specs.credential(identity);
    const present = (await etcd.get(path).options(within(ETCD_CALL_MS)).exec()).kvs[0];
    if (!present) throw new ApiError('not-found', `no credential is stored for ${identity}`, 'path.identity');
    await audit.action(term, identity, actor, 'credential deleted');
    const deleted = await writer.delete(path, undefined, term).catch((err: Error) => {
      throw new ApiError('unavailable', `etcd did not delete the credential (${err.message}); retry`);
    });
    if (!deleted) await cluster.refusal(new NotActiveError('credential not deleted'));
  }
}

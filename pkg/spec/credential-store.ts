// Where an identity's credential is stored in etcd (spec credential.source: etcd). Read by the
// leader at login only, never logged.
import type { Etcd3 } from 'etcd3';
import { ETCD_CALL_MS, within } from '../lease/etcd.js';
import { assertName } from '../lease/keys.js';
import { SpecKeys } from './store.js';

export async function putCredential(
  client: Etcd3,
  identity: string,
  secret: string | Buffer,
  keys = new SpecKeys(),
): Promise<void> {
  assertName('identity', identity);
  await client.put(keys.credential(identity)).value(secret).options(within(ETCD_CALL_MS)).exec();
}

export async function readCredential(
  client: Etcd3,
  identity: string,
  keys = new SpecKeys(),
): Promise<Buffer | undefined> {
  const value = await client.get(keys.credential(identity)).options(within(ETCD_CALL_MS)).buffer();
  return value ?? undefined;
}

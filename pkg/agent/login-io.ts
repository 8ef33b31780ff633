// The real LoginPort (port.ts): credentials from a file or etcd written to the run directory,
// the NATS responder, pending authorization records and the leader key's observer in etcd.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import { removeCredentialFile, writeCredentialFile } from '../identity/credential.js';
import { ensureInbox, Responder } from '../identity/responder.js';
import { LeaderObserver } from '../lease/index.js';
import { readCredential } from '../spec/credential-store.js';
import { recordPending } from '../spec/store.js';
import type { LoginPort } from './port.js';

export interface LoginIoDeps {
  identity: string;
  node: string;
  etcd: Etcd3;
  nc: NatsConnection;
  /** The agent's run directory; credentials go to <runDir>/<identity>/, mode 0700. */
  runDir: string;
}

export function loginIo({ identity, node, etcd, nc, runDir }: LoginIoDeps): LoginPort {
  return {
    async fetchCredential(spec) {
      const source = spec.credential;
      if (source.source === 'none') return undefined;
      let secret: Buffer | undefined;
      if (source.source === 'file') {
        secret = await readFile(source.path).catch((err: NodeJS.ErrnoException) => {
          throw new Error(
            `credential file ${source.path} (spec credential.path) cannot be read on ${node} (${err.code}); provision it on every node that may host ${identity}`,
          );
        });
      } else {
        secret = await readCredential(etcd, identity);
        if (!secret) {
          throw new Error(
            `no credential stored in etcd for ${identity} (key understudy/secrets/${identity}/credential); store one with putCredential from pkg/spec`,
          );
        }
      }
      const dir = join(runDir, identity);
      await mkdir(dir, { recursive: true, mode: 0o700 });
      return writeCredentialFile(dir, identity, secret);
    },
    removeCredential: (file) => removeCredentialFile(file),
    ensureInbox: (spec) => ensureInbox(nc, identity, spec.inbox),
    startResponder: (ctx, servedBefore) => Responder.start(nc, ctx, servedBefore),
    recordPending: (pending) => recordPending(etcd, identity, pending),
    observeLeader: (onChange, onTrouble) =>
      LeaderObserver.start(etcd, identity, onChange, undefined, onTrouble),
  };
}

// The real LoginPort (port.ts): credentials from a file, or released by a controller to this
// term's holder (credential-request.ts), written to the run directory,
// the NATS responder, pending authorization records and the leader key's observer in etcd.
import { mkdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { UserSigner } from '../keys/index.js';
import { removeCredentialFile, writeCredentialFile } from '../identity/credential.js';
import { AnsweredRequests, ensureInbox, Responder } from '../identity/responder.js';
import { LeaderObserver } from '../lease/index.js';
import { recordPending } from '../spec/store.js';
import { requestCredential } from './credential-request.js';
import type { LoginPort } from './port.js';

export interface LoginIoDeps {
  identity: string;
  node: string;
  etcd: Etcd3;
  nc: NatsConnection;
  /** The agent's run directory; credentials go to <runDir>/<identity>/, mode 0700. */
  runDir: string;
  /** The node key: credential requests (credential.source etcd) and replies are signed with it. */
  signer: UserSigner;
}

export function loginIo({ identity, node, etcd, nc, runDir, signer }: LoginIoDeps): LoginPort {
  const answered = new AnsweredRequests();
  return {
    async fetchCredential(spec, token) {
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
        // Only a controller can open it, and only for the holder of this term's token.
        secret = await requestCredential({ nc, etcd, signer, identity, node }, token);
      }
      try {
        const dir = join(runDir, identity);
        await mkdir(dir, { recursive: true, mode: 0o700 });
        return await writeCredentialFile(dir, identity, secret);
      } finally {
        secret.fill(0); // the file holds it now; no copy lingers in this process's memory
      }
    },
    removeCredential: (file) => removeCredentialFile(file),
    ensureInbox: (spec) => ensureInbox(nc, identity, spec.inbox),
    // One per identity on this node: a term's responders share what it answered (answered.ts).
    subscribeResponder: (ctx, servedBefore) =>
      Responder.subscribe(nc, ctx, servedBefore, { signer, answered }),
    recordPending: (pending) => recordPending(etcd, identity, pending),
    observeLeader: (onChange, onTrouble) =>
      LeaderObserver.follow(etcd, identity, onChange, undefined, onTrouble),
  };
}

// CLI commands that talk to identities and agents over NATS directly (no controller needed):
// presence checks, requests, and watching a handover as it happens. Replies are verified
// against the node keys (node-keys.ts): forged ones are ignored; without keys, what answered
// is shown marked UNVERIFIED and the exit code is EXIT.unverified.
import { readFile } from 'node:fs/promises';
import { withNats } from './nats-connection.js';
import { collectResponders, IdentityClient, type PresenceAnswer } from '../identity/client.js';
import { CliError, EXIT } from './exit.js';
import { cliKeys, type CliKeys, type KeyOptions } from './node-keys.js';
import { printItem as print, printable } from './output.js';

const mark = (keys: CliKeys) => (keys.keys === undefined ? ' (UNVERIFIED)' : '');

/** One stderr line saying why nothing could be verified, or how many answers were ignored. */
function notice(opts: KeyOptions, keys: CliKeys, ignored = 0): void {
  if (opts.output !== 'text') return;
  if (keys.keys === undefined) process.stderr.write(`${printable(`replies not verified: ${keys.source}`)}\n`);
  else if (ignored > 0) {
    process.stderr.write(
      `${ignored} answer(s) did not verify and were ignored: someone else may be answering on the identity's subject\n`,
    );
  }
}

async function presence(
  nc: Parameters<typeof collectResponders>[0],
  identity: string,
  windowMs: number,
  keys: CliKeys,
): Promise<{ responders: PresenceAnswer[]; ignored: number }> {
  let ignored = 0;
  const responders = await collectResponders(nc, identity, windowMs, {
    ...(keys.keys && { keys: keys.keys }),
    ignored: () => ignored++,
  });
  return { responders, ignored };
}

export async function ping(opts: KeyOptions, identity: string, windowMs: number): Promise<number> {
  const keys = await cliKeys(opts);
  return withNats(opts, async (nc) => {
    const { responders, ignored } = await presence(nc, identity, windowMs, keys);
    const rows = responders.map((r) => ({ node: r.node, token: String(r.token), verified: r.verified }));
    const text =
      rows.length === 0
        ? `${identity}: no responder (no node is logged in)`
        : rows.map((r) => `${identity}: PONG from ${r.node}, token ${r.token}${mark(keys)}`).join('\n') +
          (rows.length > 1 ? `\n${identity}: SPLIT BRAIN: ${rows.length} responders` : '');
    notice(opts, keys, ignored);
    print(opts, text, { identity, responders: rows, ignored });
    if (rows.length === 0) return EXIT.noResponder;
    if (keys.keys === undefined) return EXIT.unverified;
    return rows.length === 1 ? EXIT.ok : EXIT.splitBrain;
  });
}

export async function call(
  opts: KeyOptions,
  identity: string,
  command: string,
  as: { name?: string; seedFile?: string; durable?: boolean; timeoutMs: number },
): Promise<number> {
  if ((as.name === undefined) !== (as.seedFile === undefined)) {
    throw new CliError(
      '--as and --seed-file go together: name the caller and give its nkey seed file',
      EXIT.usage,
    );
  }
  let caller: { name: string; seed: string } | undefined;
  if (as.name && as.seedFile) {
    const seed = await readFile(as.seedFile, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new CliError(
        `cannot read --seed-file ${as.seedFile} (${err.code}); give the file holding the caller's SU... seed`,
        EXIT.usage,
      );
    });
    caller = { name: as.name, seed: seed.trim() };
  }
  const keys = await cliKeys(opts);
  return withNats(opts, async (nc) => {
    const client = new IdentityClient(nc, {
      identity,
      timeoutMs: as.timeoutMs,
      ...(caller ? { caller } : {}),
      ...(keys.keys ? { keys: keys.keys } : {}),
    });
    try {
      const reply = as.durable
        ? await client.requestDurable(command, as.timeoutMs)
        : await client.request(command);
      const json = {
        identity,
        node: reply.node,
        token: String(reply.token),
        error: reply.error ?? null,
        body: reply.body,
        verified: reply.verified,
      };
      notice(opts, keys);
      if (reply.error) {
        if (opts.output !== 'text') print(opts, '', json);
        else
          process.stderr.write(
            `${printable(`${identity} (${reply.node}, token ${reply.token})${mark(keys)} refused: ${reply.error}: ${reply.body}`)}\n`,
          );
        return EXIT.refused;
      }
      print(opts, reply.body, json);
      return reply.verified ? EXIT.ok : EXIT.unverified;
    } catch (err) {
      const e = err as Error;
      const code =
        e.name === 'NoResponderError'
          ? EXIT.noResponder
          : e.name === 'UnverifiedReplyError'
            ? EXIT.unverified
            : EXIT.failed;
      throw new CliError(`${identity}: ${e.message}`, code);
    } finally {
      client.close();
    }
  });
}

/**
 * Probe the identity every `intervalMs` and print each change of responder (node, token) and
 * each gap with no responder, with its length: a handover seen from the network.
 */
export async function watch(
  opts: KeyOptions,
  identity: string,
  intervalMs: number,
  forMs: number | undefined,
): Promise<number> {
  const keys = await cliKeys(opts);
  notice(opts, keys);
  return withNats(opts, async (nc) => {
    const stopAt = forMs === undefined ? Infinity : Date.now() + forMs;
    let last = '';
    let gapSince: number | undefined;
    let stopped = false;
    const stop = () => (stopped = true);
    process.once('SIGINT', stop);
    try {
      while (!stopped && Date.now() < stopAt) {
        const started = Date.now();
        const { responders } = await presence(nc, identity, Math.max(50, intervalMs - 10), keys);
        const now = new Date().toISOString();
        const key = responders.map((r) => `${r.node}@${r.token}`).join(',');
        if (key !== last) {
          if (responders.length === 0) {
            gapSince = Date.now();
            print(opts, `${now} ${identity}: no responder`, { at: now, identity, responders: [] });
          } else {
            const gap = gapSince === undefined ? '' : ` (after ${Date.now() - gapSince} ms without)`;
            gapSince = undefined;
            const who = responders.map((r) => `${r.node} token ${r.token}`).join(' AND ');
            const split = responders.length > 1 ? 'SPLIT BRAIN: ' : '';
            print(opts, `${now} ${identity}: ${split}${who}${mark(keys)}${gap}`, {
              at: now,
              identity,
              responders: responders.map((r) => ({
                node: r.node,
                token: String(r.token),
                verified: r.verified,
              })),
            });
          }
          last = key;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, intervalMs - (Date.now() - started))));
      }
    } finally {
      process.off('SIGINT', stop);
    }
    return keys.keys === undefined ? EXIT.unverified : EXIT.ok;
  });
}

// CLI commands that talk to identities and agents over NATS directly (no controller needed):
// presence checks, requests, and watching a handover as it happens.
import { readFile } from 'node:fs/promises';
import { withNats } from './nats-connection.js';
import { collectResponders, IdentityClient } from '../identity/client.js';
import { CliError, EXIT } from './exit.js';
import { printItem as print, printable, type GlobalOptions } from './output.js';

export async function ping(opts: GlobalOptions, identity: string, windowMs: number): Promise<number> {
  return withNats(opts, async (nc) => {
    const responders = await collectResponders(nc, identity, windowMs);
    const rows = responders.map((r) => ({ node: r.node, token: String(r.token) }));
    const text =
      rows.length === 0
        ? `${identity}: no responder (no node is logged in)`
        : rows.map((r) => `${identity}: PONG from ${r.node}, token ${r.token}`).join('\n') +
          (rows.length > 1 ? `\n${identity}: SPLIT BRAIN: ${rows.length} responders` : '');
    print(opts, text, { identity, responders: rows });
    return rows.length === 1 ? EXIT.ok : rows.length === 0 ? EXIT.noResponder : EXIT.splitBrain;
  });
}

export async function call(
  opts: GlobalOptions,
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
  return withNats(opts, async (nc) => {
    const client = new IdentityClient(nc, {
      identity,
      timeoutMs: as.timeoutMs,
      ...(caller ? { caller } : {}),
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
      };
      if (reply.error) {
        if (opts.output !== 'text') print(opts, '', json);
        else
          process.stderr.write(
            `${printable(`${identity} (${reply.node}, token ${reply.token}) refused: ${reply.error}: ${reply.body}`)}\n`,
          );
        return EXIT.refused;
      }
      print(opts, reply.body, json);
      return EXIT.ok;
    } catch (err) {
      const e = err as Error;
      throw new CliError(
        `${identity}: ${e.message}`,
        e.name === 'NoResponderError' ? EXIT.noResponder : EXIT.failed,
      );
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
  opts: GlobalOptions,
  identity: string,
  intervalMs: number,
  forMs: number | undefined,
): Promise<number> {
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
        const responders = await collectResponders(nc, identity, Math.max(50, intervalMs - 10));
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
            print(opts, `${now} ${identity}: ${responders.length > 1 ? 'SPLIT BRAIN: ' : ''}${who}${gap}`, {
              at: now,
              identity,
              responders: responders.map((r) => ({ node: r.node, token: String(r.token) })),
            });
          }
          last = key;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.max(0, intervalMs - (Date.now() - started))));
      }
    } finally {
      process.off('SIGINT', stop);
    }
    return EXIT.ok;
  });
}

// `understudy agent NODE`: an agent's own view of its session, fence and identities.
import { PROTOCOL_VERSION } from '../control/protocol.js';
import { subjects } from '../identity/wire.js';
import { CliError, EXIT } from './exit.js';
import { withNats } from './nats-connection.js';
import { printItem as print, type GlobalOptions } from './output.js';

export async function agentStatus(opts: GlobalOptions, node: string): Promise<number> {
  return withNats(opts, async (nc) => {
    let raw: string;
    try {
      const reply = await nc.request(
        subjects.control(node),
        JSON.stringify({ v: PROTOCOL_VERSION, op: 'status' }),
        {
          timeout: 3_000,
        },
      );
      raw = new TextDecoder().decode(reply.data);
    } catch (err) {
      throw new CliError(
        `agent ${node} did not answer (${(err as Error).message}); is it running?`,
        EXIT.noResponder,
      );
    }
    const reply = JSON.parse(raw) as {
      ok: boolean;
      result?: { node: string; fenced: boolean; session: string; identities: Array<Record<string, unknown>> };
      error?: { message: string };
    };
    if (!reply.ok || !reply.result)
      throw new CliError(`agent ${node}: ${reply.error?.message ?? raw}`, EXIT.failed);
    const r = reply.result;
    const lines = [
      `node ${r.node}  session ${r.session}${r.fenced ? '  FENCED' : ''}`,
      ...r.identities.map(
        (i) =>
          `  ${String(i.identity).padEnd(16)} ${String(i.state).padEnd(12)} token ${String(i.token ?? '-').padEnd(8)} ` +
          `leader ${String(i.leader ?? '-').padEnd(8)} pid ${String(i.pid ?? '-')}${i.detail ? `  (${String(i.detail)})` : ''}`,
      ),
    ];
    print(opts, lines.join('\n'), r);
    return EXIT.ok;
  });
}

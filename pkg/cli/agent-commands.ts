// `understudy agent NODE`: an agent's own view of its session, fence and identities. Agents
// answer only control requests signed by a controller, so the CLI asks through the controller
// (GET /v1/nodes/NODE/agent), which signs for it.
import type { AgentStatus } from '../control/protocol.js';
import { EXIT } from './exit.js';
import { context, type ControllerOptions } from './controller-context.js';

export async function agentStatus(opts: ControllerOptions, node: string): Promise<number> {
  const { api, out } = await context(opts);
  const r = await api.get<AgentStatus>(`/v1/nodes/${encodeURIComponent(node)}/agent`);
  out.result(r, () =>
    [
      `node ${r.node}  session ${r.session}${r.fenced ? '  FENCED' : ''}`,
      ...r.identities.map(
        (i) =>
          `  ${i.identity.padEnd(16)} ${i.state.padEnd(12)} token ${(i.token ?? '-').padEnd(8)} ` +
          `leader ${(i.leader ?? '-').padEnd(8)} pid ${String(i.pid ?? '-')}${i.detail ? `  (${i.detail})` : ''}`,
      ),
    ].join('\n'),
  );
  return EXIT.ok;
}

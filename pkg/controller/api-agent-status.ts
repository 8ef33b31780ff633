// GET /v1/nodes/:node/agent: an agent's own view, asked over the control plane. Agents answer
// only signed requests, so operators reach them through a controller (which signs) instead of
// publishing on the control subject themselves.
import { ApiError } from '../api/problem.js';
import { AgentStatus } from '../control/protocol.js';
import { NAME_PATTERN } from '../lease/keys.js';
import { AgentControlError, type AgentLink } from './agents.js';

/** An agent answers status from memory; two seconds covers a busy event loop and NATS. */
export const AGENT_STATUS_TIMEOUT_MS = 2_000;

export class AgentStatusApi {
  constructor(private readonly deps: { agents: AgentLink }) {}

  async agentStatus(node: string): Promise<AgentStatus> {
    if (!NAME_PATTERN.test(node)) {
      throw new ApiError('bad-request', `'${node.slice(0, 80)}' is not a node name`, 'path.node');
    }
    let result: unknown;
    try {
      result = await this.deps.agents.status(node, AGENT_STATUS_TIMEOUT_MS);
    } catch (err) {
      if (err instanceof AgentControlError && err.code === 'no-answer') {
        throw new ApiError('unavailable', `${err.message}; is the agent running and connected to NATS?`);
      }
      throw new ApiError('internal', `agent ${node} refused the status request: ${(err as Error).message}`);
    }
    const parsed = AgentStatus.safeParse(result);
    if (!parsed.success) {
      throw new ApiError(
        'internal',
        `agent ${node} answered status in a shape this controller does not read`,
      );
    }
    return parsed.data;
  }
}

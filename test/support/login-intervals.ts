// S1 from the agents' own records: the intervals in which each node was logged in under an
// identity (logging-in → the end of logging-out), and any overlap between two nodes. All
// agents run on this host, so their log times share one clock.
import type { AgentProcess } from './agents.js';

export interface LoginInterval {
  node: string;
  from: number;
  /** Infinity when the interval never closed in the log (the agent was SIGKILLed). */
  to: number;
}

export function loginIntervals(agents: Iterable<AgentProcess>, identity: string): LoginInterval[] {
  const intervals: LoginInterval[] = [];
  for (const agent of agents) {
    let openedAt: number | undefined;
    for (const r of agent.records) {
      // The lifeline's deadline killed the service of a frozen agent: its login ended then.
      if (typeof r.killedAt === 'string' && openedAt !== undefined) {
        intervals.push({ node: agent.node, from: openedAt, to: Date.parse(r.killedAt) });
        openedAt = undefined;
        continue;
      }
      if (r.identity !== identity || !r.to) continue;
      const at = Date.parse(String(r.time));
      if (r.to === 'logging-in') openedAt = at;
      else if (openedAt !== undefined && r.from === 'logging-out') {
        intervals.push({ node: agent.node, from: openedAt, to: at });
        openedAt = undefined;
      }
    }
    if (openedAt !== undefined)
      intervals.push({ node: agent.node, from: openedAt, to: Number.POSITIVE_INFINITY });
  }
  return intervals.sort((x, y) => x.from - y.from);
}

/** One line per pair of nodes logged in at once. */
export function overlaps(intervals: LoginInterval[]): string[] {
  const out: string[] = [];
  for (let i = 1; i < intervals.length; i++) {
    const prev = intervals[i - 1]!;
    const cur = intervals[i]!;
    // A SIGKILLed agent's last interval never closes in its log; its end is bounded by the lease.
    const prevEnd = Number.isFinite(prev.to) ? prev.to : prev.from;
    if (cur.from < prevEnd && cur.node !== prev.node) {
      out.push(
        `S1: ${prev.node} logged in until ${new Date(prevEnd).toISOString()}, ${cur.node} from ${new Date(cur.from).toISOString()}`,
      );
    }
  }
  return out;
}

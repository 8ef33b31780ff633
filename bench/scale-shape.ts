// How the scale bench spreads identities over agents, and whether the agents will accept it.
// An agent refuses a config whose services it could not all kill by the must-be-out instant
// (pkg/config/agent.ts, killBudgetProblem); the bench asks the same rule before it starts
// anything, so a shape the agents would refuse is a flag error, not ten agents exiting at
// start while the bench waits out its start bound.
import { killBudgetProblem } from '../pkg/config/agent.js';
import { leaseTiming } from '../pkg/lease/timing.js';

export interface RunShape {
  agents: number;
  identities: number;
}

/** The fewest agents the full profile's large run uses (the scale issue's shape). */
export const FULL_PROFILE_AGENTS = 10;
/** The full profile's large run: identities spread over at least FULL_PROFILE_AGENTS agents. */
export const FULL_PROFILE_IDENTITIES = 10_000;

/**
 * Where identity i lives: led by agent i mod A, with agent (i + 1) mod A as its one standby,
 * so each agent hosts the identities it leads and those of its left neighbour.
 */
export function hostsOf(i: number, agents: number): { leader: number; standby: number } {
  return { leader: i % agents, standby: (i + 1) % agents };
}

/** How many identities each agent hosts (leader or standby) in this shape. */
export function hostedPerAgent(shape: RunShape): number[] {
  const counts = new Array<number>(shape.agents).fill(0);
  for (let i = 0; i < shape.identities; i++) {
    const { leader, standby } = hostsOf(i, shape.agents);
    counts[leader]! += 1;
    counts[standby]! += 1;
  }
  return counts;
}

/** Why the agents would refuse this shape at this TTL (the agent's own words), or undefined. */
export function shapeProblem(shape: RunShape, ttlS: number): string | undefined {
  const most = Math.max(...hostedPerAgent(shape));
  const problem = killBudgetProblem(most, leaseTiming({ ttlSeconds: ttlS }, 'lease'));
  // The agent's words count hosted identities; each of the bench's is hosted by two agents.
  return (
    problem &&
    `${shape.identities} identities on ${shape.agents} agents at T = ${ttlS} s host up to ${most} on one agent, ` +
      `which the agents refuse: ${problem}. For the bench: more --agents, fewer --identities or a longer --ttl ` +
      `(each identity is hosted by two agents)`
  );
}

/**
 * The fewest agents, at least `atLeast`, that accept `identities` at this TTL: the full
 * profile keeps the scale issue's 10 agents where the agents allow it and adds the fewest
 * that make the kill budget hold where they do not (11 at T = 5 s for 10,000 identities).
 */
export function agentsFor(identities: number, ttlS: number, atLeast: number, most = 100): number {
  for (let agents = atLeast; agents <= most; agents++) {
    if (shapeProblem({ agents, identities }, ttlS) === undefined) return agents;
  }
  throw new Error(
    `${identities} identities at T = ${ttlS} s need more than ${most} agents for every service to be killable ` +
      'by the must-be-out instant: fewer identities or a longer TTL',
  );
}

// Helpers shared by the pkg/lease integration tests: in-process nodes on their own etcd clients.
import type { Etcd3 } from 'etcd3';
import {
  Candidate,
  connectEtcd,
  Session,
  type CandidateOptions,
  type Leadership,
  type LeaseTimingInput,
} from '../../pkg/lease/index.js';

export interface TestNode {
  name: string;
  client: Etcd3;
  session: Session;
  candidate: Candidate;
  close(): Promise<void>;
}

export async function openNode(
  endpoints: string[],
  name: string,
  identity: string,
  opts: { timing?: LeaseTimingInput; candidate?: Partial<CandidateOptions> } = {},
): Promise<TestNode> {
  const client = connectEtcd({ endpoints });
  const session = await Session.open(client, { node: name, timing: opts.timing ?? { ttlSeconds: 2 } });
  const candidate = new Candidate(session, { identity, ...opts.candidate });
  return {
    name,
    client,
    session,
    candidate,
    async close() {
      await session.close();
      client.close();
    },
  };
}

/** Record of one term as its holder believed it: from election to loss of belief. */
export interface TermBelief {
  node: string;
  token: bigint;
  from: number;
  to?: number;
}

/** Track when a leadership stops being believed (the earliest of term end and must-stop). */
export function believe(leadership: Leadership, beliefs: TermBelief[]): TermBelief {
  const belief: TermBelief = { node: leadership.node, token: leadership.token, from: performance.now() };
  beliefs.push(belief);
  const end = () => (belief.to ??= performance.now());
  leadership.session.on('must-stop', end);
  void leadership.whenLost().then(end);
  return belief;
}

export function overlaps(beliefs: TermBelief[]): Array<[TermBelief, TermBelief]> {
  const found: Array<[TermBelief, TermBelief]> = [];
  for (const a of beliefs) {
    for (const b of beliefs) {
      if (a === b || a.token >= b.token) continue;
      const aEnd = a.to ?? Infinity;
      const bEnd = b.to ?? Infinity;
      if (a.from < bEnd && b.from < aEnd) found.push([a, b]);
    }
  }
  return found;
}

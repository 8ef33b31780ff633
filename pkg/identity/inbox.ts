// The durable inbox: a JetStream work-queue stream per identity and its one durable consumer
// `leader`. Created here when missing; when present, checked against what the spec and the
// replay rules need before anyone serves from it (a stream is trusted only once checked).
//
// Repair or refuse? On an open NATS anyone may create the stream first, with any settings, so
// the agent cannot tell a stream it made from one it did not (a marker could be forged too).
// It therefore repairs only what the spec itself sets and may change later (max age, max
// messages, replicas, the consumer's ack wait): moving those to the spec's values can only enforce the
// spec. Everything that no spec change explains (subjects, retention, discard, a duplicate
// window too short to stop replays, another consumer, a consumer that delivers differently)
// is refused: the login fails, and the message says what differs and how to fix it (delete the
// stream, and the next login creates it right). Deleting a stream that holds waiting requests
// is an operator's decision, never the agent's.
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  nanos,
  RetentionPolicy,
  StorageType,
  type ConsumerInfo,
  type NatsConnection,
  type StreamInfo,
} from 'nats';
import type { IdentitySpec } from '../spec/schema.js';
import { MIN_INBOX_DUPLICATE_WINDOW_MS } from './authenticator.js';
import { INBOX_CONSUMER, inboxStream, subjects } from './wire.js';

/** Duplicate window the agent creates inboxes with: a re-sent request (same id) is stored once. */
export const INBOX_DUPLICATE_WINDOW_MS = 120_000;
/** Unacknowledged requests the consumer hands out at once. */
const INBOX_MAX_ACK_PENDING = 1_000;

type InboxSpec = IdentitySpec['inbox'];

/** The inbox stream or its consumer differs from what the identity needs: the login is refused. */
export class InboxMismatchError extends Error {
  constructor(
    readonly identity: string,
    readonly problems: string[],
  ) {
    const stream = inboxStream(identity);
    super(
      `the durable inbox of ${identity} (JetStream stream ${stream}) is not the one understudy needs: ` +
        `${problems.join('; ')}. Nothing is served from it. If you did not set it up this way on purpose, ` +
        `someone else may have: check, then delete it (nats stream rm ${stream}; requests waiting in it are lost) ` +
        `and the next login creates it right`,
    );
    this.name = 'InboxMismatchError';
  }
}

const ms = (n: number) => Math.round(n / 1_000_000);

/** What the stream and its consumers get wrong that no spec change explains. Pure. */
export function inboxProblems(
  identity: string,
  stream: StreamInfo['config'],
  consumers: Array<ConsumerInfo['config'] & { name?: string }>,
): string[] {
  const problems: string[] = [];
  const subject = subjects.inbox(identity);
  if (stream.subjects.length !== 1 || stream.subjects[0] !== subject) {
    problems.push(`it stores subjects [${stream.subjects.join(', ')}], not exactly [${subject}]`);
  }
  if (stream.retention !== RetentionPolicy.Workqueue) {
    problems.push(`its retention is '${stream.retention}', not 'workqueue'`);
  }
  if (stream.discard !== DiscardPolicy.Old) problems.push(`it discards '${stream.discard}', not 'old'`);
  const window = ms(stream.duplicate_window ?? 0);
  if (window < MIN_INBOX_DUPLICATE_WINDOW_MS) {
    problems.push(
      `its duplicate window is ${window} ms, shorter than the ${MIN_INBOX_DUPLICATE_WINDOW_MS} ms that stops a replayed request`,
    );
  }
  if (stream.sealed) problems.push('it is sealed (it accepts no new requests)');
  const names = consumers.map((c) => c.durable_name ?? c.name ?? '(unnamed)');
  const others = names.filter((n) => n !== INBOX_CONSUMER);
  if (others.length > 0) {
    problems.push(
      `it has consumers other than '${INBOX_CONSUMER}' (${others.join(', ')}), which could take requests meant for the leader`,
    );
  }
  const leader = consumers.find((c) => (c.durable_name ?? c.name) === INBOX_CONSUMER);
  if (leader !== undefined) {
    if (leader.ack_policy !== AckPolicy.Explicit) {
      problems.push(`consumer '${INBOX_CONSUMER}' acknowledges '${leader.ack_policy}', not 'explicit'`);
    }
    if (leader.deliver_policy !== DeliverPolicy.All) {
      problems.push(`consumer '${INBOX_CONSUMER}' delivers '${leader.deliver_policy}', not 'all'`);
    }
    if (leader.deliver_subject !== undefined && leader.deliver_subject !== '') {
      problems.push(
        `consumer '${INBOX_CONSUMER}' pushes to ${leader.deliver_subject}; it must be a pull consumer`,
      );
    }
    const filter = leader.filter_subject ?? '';
    const filters = leader.filter_subjects ?? [];
    if ((filter !== '' && filter !== subject) || filters.some((f) => f !== subject)) {
      problems.push(
        `consumer '${INBOX_CONSUMER}' filters [${[filter, ...filters].filter(Boolean).join(', ')}]`,
      );
    }
  }
  return problems;
}

/** Differences from the spec the agent may correct itself (see the top of this file). Pure. */
export function inboxRepairs(
  spec: InboxSpec,
  stream: StreamInfo['config'],
  leader: ConsumerInfo['config'] | undefined,
): { stream: boolean; consumer: boolean } {
  return {
    stream:
      ms(stream.max_age) !== spec.maxAgeMs ||
      stream.max_msgs !== spec.maxMessages ||
      (stream.num_replicas || 1) !== spec.replicas,
    consumer: leader !== undefined && ms(leader.ack_wait ?? 0) !== spec.ackWaitMs,
  };
}

/**
 * Create the identity's inbox stream and its consumer where missing, bring what the spec sets
 * up to date, and refuse (InboxMismatchError) a stream or consumer that cannot be trusted.
 */
export async function ensureInbox(nc: NatsConnection, identity: string, inbox: InboxSpec): Promise<void> {
  const jsm = await nc.jetstreamManager();
  const name = inboxStream(identity);
  let info: StreamInfo;
  try {
    info = await jsm.streams.info(name);
  } catch {
    info = await replicated(inbox, () =>
      jsm.streams.add({
        name,
        subjects: [subjects.inbox(identity)],
        retention: RetentionPolicy.Workqueue,
        storage: StorageType.File,
        discard: DiscardPolicy.Old,
        max_age: nanos(inbox.maxAgeMs),
        max_msgs: inbox.maxMessages,
        num_replicas: inbox.replicas,
        duplicate_window: nanos(INBOX_DUPLICATE_WINDOW_MS),
      }),
    );
  }
  const consumers: ConsumerInfo[] = [];
  for await (const c of jsm.consumers.list(name)) consumers.push(c);
  const problems = inboxProblems(
    identity,
    info.config,
    consumers.map((c) => ({ ...c.config, name: c.name })),
  );
  if (problems.length > 0) throw new InboxMismatchError(identity, problems);

  const leader = consumers.find((c) => c.name === INBOX_CONSUMER)?.config;
  const repairs = inboxRepairs(inbox, info.config, leader);
  if (repairs.stream) {
    await replicated(inbox, () =>
      jsm.streams.update(name, {
        ...info.config,
        max_age: nanos(inbox.maxAgeMs),
        max_msgs: inbox.maxMessages,
        num_replicas: inbox.replicas,
      }),
    );
  }
  if (leader === undefined) {
    await jsm.consumers.add(name, {
      durable_name: INBOX_CONSUMER,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      ack_wait: nanos(inbox.ackWaitMs),
      max_ack_pending: INBOX_MAX_ACK_PENDING,
    });
  } else if (repairs.consumer) {
    await jsm.consumers.update(name, INBOX_CONSUMER, { ack_wait: nanos(inbox.ackWaitMs) });
  }
}

/** A stream write that asks for replicas: a NATS that cannot keep them is named in the error. */
async function replicated<T>(inbox: InboxSpec, write: () => Promise<T>): Promise<T> {
  try {
    return await write();
  } catch (err) {
    // Only a refusal about copies is about inbox.replicas (a timeout, say, is not).
    if (
      inbox.replicas === 1 ||
      !/replica|clustered|insufficient resources|no suitable peers/i.test((err as Error).message)
    ) {
      throw err;
    }
    throw new Error(
      `the inbox asks NATS for ${inbox.replicas} replicas (inbox.replicas) and NATS refused: ${(err as Error).message}. A single NATS server keeps 1; set inbox.replicas to at most the cluster's JetStream servers`,
      { cause: err },
    );
  }
}

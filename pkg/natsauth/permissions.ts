// Who may publish and subscribe to what on NATS: the permission table of understudy's three
// roles, as data. Each entry carries the sentence that says why it is there, so the rendered
// server config, the docs and a reviewer all read the same reasons. Least privilege: an entry
// exists only because a component really uses it (pkg/identity/wire.ts names the subjects;
// the JetStream calls are those nats.js 2.29 makes for the inbox, the replay KV and the snapshot
// object store).
import { CREDENTIAL_QUEUE, CREDENTIAL_SUBJECT_WILDCARD } from '../credentials/protocol.js';
import { inboxStream } from '../identity/wire.js';
import { NAME_PATTERN } from '../lease/keys.js';

export const ROLES = ['controller', 'agent', 'client'] as const;
export type Role = (typeof ROLES)[number];

export interface Rule {
  /** A NATS subject (wildcards allowed); for a subscription, optionally `<subject> <queue>`. */
  subject: string;
  why: string;
}

export interface Direction {
  allow: Rule[];
  deny: Rule[];
}

export interface Permissions {
  publish: Direction;
  subscribe: Direction;
  /** NATS `allow_responses`: may answer requests it received, once each. Absent: may not. */
  responses?: { why: string };
}

/** The JetStream API, as nats.js calls it (default domain, no prefix). */
const JS_API = '$JS.API';
/** The one durable consumer of an inbox (pkg/identity/wire.ts INBOX_CONSUMER). */
const INBOX_CONSUMER = 'leader';
/**
 * The replay cache shared by agents across leaders: a JetStream KV bucket. Equal to
 * pkg/identity/replay.ts REPLAY_BUCKET (a unit test checks; importing it here would pull the
 * request authenticator into every NATS connection).
 */
export const REPLAY_BUCKET = 'UNDERSTUDY_REPLAY';
/** The stream behind a KV bucket, as nats.js names it. */
const REPLAY_STREAM = `KV_${REPLAY_BUCKET}`;
/**
 * The object store bucket of snapshot archives, written and read by agents only. Equal to
 * pkg/snapshot/store.ts SNAPSHOT_BUCKET (a unit test checks; importing it here would pull etcd
 * into every NATS connection).
 */
export const SNAPSHOT_BUCKET = 'understudy-snapshots';
/** The stream behind an object store bucket, as nats.js names it (objectStoreStreamName). */
const SNAPSHOT_STREAM = `OBJ_${SNAPSHOT_BUCKET}`;
/** Every object store's subjects: `$O.<bucket>.C.<nuid>` (chunks), `$O.<bucket>.M.<name>` (metadata). */
const OBJECTS = '$O.>';

const rule = (subject: string, why: string): Rule => ({ subject, why });

/** Subjects no role but the named one may touch; denied explicitly to the others. */
const CONTROL = 'understudy.agent.*.control';
const HEARTBEAT = 'understudy.agent.*.heartbeat';
const IDENTITY = 'understudy.id.*';
const INBOX = 'understudy.inbox.*';
const CREDENTIAL = CREDENTIAL_SUBJECT_WILDCARD;
const REPLIES = '_INBOX.>';

function controller(): Permissions {
  return {
    publish: {
      allow: [
        rule(
          CONTROL,
          'drain, undrain, fence, unfence and status requests to agents (pkg/controller/agents.ts)',
        ),
        rule(IDENTITY, 'PING probes of each identity (pkg/controller/probes.ts, collectResponders)'),
      ],
      deny: [
        rule('understudy.agent.*.heartbeat', 'only agents report presence'),
        rule(INBOX, 'controllers never store requests in a durable inbox'),
        rule('$KV.>', 'the replay cache belongs to agents'),
        rule(
          OBJECTS,
          'snapshot archives belong to agents: a controller reads only their records in etcd (pkg/snapshot/store.ts)',
        ),
      ],
    },
    subscribe: {
      allow: [
        rule(HEARTBEAT, "agents' heartbeats: the controller's view of nodes (pkg/controller/agents.ts)"),
        rule(
          `${CREDENTIAL} ${CREDENTIAL_QUEUE}`,
          'credential requests of logging-in agents, answered once by one controller of the queue group',
        ),
        rule(REPLIES, 'replies to its control requests and PING probes (nats.js request inboxes)'),
      ],
      deny: [
        rule(IDENTITY, 'only the logged-in agent answers an identity; a controller must never look like one'),
        rule(CONTROL, 'only the addressed agent reads control requests'),
        rule(OBJECTS, 'snapshot archives are read by agents, through a consumer of the bucket'),
      ],
    },
    responses: { why: 'answers a credential request on the reply subject the agent gave' },
  };
}

/** Where an agent's identity-scoped entries apply: the identities it may host, or all of them. */
interface IdentityScope {
  /** Subject token of the identity (`*`: any). */
  subject: string;
  /** Stream name of its inbox (`*`: any stream, since a stream-name prefix cannot be a wildcard). */
  stream: string;
  /** Appended to each reason. */
  note: string;
}

function identityScopes(identities: readonly string[] | undefined): IdentityScope[] {
  if (identities === undefined) {
    // Any identity (a shared agent user): the docs say how a per-node user narrows it.
    return [{ subject: '*', stream: '*', note: '' }];
  }
  return identities.map((id) => ({ subject: id, stream: inboxStream(id), note: ` (${id})` }));
}

/**
 * The agent role. `node` restricts the user to its own node's heartbeat and control subjects
 * (a per-node user); `identities` to the identities that node may host (its subjects, inbox
 * stream and credential). Absent, the user may act for every node or identity.
 */
function agent(node: string | undefined, identities: readonly string[] | undefined): Permissions {
  const self = node ?? '*';
  const scopes = identityScopes(identities);
  const each = (make: (s: IdentityScope) => [string, string]): Rule[] =>
    scopes.map((s) => {
      const [subject, why] = make(s);
      return rule(subject, why + s.note);
    });
  return {
    publish: {
      allow: [
        rule(`understudy.agent.${self}.heartbeat`, 'its own heartbeats (pkg/agent/agent.ts)'),
        rule(
          REPLIES,
          "answers to durable requests go to the caller's reply subject named in Understudy-Reply-To, which allow_responses does not cover (pkg/identity/responder.ts)",
        ),
        ...each((s) => [
          `understudy.credential.${s.subject}`,
          'asks the controllers for its credential at login',
        ]),
        rule(`${JS_API}.INFO`, 'nats.js checks the JetStream API before managing streams'),
        ...each((s) => [
          `${JS_API}.STREAM.INFO.${s.stream}`,
          'reads the inbox stream before creating it (ensureInbox)',
        ]),
        ...each((s) => [
          `${JS_API}.STREAM.CREATE.${s.stream}`,
          'creates a missing inbox stream, so requests are kept while no one leads',
        ]),
        ...each((s) => [
          `${JS_API}.STREAM.UPDATE.${s.stream}`,
          "brings the inbox's max age and size up to the spec (pkg/identity/inbox.ts)",
        ]),
        ...each((s) => [
          `${JS_API}.CONSUMER.INFO.${s.stream}.${INBOX_CONSUMER}`,
          'reads the inbox consumer before creating or using it',
        ]),
        ...each((s) => [
          `${JS_API}.CONSUMER.CREATE.${s.stream}.${INBOX_CONSUMER}`,
          'creates the one durable consumer of the inbox, or updates its ack wait',
        ]),
        ...each((s) => [
          `${JS_API}.CONSUMER.CREATE.${s.stream}.${INBOX_CONSUMER}.>`,
          'the same, when the consumer names a filter subject (nats.js appends it)',
        ]),
        ...each((s) => [
          `${JS_API}.CONSUMER.LIST.${s.stream}`,
          'checks the inbox has no consumer but its own (issue 12 point 5)',
        ]),
        ...each((s) => [`${JS_API}.CONSUMER.NAMES.${s.stream}`, 'the same check, by name']),
        ...each((s) => [
          `${JS_API}.CONSUMER.MSG.NEXT.${s.stream}.${INBOX_CONSUMER}`,
          'the logged-in leader pulls durable requests (responder.ts consumeInbox)',
        ]),
        ...each((s) => [
          `$JS.ACK.${s.stream}.${INBOX_CONSUMER}.>`,
          'acks (or naks) each durable request it pulled',
        ]),
        rule(`$KV.${REPLAY_BUCKET}.>`, 'writes request nonces into the replay cache shared across leaders'),
        rule(`${JS_API}.STREAM.INFO.${REPLAY_STREAM}`, 'opens the replay cache bucket'),
        rule(`${JS_API}.STREAM.CREATE.${REPLAY_STREAM}`, 'creates the replay cache bucket where missing'),
        rule(`${JS_API}.STREAM.MSG.GET.${REPLAY_STREAM}`, 'reads a nonce from the replay cache'),
        rule(`${JS_API}.DIRECT.GET.${REPLAY_STREAM}.>`, 'the same, by direct get (a KV bucket allows it)'),
        rule(
          `$O.${SNAPSHOT_BUCKET}.C.>`,
          "uploads a snapshot archive's chunks, under a new subject per upload (os.put in SnapshotStore.publish, pkg/snapshot/store.ts)",
        ),
        rule(
          `$O.${SNAPSHOT_BUCKET}.M.>`,
          "writes an archive's metadata once its chunks are stored, and marks it deleted (os.put, os.delete in pkg/snapshot/store.ts)",
        ),
        rule(
          `${JS_API}.STREAM.INFO.${SNAPSHOT_STREAM}`,
          'opens the snapshot bucket (views.os in pkg/snapshot/store.ts)',
        ),
        rule(
          `${JS_API}.STREAM.CREATE.${SNAPSHOT_STREAM}`,
          'creates the snapshot bucket where missing (views.os in pkg/snapshot/store.ts)',
        ),
        rule(
          `${JS_API}.STREAM.MSG.GET.${SNAPSHOT_STREAM}`,
          "reads an archive's metadata before each put, get and delete, and the newest of all before a list (pkg/snapshot/store.ts; nats.js uses no direct get for object stores)",
        ),
        rule(
          `${JS_API}.STREAM.PURGE.${SNAPSHOT_STREAM}`,
          "drops an archive's chunks when it is deleted (pruned, or its snapshot refused as stale), overwritten, or its upload failed (os.delete, os.put in pkg/snapshot/store.ts)",
        ),
        rule(
          `${JS_API}.STREAM.NAMES`,
          "nats.js looks up the stream of the subject it reads before an object store get or list (js.subscribe in os.get, pkg/snapshot/store.ts restoreLatest): stream names only, of the whole account, since the subject is in the request's body",
        ),
        rule(
          `${JS_API}.CONSUMER.CREATE.${SNAPSHOT_STREAM}`,
          "the ephemeral ordered consumer that streams an archive's chunks (os.get in pkg/snapshot/store.ts restoreLatest) or the bucket's metadata (os.list); nats.js names none, so no consumer token follows",
        ),
        rule(
          `$JS.FC.${SNAPSHOT_STREAM}.>`,
          "answers the server's flow control while an archive of about 1 MB or more streams in, including a stalled-consumer notice, whose subject comes in a heartbeat header that allow_responses does not cover (os.get in pkg/snapshot/store.ts)",
        ),
      ],
      deny: [
        rule(CONTROL, 'only controllers send control requests'),
        rule(IDENTITY, 'agents answer identities; they do not probe them'),
        rule(INBOX, 'agents take durable requests from the stream; they never put any in'),
      ],
    },
    subscribe: {
      allow: [
        rule(`understudy.agent.${self}.control`, "the controller's control requests addressed to this node"),
        ...each((s) => [`understudy.id.${s.subject}`, 'answers the identity while logged in as it']),
        rule(REPLIES, 'replies to its JetStream API calls, pulled durable requests and credential answers'),
      ],
      deny: [
        rule(INBOX, 'durable requests are read through the stream consumer, never by a plain subscription'),
        rule(CREDENTIAL, "another agent's credential request is none of its business"),
        rule(HEARTBEAT, 'heartbeats are for controllers'),
      ],
    },
    responses: { why: 'answers PING, identity requests and control requests on their reply subjects' },
  };
}

function client(): Permissions {
  return {
    publish: {
      allow: [
        rule(IDENTITY, 'requests to an identity: PING, HELP, STATUS and its service commands'),
        rule(INBOX, 'durable requests stored in an identity inbox (JetStream replies with a publish ack)'),
      ],
      deny: [
        rule(CONTROL, 'drain, fence and unfence are for controllers only'),
        rule(HEARTBEAT, 'a client must not pass for an agent'),
        rule(CREDENTIAL, 'credentials go only to agents'),
        rule(REPLIES, "a client must not answer anyone's request (no forged PONG)"),
        rule('$KV.>', 'the replay cache belongs to agents'),
        rule('$JS.>', 'clients use JetStream only through publishing to an inbox'),
        rule(OBJECTS, 'snapshot archives belong to agents (pkg/snapshot/store.ts)'),
      ],
    },
    subscribe: {
      allow: [rule(REPLIES, 'replies to its requests and durable requests, and JetStream publish acks')],
      deny: [
        rule(IDENTITY, 'a client must not answer for an identity'),
        rule(CONTROL, 'control requests are for agents'),
        rule(INBOX, 'durable requests are read by the leader only'),
        rule(CREDENTIAL, 'credential requests are for controllers'),
        rule(
          OBJECTS,
          "snapshot archives hold services' state: a client must not read them as they are uploaded",
        ),
      ],
    },
  };
}

/** A node or identity name usable as a NATS subject token (the same names etcd keys use). */
export function assertName(name: string, field: string): void {
  if (!NAME_PATTERN.test(name)) {
    throw new Error(
      `${field}: '${name}' must be 1-63 lowercase letters, digits, "-" or "_", starting with a letter or digit (a node or identity name)`,
    );
  }
}

export interface RoleScope {
  /** A per-node agent user: only this node's heartbeat and control subjects. */
  node?: string;
  /** An agent user only for these identities (their subjects, inbox streams, credentials). */
  identities?: readonly string[];
}

/** The permissions of a role; a scope narrows an agent user (agents only). */
export function rolePermissions(role: Role, scope: RoleScope = {}): Permissions {
  const { node, identities } = scope;
  if ((node !== undefined || identities !== undefined) && role !== 'agent') {
    throw new Error(`only agent users are scoped to a node or identities; leave them out for role ${role}`);
  }
  if (node !== undefined) assertName(node, 'node');
  if (identities !== undefined) {
    if (identities.length === 0)
      throw new Error('identities: list at least one, or leave it out for any identity');
    for (const id of identities) assertName(id, 'identities');
  }
  switch (role) {
    case 'controller':
      return controller();
    case 'agent':
      return agent(node, identities);
    case 'client':
      return client();
  }
}

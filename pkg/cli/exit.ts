// How the CLI ends: exit codes scripts can rely on, and the error that carries one.
/** Exit codes scripts can rely on. */
export const EXIT = {
  ok: 0,
  failed: 1,
  usage: 2,
  /** No one answers for the identity. */
  noResponder: 3,
  /** More than one node answers: split brain. */
  splitBrain: 4,
  /** The identity answered with an error (refused, unknown command, ...). */
  refused: 5,
  /** The controller knows no such identity, node, workflow or caller (HTTP 404). */
  notFound: 6,
  /** The request conflicts with the current state: a workflow runs, the node is fenced... (409). */
  conflict: 7,
  /** The controller cannot be reached or cannot reach etcd/NATS (connection failure, 503). */
  unavailable: 8,
  /** The token is missing, wrong, or lacks the role the command needs (401, 403). */
  unauthorized: 9,
  /** Replies came, but none could be verified (no node keys, or forged): they prove nothing. */
  unverified: 10,
} as const;

/** One line per exit code for `--help`; a Record so a new code cannot go undocumented. */
const EXIT_MEANING: Record<keyof typeof EXIT, string> = {
  ok: 'done; for switchover/failover/fence: the workflow finished',
  failed: 'failed, a workflow ended aborted, or the CLI gave up waiting for it',
  usage: 'bad option, argument or file, or the controller rejected the request (400)',
  noResponder: 'no one answers for the identity (ping, call)',
  splitBrain: 'more than one node answers: split brain (ping)',
  refused: 'the identity refused the request (call)',
  notFound: 'no such identity, node, workflow or caller (404)',
  conflict: 'conflicts with the current state: a workflow runs, node fenced... (409)',
  unavailable: 'controller unreachable or timed out, or etcd/NATS down (503)',
  unauthorized: 'token missing, wrong, or without the needed role (401/403)',
  unverified:
    'replies not verified: no node keys (--trust-node-key, --controller) or forged (ping, call, watch)',
};

export function exitCodesHelp(): string {
  const rows = (Object.keys(EXIT) as (keyof typeof EXIT)[]).map(
    (key) => `  ${String(EXIT[key]).padStart(2)}  ${EXIT_MEANING[key]}`,
  );
  return ['Exit codes:', ...rows].join('\n');
}

/** A failure the CLI reports as one line on stderr and exits with `exitCode` (see EXIT). */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

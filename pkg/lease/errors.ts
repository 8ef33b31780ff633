// The errors a campaign or a term ends with, each telling the caller what to do next.

/** The fencing token of a term: the etcd revision of the write that made its holder leader. */
export type FencingToken = bigint;

/** This node never campaigns for the identity (tagged `nofailover`). */
export class NotEligibleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'NotEligibleError';
  }
}

/** The campaign (or a term it just won) ended because its session must stop or it was cancelled. */
export class CampaignAbandonedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CampaignAbandonedError';
  }
}

export class FencedNodeError extends Error {
  constructor(
    readonly node: string,
    readonly identity: string,
  ) {
    super(
      `node ${node} is fenced, or held off ${identity} by a handover in progress: it may not log in as ${identity} ` +
        `until an operator unfences it or the handover ends`,
    );
    this.name = 'FencedNodeError';
  }
}

export class StaleTokenError extends Error {
  constructor(
    readonly identity: string,
    readonly token: FencingToken,
  ) {
    super(`fencing token ${token} of ${identity} is stale: a newer term holds the identity; stop acting`);
    this.name = 'StaleTokenError';
  }
}

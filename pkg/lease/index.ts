// pkg/lease: who may act for an identity, and for how long they may believe it. etcd only.
export { connectEtcd, etcdCalls, ETCD_CALLS_IN_FLIGHT, within, type EtcdConnectOptions } from './etcd.js';
export {
  leaseTiming,
  LeaseTimingError,
  LeaseTimingSection,
  ETCD_MIN_TTL_S,
  type LeaseTiming,
  type LeaseTimingInput,
} from './timing.js';
export { Session, type MustStop, type Lost, type StopReason, type SessionState } from './session.js';
export {
  Candidate,
  Leadership,
  CampaignAbandonedError,
  NotEligibleError,
  StaleTokenError,
  FencedNodeError,
  STAGGER_STEP_MS,
  type CandidateOptions,
  type CampaignRetry,
  type FencingToken,
  type PreviousTerm,
} from './campaign.js';
export type { HandOverPlan } from './leadership.js';
export {
  readLeader,
  transfer,
  revokeHolder,
  fence,
  unfence,
  isFenced,
  LeaseOperationError,
  type LeaderView,
  type TransferTarget,
} from './admin.js';
export { holdOff, extendHoldOff, releaseHoldOff, listHoldOffs } from './holdoff.js';
export { fencedPut, isTokenCurrent, TokenGate } from './fenced.js';
export { LeaderObserver, type LeaderState } from './observe.js';
export {
  Keys,
  Name,
  LeaderRecord,
  LoginRecord,
  CandidateRecord,
  TermEnd,
  FenceRecord,
  HoldOffRecord,
  DriftRecord,
} from './keys.js';

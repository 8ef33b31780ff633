// Probing: every identity is PINGed at its spec's interval, and what the answers mean (split
// brain, a leader that stopped answering, a probe-driven failover) is decided by the pure
// rules in probe-rules.ts. This module does the I/O around them: the PINGs, the NATS link
// watch that tells a blind controller from silent leaders, alarms and metrics.
import type { Etcd3 } from 'etcd3';
import type { NatsConnection } from 'nats';
import type { Logger } from 'pino';
import type { Clock } from '../clock/index.js';
import type { ControllerConfig } from '../config/controller.js';
import { collectResponders } from '../identity/client.js';
import type { NodeKeySource } from '../identity/presence.js';
import { readNodeKeys } from '../keys/index.js';
import type { Cluster } from './cluster.js';
import type { EventStream } from './events.js';
import type { ControllerMetrics } from './metrics.js';
import { claimsLoggedIn, PingBudget, planProbes, suspicion, type Suspicion } from './probe-plan.js';
import {
  blindness,
  lateness,
  leaderMissed,
  probeVerdict,
  splitBrain,
  type Responder,
} from './probe-rules.js';
import type { ClusterSnapshot, GuardedWriter } from './store.js';
import type { WorkflowSupervisor } from './supervisor.js';
import type { LoopTrouble } from './trouble.js';
import {
  agentAlive,
  chooseTarget,
  freshAgent,
  heartbeatEntry,
  identityKeys,
  leaderServing,
  runningWorkflow,
  type ProbeState,
} from './view.js';

interface ProbeEntry extends ProbeState {
  inFlight: boolean;
  /** Monotonic ms the last round judged it (a PING started, or heartbeats vouched). */
  startedAt: number;
  /** Monotonic ms the last real PING started. */
  pingedAt: number;
  splitBrain: boolean;
  alarmed: boolean;
  lastReason?: string;
  /** The responders of the last probe, as a string to compare. */
  lastOutcome?: string;
}

export interface ProberDeps {
  name: string;
  nc: NatsConnection;
  config: ControllerConfig;
  cluster: Cluster;
  writer: GuardedWriter;
  supervisor: WorkflowSupervisor;
  events: EventStream;
  metrics: ControllerMetrics;
  trouble: LoopTrouble;
  clock: Clock;
  log: Logger;
  isActive(): boolean;
  /** Where node keys are read (default ping); the controller passes its own. */
  etcd?: Etcd3;
  keys?: { prefix: string };
  /**
   * Who answers PING for an identity within `timeoutMs`, verified (default: over NATS, each
   * answer's signature checked against the node keys registered in etcd).
   */
  ping?: (identity: string, timeoutMs: number) => Promise<Responder[]>;
}

/**
 * Node keys from etcd as a NodeKeySource: read once (one range read) on the first lookup, so
 * a round of answers naming many made-up nodes costs one read. Make one per probe round.
 */
export function etcdNodeKeys(etcd: Etcd3, prefix?: string): NodeKeySource {
  let known: Promise<Map<string, { key: string; lease: string }>> | undefined;
  return async (node) => {
    known ??= readNodeKeys(etcd, prefix);
    return (await known).get(node);
  };
}

/** Forged answers ignored, logged at most this often per identity (a flood logs once a minute). */
const FORGED_LOG_INTERVAL_MS = 60_000;
/**
 * A heartbeat vouches for its identities for two of the agent's periods plus this: one late
 * beat is tolerated, a second means the agent (or its link) is in trouble and PINGs decide.
 */
const VOUCH_SLACK_MS = 500;

export class Prober {
  private readonly probes = new Map<string, ProbeEntry>();
  /** Bumped at every NATS disconnect and reconnect: a probe that spans one proves nothing. */
  private natsEpoch = 0;
  private natsUp = true;
  private blind = false;

  private readonly ping: (identity: string, timeoutMs: number, keys?: NodeKeySource) => Promise<Responder[]>;
  /** Identity → monotonic ms forged answers were last logged. */
  private readonly forgedLogged = new Map<string, number>();
  private readonly budget: PingBudget;
  /** Identities whose probe outcome (responders, misses, split brain) changed since taken. */
  private changed = new Set<string>();
  /** Identities judged from heartbeats since the last log line saying so. */
  private vouchedSinceLog = 0;
  private lateSinceLog = 0;
  private lateLoggedAt = -Infinity;
  private vouchLoggedAt = -Infinity;

  constructor(private readonly deps: ProberDeps) {
    this.ping = deps.ping ?? ((identity, timeoutMs, keys) => this.verifiedPing(identity, timeoutMs, keys));
    this.budget = new PingBudget(deps.config.probes.maxPingsPerSecond, deps.clock.monotonicMs());
  }

  /**
   * PING over NATS; only answers signed with the key the node registered for its live session
   * count. The keys are read once per probe (one etcd range read): a flood of answers naming
   * made-up nodes costs nothing more. Reading them failing fails the probe (counted as trouble,
   * not as a miss).
   */
  private async verifiedPing(
    identity: string,
    timeoutMs: number,
    roundKeys?: NodeKeySource,
  ): Promise<Responder[]> {
    const { etcd, nc } = this.deps;
    if (etcd === undefined) throw new Error('the prober needs etcd to read node keys (or a ping function)');
    const keys = roundKeys ?? etcdNodeKeys(etcd, this.deps.keys?.prefix);
    let forged = 0;
    let sample = '';
    const answers = await collectResponders(nc, identity, timeoutMs, {
      keys,
      ignored: (problem) => {
        forged++;
        sample ||= problem;
      },
    });
    if (forged > 0) this.forgedAnswers(identity, forged, sample);
    return answers.map((r) => ({
      node: r.node,
      token: String(r.token),
      ...(r.error ? { error: r.error } : {}),
      ...(r.lease !== undefined ? { lease: r.lease } : {}),
    }));
  }

  private forgedAnswers(identity: string, count: number, sample: string): void {
    const now = this.deps.clock.monotonicMs();
    const last = this.forgedLogged.get(identity);
    if (last !== undefined && now - last < FORGED_LOG_INTERVAL_MS) return;
    this.forgedLogged.set(identity, now);
    this.deps.log.warn(
      { identity, ignored: count, example: sample },
      `answers to a probe of ${identity} did not verify and were ignored: someone other than its agents may be answering on its subject; ` +
        'check who can subscribe to understudy.id.* (NATS authorization)',
    );
  }

  /** Follow the NATS connection's status (until it closes). */
  watchLink(): void {
    void (async () => {
      for await (const s of this.deps.nc.status()) {
        if (s.type === 'disconnect' || s.type === 'reconnect' || s.type === 'staleConnection') {
          this.natsEpoch++;
          this.natsUp = s.type === 'reconnect';
        }
      }
    })();
  }

  /** The identities whose probe outcome changed since the last call (their views follow). */
  takeChanged(): Set<string> {
    const changed = this.changed;
    this.changed = new Set();
    return changed;
  }

  /** The last probe of an identity (for its view). */
  state(identity: string): ProbeState | undefined {
    return this.probes.get(identity);
  }

  /** After a resume, an identity still unresponsive alarms (and may fail over) again. */
  rearm(identity: string): void {
    const p = this.probes.get(identity);
    if (p) p.alarmed = false;
  }

  /**
   * Judge the identities that are due (one probe in flight per identity): PING them, or, past
   * the PING budget, judge from heartbeats those a fresh heartbeat vouches for
   * (probe-plan.ts). Forget removed identities.
   */
  startDue(snap: ClusterSnapshot): void {
    const now = this.deps.clock.monotonicMs();
    const due: Array<{ identity: string; entry: ProbeEntry }> = [];
    for (const [identity, { spec }] of snap.specs) {
      let p = this.probes.get(identity);
      if (!p) {
        p = {
          responders: [],
          failures: 0,
          inFlight: false,
          startedAt: -Infinity,
          pingedAt: -Infinity,
          splitBrain: false,
          alarmed: false,
        };
        this.probes.set(identity, p);
      }
      if (p.inFlight || now - p.startedAt < spec.probe.intervalMs) continue;
      due.push({ identity, entry: p });
    }
    for (const identity of this.probes.keys()) {
      if (!snap.specs.has(identity)) {
        this.probes.delete(identity);
        this.forgedLogged.delete(identity);
        this.deps.metrics.forgetIdentity(identity);
      }
    }
    if (due.length === 0) return;
    const available = this.budget.available(now);
    const suspicions = due.length > available ? this.suspicions(snap, due) : undefined;
    const plan = planProbes(
      due.map(({ identity, entry }) => ({
        identity,
        lastPingAt: entry.pingedAt,
        suspicion: suspicions?.get(identity) ?? { suspect: true, reason: 'within budget' },
      })),
      available,
    );
    this.budget.spend(plan.ping.length);
    const entries = new Map(due.map((d) => [d.identity, d.entry]));
    const epoch = this.natsEpoch;
    // One read of the node keys for the whole round, not one per PING.
    const keys = this.deps.etcd ? etcdNodeKeys(this.deps.etcd, this.deps.keys?.prefix) : undefined;
    for (const identity of plan.ping) {
      const entry = entries.get(identity)!;
      const spec = snap.specs.get(identity)!.spec;
      entry.inFlight = true;
      entry.startedAt = now;
      entry.pingedAt = now;
      const sentAt = this.deps.clock.monotonicMs();
      this.ping(identity, spec.probe.timeoutMs, keys)
        .then((responders) => {
          this.deps.trouble.recovered('probe', identity);
          const lateMs = this.deps.clock.monotonicMs() - sentAt - spec.probe.timeoutMs;
          this.probed(identity, entry, epoch, responders, snap, lateMs);
        })
        .catch((err: unknown) =>
          this.deps.trouble.failed('probe', err, `probe of ${identity} failed to run`, identity),
        )
        .finally(() => (entry.inFlight = false));
    }
    for (const identity of plan.vouched) {
      const entry = entries.get(identity)!;
      entry.startedAt = now;
      const leader = identityKeys(snap, identity).leader;
      const answered = suspicions?.get(identity)?.vouched?.leaderAnswered === true && leader !== undefined;
      this.probed(
        identity,
        entry,
        epoch,
        answered
          ? [{ node: leader.record.node, token: String(leader.token), lease: leader.record.leaseId }]
          : [],
        snap,
      );
    }
    this.noteVouched(plan.vouched.length, plan.ping.length, plan.waiting.length, now);
  }

  /** What the heartbeats say about each due identity (only needed past the PING budget). */
  private suspicions(
    snap: ClusterSnapshot,
    due: ReadonlyArray<{ identity: string; entry: ProbeEntry }>,
  ): Map<string, Suspicion> {
    const view = this.deps.cluster.view(snap);
    const claimants = new Map<string, string[]>();
    for (const [node, seen] of view.agents) {
      if (!freshAgent(view, node)) continue;
      for (const i of seen.heartbeat.identities) {
        if (!claimsLoggedIn(i.state)) continue;
        const list = claimants.get(i.identity);
        if (list) list.push(node);
        else claimants.set(i.identity, [node]);
      }
    }
    const out = new Map<string, Suspicion>();
    for (const { identity, entry } of due) {
      const keys = identityKeys(snap, identity);
      const leader = keys.leader;
      const seen = leader ? view.agents.get(leader.record.node) : undefined;
      const window = seen?.heartbeat.everyMs
        ? Math.min(2 * seen.heartbeat.everyMs + VOUCH_SLACK_MS, view.heartbeatTimeoutMs)
        : 0;
      const own = heartbeatEntry(seen, identity);
      out.set(
        identity,
        suspicion({
          identity,
          ...(leader ? { leader: { node: leader.record.node, token: String(leader.token) } } : {}),
          loggedIn: keys.login?.loggedIn === true,
          // An agent that does not say how often it beats (older than this rule) vouches for nothing.
          leaderBeatFresh: seen !== undefined && window > 0 && view.now - seen.receivedAt <= window,
          ...(own ? { entry: own } : {}),
          otherClaimants: (claimants.get(identity) ?? []).filter((n) => n !== leader?.record.node),
          failures: entry.failures,
          splitBrain: entry.splitBrain,
        }),
      );
    }
    return out;
  }

  /**
   * Probes ended late are not counted: said once a minute, at warn, since a controller whose
   * loop is always late would otherwise never count a miss, and fail nothing over, silently.
   */
  private noteLate(lateMs: number): void {
    this.lateSinceLog++;
    const now = this.deps.clock.monotonicMs();
    if (now - this.lateLoggedAt < FORGED_LOG_INTERVAL_MS) return;
    this.lateLoggedAt = now;
    this.deps.log.warn(
      { probesNotCounted: this.lateSinceLog, lateMs: Math.round(lateMs) },
      'probes ended late because this controller was busy, and proved nothing: while this lasts, a leader that stops answering is not failed over; give the controller more CPU, or lower probes.maxPingsPerSecond',
    );
    this.lateSinceLog = 0;
  }

  /** Say once a minute how many identities heartbeats stood in for (the PING budget is spent). */
  private noteVouched(vouched: number, pinged: number, waiting: number, now: number): void {
    this.deps.metrics.probeRounds.inc({ judged: 'ping' }, pinged);
    this.deps.metrics.probeRounds.inc({ judged: 'heartbeat' }, vouched);
    if (vouched === 0 && waiting === 0) return;
    this.vouchedSinceLog += vouched;
    if (now - this.vouchLoggedAt < FORGED_LOG_INTERVAL_MS) return;
    this.vouchLoggedAt = now;
    this.deps.log.info(
      {
        judgedByHeartbeat: this.vouchedSinceLog,
        pingsPerSecond: this.deps.config.probes.maxPingsPerSecond,
        waiting,
      },
      "more identities are due than the PING budget allows: those whose leader's heartbeat vouches for its service are judged from it, suspects and a rotating sample are PINGed (probes.maxPingsPerSecond)",
    );
    this.vouchedSinceLog = 0;
  }

  /** `lateMs`: how long after its timeout the PING ended (a judgement from heartbeats: 0). */
  private probed(
    identity: string,
    p: ProbeEntry,
    epoch: number,
    responders: Responder[],
    /** The snapshot the probe was started on: the leader it probed for. */
    probedOn: ClusterSnapshot,
    lateMs = 0,
  ): void {
    const { deps } = this;
    const snap = deps.cluster.last ?? probedOn;
    // The leader changed while the probe ran: its answer (or silence) says nothing of the new one.
    const then = identityKeys(probedOn, identity).leader?.token;
    if (identityKeys(snap, identity).leader?.token !== then) return;
    const view = deps.cluster.view(snap);
    const leader = identityKeys(snap, identity).leader;
    const spec = snap.specs.get(identity)?.spec;
    const outcome = `${responders.map((r) => `${r.node}@${r.token}:${r.lease ?? ''}:${r.error ?? ''}`).join(',')}`;
    if (outcome !== p.lastOutcome) this.changed.add(identity);
    p.lastOutcome = outcome;
    p.responders = responders;
    p.at = deps.clock.wallMs();
    deps.metrics.setIdentity(deps.metrics.responders, identity, responders.length);

    const split = splitBrain(identity, responders);
    if (split.splitBrain && !p.splitBrain) deps.events.alarm('split-brain', split.reason, identity);
    else if (!split.splitBrain && p.splitBrain)
      deps.log.warn({ identity }, 'split brain over: one responder or none');
    p.splitBrain = split.splitBrain;
    deps.metrics.setIdentity(deps.metrics.splitBrain, identity, p.splitBrain ? 1 : 0);

    const missed = leaderMissed({
      identity,
      ...(leader
        ? { leader: { node: leader.record.node, token: String(leader.token), lease: leader.record.leaseId } }
        : {}),
      loggedIn: identityKeys(snap, identity).login?.loggedIn === true,
      serving: leaderServing(view, identity),
      agentAlive: leader !== undefined && agentAlive(view, leader.record.node),
      responders,
    });
    const linkBlind = this.blindness(
      view.agents.size,
      [...view.agents.keys()].filter((n) => agentAlive(view, n)).length,
      epoch,
    );
    // A busy controller's own lag proves nothing about the leader (this probe only).
    const blind = linkBlind.blind ? linkBlind : lateness(lateMs);
    if (!linkBlind.blind && blind.blind) this.noteLate(lateMs);
    const paused = snap.paused.get(identity);
    const verdict = probeVerdict(p, missed, blind, {
      identity,
      ...(leader ? { leaderNode: leader.record.node } : {}),
      ...(spec ? { probe: { failures: spec.probe.failures, intervalMs: spec.probe.intervalMs } } : {}),
      ...(paused ? { pausedBy: paused.actor } : {}),
      active: deps.isActive(),
      failoverEnabled: deps.config.probes.failover,
      workflowRunning: runningWorkflow(snap, identity) !== undefined,
      // Only a miss can lead to a failover: the answered majority skips choosing a target.
      target:
        leader && missed.missed
          ? chooseTarget(view, identity, [leader.record.node])
          : { reason: leader ? 'the leader answered' : 'no leader' },
    });
    if (verdict.reason !== p.lastReason && (verdict.failures > 0 || p.failures > 0)) {
      deps.log.info({ identity, failures: verdict.failures }, verdict.reason);
    }
    p.lastReason = verdict.reason;
    if (!verdict.counted) return;
    if (p.failures !== verdict.failures) this.changed.add(identity);
    p.failures = verdict.failures;
    p.alarmed = verdict.alarmed;
    deps.metrics.setIdentity(deps.metrics.probeFailures, identity, p.failures);
    if (verdict.alarm)
      deps.events.alarm(verdict.alarm.alarm, verdict.alarm.message, identity, leader?.record.node);
    if (verdict.outcome === 'no-target') deps.log.error({ identity }, verdict.reason);
    if (!verdict.failover) return;
    const { target, reason } = verdict.failover;
    void (async () => {
      const term = deps.writer.authority();
      await deps.supervisor.create(
        snap,
        identity,
        {
          kind: 'probe-failover',
          actor: `controller:${deps.name}`,
          reason,
          target,
          deadlineMs: deps.config.switchover.deadlineMs,
        },
        term,
      );
    })().catch((err: Error) =>
      deps.log.error({ identity, err: err.message }, 'could not start the probe-driven failover'),
    );
  }

  /** Can this controller trust an empty probe? Logged when the answer changes. */
  private blindness(agentsKnown: number, agentsAlive: number, probeEpoch: number) {
    const verdict = blindness({
      natsUp: this.natsUp,
      linkSteadyDuringProbe: probeEpoch === this.natsEpoch,
      agentsKnown,
      agentsAlive,
    });
    if (verdict.blind !== this.blind) {
      this.blind = verdict.blind;
      if (verdict.blind) {
        this.deps.log.warn(
          { natsUp: this.natsUp, agentsHeard: agentsAlive },
          `this controller cannot trust its probes (${verdict.reason}): probe-driven failover is suspended until it can; check its NATS link`,
        );
      } else {
        this.deps.log.info('this controller sees the agents again: probe-driven failover resumed');
      }
    }
    return verdict;
  }
}

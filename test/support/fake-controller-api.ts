// The controller core as the HTTP layer and the dashboard see it (pkg/api ControllerApi):
// records every call and answers with fixtures the test may change. For tests of the HTTP
// layer only; the controller itself is tested against real etcd and NATS.
import {
  type AclView,
  type ApiEvent,
  type ApplyResult,
  type ControllerApi,
  type IdentityListQuery,
  type IdentityView,
  type NodeView,
  type Workflow,
} from '../../pkg/api/schema.js';
import type { HistoryEntry } from '../../pkg/history/index.js';

export const NOW = '2026-01-01T00:00:00.000Z';

export function identityView(identity: string): IdentityView {
  return {
    identity,
    specRevision: '7',
    loggedIn: true,
    responders: [],
    probeFailures: 0,
    health: 'ok',
    standbys: [],
    fencedNodes: [],
  };
}

export function workflow(identity: string): Workflow {
  return {
    id: 'wf-1',
    identity,
    kind: 'switchover',
    state: 'requested',
    actor: 'otto',
    createdAt: NOW,
    deadline: NOW,
    escalation: [],
    steps: [],
    updatedAt: NOW,
    controller: 'ctl-a',
  };
}

export const ACL: AclView = {
  identity: 'msggateway',
  access: { open: false, contacts: [], authorized: [], blocked: [] },
  pending: [],
};

export const NODE: NodeView = { node: 'node-a', alive: true, identities: [] };

export interface RecordedCall {
  method: string;
  args: unknown[];
}

/** A snapshot record as the leader's agent would answer it. */
export const SNAPSHOT = {
  identity: 'msggateway',
  node: 'a',
  token: '42',
  takenAt: '2026-01-01T00:00:00.000Z',
  object: 'msggateway/42-1767225600000',
  bytes: 1024,
  files: 3,
  quiesced: true,
  manifestSha256: 'a'.repeat(64),
};

/** A clone of msggateway on node c, made when SNAPSHOT was the newest. */
export const CLONE = {
  identity: 'msggateway',
  node: 'c',
  createdAt: '2026-01-01T00:00:00.000Z',
  actor: 'operator-user',
  bundle: {
    specRevision: '7',
    credential: { source: 'none' as const },
    access: { open: false, contacts: [], authorized: [], blocked: [] },
    accessDigest: '0123456789abcdef',
    snapshot: SNAPSHOT,
  },
  ageMs: 1000,
  live: false,
  drifted: false,
  drift: [],
};

/** The controller core as the HTTP layer sees it: records calls, answers with fixtures. */
export class FakeApi implements ControllerApi {
  /** What listIdentities, getIdentity, listNodes and history answer. */
  identities: IdentityView[] = [identityView('msggateway')];
  nodes: NodeView[] = [NODE];
  historyEntries: HistoryEntry[] = [];
  calls: RecordedCall[] = [];
  /** Thrown by every core call (other than info) when set. */
  failWith: Error | undefined;
  ready = { ready: true, problems: [] as string[] };
  listeners = new Set<(event: ApiEvent) => void>();

  private async record<T>(method: string, args: unknown[], result: T): Promise<T> {
    this.calls.push({ method, args });
    if (this.failWith) throw this.failWith;
    return result;
  }
  callsTo(method: string): RecordedCall[] {
    return this.calls.filter((c) => c.method === method);
  }
  publish(event: ApiEvent): void {
    for (const listener of this.listeners) listener(event);
  }

  info() {
    return { name: 'ctl-a', active: true, version: '1.2.3' };
  }
  readiness() {
    return this.record('readiness', [], this.ready);
  }
  listIdentities(query: IdentityListQuery) {
    return this.record('listIdentities', [query], {
      identities: this.identities,
      total: this.identities.length,
    });
  }
  getIdentity(identity: string) {
    const known = this.identities.find((v) => v.identity === identity);
    return this.record('getIdentity', [identity], known ?? identityView(identity));
  }
  getSpec(identity: string) {
    const spec = {
      name: identity,
      service: { driver: 'process', command: ['svc'], env: { DB_PASSWORD: 'p4ss-w0rd', MODE: 'live' } },
    };
    return this.record('getSpec', [identity], { spec, revision: '7' });
  }
  setCredential(identity: string, body: unknown, actor: string) {
    return this.record('setCredential', [identity, body, actor], {
      identity,
      revision: '9',
      keyId: '0123456789abcdef',
    });
  }
  deleteCredential(identity: string, actor: string) {
    return this.record('deleteCredential', [identity, actor], undefined);
  }
  apply(body: { specs: unknown[]; dryRun: boolean }, actor: string) {
    const results: ApplyResult[] = body.specs.map((s) => ({
      identity: (s as { name: string }).name,
      action: 'created',
      revision: '8',
    }));
    return this.record('apply', [body, actor], results);
  }
  deleteIdentity(identity: string, actor: string) {
    return this.record('deleteIdentity', [identity, actor], undefined);
  }
  switchover(identity: string, body: unknown, actor: string) {
    return this.record('switchover', [identity, body, actor], workflow(identity));
  }
  failover(identity: string, body: unknown, actor: string) {
    return this.record('failover', [identity, body, actor], workflow(identity));
  }
  pause(identity: string, body: unknown, actor: string) {
    return this.record('pause', [identity, body, actor], identityView(identity));
  }
  resume(identity: string, body: unknown, actor: string) {
    return this.record('resume', [identity, body, actor], identityView(identity));
  }
  getWorkflow(identity: string) {
    return this.record('getWorkflow', [identity], workflow(identity));
  }
  cancelWorkflow(identity: string, actor: string) {
    return this.record('cancelWorkflow', [identity, actor], workflow(identity));
  }
  listWorkflows() {
    return this.record('listWorkflows', [], [workflow('msggateway')]);
  }
  listNodes() {
    return this.record('listNodes', [], this.nodes);
  }
  agentStatus(node: string) {
    return this.record('agentStatus', [node], {
      node,
      protocol: 2,
      startedAt: '2026-01-01T00:00:00.000Z',
      fenced: false,
      session: 'alive (lease 1)',
      identities: [],
    });
  }
  fenceNode(node: string, body: unknown, actor: string) {
    return this.record('fenceNode', [node, body, actor], { node, fenced: false, workflows: [] });
  }
  unfenceNode(node: string, body: unknown, actor: string) {
    return this.record('unfenceNode', [node, body, actor], NODE);
  }
  getAcl(identity: string) {
    return this.record('getAcl', [identity], ACL);
  }
  changeAcl(identity: string, change: unknown, actor: string) {
    return this.record('changeAcl', [identity, change, actor], ACL);
  }
  approve(identity: string, caller: string, body: unknown, actor: string) {
    return this.record('approve', [identity, caller, body, actor], ACL);
  }
  deny(identity: string, caller: string, body: unknown, actor: string) {
    return this.record('deny', [identity, caller, body, actor], ACL);
  }
  history(identity: string | undefined, query: unknown) {
    return this.record('history', [identity, query], { entries: this.historyEntries });
  }
  snapshot(identity: string, body: unknown, actor: string) {
    return this.record('snapshot', [identity, body, actor], SNAPSHOT);
  }
  listSnapshots(identity: string) {
    return this.record('listSnapshots', [identity], { identity, snapshots: [SNAPSHOT] });
  }
  clone(identity: string, body: { node: string }, actor: string) {
    return this.record('clone', [identity, body, actor], { ...CLONE, identity, node: body.node });
  }
  listClones(identity: string) {
    return this.record('listClones', [identity], { identity, clones: [CLONE] });
  }
  deleteClone(identity: string, node: string, actor: string) {
    return this.record('deleteClone', [identity, node, actor], undefined);
  }
  subscribe(listener: (event: ApiEvent) => void) {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  }
  metrics() {
    return this.record('metrics', [], { contentType: 'text/plain; version=0.0.4', body: 'up 1\n' });
  }
}

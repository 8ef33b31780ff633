// The event stream API clients subscribe to (GET /v1/events): identity, node and workflow
// views as they change, and alarms. Each round the loop offers every view; only those that
// differ from the last one sent go out, so a quiet cluster sends nothing.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { ApiEvent, IdentityView, NodeView, Workflow } from '../api/schema.js';
import type { Clock } from '../clock/index.js';
import type { ControllerMetrics } from './metrics.js';

export type AlarmKind = Extract<ApiEvent, { type: 'alarm' }>['alarm'];

/**
 * What makes a view "changed": everything but the times that move on every probe and
 * heartbeat (they would make every round an event).
 */
export function identityChangeKey(v: IdentityView): string {
  return JSON.stringify({
    ...v,
    lastProbe: undefined,
    standbys: v.standbys.map((s) => ({ ...s, lastHeartbeat: undefined })),
  });
}

export function nodeChangeKey(n: NodeView): string {
  return JSON.stringify({ ...n, lastHeartbeat: undefined });
}

export function workflowChangeKey(w: Workflow): string {
  return `${w.id}:${w.updatedAt}`;
}

export class EventStream {
  private readonly emitter = new EventEmitter();
  private readonly lastSent = new Map<string, string>();

  constructor(
    private readonly clock: Clock,
    private readonly log: Logger,
    private readonly metrics: ControllerMetrics,
  ) {
    this.emitter.setMaxListeners(0);
  }

  subscribe(listener: (event: ApiEvent) => void): () => void {
    this.emitter.on('event', listener);
    return () => this.emitter.off('event', listener);
  }

  now(): string {
    return new Date(this.clock.wallMs()).toISOString();
  }

  emit(event: ApiEvent): void {
    this.emitter.emit('event', event);
  }

  workflowChanged(workflow: Workflow): void {
    this.emit({ type: 'workflow', at: this.now(), workflow });
  }

  /** Raise an alarm: counted, logged as an error, and sent to subscribers. */
  alarm(alarm: AlarmKind, message: string, identity?: string, node?: string): void {
    this.metrics.alarms.inc({ alarm });
    this.log.error({ alarm, identity, node }, message);
    this.emit({
      type: 'alarm',
      at: this.now(),
      alarm,
      ...(identity ? { identity } : {}),
      ...(node ? { node } : {}),
      message,
    });
  }

  /** Send the views that changed since they were last sent. */
  publish(identities: IdentityView[], nodes: NodeView[], workflows: Workflow[]): void {
    const at = this.now();
    for (const v of identities) {
      if (this.changed(`identity:${v.identity}`, identityChangeKey(v)))
        this.emit({ type: 'identity', at, identity: v });
    }
    for (const n of nodes) {
      if (this.changed(`node:${n.node}`, nodeChangeKey(n))) this.emit({ type: 'node', at, node: n });
    }
    for (const w of workflows) {
      if (this.changed(`workflow:${w.identity}`, workflowChangeKey(w)))
        this.emit({ type: 'workflow', at, workflow: w });
    }
  }

  private changed(subject: string, key: string): boolean {
    if (this.lastSent.get(subject) === key) return false;
    this.lastSent.set(subject, key);
    return true;
  }
}

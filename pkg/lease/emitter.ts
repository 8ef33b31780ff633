import { EventEmitter } from 'node:events';

/**
 * An EventEmitter whose events are typed, and which never throws for an 'error' event
 * nobody listens to: pkg/lease reports failures as typed events and rejected promises.
 */
export class TypedEmitter<Events extends Record<string, unknown>> {
  // One session carries a listener per identity it leads (hundreds are normal): no cap.
  private readonly inner = new EventEmitter({ captureRejections: false }).setMaxListeners(0);

  on<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): this {
    this.inner.on(event, listener);
    return this;
  }

  once<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): this {
    this.inner.once(event, listener);
    return this;
  }

  off<K extends keyof Events & string>(event: K, listener: (payload: Events[K]) => void): this {
    this.inner.off(event, listener);
    return this;
  }

  protected emit<K extends keyof Events & string>(event: K, payload: Events[K]): void {
    for (const listener of this.inner.listeners(event)) {
      try {
        (listener as (p: Events[K]) => void)(payload);
      } catch (err) {
        // A listener's bug must not break the lease machinery that called it; make it loud.
        process.emitWarning(`listener for '${event}' threw: ${String(err)}`, 'UnderstudyListenerError');
      }
    }
  }
}

// What a test that drives a Responder (pkg/identity/responder.ts) against a real NATS server
// gives it in the agent's place: the term, the spec and a service that stands in. Nothing is
// recorded, nothing is logged.
import { pino } from 'pino';
import type { IdentityDriver } from '../../pkg/identity/driver.js';
import type { ResponderContext } from '../../pkg/identity/responder.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

export function responderContext(
  spec: IdentitySpec,
  term: { token: bigint; driver: IdentityDriver; node?: string },
): ResponderContext {
  return {
    identity: spec.name,
    node: term.node ?? 'a',
    token: term.token,
    mayAct: () => true,
    spec: () => spec,
    driver: term.driver,
    status: () => ({}) as never,
    onPending: () => undefined,
    onRequest: () => undefined,
    logger: pino({ level: 'silent' }),
  };
}

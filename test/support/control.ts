// A stand-in for the active controller, for tests that send control requests to real agents
// without running a controller: it wins the controllers' election in etcd, publishes its key in
// a member record on the election's session lease (as a controller does), and signs requests
// for the agents' current instances. Agents obey it exactly as they obey a controller.
import type { Etcd3 } from 'etcd3';
import { headers, type NatsConnection } from 'nats';
import pino from 'pino';
import type { ControlReply } from '../../pkg/control/protocol.js';
import { PROTOCOL_VERSION } from '../../pkg/control/protocol.js';
import { signControl } from '../../pkg/control/signing.js';
import { AgentLink } from '../../pkg/controller/agents.js';
import { ControllerElection } from '../../pkg/controller/election.js';
import { ControllerKeys } from '../../pkg/controller/store.js';
import { generateCallerKey, userSigner, type UserSigner } from '../../pkg/keys/index.js';
import { subjects } from '../../pkg/identity/wire.js';
import { waitFor } from './wait.js';

const quiet = pino({ level: 'silent' });

/** Signs control requests with `signer` for the agents' current instances (from heartbeats). */
export class ControlSender {
  private readonly link: AgentLink;

  constructor(
    private readonly nc: NatsConnection,
    readonly signer: UserSigner,
  ) {
    this.link = new AgentLink(nc, quiet, signer);
    this.link.start();
  }

  /** The instance `node` announced in its heartbeats, waited for. */
  instance(node: string): Promise<string> {
    return waitFor(() => this.link.instanceOf(node), {
      what: `a heartbeat from ${node} naming its instance`,
      timeoutMs: 15_000,
    });
  }

  /** Send `request` as is, signed; `tamper` may rewrite the signed headers (negative tests). */
  async send(
    node: string,
    request: Record<string, unknown>,
    opts: { timeoutMs?: number; tamper?: (h: Record<string, string>) => Record<string, string> } = {},
  ): Promise<ControlReply> {
    const text = JSON.stringify(request);
    const signed = signControl(this.signer, { node, instance: await this.instance(node) }, text, Date.now());
    const h = headers();
    for (const [k, v] of Object.entries(opts.tamper ? opts.tamper(signed) : signed)) h.set(k, v);
    const msg = await this.nc.request(subjects.control(node), text, {
      timeout: opts.timeoutMs ?? 10_000,
      headers: h,
    });
    return JSON.parse(msg.string()) as ControlReply;
  }

  stop(): void {
    this.link.stop();
  }
}

export class TestAuthority {
  private constructor(
    private readonly election: ControllerElection,
    readonly sender: ControlSender,
    readonly term: string,
  ) {}

  static async start(etcd: Etcd3, nc: NatsConnection, name = 'test-authority'): Promise<TestAuthority> {
    const signer = userSigner(generateCallerKey().seed);
    const election = new ControllerElection(
      etcd,
      new ControllerKeys(),
      { name, startedAt: Date.now(), key: signer.publicKey },
      5,
      quiet,
    );
    election.start();
    const token = await waitFor(() => election.token, {
      what: `${name} to win the controllers' election`,
      timeoutMs: 30_000,
    });
    return new TestAuthority(election, new ControlSender(nc, signer), String(token));
  }

  /**
   * Send `body` to `node`, signed, as the active controller: the protocol version is added, and
   * the term to state-changing ops unless `body` gives its own.
   */
  send(
    node: string,
    body: Record<string, unknown>,
    opts: Parameters<ControlSender['send']>[2] = {},
  ): Promise<ControlReply> {
    const request = { v: PROTOCOL_VERSION, ...(body.op !== 'status' && { term: this.term }), ...body };
    return this.sender.send(node, request, opts);
  }

  async stop(): Promise<void> {
    this.sender.stop();
    await this.election.stop();
  }
}

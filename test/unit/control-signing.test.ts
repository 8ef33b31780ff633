// Control requests are obeyed only when signed, for this start of this agent, recently, once,
// by a controller etcd says may send them (issue 12, point 2).
import { expect } from 'chai';
import { readAuthority, trustedFor, type StoredKv } from '../../pkg/control/authority.js';
import {
  CONTROL_CLOCK_WINDOW_MS,
  ControlNonces,
  controlHeaders as CH,
  judgeControlSignature,
  signControl,
} from '../../pkg/control/signing.js';
import { controllerElectionKey } from '../../pkg/control/term.js';
import { ControllerKeys } from '../../pkg/controller/store.js';
import { generateCallerKey, userSigner } from '../../pkg/keys/index.js';

const T0 = 1_800_000_000_000;
const NODE = 'b';
const INSTANCE = 'inst-1';
const active = userSigner(generateCallerKey().seed);
const standby = userSigner(generateCallerKey().seed);
const mallory = userSigner(generateCallerKey().seed);
const BODY = JSON.stringify({
  v: 2,
  op: 'drain',
  identity: 'demo',
  actor: 'ops',
  holdMs: 20_000,
  term: '42',
});

function judge(
  headers: Record<string, string>,
  opts: {
    body?: string;
    now?: number;
    trusted?: string[];
    seen?: boolean;
    node?: string;
    instance?: string;
  } = {},
) {
  return judgeControlSignature({
    headers: (name) => headers[name],
    body: opts.body ?? BODY,
    node: opts.node ?? NODE,
    instance: opts.instance ?? INSTANCE,
    now: opts.now ?? T0,
    trusted: new Set(opts.trusted ?? [active.publicKey]),
    seen: () => opts.seen ?? false,
  });
}

const outcome = (v: ReturnType<typeof judge>) => (v.ok ? 'obey' : `refuse: ${v.error.code}`);
const good = () => signControl(active, { node: NODE, instance: INSTANCE }, BODY, T0);

describe('signed control requests (pkg/control/signing.ts)', () => {
  const cases: Array<{
    case: string;
    headers: () => Record<string, string>;
    opts?: Parameters<typeof judge>[1];
    expected: string;
  }> = [
    { case: 'signed by the trusted key, for this node and instance, now', headers: good, expected: 'obey' },
    {
      case: 'unsigned (a raw NATS request, as mallory sent)',
      headers: () => ({}),
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'signed by a key no controller registered',
      headers: () => signControl(mallory, { node: NODE, instance: INSTANCE }, BODY, T0),
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'signature copied onto another body (holdMs raised)',
      headers: good,
      opts: { body: BODY.replace('20000', '3600000') },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'signed for another node',
      headers: good,
      opts: { node: 'a' },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'signed for an earlier start of this agent',
      headers: good,
      opts: { instance: 'inst-0' },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'the same nonce again (a replay)',
      headers: good,
      opts: { seen: true },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'signed too long ago',
      headers: good,
      opts: { now: T0 + CONTROL_CLOCK_WINDOW_MS + 1 },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'signed in the future beyond the window',
      headers: good,
      opts: { now: T0 - CONTROL_CLOCK_WINDOW_MS - 1 },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'at the edge of the window',
      headers: good,
      opts: { now: T0 + CONTROL_CLOCK_WINDOW_MS },
      expected: 'obey',
    },
    {
      case: 'signature header damaged',
      headers: () => ({ ...good(), [CH.signature]: 'A'.repeat(86) }),
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'key header swapped for another trusted key',
      headers: () => ({ ...good(), [CH.key]: standby.publicKey }),
      opts: { trusted: [active.publicKey, standby.publicKey] },
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'time header rewritten to now',
      headers: () => ({ ...good(), [CH.time]: String(T0 + 1) }),
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'huge nonce',
      headers: () => ({ ...good(), [CH.nonce]: 'n'.repeat(10_000) }),
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'instance with a newline',
      headers: () => ({ ...good(), [CH.instance]: 'a\nb' }),
      expected: 'refuse: unauthenticated',
    },
    {
      case: 'nobody trusted (no controller registered)',
      headers: good,
      opts: { trusted: [] },
      expected: 'refuse: unauthenticated',
    },
  ];
  for (const c of cases) {
    it(`${c.case} → ${c.expected}`, () => {
      expect(outcome(judge(c.headers(), c.opts))).to.equal(c.expected);
    });
  }

  it('refusals say what to do, and name the signature field', () => {
    const v = judge({});
    expect(v.ok).to.equal(false);
    if (v.ok) return;
    expect(v.error.field).to.equal('signature');
    expect(v.error.message).to.match(/only a controller signs control requests \(use the controller's API/);
  });

  describe('nonces of obeyed requests', () => {
    it('are remembered for longer than a signed time stays acceptable', () => {
      const nonces = new ControlNonces();
      expect(nonces.remember('k', 'n1', T0, T0)).to.equal(true);
      expect(nonces.seen('k', 'n1')).to.equal(true);
      // Still remembered at the last moment the same signature would pass the clock check.
      nonces.remember('k', 'n2', T0 + CONTROL_CLOCK_WINDOW_MS, T0 + CONTROL_CLOCK_WINDOW_MS);
      expect(nonces.seen('k', 'n1')).to.equal(true);
      // Forgotten once it could no longer pass.
      nonces.remember('k', 'n3', T0 + 3 * CONTROL_CLOCK_WINDOW_MS + 1, T0 + 3 * CONTROL_CLOCK_WINDOW_MS + 1);
      expect(nonces.seen('k', 'n1')).to.equal(false);
      expect(nonces.size).to.equal(1);
    });

    it('refuse to grow past their bound (the request is then refused, not obeyed)', () => {
      const nonces = new ControlNonces();
      for (let i = 0; i < ControlNonces.MAX_REMEMBERED; i++) nonces.remember('k', `n${i}`, T0, T0);
      expect(nonces.remember('k', 'one-more', T0, T0)).to.equal(false);
    });
  });
});

describe("the controllers' authority as etcd shows it (pkg/control/authority.ts)", () => {
  const keys = new ControllerKeys();
  const leader = (node: string, leaseId: string): StoredKv => ({
    key: controllerElectionKey(),
    value: JSON.stringify({ node, leaseId, ttlMs: 5000, mustBeOutByMs: 4000, since: T0 }),
    modRevision: '42',
    lease: leaseId,
  });
  const member = (name: string, key: string, lease: string): StoredKv => ({
    key: keys.controllerMember(name),
    value: JSON.stringify({ name, startedAt: T0, key }),
    modRevision: '7',
    lease,
  });

  it('the active controller is the election holder whose member record is on the same session lease', () => {
    const a = readAuthority([
      leader('ctl-1', '100'),
      member('ctl-1', active.publicKey, '100'),
      member('ctl-2', standby.publicKey, '200'),
    ]);
    expect(a.term).to.equal(42n);
    expect(a.activeKey).to.equal(active.publicKey);
    expect([...a.liveKeys]).to.have.members([active.publicKey, standby.publicKey]);
  });

  it('a member record on another lease than the election key is not the active key (an old session)', () => {
    const a = readAuthority([leader('ctl-1', '100'), member('ctl-1', active.publicKey, '99')]);
    expect(a.activeKey).to.equal(undefined);
  });

  it('no election key: no term, no active key', () => {
    const a = readAuthority([member('ctl-1', active.publicKey, '100')]);
    expect(a.term).to.equal(undefined);
    expect(a.activeKey).to.equal(undefined);
  });

  it('member records whose key is not an nkey, or whose name is not their key path, are ignored', () => {
    const forged = {
      ...member('ctl-2', standby.publicKey, '200'),
      value: JSON.stringify({ name: 'ctl-1', key: standby.publicKey }),
    };
    const a = readAuthority([leader('ctl-1', '100'), member('ctl-1', 'Ubogus', '100'), forged]);
    expect(a.activeKey).to.equal(undefined);
    expect(a.liveKeys.size).to.equal(0);
  });

  it('state-changing requests trust only the active key; status any live one; pins narrow both', () => {
    const a = readAuthority([
      leader('ctl-1', '100'),
      member('ctl-1', active.publicKey, '100'),
      member('ctl-2', standby.publicKey, '200'),
    ]);
    expect([...trustedFor(true, a, [])]).to.deep.equal([active.publicKey]);
    expect([...trustedFor(false, a, [])]).to.have.members([active.publicKey, standby.publicKey]);
    expect([...trustedFor(true, a, [standby.publicKey])]).to.deep.equal([]);
    expect([...trustedFor(false, a, [standby.publicKey])]).to.deep.equal([standby.publicKey]);
  });
});

// The replay rules (replay.ts): what the memory or the shared store already holds decides; a
// durable redelivery of the same stored message passes, anything else with a seen nonce is a
// replay; a store that cannot answer refuses; only callers on a list are checked at all.
import { expect } from 'chai';
import { decide, needsReplayCheck, type AuthResult } from '../../pkg/identity/access.js';
import { CLOCK_WINDOW_MS } from '../../pkg/identity/authenticator.js';
import { ReplayGuard, replayVerdict, type Arrival, type ReplayStore } from '../../pkg/identity/replay.js';
import { AccessLists } from '../../pkg/spec/schema.js';
import { claims, newCaller, T0, verified, type TestCaller } from '../support/callers.js';

/** A store shared by several guards (leaders), as the KV bucket is. */
class MapStore implements ReplayStore {
  readonly entries = new Map<string, string>();
  failing = false;
  async record(key: string, value: string) {
    if (this.failing) throw new Error('JetStream not available');
    const existing = this.entries.get(key);
    if (existing !== undefined) return { existing };
    this.entries.set(key, value);
    return 'recorded' as const;
  }
}

const req = (nonce: string, signedAt = T0) => ({ identity: 'bot', key: 'UKEY', nonce, signedAt });
const core = (now = T0): Arrival => ({ mode: 'core', now });

describe('replay rules (replay.ts)', function () {
  // Table: what is on record → how the request arrives → admitted?
  const rows: Array<[string, string | undefined, Arrival, boolean]> = [
    ['nothing on record, core', undefined, core(), true],
    ['nothing on record, durable', undefined, { mode: 'durable', seq: 4 }, true],
    ['a core request seen, core again', 'core', core(), false],
    ['a core request seen, the nonce again as durable', 'core', { mode: 'durable', seq: 4 }, false],
    ['a durable message, redelivered (same stream sequence)', 'durable 4', { mode: 'durable', seq: 4 }, true],
    ['a durable message, stored again (another sequence)', 'durable 4', { mode: 'durable', seq: 9 }, false],
    ['a durable message, the nonce again as core', 'durable 4', core(), false],
  ];
  for (const [what, existing, arrival, ok] of rows) {
    it(`${what}: ${ok ? 'admitted' : 'refused as a replay'}`, function () {
      const v = replayVerdict(existing, arrival, 'nonce-0001');
      expect(v.ok).to.equal(ok);
      if (!v.ok) expect(v.reason).to.match(/replayed request.*sign every request afresh/);
    });
  }

  it('a nonce used with one leader is refused by the next (shared store)', async function () {
    const store = new MapStore();
    const first = new ReplayGuard(store);
    const next = new ReplayGuard(store);
    expect(await first.admit(req('nonce-0001'), core())).to.deep.equal({ ok: true });
    expect(await next.admit(req('nonce-0001'), core(T0 + 1_000))).to.deep.include({
      ok: false,
      code: 'unauthenticated',
    });
    // The same nonce from another key, or for another identity, is another request.
    expect((await next.admit({ ...req('nonce-0001'), key: 'UOTHER' }, core())).ok).to.equal(true);
    expect((await next.admit({ ...req('nonce-0001'), identity: 'other' }, core())).ok).to.equal(true);
  });

  it('refuses (unavailable) when the shared store cannot be asked, and records nothing', async function () {
    const store = new MapStore();
    store.failing = true;
    const guard = new ReplayGuard(store);
    const r = await guard.admit(req('nonce-0002'), core());
    expect(r).to.deep.include({ ok: false, code: 'unavailable' });
    expect((r as { reason: string }).reason).to.match(/shared replay cache.*nothing was done, retry/);
    store.failing = false;
    expect((await guard.admit(req('nonce-0002'), core())).ok).to.equal(true);
  });

  it('answers a replay from memory without asking the store', async function () {
    const store = new MapStore();
    const guard = new ReplayGuard(store);
    await guard.admit(req('nonce-0003'), core());
    store.failing = true;
    expect(await guard.admit(req('nonce-0003'), core())).to.deep.include({ code: 'unauthenticated' });
  });

  it('bounds memory under a flood, and refuses what it can no longer rule out', async function () {
    const guard = new ReplayGuard(undefined, { maxEntries: 50 });
    await guard.admit(req('flood-000'), core());
    for (let i = 1; i <= 200; i++) await guard.admit(req(`flood-${i}`, T0 + i), core(T0 + i));
    expect(guard.size).to.be.at.most(50);
    expect(await guard.admit(req('flood-000'), core(T0 + 300))).to.deep.include({ ok: false });
    expect((await guard.admit(req('fresh-0001', T0 + 500), core(T0 + 500))).ok).to.equal(true);
  });

  it('prunes nonces that fell out of the clock window, and a clock stepping back revives none', async function () {
    const guard = new ReplayGuard(undefined);
    for (let i = 0; i < 20; i++) await guard.admit(req(`early-${i}00`, T0 + i), core(T0 + i));
    expect(guard.size).to.equal(20);
    const later = T0 + 2 * CLOCK_WINDOW_MS;
    await guard.admit(req('later-0001', later), core(later));
    expect(guard.size).to.equal(1);
    expect(await guard.admit(req('early-000', T0), core(T0))).to.deep.include({ ok: false });
  });
});

describe('who goes through the replay cache (access.ts needsReplayCheck)', function () {
  const alice = newCaller('alice');
  const bob = newCaller('bob');
  const stranger = newCaller('dave');
  const lists = AccessLists.parse({
    contacts: [{ name: 'alice', nkey: alice.publicKey }],
    authorized: [{ name: 'bob', nkey: bob.publicKey }],
  });
  const open = { ...lists, open: true };
  // Table: lists, caller, verb → checked?
  const rows: Array<[string, typeof lists, TestCaller | undefined, string, boolean]> = [
    ['a contact asking STATUS', lists, alice, 'STATUS', true],
    ['an authorized caller using a service command', lists, bob, 'RATE', true],
    ['a contact sending PING (signed: its role counts)', lists, alice, 'PING', true],
    ['a stranger sending PING (open verb)', lists, stranger, 'PING', false],
    ['a stranger on an open identity', open, stranger, 'RATE', false],
    ['a stranger refused (pending)', lists, stranger, 'RATE', false],
    ['an unsigned caller', open, undefined, 'RATE', false],
  ];
  for (const [what, l, who, verb, checked] of rows) {
    it(`${what}: ${checked ? 'checked and recorded' : 'not recorded'}`, function () {
      const auth: AuthResult = who ? verified(who) : { kind: 'anonymous' };
      const decision = decide(l, who ? claims(who) : {}, auth, verb, 'bot');
      expect(needsReplayCheck(decision, auth)).to.equal(checked);
    });
  }
});

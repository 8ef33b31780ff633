// What a runner asks before each campaign (pkg/agent/spec-policy.ts): an allowed spec is not
// resolved on disk again for ALLOWED_REUSE_MS (the spawn checks again anyway); a refused one,
// a changed spec, or a verdict past that age is looked at again.
import { expect } from 'chai';
import { pino } from 'pino';
import { ALLOWED_REUSE_MS, SpecGate, type SpecPolicy } from '../../pkg/agent/spec-policy.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

const specOf = (name: string) => ({ name }) as unknown as IdentitySpec;

function gate(verdicts: Array<'ok' | 'refused'>) {
  let now = 0;
  let checks = 0;
  const policy: SpecPolicy = {
    check: async () => {
      checks++;
      const next = verdicts.length > 1 ? verdicts.shift()! : verdicts[0]!;
      return next === 'ok'
        ? { ok: true as const }
        : { ok: false as const, field: 'service.command' as const, reason: 'not on the allow-list' };
    },
    credential: async () => ({ ok: true as const }),
  };
  const g = new SpecGate(
    policy,
    pino({ level: 'silent' }),
    { identity: 'demo', node: 'a' },
    undefined,
    () => now,
  );
  return { g, checks: () => checks, advance: (ms: number) => (now += ms) };
}

describe('spec gate: what a runner asks before each campaign', function () {
  it('reuses an allowed verdict for the same spec within ALLOWED_REUSE_MS, and asks again after', async function () {
    const { g, checks, advance } = gate(['ok']);
    const spec = specOf('demo');
    expect(await g.refusal(spec)).to.equal(undefined);
    advance(ALLOWED_REUSE_MS - 1);
    expect(await g.refusal(spec)).to.equal(undefined);
    expect(checks()).to.equal(1);
    advance(1);
    await g.refusal(spec);
    expect(checks()).to.equal(2);
  });

  it('asks again for a changed spec, and every time while it is refused', async function () {
    const { g, checks } = gate(['ok', 'refused', 'refused', 'ok']);
    await g.refusal(specOf('demo'));
    expect(await g.refusal(specOf('demo'))).to.equal('not on the allow-list');
    expect(await g.refusal(specOf('demo'))).to.equal('not on the allow-list');
    const spec = specOf('demo');
    expect(await g.refusal(spec)).to.equal(undefined);
    expect(checks()).to.equal(4);
  });
});

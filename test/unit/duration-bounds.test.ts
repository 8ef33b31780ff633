// Every duration in an identity spec and in the agent and controller configs is bounded: by a
// sensible limit per field, and always by what a Node timer holds (setTimeout fires at once
// above 2^31 − 1 ms, so `probe.timeoutMs: 2147483648` used to end every probe at once and
// fence healthy leaders). A refusal names the field and the bound it broke.
import { expect } from 'chai';
import { stringify } from 'yaml';
import type { z } from 'zod';
import { AgentConfig, ConfigError, parseAgentConfig } from '../../pkg/config/agent.js';
import { ControllerConfig, parseControllerConfig } from '../../pkg/config/controller.js';
import { durationMs, durationSeconds, formatMs, IdentitySpec, TIMER_MAX_MS } from '../../pkg/spec/schema.js';
import { parseSpec, SpecError } from '../../pkg/spec/store.js';

/** Just past what setTimeout holds: the value from the bug report. */
const PAST_TIMER_MS = 2 ** 31;

type Doc = Record<string, unknown>;

/** `doc` with `value` at the dotted `path` (objects created on the way). */
function withValue(doc: Doc, path: string, value: unknown): Doc {
  const copy = structuredClone(doc);
  const keys = path.split('.');
  let node = copy;
  for (const key of keys.slice(0, -1)) node = (node[key] ??= {}) as Doc;
  node[keys.at(-1)!] = value;
  return copy;
}

const SPEC: Doc = { name: 'demo', service: { driver: 'process', command: ['sleep', '1000'] } };
const AGENT: Doc = {
  node: 'a',
  etcd: { endpoints: ['http://127.0.0.1:2379'] },
  nats: { servers: ['nats://127.0.0.1:4222'] },
  identities: { demo: null },
};
const CONTROLLER: Doc = {
  name: 'ctl-1',
  etcd: { endpoints: ['http://127.0.0.1:2379'] },
  nats: { servers: ['nats://127.0.0.1:4222'] },
  http: {},
  auth: { tokens: [{ name: 'alice', role: 'admin', token: '0123456789abcdef-alice' }] },
};

/** Where a duration lives and how a document with it is checked; undefined means accepted. */
interface Source {
  name: string;
  schema: z.ZodType;
  base: Doc;
  /** The refusal as `field: message`, or undefined when the document is accepted. */
  refusal(doc: Doc): string | undefined;
}

const spec: Source = {
  name: 'identity spec',
  schema: IdentitySpec,
  base: SPEC,
  refusal(doc) {
    try {
      parseSpec(doc);
      return undefined;
    } catch (err) {
      if (!(err instanceof SpecError)) throw err;
      // parseSpec names the field in its message too: `spec 'demo': probe.timeoutMs: …`.
      expect(err.message).to.include(`${err.field}: `);
      return `${err.field}: ${err.message.slice(err.message.indexOf(`${err.field}: `) + err.field.length + 2)}`;
    }
  },
};

function configSource(name: string, schema: z.ZodType, base: Doc, parse: (text: string) => unknown): Source {
  return {
    name,
    schema,
    base,
    refusal(doc) {
      try {
        parse(stringify(doc));
        return undefined;
      } catch (err) {
        if (!(err instanceof ConfigError)) throw err;
        return err.problems.map((p) => `${p.field}: ${p.message}`).join('\n');
      }
    },
  };
}
const agent = configSource('agent config', AgentConfig, AGENT, (t) => parseAgentConfig(t, 'agent.yaml'));
const controller = configSource('controller config', ControllerConfig, CONTROLLER, (t) =>
  parseControllerConfig(t, 'controller.yaml'),
);

/**
 * Each duration field with its bounds. `accepted` are values that must pass (with the rest of
 * the document at defaults); refusals are checked at min − 1, max + 1 and past the timer.
 */
interface Row {
  source: Source;
  field: string;
  unit: 'ms' | 's';
  min: number;
  max: number;
  /** Values within bounds that the whole document accepts (cross-field checks permitting). */
  accepted: number[];
  /** The document the value is put in (the source's base unless a cross-field check needs more). */
  base: Doc;
}

const row = (
  source: Source,
  field: string,
  min: number,
  max: number,
  accepted = [min, max],
  base = source.base,
): Row => ({ source, field, unit: field.endsWith('Seconds') ? 's' : 'ms', min, max, accepted, base });

/** Lease timing set in full, so the self-fence inequality holds whatever the defaults become. */
const leaseAt = (lease: Doc): Doc => ({ ...AGENT, lease: { ttlSeconds: 30, ...lease } });

/** A spec with a state directory, which the state section cannot be without. */
const withState: Doc = { ...spec.base, state: { dir: '/var/lib/understudy/x' } };

const TABLE: Row[] = [
  row(spec, 'service.restart.backoffMs', 10, 60_000),
  row(spec, 'service.restart.maxBackoffMs', 10, 300_000),
  row(spec, 'service.restart.resetAfterMs', 1_000, 3_600_000),
  row(spec, 'service.stopTimeoutMs', 50, 60_000),
  row(spec, 'service.startTimeoutMs', 100, 120_000),
  row(spec, 'inbox.maxAgeMs', 1_000, 7 * 86_400_000),
  row(spec, 'inbox.ackWaitMs', 500, 600_000),
  row(spec, 'probe.intervalMs', 100, 600_000),
  row(spec, 'probe.timeoutMs', 50, 60_000),
  row(spec, 'requestTimeoutMs', 50, 60_000),
  row(spec, 'state.snapshotEveryMs', 10_000, 86_400_000, undefined, withState),
  row(spec, 'state.refreshEveryMs', 5_000, 86_400_000, undefined, withState),
  row(spec, 'state.maxLagMs', 5_000, 7 * 86_400_000, undefined, withState),
  row(agent, 'lease.ttlSeconds', 2, 3_600),
  // D and the logout budget must also fit the TTL (leaseTiming): accepted values respect that.
  row(agent, 'lease.selfFenceMs', 1, 3_600_000, [12_000, 15_000], leaseAt({ logoutBudgetMs: 5_000 })),
  row(agent, 'lease.logoutBudgetMs', 1, 3_600_000, [1_000, 5_000], leaseAt({ selfFenceMs: 15_000 })),
  row(agent, 'heartbeatIntervalMs', 200, 60_000),
  row(controller, 'lease.ttlSeconds', 2, 60),
  row(controller, 'probes.heartbeatTimeoutMs', 500, 600_000),
  row(controller, 'switchover.deadlineMs', 2_000, 3_600_000),
  row(controller, 'switchover.drainTimeoutMs', 500, 600_000),
  row(controller, 'switchover.loginTimeoutMs', 500, 600_000),
  row(controller, 'fencing.timeoutMs', 100, 600_000),
];

const bound = (r: Row, n: number) => (r.unit === 's' ? `${n} s` : formatMs(n));

describe('duration bounds in specs and configs', function () {
  describe('each field accepts its range and refuses outside it, naming the field and the bound', function () {
    for (const r of TABLE) {
      it(`${r.source.name}: ${r.field} in [${r.min}, ${r.max}] ${r.unit}`, function () {
        for (const v of r.accepted) {
          expect(r.source.refusal(withValue(r.base, r.field, v)), `${r.field} = ${v}`).to.equal(undefined);
        }
        const refused = (v: unknown) => r.source.refusal(withValue(r.base, r.field, v));
        expect(refused(r.max + 1)).to.equal(`${r.field}: must be at most ${bound(r, r.max)}; lower it`);
        if (r.min > 0) {
          expect(refused(r.min - 1)).to.equal(`${r.field}: must be at least ${bound(r, r.min)}; raise it`);
        }
        const past = r.unit === 's' ? Math.ceil(PAST_TIMER_MS / 1000) : PAST_TIMER_MS;
        expect(refused(past)).to.equal(`${r.field}: must be at most ${bound(r, r.max)}; lower it`);
        expect(refused(r.min + 0.5)).to.match(new RegExp(`^${r.field}: must be a whole number of`));
        expect(refused('soon')).to.match(new RegExp(`^${r.field}: must be a number of`));
      });
    }
  });

  it('refuses the reported probe.timeoutMs of 2147483648 with the field and the bound', function () {
    expect(spec.refusal(withValue(SPEC, 'probe.timeoutMs', 2_147_483_648))).to.equal(
      'probe.timeoutMs: must be at most 60000 ms (1 min); lower it',
    );
  });

  it('names the environment variable when an override breaks a bound', function () {
    try {
      parseAgentConfig(stringify(AGENT), 'agent.yaml', { UNDERSTUDY_LEASE_TTL_SECONDS: '86400' });
      expect.fail('expected the config to be refused');
    } catch (err) {
      expect(err).to.be.instanceOf(ConfigError);
      expect((err as ConfigError).problems).to.deep.equal([
        {
          field: 'lease.ttlSeconds',
          message: 'must be at most 3600 s; lower it',
          source: 'from UNDERSTUDY_LEASE_TTL_SECONDS',
        },
      ]);
    }
  });

  describe('no duration is left unbounded', function () {
    for (const source of [spec, agent, controller]) {
      it(`${source.name}: every *Ms and *Seconds number has a maximum a timer holds, and a row above`, function () {
        const found = durationFields(source.schema);
        expect(found.length, 'the walk found the durations').to.be.greaterThan(0);
        for (const { path, max } of found) {
          const limit = path.endsWith('Seconds') ? Math.floor(TIMER_MAX_MS / 1000) : TIMER_MAX_MS;
          expect(max, `${source.name}: ${path} has no maximum a timer holds`).to.be.at.most(limit);
        }
        // A new duration field must get a row in TABLE, so its bounds are tested too.
        expect(found.map((f) => f.path).sort()).to.deep.equal(
          TABLE.filter((r) => r.source === source)
            .map((r) => r.field)
            .sort(),
        );
      });
    }
  });

  describe('the helpers', function () {
    it('refuse a bound a timer cannot hold (a programming error, caught at import)', function () {
      expect(() => durationMs(0, TIMER_MAX_MS)).not.to.throw();
      expect(() => durationMs(0, TIMER_MAX_MS + 1)).to.throw(/max ≤ 2147483647/);
      expect(() => durationMs(10, 5)).to.throw(/min ≤ max/);
      expect(() => durationSeconds(0, Math.floor(TIMER_MAX_MS / 1000))).not.to.throw();
      expect(() => durationSeconds(0, Math.floor(TIMER_MAX_MS / 1000) + 1)).to.throw(/max ≤ 2147483$/);
    });

    it('format a bound as the number to type and a size to recognise', function () {
      const cases: Array<[number, string]> = [
        [50, '50 ms'],
        [1_000, '1000 ms (1 s)'],
        [90_000, '90000 ms (1.5 min)'],
        [3_600_000, '3600000 ms (1 h)'],
        [7 * 86_400_000, '604800000 ms (7 days)'],
      ];
      for (const [ms, text] of cases) expect(formatMs(ms)).to.equal(text);
    });
  });
});

// ---- walking a zod 4 schema ---------------------------------------------------------------

interface DurationField {
  path: string;
  /** The number schema's maximum (Infinity when it has none). */
  max: number;
}

/** Every number field named *Ms or *Seconds in `schema`, with its maximum. */
function durationFields(schema: z.ZodType, path: string[] = []): DurationField[] {
  const def = (schema as unknown as { _zod: { def: Record<string, unknown> & { type: string } } })._zod.def;
  const inner = (key: string) => durationFields(def[key] as z.ZodType, path);
  switch (def.type) {
    case 'object':
      return Object.entries(def.shape as Record<string, z.ZodType>).flatMap(([key, value]) =>
        durationFields(value, [...path, key]),
      );
    case 'optional':
    case 'nullable':
    case 'default':
    case 'prefault':
    case 'readonly':
    case 'catch':
    case 'nonoptional':
      return inner('innerType');
    case 'pipe':
      return [...inner('in'), ...inner('out')];
    case 'union':
      // Options of a discriminated union share the path (one is chosen by the discriminator).
      return dedupe((def.options as z.ZodType[]).flatMap((o) => durationFields(o, path)));
    case 'record':
      return durationFields(def.valueType as z.ZodType, [...path, '*']);
    case 'array':
      return durationFields(def.element as z.ZodType, [...path, '*']);
    case 'number': {
      const name = path.at(-1) ?? '';
      if (!/(Ms|Seconds)$/.test(name)) return [];
      const max = (schema as unknown as { maxValue: number | null }).maxValue;
      return [{ path: path.join('.'), max: max ?? Number.POSITIVE_INFINITY }];
    }
    default:
      return [];
  }
}

function dedupe(fields: DurationField[]): DurationField[] {
  const byPath = new Map<string, DurationField>();
  for (const f of fields) {
    const seen = byPath.get(f.path);
    if (!seen || f.max > seen.max) byPath.set(f.path, f);
  }
  return [...byPath.values()];
}

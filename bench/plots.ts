// The failover benchmark's plots, as SVG files rendered here with Vega-Lite (no browser): the
// failover-time distribution per fault and T against the target, the false-failover rate per
// T, and the planned handovers' no-responder windows.
import { writeFile } from 'node:fs/promises';
import * as vega from 'vega';
import { compile, type TopLevelSpec } from 'vega-lite';
import { moveRate, type TrialResult } from './measure.js';

async function svg(spec: TopLevelSpec): Promise<string> {
  const view = new vega.View(vega.parse(compile(spec).spec), { renderer: 'none' });
  try {
    return await view.toSVG();
  } finally {
    view.finalize();
  }
}

/** The fault, and the service's mode where the trial has one: "kill (warm)". */
const label = (r: TrialResult) => (r.trial.service ? `${r.trial.fault} (${r.trial.service})` : r.trial.fault);

const CONFIG = { font: 'sans-serif', view: { stroke: null }, axis: { grid: true, gridOpacity: 0.4 } };

/** A distribution per row: a min–max box, and every sample as a dot on it. */
function boxesWithDots(y: string, x: string, title: string, scale: Record<string, unknown> = {}) {
  return [
    {
      mark: { type: 'boxplot', extent: 'min-max', opacity: 0.5 },
      encoding: {
        y: { field: y, type: 'nominal', title: null },
        x: { field: x, type: 'quantitative', title, scale },
      },
    },
    {
      mark: { type: 'circle', size: 18, opacity: 0.8, color: '#333' },
      encoding: { y: { field: y, type: 'nominal' }, x: { field: x, type: 'quantitative' } },
    },
  ];
}

/** Failover times per fault and T: every trial a dot, a box per group, the target as a tick. */
export function failoverSpec(results: readonly TrialResult[]): TopLevelSpec | undefined {
  const values = results
    .filter((r) => r.trial.kind === 'failover' && r.handover.answerMs !== undefined)
    .map((r) => ({ fault: label(r), ttl: r.trial.ttlS, seconds: r.handover.answerMs! / 1000 }));
  if (values.length === 0) return undefined;
  const targets = [
    ...new Set(results.filter((r) => r.trial.kind === 'failover').map((r) => r.trial.ttlS)),
  ].map((t) => ({
    ttl: t,
    target: t + 0.3,
  }));
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'Unplanned failover: fault → successor answers PING',
      subtitle: 'red: target p99 ≤ T + 300 ms',
    },
    config: CONFIG,
    facet: {
      row: {
        field: 'ttl',
        type: 'ordinal',
        sort: 'ascending',
        title: null,
        header: { labelExpr: "'T = ' + datum.value + ' s'", labelAngle: 0, labelAlign: 'left' },
      },
    },
    data: { values: [...values, ...targets] },
    // Each T on its own axis: a shared one would squeeze every distribution into a sliver.
    resolve: { scale: { x: 'independent' } },
    spec: {
      width: 520,
      height: 90,
      layer: [
        ...boxesWithDots('fault', 'seconds', 'seconds', { zero: false }),
        {
          mark: { type: 'rule', color: '#c00', strokeDash: [4, 3] },
          encoding: { x: { field: 'target', type: 'quantitative' } },
        },
      ],
    },
  } as TopLevelSpec;
}

/** Faults with a move per 100, per T and fault, with the 95 % upper bound as an error bar. */
export function falseSpec(results: readonly TrialResult[]): TopLevelSpec | undefined {
  const groups = new Map<string, TrialResult[]>();
  for (const r of results.filter((x) => x.trial.kind === 'false')) {
    const k = `${r.trial.ttlS}|${r.trial.fault}`;
    groups.set(k, [...(groups.get(k) ?? []), r]);
  }
  if (groups.size === 0) return undefined;
  const values = [...groups.values()].map((rs) => {
    const rate = moveRate(rs.filter((r) => r.moved.length > 0).length, rs.length);
    return {
      ttl: rs[0]!.trial.ttlS,
      fault: rs[0]!.trial.fault,
      per100: rate.per100,
      upper: rate.upper95,
      n: rs.length,
    };
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'False failovers: moves per 100 faults',
      subtitle: 'bar: measured; whisker: 95 % upper bound',
    },
    config: CONFIG,
    data: { values },
    width: 520,
    height: 220,
    encoding: {
      x: {
        field: 'ttl',
        type: 'ordinal',
        sort: 'ascending',
        title: 'lease TTL (T)',
        axis: { labelAngle: 0, labelExpr: "datum.value + ' s'" },
      },
      xOffset: { field: 'fault' },
      color: { field: 'fault', type: 'nominal' },
    },
    layer: [
      {
        mark: 'bar',
        encoding: {
          y: {
            field: 'per100',
            type: 'quantitative',
            title: 'faults with a move, per 100',
            scale: { domain: [0, 100] },
          },
        },
      },
      {
        mark: { type: 'errorbar', ticks: true },
        encoding: {
          y: { field: 'per100', type: 'quantitative', title: 'faults with a move, per 100' },
          y2: { field: 'upper' },
          color: { value: '#333' },
        },
      },
    ],
  } as TopLevelSpec;
}

/** The planned handovers' windows with no responder, per kind and T, against their targets. */
export function gapSpec(results: readonly TrialResult[]): TopLevelSpec | undefined {
  const values = results
    .filter((r) => (r.trial.kind === 'switchover' || r.trial.kind === 'leave') && r.gapMs !== undefined)
    .map((r) => ({ kind: `${label(r)}, T = ${r.trial.ttlS} s`, ms: r.gapMs! }));
  if (values.length === 0) return undefined;
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'Planned handover: window with no responder (ms)',
      subtitle: 'targets p99: switchover ≤ 100, leave ≤ 500',
    },
    config: CONFIG,
    data: { values },
    width: 520,
    height: 140,
    layer: boxesWithDots('kind', 'ms', 'ms'),
  } as TopLevelSpec;
}

/** Render every plot there is data for, next to `base` (a path without extension). */
export async function renderPlots(results: readonly TrialResult[], base: string): Promise<string[]> {
  const written: string[] = [];
  for (const [name, spec] of [
    ['failover', failoverSpec(results)],
    ['false-failovers', falseSpec(results)],
    ['gaps', gapSpec(results)],
  ] as const) {
    if (!spec) continue;
    const file = `${base}-${name}.svg`;
    await writeFile(file, await svg(spec));
    written.push(file);
  }
  return written;
}

/** The figures of one scale run (bench/scale.ts) that are plotted next to the failover ones. */
export interface ScaleFigures {
  identities: number;
  agents: number;
  ttlS: number;
  /** The SIGKILLed agent's identities: first, median and last logged in elsewhere, ms after the kill. */
  failover: { firstMs: number; medianMs: number; ms: number; moved: number };
}

/** Failover of a killed agent's identities at each scale: the first, the median and the last. */
export function scaleSpec(runs: readonly ScaleFigures[]): TopLevelSpec | undefined {
  if (runs.length === 0) return undefined;
  const values = runs.flatMap((r) => {
    const shape = `${r.identities.toLocaleString('en-US')} identities on ${r.agents} agents (T = ${r.ttlS} s; ${r.failover.moved} moved)`;
    return [
      { shape, which: 'first', seconds: r.failover.firstMs / 1000 },
      { shape, which: 'median', seconds: r.failover.medianMs / 1000 },
      { shape, which: 'last', seconds: r.failover.ms / 1000 },
    ];
  });
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v5.json',
    title: {
      text: 'At scale: a killed agent’s identities logged in elsewhere',
      subtitle: 'from the latest scale benchmark of each size (bench/scale.ts)',
    },
    config: CONFIG,
    data: { values },
    width: 520,
    height: 30 * runs.length + 20,
    encoding: {
      y: { field: 'shape', type: 'nominal', title: null, sort: null, axis: { labelLimit: 400 } },
      x: { field: 'seconds', type: 'quantitative', title: 'seconds after the kill' },
    },
    layer: [
      {
        mark: { type: 'rule', color: '#999' },
        encoding: { x: { aggregate: 'min', field: 'seconds' }, x2: { aggregate: 'max', field: 'seconds' } },
      },
      {
        mark: { type: 'point', filled: true, size: 60 },
        encoding: {
          shape: { field: 'which', type: 'nominal', title: null },
          color: { field: 'which', type: 'nominal', title: null },
        },
      },
    ],
  } as TopLevelSpec;
}

export async function renderScalePlot(
  runs: readonly ScaleFigures[],
  file: string,
): Promise<string | undefined> {
  const spec = scaleSpec(runs);
  if (!spec) return undefined;
  await writeFile(file, await svg(spec));
  return file;
}

// The Grafana dashboard in deploy/grafana/ queries only metrics the agent and the controller
// export, with labels they have: a renamed metric or label fails here, not on an operator's
// empty panel at 3 a.m.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import type { Registry } from 'prom-client';
import { AgentMetrics } from '../../pkg/agent/metrics.js';
import { ControllerMetrics } from '../../pkg/controller/metrics.js';

const DASHBOARD = 'deploy/grafana/understudy.json';

interface Panel {
  type: string;
  title: string;
  datasource?: { uid: string };
  targets?: Array<{ expr: string }>;
}

/** Labels every series gets from Prometheus itself, whatever the exporter says. */
const TARGET_LABELS = new Set(['instance', 'job']);

/** Metric name → its label names, from both processes' registries. */
function exported(): Map<string, Set<string>> {
  const out = new Map<string, Set<string>>();
  const add = (registry: Registry) => {
    for (const metric of registry.getMetricsAsArray()) {
      const { name, labelNames = [] } = metric as unknown as { name: string; labelNames?: string[] };
      const labels = out.get(name) ?? new Set<string>();
      for (const l of labelNames) labels.add(l);
      out.set(name, labels);
    }
  };
  const agent = new AgentMetrics();
  agent.watchEtcdCalls(() => undefined); // registered once the agent has its etcd client
  add(agent.registry);
  agent.close();
  add(new ControllerMetrics().registry);
  return out;
}

/** Every `metric{label="…", …}` in a PromQL expression, with the label names it selects on. */
function selectors(expr: string): Array<{ metric: string; labels: string[] }> {
  const found: Array<{ metric: string; labels: string[] }> = [];
  for (const m of expr.matchAll(/\b(understudy_[a-z_]+)(\{([^}]*)\})?/g)) {
    const labels = [...(m[3] ?? '').matchAll(/([a-z_]+)\s*(=~|!~|!=|=)/g)].map((l) => l[1]!);
    found.push({ metric: m[1]!, labels });
  }
  return found;
}

/** A histogram's series names (name_bucket, _sum, _count) lead back to the histogram. */
function baseName(metric: string, metrics: Map<string, Set<string>>): { name: string; extra: string[] } {
  for (const suffix of ['_bucket', '_sum', '_count']) {
    const base = metric.slice(0, -suffix.length);
    if (metric.endsWith(suffix) && metrics.has(base))
      return { name: base, extra: suffix === '_bucket' ? ['le'] : [] };
  }
  return { name: metric, extra: [] };
}

/** What is wrong with the dashboard's queries against these metrics (empty: nothing). */
function problems(panels: Panel[], metrics: Map<string, Set<string>>): string[] {
  const out: string[] = [];
  for (const panel of panels) {
    for (const { expr } of panel.targets ?? []) {
      const found = selectors(expr);
      if (found.length === 0) out.push(`${panel.title}: '${expr}' queries no understudy metric`);
      for (const { metric, labels } of found) {
        const { name, extra } = baseName(metric, metrics);
        const known = metrics.get(name);
        if (!known) {
          out.push(`${panel.title}: ${metric} is exported by neither the agent nor the controller`);
          continue;
        }
        for (const label of labels) {
          if (!known.has(label) && !TARGET_LABELS.has(label) && !extra.includes(label))
            out.push(`${panel.title}: ${name} has no label '${label}'`);
        }
      }
    }
  }
  return out;
}

describe('the Grafana dashboard (deploy/grafana/)', () => {
  const dashboard = JSON.parse(readFileSync(DASHBOARD, 'utf8')) as {
    panels: Panel[];
    templating: { list: Array<{ name: string; type: string }> };
  };
  const panels = dashboard.panels.filter((p) => p.type !== 'row');
  const metrics = exported();

  it('queries only metrics the agent or the controller exports, with labels they have', () => {
    expect(problems(panels, metrics)).to.deep.equal([]);
  });

  it('catches a renamed metric and a label that does not exist', () => {
    const broken: Panel[] = [
      {
        type: 'timeseries',
        title: 'renamed',
        targets: [{ expr: 'rate(understudy_session_renewal_total[1m])' }],
      },
      { type: 'timeseries', title: 'bad label', targets: [{ expr: 'understudy_identity_state{node="a"}' }] },
    ];
    expect(problems(broken, metrics)).to.deep.equal([
      'renamed: understudy_session_renewal_total is exported by neither the agent nor the controller',
      "bad label: understudy_identity_state has no label 'node'",
    ]);
  });

  it('has a panel for each thing operators asked to see', () => {
    const queried = (metric: string) =>
      panels.some((p) => (p.targets ?? []).some((t) => t.expr.includes(metric)));
    for (const metric of [
      'understudy_identity_state', // leader per identity
      'understudy_workflows_total', // failovers and switchovers
      'understudy_workflow_duration_seconds_bucket', // switchover durations
      'understudy_identity_probe_failures', // probe failures
      'understudy_alarms_total', // split-brain alarms
      'understudy_session_renewals_total', // etcd session health
      'understudy_session_stops_total',
    ])
      expect(queried(metric), metric).to.equal(true);
  });

  it('every panel reads the Prometheus chosen in the dashboard variable', () => {
    expect(dashboard.templating.list).to.deep.include.members([
      {
        name: 'DS_PROMETHEUS',
        label: 'Prometheus',
        type: 'datasource',
        query: 'prometheus',
        current: {},
        hide: 0,
      },
    ]);
    for (const p of panels) expect(p.datasource?.uid, p.title).to.equal('${DS_PROMETHEUS}');
  });
});

// Prometheus text exposition, as the benches read it from etcd's and the agents' /metrics:
// samples with their labels, and which names were declared (a labelled counter never
// incremented has a # TYPE line and no sample: zero, not absent).

export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

export interface Scrape {
  declared: Set<string>;
  samples: Sample[];
}

const SAMPLE = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/;
const LABEL = /([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g;

/** A number as the format writes it: Number() alone reads "+Inf" as NaN. */
const promNumber = (text: string) =>
  text === '+Inf' ? Infinity : text === '-Inf' ? -Infinity : Number(text);

export function parseProm(text: string): Scrape {
  const scrape: Scrape = { declared: new Set(), samples: [] };
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) /.exec(line);
    if (type) scrape.declared.add(type[1]!);
    if (line === '' || line.startsWith('#')) continue;
    const m = SAMPLE.exec(line);
    if (!m) continue;
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(LABEL))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    scrape.samples.push({ name: m[1]!, labels, value: promNumber(m[3]!) });
  }
  return scrape;
}

/** GET a /metrics page and parse it; throws on a refused call or a status other than 200. */
export async function scrapeProm(url: string, timeoutMs: number): Promise<Scrape> {
  const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs) });
  if (!res.ok) throw new Error(`GET ${url}: HTTP ${res.status}`);
  return parseProm(await res.text());
}

type Keep = (labels: Record<string, string>) => boolean;

/** The sum of a metric's samples that `keep` keeps; undefined when the metric is not there at all. */
export function total(s: Scrape, name: string, keep: Keep = () => true): number | undefined {
  const samples = s.samples.filter((x) => x.name === name && keep(x.labels));
  if (samples.length === 0 && !s.declared.has(name)) return undefined;
  return samples.reduce((sum, x) => sum + x.value, 0);
}

/** A metric's samples summed by the value of one label (samples without it under '?'). */
export function byLabel(s: Scrape, name: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const x of s.samples) {
    if (x.name !== name) continue;
    const key = x.labels[label] ?? '?';
    out.set(key, (out.get(key) ?? 0) + x.value);
  }
  return out;
}

/**
 * A histogram's cumulative buckets, [upper bound in its unit, count] ascending, +Inf last;
 * series that differ in other labels are summed (etcd's disk histograms have none).
 */
export function buckets(s: Scrape, name: string): Array<[number, number]> {
  const byBound = byLabel(s, `${name}_bucket`, 'le');
  return [...byBound]
    .map(([le, count]): [number, number] => [promNumber(le), count])
    .filter(([le]) => !Number.isNaN(le))
    .sort((a, b) => a[0] - b[0]);
}

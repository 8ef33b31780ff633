// Where the machine's cores went, by part of the topology: each container's CPU time (its
// cgroup's counter) and the whole machine's, read beside the CPU pressure. The pressure says
// that a handover's steps waited for a core; this says who had the cores meanwhile — etcd,
// NATS, the controllers, the agents' hosts (agent, services and lifelines together), and the
// rest (the bench itself, the container engine's proxies, the kernel).
import { readFileSync } from 'node:fs';

/** The parts a topology's containers are charged to, by alias; the rest is the machine's remainder. */
export const CPU_GROUPS = ['etcd', 'nats', 'controllers', 'agents'] as const;
export type CpuGroup = (typeof CPU_GROUPS)[number] | 'rest';

export function groupOf(alias: string): (typeof CPU_GROUPS)[number] {
  if (alias.startsWith('etcd')) return 'etcd';
  if (alias.startsWith('nats')) return 'nats';
  if (alias.startsWith('ctl')) return 'controllers';
  return 'agents';
}

/**
 * One reading: when (monotonic ms), the machine's CPU time so far and each group's (ms). Each
 * group's total only grows: a restarted container's counter starts again from 0 with its new
 * cgroup, and what it had counted is carried over (see CpuCounters).
 */
export type CpuUseSample = readonly [t: number, machineMs: number, byGroup: Readonly<Record<string, number>>];

/** Where the kernel keeps the counters: cgroup v1 (cpuacct, ns) or v2 (cpu.stat usage_usec). */
interface CgroupLayout {
  machine(): number;
  container(id: string): number | undefined;
}

const readNumber = (file: string): number | undefined => {
  try {
    return Number(readFileSync(file, 'utf8').trim());
  } catch {
    return undefined;
  }
};
const readUsageUsec = (file: string): number | undefined => {
  try {
    const m = /^usage_usec (\d+)/m.exec(readFileSync(file, 'utf8'));
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
};

/** The layout this machine has, or undefined (the figures then say n/a). */
export function cgroupLayout(): CgroupLayout | undefined {
  const v1 = '/sys/fs/cgroup/cpuacct';
  if (readNumber(`${v1}/cpuacct.usage`) !== undefined)
    return {
      machine: () => readNumber(`${v1}/cpuacct.usage`)! / 1e6,
      container: (id) => {
        const ns = readNumber(`${v1}/docker/${id}/cpuacct.usage`);
        return ns === undefined ? undefined : ns / 1e6;
      },
    };
  const v2 = '/sys/fs/cgroup';
  if (readUsageUsec(`${v2}/cpu.stat`) !== undefined)
    return {
      machine: () => readUsageUsec(`${v2}/cpu.stat`)! / 1e3,
      container: (id) => {
        const us =
          readUsageUsec(`${v2}/system.slice/docker-${id}.scope/cpu.stat`) ??
          readUsageUsec(`${v2}/docker/${id}/cpu.stat`);
        return us === undefined ? undefined : us / 1e3;
      },
    };
  return undefined;
}

/**
 * Each container's CPU time so far, over its restarts and while it is down: a killed container
 * has no cgroup to read (its last total stands), and a started one counts again from 0.
 */
export class CpuCounters {
  private readonly last = new Map<string, number>();
  private readonly carried = new Map<string, number>();

  /** The container's total including earlier lives, given its counter now (undefined: not running). */
  total(id: string, counter: number | undefined): number {
    const last = this.last.get(id) ?? 0;
    if (counter === undefined) return (this.carried.get(id) ?? 0) + last;
    if (counter < last) this.carried.set(id, (this.carried.get(id) ?? 0) + last);
    this.last.set(id, counter);
    return (this.carried.get(id) ?? 0) + counter;
  }
}

/**
 * Read the counters every `everyMs` until stopped. `containers` says which containers there
 * are now (engine id → alias): a topology's, which changes from one T to the next.
 */
export function sampleCpuUse(
  containers: () => ReadonlyMap<string, string>,
  now: () => number,
  everyMs: number,
): { stop(): CpuUseSample[] } {
  const layout = cgroupLayout();
  const samples: CpuUseSample[] = [];
  if (!layout) return { stop: () => samples };
  const counters = new CpuCounters();
  const read = () => {
    const byGroup: Record<string, number> = {};
    for (const [id, alias] of containers()) {
      const group = groupOf(alias);
      byGroup[group] = (byGroup[group] ?? 0) + counters.total(id, layout.container(id));
    }
    samples.push([now(), layout.machine(), byGroup]);
  };
  const timer = setInterval(read, everyMs);
  read();
  return {
    stop: () => {
      clearInterval(timer);
      read();
      return samples;
    },
  };
}

/**
 * Each group's share of the cores over [from, to], in % of one core (200 = both cores of this
 * machine busy all along), from the readings around both ends; undefined without them.
 */
export function cpuUseIn(
  samples: readonly CpuUseSample[],
  from: number,
  to: number,
): Record<CpuGroup | 'machine', number> | undefined {
  if (!(to > from)) return undefined;
  const a = samples.findLast((s) => s[0] <= from);
  const b = samples.find((s) => s[0] >= to);
  if (!a || !b || b[0] <= a[0]) return undefined;
  const span = b[0] - a[0];
  const pct = (ms: number) => Math.max(0, (100 * ms) / span);
  const out = { machine: pct(b[1] - a[1]) } as Record<CpuGroup | 'machine', number>;
  let charged = 0;
  for (const g of CPU_GROUPS) {
    const used = (b[2][g] ?? 0) - (a[2][g] ?? 0);
    out[g] = pct(used);
    charged += Math.max(0, used);
  }
  out.rest = pct(b[1] - a[1] - charged);
  return out;
}

// Where the machine's cores went, by part of the topology: each container's CPU time (its
// cgroup's counter) and the whole machine's, read beside the CPU pressure. The pressure says
// that a handover's steps waited for a core; this says who had the cores meanwhile — etcd,
// NATS, the controllers, the agents' hosts (agent, services and lifelines together), and the
// rest (the bench itself, the container engine's proxies, the kernel).
import { readFileSync } from 'node:fs';
import { readingsAround } from './measure.js';
import { sampleEvery } from './sampling.js';

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
        const ns =
          readNumber(`${v1}/docker/${id}/cpuacct.usage`) ??
          readNumber(`${v1}/system.slice/docker-${id}.scope/cpuacct.usage`);
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
 * has no cgroup to read (its total so far stands), and a started one counts again from 0.
 */
export class CpuCounters {
  /** The counter of the container's current life, as last read. */
  private readonly last = new Map<string, number>();
  /** What its earlier lives counted. */
  private readonly carried = new Map<string, number>();

  /**
   * The container's total including earlier lives, given its counter now (undefined: not
   * running); undefined for a container never read (a layout that cannot see it proves nothing).
   */
  total(id: string, counter: number | undefined): number | undefined {
    const last = this.last.get(id);
    const carried = this.carried.get(id) ?? 0;
    if (counter === undefined) {
      if (last === undefined) return this.carried.has(id) ? carried : undefined;
      // Down: this life is over, whatever its next counter reads.
      this.carried.set(id, carried + last);
      this.last.delete(id);
      return carried + last;
    }
    // Restarted between two readings (never seen down): the counter started again from 0.
    const base = last !== undefined && counter < last ? carried + last : carried;
    this.carried.set(id, base);
    this.last.set(id, counter);
    return base + counter;
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
  if (!layout) return { stop: () => [] };
  const counters = new CpuCounters();
  return sampleEvery(everyMs, (): CpuUseSample => {
    const byGroup: Record<string, number> = {};
    for (const [id, alias] of containers()) {
      const total = counters.total(id, layout.container(id));
      if (total === undefined) continue;
      const group = groupOf(alias);
      byGroup[group] = (byGroup[group] ?? 0) + total;
    }
    return [now(), layout.machine(), byGroup];
  });
}

/** A counter's value between two readings, linear; undefined when either lacks it. */
function valueAt(
  at: NonNullable<ReturnType<typeof readingsAround<CpuUseSample>>>,
  of: (s: CpuUseSample) => number | undefined,
) {
  const [y0, y1] = [of(at.before), of(at.after)];
  return y0 === undefined || y1 === undefined ? undefined : y0 + (y1 - y0) * at.w;
}

/**
 * Each group's share of the cores over [from, to], in % of one core (200 = both cores of this
 * machine busy all along), each counter taken at both ends between the readings around them
 * (a handover of 100 ms is not charged the 50 ms around it). Undefined without readings around
 * both ends; a group no reading covered is left out, and so is the rest then.
 */
export function cpuUseIn(
  samples: readonly CpuUseSample[],
  from: number,
  to: number,
): Partial<Record<CpuGroup | 'machine', number>> | undefined {
  if (!(to > from)) return undefined;
  const [start, end] = [readingsAround(samples, from), readingsAround(samples, to)];
  if (!start || !end) return undefined;
  const used = (of: (s: CpuUseSample) => number | undefined) => {
    const [a, b] = [valueAt(start, of), valueAt(end, of)];
    return a === undefined || b === undefined ? undefined : b - a;
  };
  const machine = used((s) => s[1]);
  if (machine === undefined) return undefined;
  const pct = (ms: number) => Math.max(0, (100 * ms) / (to - from));
  const out: Partial<Record<CpuGroup | 'machine', number>> = { machine: pct(machine) };
  let charged: number | undefined = 0;
  for (const g of CPU_GROUPS) {
    const ms = used((s) => s[2][g]);
    if (ms === undefined) {
      charged = undefined;
      continue;
    }
    out[g] = pct(ms);
    if (charged !== undefined) charged += Math.max(0, ms);
  }
  if (charged !== undefined) out.rest = pct(machine - charged);
  return out;
}

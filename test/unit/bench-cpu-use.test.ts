// Who had the cores during a handover (bench/cpu-use.ts): each container's counter carried over
// its restarts and down time, charged to its part of the topology, and the machine's remainder.
import { expect } from 'chai';
import { CpuCounters, cpuUseIn, groupOf, type CpuUseSample } from '../../bench/cpu-use.js';

describe('bench: who had the cores', function () {
  it("charges each container to its part of the topology by its alias (an agent's host otherwise)", function () {
    expect(['etcd0', 'nats2', 'ctl-1', 'a', 'b'].map(groupOf)).to.deep.equal([
      'etcd',
      'nats',
      'controllers',
      'agents',
      'agents',
    ]);
  });

  it("keeps a killed container's time while it is down, and adds its next life's to it", function () {
    const c = new CpuCounters();
    expect(c.total('a', 100)).to.equal(100);
    expect(c.total('a', 150)).to.equal(150);
    expect(c.total('a', undefined)).to.equal(150); // killed: no cgroup to read
    expect(c.total('a', 20)).to.equal(170); // started again: its counter restarts from 0
    expect(c.total('a', 30)).to.equal(180);
    expect(c.total('never-seen', undefined)).to.equal(0);
  });

  it('gives each part % of one core between the readings around the window, and the rest as the remainder', function () {
    const samples: CpuUseSample[] = [
      [0, 0, { etcd: 0, nats: 0, controllers: 0, agents: 0 }],
      [100, 150, { etcd: 40, nats: 10, controllers: 5, agents: 60 }],
      [200, 330, { etcd: 80, nats: 20, controllers: 10, agents: 150 }],
    ];
    expect(cpuUseIn(samples, 0, 100)).to.deep.equal({
      machine: 150,
      etcd: 40,
      nats: 10,
      controllers: 5,
      agents: 60,
      rest: 35,
    });
    // A window between readings widens to them: [0, 200].
    expect(cpuUseIn(samples, 50, 150)).to.deep.include({ machine: 165, agents: 75, rest: 35 });
    expect(cpuUseIn(samples, 150, 250)).to.equal(undefined); // no reading after the end
    expect(cpuUseIn(samples, 100, 100)).to.equal(undefined);
    expect(cpuUseIn([], 0, 100)).to.equal(undefined);
  });
});

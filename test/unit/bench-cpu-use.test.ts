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
    expect(c.total('a', undefined)).to.equal(150);
    expect(c.total('a', 20)).to.equal(170); // started again: its counter restarts from 0
    expect(c.total('a', 30)).to.equal(180);
    // Restarted between two readings, never seen down: the counter went back.
    expect(c.total('a', 5)).to.equal(185);
  });

  it('starts a new life after a reading found the container down, even when its new counter is past the old', function () {
    const c = new CpuCounters();
    c.total('a', 100);
    expect(c.total('a', undefined)).to.equal(100);
    expect(c.total('a', 120)).to.equal(220); // not 120: the first life's 100 stays
  });

  it('knows nothing of a container it never read (a layout that cannot see it proves nothing)', function () {
    expect(new CpuCounters().total('never-read', undefined)).to.equal(undefined);
  });

  it('gives each part % of one core over the window, each counter taken at both ends between the readings', function () {
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
    // [75, 150]: the machine's counter reads 112.5 and 240 there (not the 165 % of [0, 200]).
    expect(cpuUseIn(samples, 75, 150)).to.deep.include({ machine: 170 });
    expect(cpuUseIn(samples, 75, 150)!.agents).to.be.closeTo(80, 1e-9); // agents: 45 → 105
    expect(cpuUseIn(samples, 150, 250)).to.equal(undefined); // no reading after the end
    expect(cpuUseIn(samples, 100, 100)).to.equal(undefined);
    expect(cpuUseIn([], 0, 100)).to.equal(undefined);
  });

  it('leaves out a part no reading covered, and the rest with it', function () {
    const samples: CpuUseSample[] = [
      [0, 0, { etcd: 0, agents: 0 }],
      [100, 150, { etcd: 40, agents: 60 }],
    ];
    expect(cpuUseIn(samples, 0, 100)).to.deep.equal({ machine: 150, etcd: 40, agents: 60 });
  });
});

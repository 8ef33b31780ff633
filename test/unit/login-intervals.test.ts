// The S1 check on the agents' own records (test/support/login-intervals.ts) must not be blind:
// every pair of logins is compared, not only neighbours, and a login its log never closed (a
// SIGKILLed agent) lasts until its processes are seen dead, not zero time.
import { expect } from 'chai';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import type { LogRecord } from '../../test/support/logged-process.js';
import {
  DeathWatch,
  intersect,
  loginIntervals,
  loginPids,
  overlaps,
  type AgentLog,
} from '../../test/support/login-intervals.js';
import { waitFor } from '../../test/support/wait.js';

const ID = 'msggateway';
const T0 = Date.parse('2026-11-21T09:00:00.000Z');
const iso = (ms: number) => new Date(T0 + ms).toISOString();

/** A record as the agent logs a transition of `identity` at T0 + ms. */
const move = (ms: number, from: string, to: string, identity = ID): LogRecord => ({
  level: 'info',
  time: iso(ms),
  msg: `${identity}: ${from} → ${to}`,
  identity,
  from,
  to,
});
const said = (ms: number, msg: string, fields: Record<string, unknown> = {}, identity = ID): LogRecord => ({
  level: 'info',
  time: iso(ms),
  msg,
  identity,
  ...fields,
});
/** The lifeline's record: no identity, the service's pid and the reaper's kill time. */
const deadlineKill = (ms: number, servicePid: number, killedAtMs: number): LogRecord => ({
  level: 'error',
  time: iso(ms),
  msg: 'service deadline expired before the agent renewed it (agent frozen or stalled?): the reaper killed the service',
  servicePid,
  killedAt: iso(killedAtMs),
});

/** A login from `inMs` to `outMs` (logging-out → standby), as a complete term in the log. */
const term = (inMs: number, outMs: number, identity = ID): LogRecord[] => [
  move(inMs, 'waiting-out', 'logging-in', identity),
  move(inMs + 1, 'logging-in', 'leader', identity),
  move(outMs - 1, 'leader', 'logging-out', identity),
  move(outMs, 'logging-out', 'standby', identity),
];

const agent = (node: string, pid: number, records: LogRecord[]): AgentLog => ({ node, pid, records });

describe('login intervals (S1 from the agents’ records)', function () {
  describe('overlaps', function () {
    it('compares every pair: a long login overlapping a later, non-adjacent one is caught', function () {
      // Sorted by start: a [0, 10 s), b [1 s, 2 s), c [3 s, 4 s). Neighbours (a,b) and (b,c)
      // show one overlap; a and c overlap too, and only a pairwise check sees it.
      const intervals = loginIntervals(
        [
          agent('a', 1, term(0, 10_000)),
          agent('b', 2, term(1_000, 2_000)),
          agent('c', 3, term(3_000, 4_000)),
        ],
        ID,
      );
      expect(intervals.map((i) => i.node)).to.deep.equal(['a', 'b', 'c']);
      const found = overlaps(intervals);
      expect(found).to.have.length(2);
      expect(found[0]).to.match(/^S1: a .* b /);
      expect(found[1]).to.match(/^S1: a .* c /);
    });

    it('compares logins of the same node name from two agent processes (a restarted agent)', function () {
      const old = agent('a', 10, term(0, 5_000));
      const restarted = agent('a', 11, term(4_000, 8_000));
      expect(overlaps(loginIntervals([old, restarted], ID))).to.have.length(1);
    });

    it('reports nothing for a clean handover, even to the millisecond', function () {
      const intervals = loginIntervals(
        [agent('a', 1, term(0, 1_000)), agent('b', 2, term(1_000, 2_000)), agent('a', 3, term(2_000, 3_000))],
        ID,
      );
      expect(overlaps(intervals)).to.deep.equal([]);
    });

    it('treats intervals as [from, to): touching ends do not overlap', function () {
      const table: Array<[[number, number], [number, number], boolean]> = [
        [[0, 10], [10, 20], false],
        [[0, 10], [9, 20], true],
        [[0, 10], [2, 3], true],
        [[5, Infinity], [100, 200], true],
        [[0, 10], [20, 30], false],
      ];
      for (const [[af, at], [bf, bt], expected] of table) {
        const a = { from: af, to: at };
        const b = { from: bf, to: bt };
        expect(intersect(a, b), `${af}-${at} vs ${bf}-${bt}`).to.equal(expected);
        expect(intersect(b, a), 'symmetric').to.equal(expected);
      }
    });
  });

  describe('a login the log never closes (SIGKILLed agent)', function () {
    // a logs in at 0 with service pid 500 and is killed; b logs in at 5 s.
    const killed = agent('a', 100, [
      said(-50, 'service started', { servicePid: 500, role: 'standby' }),
      move(0, 'waiting-out', 'logging-in'),
      said(20, 'service logged in', { servicePid: 500 }),
      move(30, 'logging-in', 'leader'),
    ]);
    const successor = agent('b', 200, term(5_000, 9_000));

    it('stays open without death times, so every later login overlaps it', function () {
      const intervals = loginIntervals([killed, successor], ID);
      expect(intervals[0]).to.deep.include({ node: 'a', to: Infinity, end: 'open' });
      expect(intervals[0]!.pids.sort()).to.deep.equal([100, 500]);
      expect(overlaps(intervals)).to.have.length(1);
    });

    it('ends when the last of the agent and its service was seen dead', function () {
      const table: Array<{ agentDied?: number; serviceDied?: number; to: number; overlap: boolean }> = [
        { agentDied: 100, serviceDied: 4_000, to: 4_000, overlap: false },
        { agentDied: 100, serviceDied: 6_000, to: 6_000, overlap: true },
        // The service alone dying is not enough when the agent was not seen dead (in-process work).
        { serviceDied: 200, to: Infinity, overlap: true },
        { agentDied: 100, to: Infinity, overlap: true },
      ];
      for (const row of table) {
        const died: Record<number, number | undefined> = {
          100: row.agentDied === undefined ? undefined : T0 + row.agentDied,
          500: row.serviceDied === undefined ? undefined : T0 + row.serviceDied,
        };
        const intervals = loginIntervals([killed, successor], ID, { diedAt: (pid) => died[pid] });
        const label = JSON.stringify(row);
        expect(intervals[0]!.to, label).to.equal(T0 + row.to);
        expect(overlaps(intervals).length > 0, label).to.equal(row.overlap);
      }
    });

    it('an in-process service (no service pid logged) ends with its agent', function () {
      const inProcess = agent('a', 100, [
        move(0, 'waiting-out', 'logging-in'),
        move(30, 'logging-in', 'leader'),
      ]);
      const diedAt = (pid: number) => (pid === 100 ? T0 + 50 : undefined);
      const [first] = loginIntervals([inProcess], ID, { diedAt });
      expect(first).to.deep.include({ to: T0 + 50, end: 'seen-dead', pids: [100] });
    });

    it('a service seen exiting before the kill does not hold the login open', function () {
      const exited = agent('a', 100, [
        move(0, 'waiting-out', 'logging-in'),
        said(10, 'service started', { servicePid: 500 }),
        said(1_000, 'service exited unexpectedly', { servicePid: 500 }),
        said(1_200, 'service started', { servicePid: 501 }),
      ]);
      const died: Record<number, number> = { 100: T0 + 3_000, 501: T0 + 3_010 };
      const [first] = loginIntervals([exited], ID, { diedAt: (pid) => died[pid] });
      expect(first!.pids.sort()).to.deep.equal([100, 501]);
      expect(first).to.deep.include({ to: T0 + 3_010, end: 'seen-dead' });
    });

    it('loginPids names the agent and every service pid it logged for the identity', function () {
      const other = said(40, 'service started', { servicePid: 900 }, 'other-identity');
      expect(loginPids(agent('a', 100, [...killed.records, other]), ID).sort()).to.deep.equal([100, 500]);
    });
  });

  describe('logins ended outside the state machine', function () {
    it('ends at the lifeline’s kill of its service, matched by pid, not at another identity’s', function () {
      const frozen = agent('a', 100, [
        said(0, 'service started', { servicePid: 500 }),
        said(0, 'service started', { servicePid: 600 }, 'other-identity'),
        move(10, 'waiting-out', 'logging-in'),
        move(20, 'logging-in', 'leader'),
        // Resumed at 6 s: the other identity's kill comes first and must not close this one.
        deadlineKill(6_000, 600, 2_100),
        deadlineKill(6_001, 500, 2_500),
        move(6_010, 'leader', 'logging-out'),
        move(6_020, 'logging-out', 'standby'),
      ]);
      const [first] = loginIntervals([frozen], ID);
      expect(first).to.deep.include({ from: T0 + 10, to: T0 + 2_500, end: 'deadline-kill' });
    });

    it('an unconfirmed logout keeps the login until its service is seen exiting', function () {
      const slow = agent('a', 100, [
        said(0, 'service started', { servicePid: 500 }),
        move(10, 'waiting-out', 'logging-in'),
        move(20, 'logging-in', 'leader'),
        move(1_000, 'leader', 'logging-out'),
        said(
          1_500,
          'service not confirmed logged out within the budget: giving up the session so the lease bounds it',
        ),
        move(1_501, 'logging-out', 'standby'),
        said(4_000, 'service stopped', { servicePid: 500 }),
      ]);
      const [first] = loginIntervals([slow], ID);
      expect(first).to.deep.include({ to: T0 + 4_000, end: 'service-exited' });
      expect(overlaps(loginIntervals([slow, agent('b', 200, term(3_000, 5_000))], ID))).to.have.length(1);
    });
  });

  describe('DeathWatch', function () {
    it('gives a dead pid a time no earlier than its death, and none to a live one', async function () {
      const child = spawn('sleep', ['1000'], { stdio: 'ignore' });
      const pid = child.pid!;
      const exited = once(child, 'exit');
      const deaths = new DeathWatch().watch([pid]);
      try {
        expect(deaths.diedAt(pid)).to.equal(undefined);
        expect(deaths.alive).to.deep.equal([pid]);
        const killedAt = Date.now();
        child.kill('SIGKILL');
        await exited;
        const diedAt = await waitFor(() => deaths.diedAt(pid), {
          what: `pid ${pid} seen dead`,
          timeoutMs: 2_000,
        });
        expect(diedAt).to.be.at.least(killedAt);
        expect(deaths.alive).to.deep.equal([]);
      } finally {
        deaths.close();
        child.kill('SIGKILL');
      }
    });
  });
});

import { expect } from 'chai';
import type { IdentityView, StandbyView, Workflow } from '../../pkg/api/schema.js';
import { aclRequest, specsFromYaml } from '../../pkg/cli/controller-commands.js';
import { CliError, EXIT } from '../../pkg/cli/exit.js';
import { printable } from '../../pkg/cli/output.js';
import {
  identityNotes,
  memberRole,
  memberRows,
  renderApplyResults,
  renderHistory,
  renderIdentityList,
  renderIdentityStatus,
  renderKeyValues,
  renderTable,
  stepLine,
  workflowOutcome,
} from '../../pkg/cli/render.js';
import { renderClones, renderSnapshots } from '../../pkg/cli/state-commands.js';
import { CLONE, SNAPSHOT } from '../support/fake-controller-api.js';
import {
  formatAgo,
  formatDuration,
  formatElapsed,
  formatLocalTime,
  parseAtTime,
} from '../../pkg/cli/time.js';

const NOW = Date.parse('2026-05-01T12:00:00Z');

const standby = (node: string, extra: Partial<StandbyView> = {}): StandbyView => ({
  node,
  state: 'standby',
  registered: true,
  healthy: true,
  fenced: false,
  nofailover: false,
  cloneLag: 0,
  ...extra,
});

const identity = (extra: Partial<IdentityView> = {}): IdentityView => ({
  identity: 'msggateway',
  specRevision: '12',
  leader: 'a',
  token: '41',
  loggedIn: true,
  loggedInSince: '2026-05-01T09:57:00Z',
  responders: [{ node: 'a', token: '41' }],
  probeFailures: 0,
  health: 'ok',
  standbys: [standby('a', { state: 'logged-in', priority: 10 }), standby('b', { priority: 5 })],
  fencedNodes: [],
  ...extra,
});

const workflow = (extra: Partial<Workflow> = {}): Workflow => ({
  id: 'wf-7',
  identity: 'msggateway',
  kind: 'switchover',
  state: 'draining',
  actor: 'alice',
  from: { node: 'a', token: '41' },
  target: 'b',
  createdAt: '2026-05-01T12:00:00.000Z',
  deadline: '2026-05-01T12:01:00.000Z',
  escalation: [],
  steps: [{ state: 'requested', at: '2026-05-01T12:00:00.000Z' }],
  updatedAt: '2026-05-01T12:00:03.420Z',
  controller: 'c1',
  ...extra,
});

describe('CLI rendering (pkg/cli/render.ts)', function () {
  describe('renderTable', function () {
    it('draws patronictl-style borders with aligned columns, numbers right-aligned', function () {
      const table = renderTable(
        [{ header: 'Member' }, { header: 'Token', align: 'right' }],
        [
          ['a', '41'],
          ['bravo', '1234567'],
        ],
      );
      expect(table.split('\n')).to.deep.equal([
        '+--------+---------+',
        '| Member | Token   |',
        '+--------+---------+',
        '| a      |      41 |',
        '| bravo  | 1234567 |',
        '+--------+---------+',
      ]);
    });

    it('renders missing cells empty and keeps a multi-line cell on one row', function () {
      const table = renderTable(
        [{ header: 'A' }, { header: 'Reason' }],
        [['x'], ['y', 'line one\nline two']],
      );
      expect(table.split('\n')).to.have.length(6);
      expect(table).to.include('| x |                   |');
      expect(table).to.include('| y | line one line two |');
    });

    it('renderKeyValues aligns values and shows - for an empty one', function () {
      expect(
        renderKeyValues([
          ['Leader', 'a'],
          ['Logged in since', ''],
        ]),
      ).to.equal('Leader:           a\nLogged in since:  -');
    });
  });

  describe('durations and times', function () {
    it('formatDuration uses at most two units', function () {
      expect(formatDuration(850)).to.equal('850ms');
      expect(formatDuration(3_240)).to.equal('3.2s');
      expect(formatDuration(125_000)).to.equal('2m 5s');
      expect(formatDuration(3 * 3_600_000 + 2 * 60_000 + 5_000)).to.equal('3h 2m');
      expect(formatDuration(4 * 86_400_000 + 3 * 3_600_000)).to.equal('4d 3h');
      expect(formatDuration(Number.NaN)).to.equal('-');
    });

    it('formatElapsed shows hundredths under a minute', function () {
      expect(formatElapsed(120)).to.equal('+0.12s');
      expect(formatElapsed(12_300)).to.equal('+12.30s');
      expect(formatElapsed(123_500)).to.equal('+2m03.5s');
    });

    it('formatAgo reads ISO strings and epoch ms, past and future', function () {
      expect(formatAgo('2026-05-01T09:57:00Z', NOW)).to.equal('2h 3m ago');
      expect(formatAgo(NOW + 300_000, NOW)).to.equal('in 5m 0s');
      expect(formatAgo(NOW - 200, NOW)).to.equal('just now');
      expect(formatAgo(undefined, NOW)).to.equal('-');
      expect(formatAgo('not a time', NOW)).to.equal('-');
    });

    it('formatLocalTime prints the local wall clock', function () {
      expect(formatLocalTime(new Date(2026, 0, 2, 3, 4, 5).getTime())).to.equal('2026-01-02 03:04:05');
    });
  });

  describe('parseAtTime (switchover --at)', function () {
    const now = new Date(2026, 4, 1, 10, 30, 0).getTime();

    it('turns HH:MM into today at that local time, as ISO', function () {
      expect(parseAtTime('22:15', now)).to.equal(new Date(2026, 4, 1, 22, 15, 0).toISOString());
    });

    it('accepts ISO times with an offset, and without one as local time', function () {
      expect(parseAtTime('2026-11-21T03:00:00Z', now)).to.equal('2026-11-21T03:00:00.000Z');
      expect(parseAtTime('2026-11-21T03:00+01:00', now)).to.equal('2026-11-21T02:00:00.000Z');
      expect(parseAtTime('2026-11-21 03:00', now)).to.equal(new Date(2026, 10, 21, 3, 0).toISOString());
    });

    it('rejects past times, impossible dates and other text with a hint', function () {
      expect(() => parseAtTime('09:00', now)).to.throw(/in the past/);
      expect(() => parseAtTime('25:00', now)).to.throw(/not a time of day/);
      expect(() => parseAtTime('2026-02-30T03:00Z', now)).to.throw(/not a valid date/);
      expect(() => parseAtTime('tomorrow', now)).to.throw(/HH:MM/);
    });

    it('treats a time within the current minute as now, not as a mistake', function () {
      expect(parseAtTime('10:30', now + 40_000)).to.equal(new Date(2026, 4, 1, 10, 30).toISOString());
    });
  });

  describe('identity list', function () {
    it('gives each member a role: leader, standby, cold standby, nofailover, drained, fenced', function () {
      const view = identity({ fencedNodes: ['f'] });
      expect(memberRole(view, 'a', undefined)).to.equal('Leader');
      expect(memberRole(view, 'b', standby('b'))).to.equal('Standby');
      expect(memberRole(view, 'c', standby('c', { registered: false }))).to.equal('Cold standby');
      expect(memberRole(view, 'n', standby('n', { nofailover: true }))).to.equal('Standby (nofailover)');
      expect(memberRole(view, 'd', standby('d', { state: 'drained' }))).to.equal('Drained');
      expect(memberRole(view, 'f', undefined)).to.equal('Fenced');
    });

    it('lists the leader first with token, since and health, then standbys by priority', function () {
      const view = identity({
        standbys: [
          standby('c', { priority: 1, cloneLag: 3, healthy: false }),
          standby('a', { state: 'logged-in' }),
          standby('b', { priority: 5 }),
        ],
      });
      expect(memberRows(view, NOW)).to.deep.equal([
        ['msggateway', 'a', 'Leader', 'logged-in', '41', '2h 3m ago', 'ok', ''],
        ['msggateway', 'b', 'Standby', 'standby', '', '', 'healthy', '0'],
        ['msggateway', 'c', 'Standby', 'standby', '', '', 'unhealthy', '3'],
      ]);
    });

    it('shows a leader that is not among the standbys, and fenced nodes that are not either', function () {
      const rows = memberRows(identity({ standbys: [standby('b')], fencedNodes: ['z'] }), NOW);
      expect(rows.map((r) => [r[1], r[2], r[3]])).to.deep.equal([
        ['a', 'Leader', 'logged-in'],
        ['b', 'Standby', 'standby'],
        ['z', 'Fenced', ''],
      ]);
    });

    it('notes maintenance mode, a workflow in progress, a split brain and a missing leader', function () {
      const notes = identityNotes(
        identity({
          health: 'split-brain',
          responders: [
            { node: 'a', token: '41' },
            { node: 'b', token: '57', error: 'down' },
          ],
          paused: { reason: 'kernel upgrade', actor: 'alice', at: '2026-05-01T11:55:00Z' },
          workflow: { id: 'wf-7', kind: 'switchover', state: 'draining' },
        }),
        NOW,
      );
      expect(notes).to.deep.equal([
        'msggateway: SPLIT BRAIN: 2 responders: a (token 41), b (token 57, answers with error: down)',
        'msggateway: maintenance mode (no automatic failover): paused by alice 5m 0s ago: kernel upgrade',
        'msggateway: switchover wf-7 in progress (draining)',
      ]);
      const finished = identity({ workflow: { id: 'w', kind: 'failover', state: 'done' } });
      expect(identityNotes(finished, NOW)).to.deep.equal([]);
      expect(identityNotes(identity({ leader: undefined, health: 'down' }), NOW)).to.deep.equal([
        'msggateway: NO LEADER: nobody is logged in (health down)',
      ]);
    });

    it('renders the table then the notes, and says how to start when empty', function () {
      const text = renderIdentityList(
        [identity({ paused: { reason: 'r', actor: 'al', at: '2026-05-01T11:00:00Z' } })],
        NOW,
      );
      const lines = text.split('\n');
      expect(lines[1]).to.match(
        /^\| Identity +\| Member \| Role +\| State +\| Token \| Logged in since \| Health +\| Lag \|$/,
      );
      expect(lines.at(-1)).to.equal(
        ' msggateway: maintenance mode (no automatic failover): paused by al 1h 0m ago: r',
      );
      expect(renderIdentityList([], NOW)).to.match(/understudy apply -f/);
    });
  });

  describe('workflow progress', function () {
    it('prints a step with its elapsed time and note, state names aligned', function () {
      const start = Date.parse('2026-05-01T12:00:00.000Z');
      expect(
        stepLine({ state: 'draining', at: '2026-05-01T12:00:00.120Z', note: 'asked b to log out' }, start),
      ).to.equal('    +0.12s draining     asked b to log out');
      expect(stepLine({ state: 'done', at: '2026-05-01T12:00:03.000Z' }, start, 'msggateway')).to.equal(
        '    +3.00s msggateway  done',
      );
    });

    it('says where the identity went, or why the workflow aborted and who keeps it', function () {
      expect(workflowOutcome(workflow({ state: 'done', chosen: 'b', newToken: '57' }))).to.equal(
        'switchover of msggateway done in 3.4s: msggateway is logged in on b with token 57',
      );
      expect(workflowOutcome(workflow({ state: 'aborted', outcome: 'b did not answer PING' }))).to.equal(
        'switchover of msggateway ABORTED after 3.4s: b did not answer PING; a keeps or regains msggateway',
      );
      expect(workflowOutcome(workflow())).to.equal('switchover wf-7 of msggateway is still draining');
    });
  });

  describe('history and apply', function () {
    it('renders history rows: time, identity, node, kind, change, token, actor, reason, duration', function () {
      const at = new Date(2026, 4, 1, 11, 59, 55).getTime();
      const text = renderHistory([
        {
          identity: 'msggateway',
          node: 'a',
          at,
          kind: 'transition',
          from: 'standby',
          to: 'logged-in',
          token: '41',
          durationMs: 1234,
        },
      ]);
      expect(text.split('\n')[3]).to.equal(
        '| 2026-05-01 11:59:55 | msggateway | a    | transition | standby -> logged-in |    41 |       |        | 1.2s |',
      );
      expect(renderHistory([])).to.equal('no history yet');
    });

    it('reports each applied identity, and a dry run as what would happen', function () {
      const results = [
        { identity: 'msggateway', action: 'created' as const, revision: '3' },
        { identity: 'x', action: 'unchanged' as const, revision: '2' },
      ];
      expect(renderApplyResults(results, false)).to.equal(
        'msggateway  created (revision 3)\nx           unchanged (revision 2)',
      );
      expect(renderApplyResults(results, true)).to.match(
        /would be created[\s\S]*dry run: nothing was changed/,
      );
    });
  });
});

describe('CLI input parsing (apply files, acl command lines)', function () {
  const usageError = (fn: () => unknown) => {
    try {
      fn();
    } catch (err) {
      expect(err).to.be.instanceOf(CliError);
      expect((err as CliError).exitCode).to.equal(EXIT.usage);
      return (err as Error).message;
    }
    throw new Error('expected a usage error');
  };

  it('reads specs from a list, an identities: map, or several --- documents', function () {
    expect(specsFromYaml('- name: a\n- name: b\n', 'f.yaml')).to.deep.equal([{ name: 'a' }, { name: 'b' }]);
    expect(specsFromYaml('identities:\n  - name: a\n', 'f.yaml')).to.deep.equal([{ name: 'a' }]);
    expect(specsFromYaml('name: a\n---\nname: b\n---\n', 'f.yaml')).to.deep.equal([
      { name: 'a' },
      { name: 'b' },
    ]);
  });

  it('names the file and line of a YAML error, and refuses a file without specs', function () {
    expect(usageError(() => specsFromYaml('name: a\nservice: [1, 2\nx: 3\n', 'specs.yaml'))).to.match(
      /specs\.yaml.*line 3/,
    );
    expect(usageError(() => specsFromYaml('# nothing\n', 'specs.yaml'))).to.match(
      /specs\.yaml holds no identity specs/,
    );
  });

  it('maps acl actions to the routes and bodies of the API', function () {
    expect(aclRequest('gw', undefined, [], {})).to.equal(undefined);
    expect(aclRequest('gw', 'approve', ['bob'], {})?.path).to.equal(
      '/v1/identities/gw/acl/pending/bob/approve',
    );
    expect(aclRequest('gw', 'deny', ['bob'], { block: true })).to.deep.include({
      path: '/v1/identities/gw/acl/pending/bob/deny',
      body: { block: true },
    });
    const nkey = `U${'A'.repeat(55)}`;
    // A name that asked with several keys: the operator names the key to approve or deny.
    expect(aclRequest('gw', 'approve', ['bob', nkey], {})?.body).to.deep.equal({ key: nkey });
    expect(aclRequest('gw', 'approve', ['bob'], {})?.body).to.deep.equal({});
    expect(aclRequest('gw', 'deny', ['bob', nkey], {})?.body).to.deep.equal({ block: false, key: nkey });
    expect(aclRequest('gw', 'add', ['contacts', 'alice', nkey], {})?.body).to.deep.equal({
      op: 'add',
      list: 'contacts',
      caller: { name: 'alice', nkey },
    });
    expect(aclRequest('gw', 'add', ['blocked', nkey], {})?.body).to.deep.equal({
      op: 'block',
      caller: { nkey },
    });
    expect(aclRequest('gw', 'add', ['blocked', 'mallory'], {})?.body).to.deep.equal({
      op: 'block',
      caller: { name: 'mallory' },
    });
    expect(aclRequest('gw', 'remove', ['authorized', 'bob'], {})?.body).to.deep.equal({
      op: 'remove',
      list: 'authorized',
      name: 'bob',
    });
    expect(aclRequest('gw', 'close', [], {})?.body).to.deep.equal({ op: 'open', open: false });
  });

  it('explains a wrong acl command line', function () {
    expect(usageError(() => aclRequest('gw', 'add', ['contacts', 'alice'], {}))).to.match(
      /need the caller's nkey/,
    );
    expect(usageError(() => aclRequest('gw', 'add', ['friends', 'alice'], {}))).to.match(
      /contacts, authorized or blocked/,
    );
    expect(usageError(() => aclRequest('gw', 'approve', ['bob'], { block: true }))).to.match(
      /--block goes with deny/,
    );
    expect(usageError(() => aclRequest('gw', 'frob', [], {}))).to.match(/unknown acl action frob/);
    expect(usageError(() => aclRequest('gw', 'approve', ['bob', 'not-a-key'], {}))).to.match(
      /'not-a-key' is not a NATS user public nkey/,
    );
    expect(usageError(() => aclRequest('gw', 'approve', [], {}))).to.match(/takes a caller name/);
  });
});

describe('printable (nothing from the network drives the operator terminal)', function () {
  it('shows escape sequences and other control characters as U+FFFD, keeping tabs, newlines and text', function () {
    const caller = 'mallory\u001b[2J\u001b]0;owned\u0007\rroot\u009b31m';
    expect(printable(caller)).to.equal('mallory\ufffd[2J\ufffd]0;owned\ufffd\ufffdroot\ufffd31m');
    expect(printable('a\tb\nc — ünïcødé ✓')).to.equal('a\tb\nc — ünïcødé ✓');
  });
});

describe('CLI: state, snapshots and clones as an operator reads them', function () {
  it('a drifted standby shows `drifted` in the Lag column and a line saying why it does not campaign', function () {
    const view = identity({
      standbys: [
        standby('a', { state: 'logged-in', priority: 10 }),
        standby('c', { drift: ['c runs service version sha256:1, the leader runs sha256:2'] }),
      ],
    });
    const rows = memberRows(view, NOW);
    expect(rows.find((r) => r[1] === 'c')?.[7]).to.equal('drifted');
    expect(identityNotes(view, NOW)).to.include(
      'msggateway: c DRIFTED, does not campaign: c runs service version sha256:1, the leader runs sha256:2',
    );
  });

  it('snapshots: newest first, with their term, size and whether the copy was consistent', function () {
    const text = renderSnapshots(
      {
        identity: 'msggateway',
        snapshots: [
          { ...SNAPSHOT, object: 'msggateway/42-2', bytes: 3 * 1024 * 1024, quiesced: false },
          SNAPSHOT,
        ],
      },
      Date.parse(SNAPSHOT.takenAt) + 60_000,
    );
    const lines = text.split('\n');
    expect(lines[3]).to.match(/msggateway\/42-2 .* 42 .* 3\.0 MiB \| copied live/);
    expect(lines[4]).to.match(/msggateway\/42-1767225600000 .* 1\.0 KiB \| yes/);
    expect(renderSnapshots({ identity: 'x', snapshots: [] }, NOW)).to.contain('understudy snapshot x');
  });

  it('clones: age, agent, snapshot and drift, with one line per reason', function () {
    const text = renderClones({
      identity: 'msggateway',
      clones: [
        { ...CLONE, ageMs: 90_000, drifted: true, drift: ['c runs spec revision 7, the identity runs 9'] },
      ],
    });
    expect(text).to.match(
      /\| c +\| +1m 30s \| not started \| +7 \| msggateway\/42-1767225600000 \| DRIFTED \|/,
    );
    expect(text).to.contain('c: c runs spec revision 7, the identity runs 9');
    expect(renderClones({ identity: 'x', clones: [] })).to.contain('understudy clone x --to NODE');
  });
});

describe('CLI: status of an identity with a drifted standby', function () {
  it('says under the standbys which one is drifted and why', function () {
    const view = identity({
      standbys: [standby('a', { state: 'logged-in' }), standby('c', { drift: ['c lacks newer state'] })],
    });
    const text = renderIdentityStatus(view, NOW);
    expect(text.split('\n').at(-1)).to.equal('c is DRIFTED and does not campaign: c lacks newer state');
    expect(text).to.match(/\| c +\| .*\| drifted \|/);
  });
});

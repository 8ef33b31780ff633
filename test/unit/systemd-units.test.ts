// The systemd units in deploy/systemd/ as systemd itself reads them (`systemd-analyze verify`:
// it prints what it ignores — a misspelt key, a bad value — and still exits 0, so any output
// fails here), and with what an operator expects of a daemon: a dedicated user, restarted on
// failure, started at boot, hardened.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { REAPER_NICE } from '../../pkg/identity/lifeline.js';
import { RENEWAL_NICE } from '../../pkg/lease/renewal-shared.js';

const UNITS = ['deploy/systemd/understudy-agent.service', 'deploy/systemd/understudy-controller.service'];

/** What systemd says about a unit file (empty: nothing to complain about). */
function verify(path: string): string {
  const run = spawnSync('systemd-analyze', ['verify', path], { encoding: 'utf8' });
  if (run.error) {
    throw new Error(
      `systemd-analyze cannot run (${run.error.message}): install Debian's systemd (scripts/setup does)`,
    );
  }
  return `${run.stdout}${run.stderr}`.trim() + (run.status === 0 ? '' : ` (exit ${run.status})`);
}

/** `Key=value` lines of a unit's section. */
function directives(path: string, section: string): Map<string, string> {
  const out = new Map<string, string>();
  let inside = false;
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (line.startsWith('[')) inside = line.trim() === `[${section}]`;
    else if (inside && /^[A-Za-z]+=/.test(line)) {
      const [key, ...value] = line.split('=');
      out.set(key!, value.join('='));
    }
  }
  return out;
}

describe('systemd units (deploy/systemd/)', () => {
  for (const unit of UNITS) {
    it(`${unit}: systemd reads it without a complaint`, () => {
      expect(verify(unit)).to.equal('');
    });

    it(`${unit}: a dedicated user, restart on failure, started at boot, hardened`, () => {
      const service = directives(unit, 'Service');
      expect(service.get('User')).to.equal('understudy');
      expect(service.get('Restart')).to.equal('on-failure');
      expect(directives(unit, 'Install').get('WantedBy')).to.equal('multi-user.target');
      for (const [key, value] of [
        ['NoNewPrivileges', 'yes'],
        ['ProtectSystem', 'strict'],
        ['ProtectHome', 'yes'],
        ['PrivateTmp', 'yes'],
        ['CapabilityBoundingSet', ''],
      ])
        expect(service.get(key!), key).to.equal(value);
    });
  }

  it("the agent's unit lets the renewal thread and the lifeline's reaper lower their nice level as far as they ask, without a capability", () => {
    // A signed value is a nice level to systemd (an unsigned one a raw rlimit, 20 - level).
    const limit = directives(UNITS[0]!, 'Service').get('LimitNICE') ?? '';
    expect(limit, 'LimitNICE as a signed nice level').to.match(/^[+-]\d+$/);
    expect(Number(limit)).to.be.at.most(Math.min(REAPER_NICE, RENEWAL_NICE));
  });

  it('a misspelt key or a bad value is caught', () => {
    const dir = mkdtempSync(join(tmpdir(), 'understudy-unit-'));
    const bad = join(dir, 'understudy-agent.service');
    writeFileSync(
      bad,
      readFileSync(UNITS[0]!, 'utf8')
        .replace('Restart=on-failure', 'Restart=sometimes')
        .replace('NoNewPrivileges=yes', 'NoNewPrivilege=yes'),
    );
    const said = verify(bad);
    expect(said).to.include('Failed to parse service restart specifier');
    expect(said).to.include("Unknown key 'NoNewPrivilege'");
  });
});

// Who a process service runs as: never root unasked, never a switch an agent cannot make.
import { expect } from 'chai';
import {
  decideRunAs,
  lookupAccount,
  type RunAsFacts,
  type ServiceUserSettings,
} from '../../pkg/identity/run-as.js';

const svc = { name: 'understudy-svc', id: 998, gid: 997, home: '/var/lib/understudy-svc' };
const rootUser = { name: 'root', id: 0, gid: 0, home: '/root' };
const asRoot = { uid: 0, gid: 0 };
const asAgent = { uid: 999, gid: 999 };

describe('service user: decideRunAs', function () {
  // [situation, settings, facts, expected: 'self' | uid/gid | reason pattern]
  const table: Array<[string, ServiceUserSettings, RunAsFacts, 'self' | [number, number] | RegExp]> = [
    [
      'root agent, service.user set: switch to it, its primary group',
      { user: 'understudy-svc', allowRoot: false },
      { agent: asRoot, user: svc },
      [998, 997],
    ],
    [
      'root agent, service.user and group',
      { user: 'understudy-svc', group: 'svcgrp', allowRoot: false },
      { agent: asRoot, user: svc, group: { name: 'svcgrp', id: 1234 } },
      [998, 1234],
    ],
    [
      'root agent, no service.user: refused, saying what to set',
      { allowRoot: false },
      { agent: asRoot },
      /runs as root and service\.user is not set.*Set service\.user .*or set service\.allowRoot: true/,
    ],
    [
      'root agent, no service.user, allowRoot: as root on purpose',
      { allowRoot: true },
      { agent: asRoot },
      'self',
    ],
    [
      'root agent, service.user is root: refused',
      { user: 'root', allowRoot: false },
      { agent: asRoot, user: rootUser },
      /is root \(uid 0, gid 0\)/,
    ],
    [
      'root agent, service.user by number 0: refused',
      { user: '0', allowRoot: false },
      { agent: asRoot, user: rootUser },
      /is root/,
    ],
    [
      'root agent, unprivileged user in group root: refused',
      { user: 'understudy-svc', group: 'root', allowRoot: false },
      { agent: asRoot, user: svc, group: { name: 'root', id: 0 } },
      /gid 0/,
    ],
    [
      'root agent, service.user root with allowRoot',
      { user: 'root', allowRoot: true },
      { agent: asRoot, user: rootUser },
      [0, 0],
    ],
    [
      'service.user that does not exist',
      { user: 'ghost', allowRoot: false },
      { agent: asRoot, user: null },
      /service\.user 'ghost' does not exist on this node: create it \(useradd --system/,
    ],
    [
      'service.group that does not exist',
      { user: 'understudy-svc', group: 'ghosts', allowRoot: false },
      { agent: asRoot, user: svc, group: null },
      /service\.group 'ghosts' does not exist/,
    ],
    ['unprivileged agent, no service.user: as itself', { allowRoot: false }, { agent: asAgent }, 'self'],
    [
      'unprivileged agent, service.user is itself',
      { user: 'understudy', allowRoot: false },
      { agent: asAgent, user: { name: 'understudy', id: 999, gid: 999 } },
      'self',
    ],
    [
      'unprivileged agent asked to switch: refused, saying what to change',
      { user: 'understudy-svc', allowRoot: false },
      { agent: asAgent, user: svc },
      /runs as uid 999 \(not root\) and cannot start processes as anyone else\. Remove service\.user/,
    ],
    [
      'unprivileged agent asked for another group',
      { user: 'understudy', group: 'wheel', allowRoot: false },
      { agent: asAgent, user: { name: 'understudy', id: 999, gid: 999 }, group: { name: 'wheel', id: 10 } },
      /cannot start processes as anyone else/,
    ],
  ];
  for (const [situation, settings, facts, expected] of table) {
    it(situation, function () {
      const d = decideRunAs(settings, facts);
      if (expected === 'self') expect(d).to.deep.equal({ ok: true });
      else if (Array.isArray(expected)) {
        expect(d.ok).to.equal(true);
        expect(d.ok && d.switchTo && [d.switchTo.uid, d.switchTo.gid]).to.deep.equal(expected);
      } else {
        expect(d.ok).to.equal(false);
        expect(!d.ok && d.reason).to.match(expected);
      }
    });
  }

  it('looks accounts up by name and number, and says when there is none', async function () {
    expect(await lookupAccount('passwd', 'root')).to.include({ name: 'root', id: 0, gid: 0 });
    expect(await lookupAccount('passwd', '0')).to.include({ name: 'root', id: 0 });
    expect(await lookupAccount('passwd', 'no-such-user-here')).to.equal(null);
    expect(await lookupAccount('group', 'root')).to.include({ name: 'root', id: 0 });
  });
});

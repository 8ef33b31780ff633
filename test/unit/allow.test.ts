// What a spec may run: the allow-list's pure decision (a table), its entries' validation, and
// where the file system leads a spec's paths (a real temporary tree: symlinks, PATH, `..`).
import { chmod, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import {
  entryProblem,
  mayRun,
  PATH_MAX,
  type Entry,
  type ResolvedAllow,
  type Targets,
} from '../../pkg/identity/allow.js';
import { findCommand, resolveAllow, resolveFile, resolveStateDir } from '../../pkg/identity/allow-resolve.js';
import { ExecPolicy } from '../../pkg/identity/exec-policy.js';
import type { IdentitySpec } from '../../pkg/spec/schema.js';

const LONG = `/opt/${'a'.repeat(PATH_MAX)}`;

/** Entries whose real path is the entry itself (the pure table needs no file system). */
const plain = (...entries: string[]): Entry[] =>
  entries.map((entry) => ({ entry, real: entry.replace(/\/$/, '') }));

function allow(over: Partial<ResolvedAllow> = {}): ResolvedAllow {
  return {
    unrestricted: false,
    'service.command': plain('/usr/bin/sleep', '/opt/app/bin/'),
    'service.module': plain('/opt/app/handlers/'),
    'credential.path': plain('/etc/understudy/credentials/'),
    'state.dir': plain('/var/lib/understudy/'),
    ...over,
  };
}

const cmd = (given: string, real = given): Targets => ({ 'service.command': { given, real } });

describe('allow-list: mayRun', function () {
  // [situation, targets, allow, expected: true | [field, reason pattern]]
  const table: Array<[string, Targets, ResolvedAllow, true | [string, RegExp]]> = [
    ['an exact executable', cmd('/usr/bin/sleep'), allow(), true],
    ['a bare name found on PATH, same real file', cmd('sleep', '/usr/bin/sleep'), allow(), true],
    ['a file directly in an allowed directory', cmd('/opt/app/bin/server'), allow(), true],
    [
      'a file in a subdirectory of an allowed directory',
      cmd('/opt/app/bin/tools/x'),
      allow(),
      ['service.command', /'\/opt\/app\/bin\/tools\/x' is not in allow\.commands/],
    ],
    [
      '`..` out of an allowed directory (its real path decides)',
      cmd('/opt/app/bin/../../../bin/sh', '/usr/bin/sh'),
      allow(),
      ['service.command', /\(\/usr\/bin\/sh\) is not in allow\.commands/],
    ],
    [
      'a sibling directory sharing a prefix',
      cmd('/opt/app/binary/x'),
      allow(),
      ['service.command', /not in allow\.commands/],
    ],
    [
      'the allowed directory itself',
      cmd('/opt/app/bin'),
      allow(),
      ['service.command', /not in allow\.commands/],
    ],
    [
      'a name that is a glob',
      {
        'service.command': {
          given: '*',
          problem: "is not an executable file in the service's PATH (/usr/bin)",
        },
      },
      allow(),
      ['service.command', /^service\.command '\*' is not an executable file/],
    ],
    [
      "a NATS wildcard '>'",
      {
        'service.command': {
          given: '>',
          problem: "is not an executable file in the service's PATH (/usr/bin)",
        },
      },
      allow(),
      ['service.command', /'>' is not an executable/],
    ],
    [
      "'..' as a command",
      { 'service.command': { given: '..', problem: 'is not a command' } },
      allow(),
      ['service.command', /'\.\.' is not a command/],
    ],
    [
      'a very long path (cut in the reason)',
      { 'service.command': { given: LONG, problem: `is longer than ${PATH_MAX} characters` } },
      allow(),
      ['service.command', /^service\.command '\/opt\/a{195}…' is longer than 4096/],
    ],
    [
      'an empty list allows nothing, and says where to add it',
      cmd('/usr/bin/sleep'),
      allow({ 'service.command': [] }),
      ['service.command', /allow\.commands in this agent's config is empty\. Add \/usr\/bin\/sleep/],
    ],
    [
      'an entry that does not exist here allows nothing',
      cmd('/usr/bin/sleep'),
      allow({ 'service.command': [{ entry: '/usr/bin/sleep', real: undefined }] }),
      ['service.command', /not in allow\.commands/],
    ],
    ['unrestricted allows anything', cmd('/tmp/evil'), allow({ unrestricted: true }), true],
    [
      'a module outside allow.modules',
      { 'service.module': { given: '/tmp/x.js', real: '/tmp/x.js' } },
      allow(),
      ['service.module', /allow\.modules/],
    ],
    [
      'a credential path outside allow.credentialPaths, named before the command',
      {
        'service.command': { given: '/tmp/evil', real: '/tmp/evil' },
        'credential.path': { given: '/etc/shadow', real: '/etc/shadow' },
      },
      allow(),
      ['credential.path', /'\/etc\/shadow' is not in allow\.credentialPaths/],
    ],
    [
      'an allowed credential and command',
      {
        'service.command': { given: '/usr/bin/sleep', real: '/usr/bin/sleep' },
        'credential.path': {
          given: '/etc/understudy/credentials/db',
          real: '/etc/understudy/credentials/db',
        },
      },
      allow(),
      true,
    ],
    ['a spec naming nothing to check', {}, allow({ 'service.command': [] }), true],
    [
      'control characters in a name are not echoed',
      { 'service.command': { given: 'a\u001b[2Jb', problem: 'is not a command' } },
      allow(),
      ['service.command', /'a\uFFFD\[2Jb'/],
    ],
  ];
  for (const [situation, targets, list, expected] of table) {
    it(situation, function () {
      const verdict = mayRun(targets, list);
      if (expected === true) {
        expect(verdict).to.deep.equal({ ok: true });
        return;
      }
      expect(verdict.ok, JSON.stringify(verdict)).to.equal(false);
      if (verdict.ok) return;
      expect(verdict.field).to.equal(expected[0]);
      expect(verdict.reason).to.match(expected[1]);
    });
  }
});

describe('allow-list: entries in the agent config', function () {
  const table: Array<[string, RegExp | undefined]> = [
    ['/usr/local/bin/myservice', undefined],
    ['/opt/app/bin/', undefined],
    ['/', undefined],
    ['*', /not an absolute path/],
    ['>', /not an absolute path/],
    ['..', /not an absolute path/],
    ['bin/sh', /not an absolute path/],
    ['/usr/bin/*', /glob character/],
    ['/opt/{a,b}/', /glob character/],
    ['/opt/app/../bin/sh', /not a plain path/],
    ['/opt/./bin', /not a plain path/],
    ['/opt//bin', /not a plain path/],
    ['/opt/bin\0x', /NUL/],
    [LONG, /limit is 4096/],
  ];
  for (const [entry, problem] of table) {
    it(`${JSON.stringify(entry.slice(0, 40))} ${problem ? 'is refused' : 'is accepted'}`, function () {
      const found = entryProblem(entry);
      if (problem) expect(found).to.match(problem);
      else expect(found).to.equal(undefined);
    });
  }
});

describe('allow-list: where a spec leads on this node', function () {
  let root: string;
  before(async function () {
    root = await mkdtemp(join(tmpdir(), 'understudy-allow-'));
    await mkdir(join(root, 'allowed'));
    await mkdir(join(root, 'evil'));
    await writeFile(join(root, 'allowed', 'svc'), '#!/bin/sh\n');
    await chmod(join(root, 'allowed', 'svc'), 0o755);
    await writeFile(join(root, 'evil', 'svc'), '#!/bin/sh\n');
    await chmod(join(root, 'evil', 'svc'), 0o755);
    await writeFile(join(root, 'allowed', 'data'), 'not executable');
    await symlink(join(root, 'evil', 'svc'), join(root, 'allowed', 'link-out'));
    await symlink(join(root, 'allowed', 'svc'), join(root, 'evil', 'link-in'));
  });
  after(async function () {
    await rm(root, { recursive: true, force: true });
  });

  const verdict = async (argv0: string, path: string, cwd = root) =>
    mayRun(
      { 'service.command': await findCommand(argv0, path, cwd) },
      await resolveAllow({
        commands: [`${root}/allowed/`],
        modules: [],
        credentialPaths: [],
        stateDirs: [],
        unrestricted: false,
      }),
    );

  it('a bare name is found on the PATH the service would get, first match wins', async function () {
    const found = await findCommand('svc', `${root}/evil:${root}/allowed`, root);
    expect(found).to.include({ given: 'svc', real: join(root, 'evil', 'svc') });
    expect((await verdict('svc', `${root}/allowed:${root}/evil`)).ok).to.equal(true);
    expect(
      (await verdict('svc', `${root}/evil:${root}/allowed`)).ok,
      'a spec PATH putting evil first',
    ).to.equal(false);
  });

  it('a symlink inside the allowed directory to a file outside is refused; one from outside in is allowed', async function () {
    expect((await verdict(`${root}/allowed/link-out`, '')).ok).to.equal(false);
    expect((await verdict(`${root}/evil/link-in`, '')).ok).to.equal(true);
  });

  it('`..` in a spec path leads where it leads', async function () {
    const v = await verdict(`${root}/allowed/../evil/svc`, '');
    expect(v.ok).to.equal(false);
    expect(v.ok || v.reason).to.include(`(${root}/evil/svc)`);
    expect(
      (await verdict('../allowed/svc', '', join(root, 'evil'))).ok,
      'relative to the service cwd',
    ).to.equal(true);
  });

  it('a missing, non-executable or directory path is refused with why', async function () {
    expect(await findCommand('nope', `${root}/allowed`, root))
      .to.have.property('problem')
      .that.match(/not an executable file in the service's PATH/);
    expect(await findCommand(`${root}/allowed/data`, '', root))
      .to.have.property('problem')
      .that.match(/not executable/);
    expect(await findCommand(`${root}/allowed`, '', root))
      .to.have.property('problem')
      .that.match(/not a regular file/);
    expect(await findCommand('..', `${root}`, root)).to.have.property('problem', 'is not a command');
    expect(await resolveFile(LONG, root))
      .to.have.property('problem')
      .that.match(/longer than/);
  });

  it('a whole spec: its module and credential file are checked too, and unrestricted lets all pass', async function () {
    await writeFile(join(root, 'allowed', 'handlers.js'), 'export const handlers = {};');
    const policy = (unrestricted = false) =>
      new ExecPolicy({
        allow: {
          commands: [],
          modules: unrestricted ? [] : [`${root}/allowed/`],
          credentialPaths: unrestricted ? [] : [`${root}/allowed/data`],
          stateDirs: [],
          unrestricted,
        },
        service: { allowRoot: true },
      });
    const who = { identity: 'x', node: 'a' };
    const spec = (module: string, credential: string) =>
      ({
        name: 'x',
        service: { driver: 'nats-service', handler: 'h', module },
        credential: { source: 'file', path: credential },
      }) as unknown as IdentitySpec;
    expect(
      await policy().check(spec(`${root}/allowed/handlers.js`, `${root}/allowed/data`), who),
    ).to.deep.equal({
      ok: true,
    });
    const badModule = await policy().check(spec(`${root}/evil/svc`, `${root}/allowed/data`), who);
    expect(badModule).to.include({ ok: false, field: 'service.module' });
    const badCredential = await policy().check(spec(`${root}/allowed/handlers.js`, '/etc/shadow'), who);
    expect(badCredential).to.include({ ok: false, field: 'credential.path' });
    expect(await policy().module(`${root}/allowed/../evil/svc`)).to.include({ ok: false });
    expect(await policy(true).check(spec(`${root}/evil/svc`, '/etc/shadow'), who)).to.deep.equal({
      ok: true,
    });
  });

  it('a state directory: allowed inside a listed directory even before it exists; a symlinked parent leads where it leads', async function () {
    await mkdir(join(root, 'state'));
    await symlink(join(root, 'evil'), join(root, 'state', 'link-out'));
    const allowList = await resolveAllow({
      commands: [],
      modules: [],
      credentialPaths: [],
      stateDirs: [`${root}/state/`],
      unrestricted: false,
    });
    const stateDir = async (path: string) => mayRun({ 'state.dir': await resolveStateDir(path) }, allowList);
    expect(await stateDir(join(root, 'state', 'ratebot'))).to.deep.equal({ ok: true });
    // Directly inside only, as for commands: a deeper directory is another owner's.
    expect(await stateDir(join(root, 'state', 'a', 'b'))).to.include({ ok: false, field: 'state.dir' });
    const viaLink = await stateDir(join(root, 'state', 'link-out', 'x'));
    expect(viaLink).to.include({ ok: false, field: 'state.dir' });
    expect((viaLink as { reason: string }).reason).to.include('allow.stateDirs');
    const file = await stateDir(join(root, 'allowed', 'data'));
    expect((file as { reason: string }).reason).to.include('is not a directory');
  });

  it('a state directory listed exactly is allowed before it exists (the restore makes it)', async function () {
    const exact = await resolveAllow({
      commands: [],
      modules: [],
      credentialPaths: [],
      stateDirs: [`${root}/not-yet/ratebot`],
      unrestricted: false,
    });
    const verdict = mayRun({ 'state.dir': await resolveStateDir(`${root}/not-yet/ratebot`) }, exact);
    expect(verdict).to.deep.equal({ ok: true });
  });
});

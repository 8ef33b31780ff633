// The CLI finds its cluster like kubectl finds its kubeconfig: --context, then
// $UNDERSTUDY_CONFIG, then ~/.config/understudy/config.yaml, then the local cluster's context
// found from the working directory up; what the operator sets by flag or environment wins.
import { expect } from 'chai';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  applyContext,
  findContext,
  localContextProblem,
  loadContext,
  LOCAL_CONTEXT,
  USER_CONTEXT,
  type CliContextFile,
} from '../../pkg/cli/cli-context.js';
import { CliError, EXIT } from '../../pkg/cli/exit.js';

describe('CLI context: which file', () => {
  const home = '/home/op';
  const repo = '/src/understudy';
  const files = (...paths: string[]) => {
    const set = new Set(paths);
    return (p: string) => set.has(p);
  };
  const local = join(repo, LOCAL_CONTEXT);
  const user = join(home, USER_CONTEXT);
  const all = files('/tmp/flag.yaml', '/tmp/env.yaml', user, local);

  const rows: Array<[string, Parameters<typeof findContext>[0], string | undefined, string | undefined]> = [
    [
      '--context first',
      { flag: '/tmp/flag.yaml', env: { UNDERSTUDY_CONFIG: '/tmp/env.yaml' }, home, cwd: repo, exists: all },
      '/tmp/flag.yaml',
      '--context',
    ],
    [
      'then $UNDERSTUDY_CONFIG',
      { env: { UNDERSTUDY_CONFIG: '/tmp/env.yaml' }, home, cwd: repo, exists: all },
      '/tmp/env.yaml',
      'UNDERSTUDY_CONFIG',
    ],
    ['then the user config', { env: {}, home, cwd: repo, exists: all }, user, 'user config'],
    [
      "then the local cluster's, from a subdirectory up",
      { env: {}, home, cwd: join(repo, 'pkg', 'cli'), exists: files(local) },
      local,
      'local cluster',
    ],
    ['none at all', { env: {}, home, cwd: '/elsewhere', exists: files(local) }, undefined, undefined],
  ];
  for (const [name, lookup, path, how] of rows) {
    it(name, () => {
      const found = findContext(lookup);
      expect(found?.path).to.equal(path);
      expect(found?.how).to.equal(how);
    });
  }

  it("the user config first, saying which local cluster's context it shadows", () => {
    expect(findContext({ env: {}, home, cwd: repo, exists: files(user, local) })).to.deep.equal({
      path: user,
      how: 'user config',
      shadows: local,
    });
  });

  it('a named file that does not exist is an error naming it, not a silent fallback to another cluster', () => {
    const err = (() => {
      try {
        findContext({ env: { UNDERSTUDY_CONFIG: 'prod.yaml' }, home, cwd: '/etc/ops', exists: files(local) });
      } catch (e) {
        return e as CliError;
      }
    })();
    expect(err).to.be.instanceOf(CliError);
    expect(err!.exitCode).to.equal(EXIT.usage);
    expect(err!.message).to.match(/UNDERSTUDY_CONFIG names \/etc\/ops\/prod\.yaml, which does not exist/);
  });
});

describe('CLI context: reading one', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'understudy-ctx-'));
    await mkdir(join(dir, 'run'));
  });

  it('paths in the file are relative to it', async () => {
    const path = join(dir, 'run', 'context.yaml');
    await writeFile(
      path,
      'controller: http://127.0.0.1:8480\ntokenFile: token-operator\nnats: { servers: nats://127.0.0.1:42220, nkeyFile: users/client.nk }\n',
    );
    expect(await loadContext({ path, how: 'local cluster' })).to.deep.equal({
      controller: 'http://127.0.0.1:8480',
      tokenFile: join(dir, 'run', 'token-operator'),
      nats: { servers: 'nats://127.0.0.1:42220', nkeyFile: join(dir, 'run', 'users', 'client.nk') },
    });
  });

  it('a bad field is named, with the file', async () => {
    const path = join(dir, 'bad.yaml');
    await writeFile(path, 'controller: not a url\nnats: { server: x }\n');
    const err = await loadContext({ path, how: '--context' }).catch((e: CliError) => e);
    expect(err).to.be.instanceOf(CliError);
    expect((err as CliError).exitCode).to.equal(EXIT.usage);
    expect((err as CliError).message).to.include(`context ${path}: controller:`);
    expect((err as CliError).message).to.match(/nats: Unrecognized key.*"server"/);
  });
});

describe('CLI context: what it fills in', () => {
  const ctx: CliContextFile = {
    controller: 'http://ctx:8480',
    tokenFile: '/ctx/token',
    nats: { servers: 'nats://ctx:4222', nkeyFile: '/ctx/client.nk' },
  };
  function apply(sources: Record<string, string>, env: NodeJS.ProcessEnv = {}) {
    const set: Record<string, string> = {};
    const applied = applyContext(ctx, {
      sourceOf: (o) => sources[o],
      set: (o, v) => (set[o] = v),
      env,
    });
    return { applied, set };
  }

  it('fills what the operator left at its default, and nothing they set', () => {
    const { set } = apply({ nats: 'cli' });
    expect(set).to.deep.equal({ controller: 'http://ctx:8480', tokenFile: '/ctx/token' });
  });

  it("the file's token goes only to the file's controller, its NATS seed only to its NATS servers", () => {
    const { set } = apply({ controller: 'cli', nats: 'default' });
    expect(set).to.deep.equal({ nats: 'nats://ctx:4222', natsNkeyFile: '/ctx/client.nk' });
    expect(apply({ controller: 'env' }).set).to.not.have.property('tokenFile');
    expect(apply({ nats: 'env' }).set).to.not.have.property('natsNkeyFile');
  });

  it('an environment variable wins over the file', () => {
    expect(apply({ controller: 'env' }).set).to.not.have.property('controller');
  });

  it("a token given any way (--token, --token-file, UNDERSTUDY_TOKEN) keeps the context's token file out", () => {
    expect(apply({ token: 'cli' }).set).to.not.have.property('tokenFile');
    expect(apply({ tokenFile: 'cli' }).set).to.not.have.property('tokenFile');
    expect(apply({}, { UNDERSTUDY_TOKEN: 't' }).set).to.not.have.property('tokenFile');
    expect(apply({}).set).to.have.property('tokenFile', '/ctx/token');
  });
});

describe('CLI context: one found above the working directory must be trustworthy', () => {
  const path = '/src/understudy/.understudy/run/context.yaml';
  const mine = { uid: 1000, mode: 0o100600 };
  const ok: CliContextFile = {
    controller: 'http://127.0.0.1:8480',
    tokenFile: '/src/understudy/.understudy/run/token-operator',
    nats: {
      servers: 'nats://127.0.0.1:42220',
      nkeyFile: '/src/understudy/.understudy/run/nats-users/client.nk',
    },
  };
  const rows: Array<[string, CliContextFile, { uid: number; mode: number }, RegExp | undefined]> = [
    ['the one npm start leaves: used', ok, mine, undefined],
    ["someone else's (a shared /tmp)", ok, { uid: 0, mode: 0o100600 }, /not yours \(owner uid 0\)/],
    ['writable by others', ok, { uid: 1000, mode: 0o100666 }, /others may write it/],
    [
      'a controller on another host',
      { ...ok, controller: 'http://attacker.example' },
      mine,
      /not on this host/,
    ],
    [
      'a token file elsewhere',
      { ...ok, tokenFile: '/etc/hostname' },
      mine,
      /tokenFile \/etc\/hostname is outside/,
    ],
  ];
  for (const [name, ctx, stat, problem] of rows) {
    it(name, () => {
      const said = localContextProblem(path, ctx, stat, 1000);
      if (problem) expect(said).to.match(problem);
      else expect(said).to.equal(undefined);
    });
  }
});

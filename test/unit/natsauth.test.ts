// The NATS permission table (pkg/natsauth): who may publish and subscribe to what, the
// nats-server config rendered from it (validated by nats-server itself when it is installed),
// and the role users' seed files.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CREDENTIAL_QUEUE, credentialSubject } from '../../pkg/credentials/protocol.js';
import { REPLAY_BUCKET as CODE_REPLAY_BUCKET } from '../../pkg/identity/replay.js';
import { INBOX_CONSUMER, inboxStream, subjects } from '../../pkg/identity/wire.js';
import { generateCallerKey } from '../../pkg/keys/index.js';
import { SNAPSHOT_BUCKET as CODE_SNAPSHOT_BUCKET } from '../../pkg/snapshot/store.js';
import { repoRoot } from '../support/paths.js';
import {
  authUsers,
  covers,
  ensureUserSeed,
  parseUserSpec,
  permits,
  provisionUsers,
  REPLAY_BUCKET,
  readUserSeed,
  renderAuthorization,
  renderTable,
  rolePermissions,
  roleUser,
  SNAPSHOT_BUCKET,
  type Role,
  type RoleScope,
} from '../../pkg/natsauth/index.js';

type Case = [Role, RoleScope, 'publish' | 'subscribe', string, boolean, string?];

describe('NATS authorization (pkg/natsauth)', () => {
  describe('covers: NATS subject wildcards', () => {
    const cases: Array<[string, string, boolean]> = [
      ['understudy.id.*', 'understudy.id.demo', true],
      ['understudy.id.*', 'understudy.id.demo.x', false],
      ['understudy.id.*', 'understudy.id', false],
      ['understudy.id.*', 'understudy.id.*', true],
      ['understudy.id.*', 'understudy.id.>', false],
      ['understudy.id.demo', 'understudy.id.*', false],
      ['_INBOX.>', '_INBOX.abc.1', true],
      ['_INBOX.>', '_INBOX', false],
      ['understudy.>', '>', false],
      ['>', 'anything.at.all', true],
      ['$JS.ACK.UNDERSTUDY_INBOX_demo.leader.>', '$JS.ACK.UNDERSTUDY_INBOX_demo.leader.1.2.3', true],
      ['$O.understudy-snapshots.M.>', '$O.understudy-snapshots.M.ZGVtby8xLTE=', true],
      ['$O.understudy-snapshots.C.>', '$O.understudy-snapshots.M.x', false],
    ];
    for (const [pattern, subject, expected] of cases) {
      it(`${pattern} ${expected ? 'covers' : 'does not cover'} ${subject}`, () => {
        expect(covers(pattern, subject)).to.equal(expected);
      });
    }
  });

  describe('the role table', () => {
    const a = { node: 'a' };
    const aDemo = { node: 'a', identities: ['demo'] };
    // [role, scope, operation, subject, allowed, queue]
    const cases: Case[] = [
      // Only controllers send control requests.
      ['controller', {}, 'publish', 'understudy.agent.b.control', true],
      ['agent', a, 'publish', 'understudy.agent.b.control', false],
      ['agent', a, 'publish', 'understudy.agent.a.control', false],
      ['client', {}, 'publish', 'understudy.agent.b.control', false],
      // Only agents publish heartbeats; a per-node agent only its own.
      ['agent', {}, 'publish', 'understudy.agent.b.heartbeat', true],
      ['agent', a, 'publish', 'understudy.agent.a.heartbeat', true],
      ['agent', a, 'publish', 'understudy.agent.b.heartbeat', false],
      ['controller', {}, 'publish', 'understudy.agent.a.heartbeat', false],
      ['client', {}, 'publish', 'understudy.agent.a.heartbeat', false],
      ['controller', {}, 'subscribe', 'understudy.agent.*.heartbeat', true],
      ['client', {}, 'subscribe', 'understudy.agent.*.heartbeat', false],
      // Only the addressed agent reads control requests.
      ['agent', a, 'subscribe', 'understudy.agent.a.control', true],
      ['agent', a, 'subscribe', 'understudy.agent.b.control', false],
      ['agent', a, 'subscribe', 'understudy.agent.*.control', false],
      ['client', {}, 'subscribe', 'understudy.agent.a.control', false],
      ['controller', {}, 'subscribe', 'understudy.agent.a.control', false],
      // Only agents answer identities; with identities listed, only those.
      ['agent', {}, 'subscribe', 'understudy.id.demo', true],
      ['agent', aDemo, 'subscribe', 'understudy.id.demo', true],
      ['agent', aDemo, 'subscribe', 'understudy.id.billing', false],
      ['agent', aDemo, 'subscribe', 'understudy.id.*', false],
      ['client', {}, 'subscribe', 'understudy.id.demo', false],
      ['client', {}, 'subscribe', 'understudy.id.*', false],
      ['client', {}, 'subscribe', '>', false],
      ['controller', {}, 'subscribe', 'understudy.id.demo', false],
      // Clients send requests (core and durable) and get replies.
      ['client', {}, 'publish', 'understudy.id.demo', true],
      ['client', {}, 'publish', 'understudy.inbox.demo', true],
      ['client', {}, 'subscribe', '_INBOX.Xyz.1', true],
      ['client', {}, 'subscribe', '_INBOX.>', true],
      ['controller', {}, 'publish', 'understudy.id.demo', true],
      ['agent', a, 'publish', 'understudy.id.demo', false],
      // A client answers nobody: no publishing to reply inboxes, no JetStream API.
      ['client', {}, 'publish', '_INBOX.Xyz.1', false],
      ['client', {}, 'publish', '$JS.API.STREAM.DELETE.UNDERSTUDY_INBOX_demo', false],
      ['client', {}, 'publish', '$JS.API.CONSUMER.MSG.NEXT.UNDERSTUDY_INBOX_demo.leader', false],
      ['client', {}, 'subscribe', 'understudy.inbox.demo', false],
      // Credentials: agents ask, controllers answer in their queue group.
      ['agent', {}, 'publish', 'understudy.credential.demo', true],
      ['agent', aDemo, 'publish', 'understudy.credential.billing', false],
      ['client', {}, 'publish', 'understudy.credential.demo', false],
      ['controller', {}, 'subscribe', 'understudy.credential.*', true, 'understudy-controllers'],
      ['controller', {}, 'subscribe', 'understudy.credential.*', false],
      ['agent', {}, 'subscribe', 'understudy.credential.*', false, 'understudy-controllers'],
      ['client', {}, 'subscribe', 'understudy.credential.demo', false],
      // The replay KV: agents only.
      ['agent', a, 'publish', '$KV.UNDERSTUDY_REPLAY.n1', true],
      ['agent', a, 'publish', '$JS.API.STREAM.CREATE.KV_UNDERSTUDY_REPLAY', true],
      ['agent', a, 'publish', '$JS.API.DIRECT.GET.KV_UNDERSTUDY_REPLAY.$KV.UNDERSTUDY_REPLAY.n1', true],
      ['agent', a, 'publish', '$JS.API.STREAM.DELETE.KV_UNDERSTUDY_REPLAY', false],
      ['agent', a, 'publish', '$KV.OTHER.x', false],
      ['client', {}, 'publish', '$KV.UNDERSTUDY_REPLAY.n1', false],
      ['controller', {}, 'publish', '$KV.UNDERSTUDY_REPLAY.n1', false],
      // The durable inbox: the agent runs it, scoped to its identities when listed.
      ['agent', aDemo, 'publish', '$JS.API.STREAM.CREATE.UNDERSTUDY_INBOX_demo', true],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.CREATE.UNDERSTUDY_INBOX_demo.leader', true],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.CREATE.UNDERSTUDY_INBOX_demo.other', false],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.MSG.NEXT.UNDERSTUDY_INBOX_demo.leader', true],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.MSG.NEXT.UNDERSTUDY_INBOX_billing.leader', false],
      ['agent', aDemo, 'publish', '$JS.ACK.UNDERSTUDY_INBOX_demo.leader.1.5.5.1700000000.0', true],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.DELETE.UNDERSTUDY_INBOX_demo', false],
      ['agent', {}, 'publish', '$JS.API.STREAM.INFO.UNDERSTUDY_INBOX_billing', true],
      ['agent', a, 'publish', 'understudy.inbox.demo', false],
      ['agent', a, 'subscribe', 'understudy.inbox.demo', false],
      ['agent', a, 'publish', '_INBOX.Xyz', true],
      ['controller', {}, 'publish', '$JS.API.INFO', false],
      ['controller', {}, 'publish', '_INBOX.Xyz', false],
      // The snapshot object store: agents (any scope) put, get, list and delete archives in
      // that one bucket, exactly through the subjects nats.js 2.29 uses; nobody else touches it.
      ['agent', aDemo, 'publish', '$O.understudy-snapshots.C.Uq3sVhYkZpLh8Bd3gCF0xA', true],
      ['agent', aDemo, 'publish', '$O.understudy-snapshots.M.ZGVtby8xLTE3MDAwMDAwMDA=', true],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.INFO.OBJ_understudy-snapshots', true],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.CREATE.OBJ_understudy-snapshots', true],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.MSG.GET.OBJ_understudy-snapshots', true],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.PURGE.OBJ_understudy-snapshots', true],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.NAMES', true],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.CREATE.OBJ_understudy-snapshots', true],
      ['agent', aDemo, 'publish', '$JS.FC.OBJ_understudy-snapshots.x8Yc2ZaB.KFJM', true],
      ['agent', {}, 'publish', '$O.understudy-snapshots.C.Uq3sVhYkZpLh8Bd3gCF0xA', true],
      // ... and nothing beyond: no other bucket, no deleting or reconfiguring it, no direct get.
      ['agent', aDemo, 'publish', '$O.other-bucket.C.x', false],
      ['agent', aDemo, 'publish', '$O.understudy-snapshots', false],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.DELETE.OBJ_understudy-snapshots', false],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.UPDATE.OBJ_understudy-snapshots', false],
      ['agent', aDemo, 'publish', '$JS.API.DIRECT.GET.OBJ_understudy-snapshots', false],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.DELETE.OBJ_understudy-snapshots.x', false],
      ['agent', aDemo, 'publish', '$JS.API.CONSUMER.CREATE.OBJ_other-bucket', false],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.PURGE.UNDERSTUDY_INBOX_demo', false],
      ['agent', aDemo, 'publish', '$JS.API.STREAM.PURGE.KV_UNDERSTUDY_REPLAY', false],
      ['agent', aDemo, 'publish', '$JS.FC.UNDERSTUDY_INBOX_demo.leader.KFJM', false],
      ['agent', aDemo, 'subscribe', '$O.understudy-snapshots.C.>', false],
      ['client', {}, 'publish', '$O.understudy-snapshots.C.x', false],
      ['client', {}, 'publish', '$O.understudy-snapshots.M.ZGVtby8xLTE=', false],
      ['client', {}, 'publish', '$JS.API.STREAM.INFO.OBJ_understudy-snapshots', false],
      ['client', {}, 'publish', '$JS.API.STREAM.PURGE.OBJ_understudy-snapshots', false],
      ['client', {}, 'publish', '$JS.API.STREAM.NAMES', false],
      ['client', {}, 'subscribe', '$O.understudy-snapshots.C.>', false],
      ['client', {}, 'subscribe', '$O.>', false],
      ['controller', {}, 'publish', '$O.understudy-snapshots.M.ZGVtby8xLTE=', false],
      ['controller', {}, 'publish', '$JS.API.STREAM.PURGE.OBJ_understudy-snapshots', false],
      ['controller', {}, 'subscribe', '$O.understudy-snapshots.C.>', false],
    ];
    for (const [role, scope, op, subject, allowed, queue] of cases) {
      const who = `${role}${scope.node ? ` of node ${scope.node}` : ''}${scope.identities ? ` for ${scope.identities.join(',')}` : ''}`;
      it(`${who} ${allowed ? 'may' : 'may not'} ${op} ${subject}${queue ? ` (queue ${queue})` : ''}`, () => {
        expect(permits(rolePermissions(role, scope), op, subject, queue)).to.equal(allowed);
      });
    }

    it('speaks of the subjects, stream, consumer, queue and bucket the code uses', () => {
      const agent = rolePermissions('agent', { node: 'n1', identities: ['billing'] });
      const controller = rolePermissions('controller');
      const client = rolePermissions('client');
      expect(REPLAY_BUCKET).to.equal(CODE_REPLAY_BUCKET);
      expect(SNAPSHOT_BUCKET).to.equal(CODE_SNAPSHOT_BUCKET);
      expect(permits(agent, 'publish', `$O.${CODE_SNAPSHOT_BUCKET}.C.nuid`)).to.equal(true);
      expect(permits(agent, 'publish', `$JS.API.STREAM.CREATE.OBJ_${CODE_SNAPSHOT_BUCKET}`)).to.equal(true);
      expect(permits(agent, 'publish', subjects.heartbeat('n1'))).to.equal(true);
      expect(permits(agent, 'subscribe', subjects.control('n1'))).to.equal(true);
      expect(permits(agent, 'subscribe', subjects.identity('billing'))).to.equal(true);
      expect(permits(agent, 'publish', credentialSubject('billing'))).to.equal(true);
      const next = `$JS.API.CONSUMER.MSG.NEXT.${inboxStream('billing')}.${INBOX_CONSUMER}`;
      expect(permits(agent, 'publish', next)).to.equal(true);
      expect(permits(agent, 'publish', `$KV.${CODE_REPLAY_BUCKET}.k`)).to.equal(true);
      expect(permits(controller, 'publish', subjects.control('n1'))).to.equal(true);
      expect(permits(controller, 'subscribe', subjects.heartbeats())).to.equal(true);
      expect(permits(controller, 'subscribe', credentialSubject('billing'), CREDENTIAL_QUEUE)).to.equal(true);
      expect(permits(client, 'publish', subjects.identity('billing'))).to.equal(true);
      expect(permits(client, 'publish', subjects.inbox('billing'))).to.equal(true);
    });

    it('answers requests (allow_responses) as agent and controller, never as client', () => {
      expect(rolePermissions('agent').responses).to.not.equal(undefined);
      expect(rolePermissions('controller').responses).to.not.equal(undefined);
      expect(rolePermissions('client').responses).to.equal(undefined);
    });

    it('denies every role but agents the object stores explicitly, so no future allow opens them', () => {
      for (const role of ['controller', 'client'] as const) {
        const p = rolePermissions(role);
        expect(
          p.publish.deny.map((r) => r.subject),
          `${role} publish`,
        ).to.include('$O.>');
        expect(
          p.subscribe.deny.map((r) => r.subject),
          `${role} subscribe`,
        ).to.include('$O.>');
      }
    });

    it('scopes every object store entry of the agent to the snapshot bucket and its stream', () => {
      const stream = `OBJ_${SNAPSHOT_BUCKET}`;
      const entries = rolePermissions('agent', { node: 'a', identities: ['demo'] })
        .publish.allow.map((r) => r.subject)
        .filter((s) => s.startsWith('$O.') || s.includes('OBJ_'));
      expect(entries).to.have.members([
        `$O.${SNAPSHOT_BUCKET}.C.>`,
        `$O.${SNAPSHOT_BUCKET}.M.>`,
        `$JS.API.STREAM.INFO.${stream}`,
        `$JS.API.STREAM.CREATE.${stream}`,
        `$JS.API.STREAM.MSG.GET.${stream}`,
        `$JS.API.STREAM.PURGE.${stream}`,
        `$JS.API.CONSUMER.CREATE.${stream}`,
        `$JS.FC.${stream}.>`,
      ]);
    });

    it('gives every entry a reason', () => {
      for (const role of ['controller', 'agent', 'client'] as const) {
        const p = rolePermissions(role);
        for (const r of [...p.publish.allow, ...p.publish.deny, ...p.subscribe.allow, ...p.subscribe.deny]) {
          expect(r.why, `${role}: ${r.subject}`).to.match(/\w{3,}/);
        }
      }
    });

    const refusals: Array<[Role, RoleScope, RegExp]> = [
      ['client', { node: 'a' }, /only agent users are scoped.*role client/],
      ['controller', { identities: ['demo'] }, /only agent users are scoped.*role controller/],
      ['agent', { node: 'a.b' }, /node: 'a\.b' must be 1-63 lowercase/],
      ['agent', { node: '*' }, /node: '\*' must be/],
      ['agent', { node: '>' }, /node: '>' must be/],
      ['agent', { identities: [] }, /identities: list at least one/],
      ['agent', { identities: ['..'] }, /identities: '\.\.' must be/],
      ['agent', { identities: ['x'.repeat(64)] }, /must be 1-63/],
    ];
    for (const [role, scope, error] of refusals) {
      it(`refuses ${role} scoped ${JSON.stringify(scope)}`, () => {
        expect(() => rolePermissions(role, scope)).to.throw(error);
      });
    }
  });

  describe('renderAuthorization', () => {
    const controller = generateCallerKey().publicKey;
    const agentA = generateCallerKey().publicKey;
    const client = generateCallerKey().publicKey;
    const users = [
      roleUser('controller', 'controller', controller),
      roleUser('agent-a', 'agent', agentA, { node: 'a', identities: ['demo'] }),
      roleUser('client', 'client', client),
    ];
    const text = renderAuthorization(users);
    const block = (key: string) => {
      const start = text.indexOf(key);
      const next = text.indexOf('nkey:', start + key.length);
      return text.slice(start, next < 0 ? undefined : next);
    };

    it('lists each user by its public key inside authorization { users = [...] }', () => {
      expect(text).to.match(/^authorization \{\n {2}users = \[\n/m);
      for (const key of [controller, agentA, client]) expect(text).to.include(`nkey: "${key}"`);
    });

    it('writes each subject quoted, with its reason as a comment above it', () => {
      expect(block(agentA)).to.include(
        '# its own heartbeats (pkg/agent/agent.ts)\n            "understudy.agent.a.heartbeat"',
      );
      expect(block(agentA)).to.include('"$JS.API.CONSUMER.MSG.NEXT.UNDERSTUDY_INBOX_demo.leader"');
      expect(block(controller)).to.include('"understudy.credential.* understudy-controllers"');
    });

    it('grants allow_responses to the controller and agents, not to clients', () => {
      expect(block(controller)).to.include('allow_responses: true');
      expect(block(agentA)).to.include('allow_responses: true');
      expect(block(client)).to.not.include('allow_responses');
    });

    const seed = generateCallerKey().seed;
    const bad: Array<[string, () => string, RegExp]> = [
      ['an empty user list', () => renderAuthorization([]), /users: list at least one user/],
      [
        'a seed instead of a public key',
        () => renderAuthorization([roleUser('c', 'client', seed)]),
        /users\[0\]\.nkey \(c\): not a NATS user public key/,
      ],
      [
        'the same key twice',
        () => renderAuthorization([roleUser('c', 'client', client), roleUser('d', 'controller', client)]),
        /users\[1\] \(d\): the same key or name is given twice/,
      ],
      [
        'a subject with a wildcard inside a token',
        () =>
          renderAuthorization([
            {
              name: 'x',
              nkey: client,
              permissions: {
                publish: { allow: [{ subject: 'a.b*', why: 'w' }], deny: [] },
                subscribe: { allow: [], deny: [] },
              },
            },
          ]),
        /users\[0\]\.publish\.allow\[0\]: 'a\.b\*' is not a NATS subject/,
      ],
      [
        'a subject with > before the end',
        () =>
          renderAuthorization([
            {
              name: 'x',
              nkey: client,
              permissions: {
                publish: { allow: [], deny: [] },
                subscribe: { allow: [], deny: [{ subject: 'a.>.b', why: 'w' }] },
              },
            },
          ]),
        /users\[0\]\.subscribe\.deny\[0\]: 'a\.>\.b' is not a NATS subject/,
      ],
      [
        'a quote that would end the string',
        () => renderAuthorization([{ name: 'x', user: 'a"b', permissions: rolePermissions('client') }]),
        /users\[0\]\.user: 'a"b' holds a quote/,
      ],
      [
        'both a key and a user name',
        () =>
          renderAuthorization([
            { name: 'x', user: 'u', nkey: client, permissions: rolePermissions('client') },
          ]),
        /users\[0\] \(x\): give exactly one of nkey or user/,
      ],
    ];
    for (const [what, render, error] of bad) {
      it(`refuses ${what}, naming the field`, () => {
        expect(render).to.throw(error);
      });
    }

    it('never echoes a seed given by mistake', () => {
      expect(() => renderAuthorization([roleUser('c', 'client', seed)]))
        .to.throw()
        .that.satisfies((e: Error) => !e.message.includes(seed));
    });

    it('is a configuration nats-server accepts (nats-server -t)', async function () {
      const probe = spawnSync('nats-server', ['--version']);
      if (probe.error) this.skip(); // scripts/setup installs it; integration tests run it for real
      const dir = await mkdtemp(join(tmpdir(), 'natsauth-'));
      try {
        const file = join(dir, 'auth.conf');
        await writeFile(file, `${text}jetstream { store_dir: "${dir}/js" }\n`);
        const run = spawnSync('nats-server', ['-c', file, '-t'], { encoding: 'utf8' });
        expect(run.status, run.stderr + run.stdout).to.equal(0);
        expect(run.stderr + run.stdout).to.include('is valid');
        // The check bites: a broken block is refused by the same command.
        await writeFile(file, text.replace('allow_responses: true', 'allow_responses: [[['));
        expect(spawnSync('nats-server', ['-c', file, '-t']).status).to.not.equal(0);
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('role users and their seed files', () => {
    let dir: string;
    beforeEach(async () => (dir = await mkdtemp(join(tmpdir(), 'natsauth-keys-'))));
    afterEach(() => rm(dir, { recursive: true, force: true }));

    it('writes a fresh seed with mode 0600 and keeps it on the next run', async () => {
      const first = await ensureUserSeed(dir, 'agent-a');
      expect((await stat(first.seedFile)).mode & 0o777).to.equal(0o600);
      expect(await readFile(first.seedFile, 'utf8')).to.match(/^SU[A-Z2-7]{56}\n$/);
      const again = await ensureUserSeed(dir, 'agent-a');
      expect(again.publicKey).to.equal(first.publicKey);
    });

    it('refuses to use a seed file others can read, saying how to fix it', async () => {
      const { seedFile } = await ensureUserSeed(dir, 'client');
      await chmod(seedFile, 0o644);
      await expectRejection(
        readUserSeed(seedFile, 'nats.nkeyFile'),
        /nats\.nkeyFile: .* readable by others .* chmod 600/,
      );
      await expectRejection(ensureUserSeed(dir, 'client'), /readable by others/);
    });

    it('refuses a file that holds no user seed, without echoing it', async () => {
      const file = join(dir, 'bad.nk');
      await writeFile(file, 'not-a-seed-secret', { mode: 0o600 });
      const err = await expectRejection(
        readUserSeed(file, 'nats.nkeyFile'),
        /nats\.nkeyFile: .*not a valid NATS nkey seed/,
      );
      expect(err.message).to.not.include('not-a-seed-secret');
    });

    it('provisions users and renders their server block', async () => {
      const users = await provisionUsers(
        dir,
        ['controller', 'agent:a:demo', 'ops=client'].map(parseUserSpec),
      );
      expect(users.map((u) => u.name)).to.deep.equal(['controller', 'agent-a', 'ops']);
      const text = renderAuthorization(authUsers(users));
      expect(text).to.include('# agent-a (agent of node a, identities demo)');
      expect(text).to.include('"understudy.agent.a.heartbeat"');
    });

    const specs: Array<[string, object | RegExp]> = [
      ['controller', { name: 'controller', role: 'controller' }],
      ['agent', { name: 'agent', role: 'agent' }],
      ['agent:a', { name: 'agent-a', role: 'agent', node: 'a' }],
      [
        'agent:a:demo,billing',
        { name: 'agent-a', role: 'agent', node: 'a', identities: ['demo', 'billing'] },
      ],
      ['ops=client', { name: 'ops', role: 'client' }],
      ['root', /ROLE one of controller, agent, client/],
      ['client:a', /only agent users take a node/],
      ['agent:A', /node: 'A' must be/],
      ['agent:a:*', /identities: '\*' must be/],
    ];
    for (const [text, expected] of specs) {
      it(`parses '${text}'`, () => {
        if (expected instanceof RegExp) expect(() => parseUserSpec(text)).to.throw(expected);
        else expect(parseUserSpec(text)).to.deep.equal(expected);
      });
    }

    it('refuses two users of the same name', async () => {
      await expectRejection(
        provisionUsers(dir, [parseUserSpec('client'), parseUserSpec('client')]),
        /user client is listed twice/,
      );
    });
  });
});

describe('NATS authorization: the shipped docs and examples', () => {
  it('docs/nats-authorization.md shows the permission table as pkg/natsauth has it', async () => {
    const doc = await readFile(join(repoRoot, 'docs/nats-authorization.md'), 'utf8');
    const shown = /<!-- permission-table:begin -->\n([\s\S]*?)\n<!-- permission-table:end -->/.exec(doc)?.[1];
    // Compared cell by cell: prettier aligns the columns of the copy in the docs.
    const cells = (table: string | undefined) =>
      (table ?? '')
        .split('\n')
        .filter((line) => line.trim() !== '' && !/^\|[\s|:-]+\|$/.test(line))
        .map((line) => line.split(/(?<!\\)\|/).map((c) => c.trim()));
    expect(cells(shown), 'regenerate it with: node --import tsx pkg/natsauth/main.ts --table').to.deep.equal(
      cells(renderTable()),
    );
  });

  it('deploy/nats is a configuration nats-server accepts, with per-node agent users', async function () {
    const conf = await readFile(join(repoRoot, 'deploy/nats/understudy-auth.conf'), 'utf8');
    expect(conf).to.include('"understudy.agent.node1.heartbeat"');
    expect(conf).to.include('"understudy.agent.node2.control"');
    expect(conf).to.not.match(/SU[A-Z2-7]{56}/); // no seed ever lands in a server config
    if (spawnSync('nats-server', ['--version']).error) this.skip();
    const run = spawnSync('nats-server', ['-c', join(repoRoot, 'deploy/nats/nats-server.conf'), '-t'], {
      encoding: 'utf8',
    });
    expect(run.status, run.stderr + run.stdout).to.equal(0);
  });
});

async function expectRejection(p: Promise<unknown>, pattern: RegExp): Promise<Error> {
  try {
    await p;
  } catch (err) {
    expect((err as Error).message).to.match(pattern);
    return err as Error;
  }
  throw new Error(`expected a rejection matching ${pattern}`);
}

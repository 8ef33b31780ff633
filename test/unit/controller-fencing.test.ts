// The last escalation step: a fence command or a pod delete. Both must report failure
// plainly (an alarm, never a reason to log the target in early).
import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deletePod, runFenceCommand } from '../../pkg/controller/fencing.js';

const target = { node: 'a', identity: 'demo', token: '42' };

describe('controller fencing: the fence command', () => {
  it('passes the node, identity and token in the environment; exit 0 means fenced', async () => {
    const out = await runFenceCommand(
      ['sh', '-c', 'echo "$UNDERSTUDY_FENCE_NODE $UNDERSTUDY_FENCE_IDENTITY $UNDERSTUDY_FENCE_TOKEN"'],
      target,
      5_000,
    );
    expect(out).to.deep.equal({ ok: true, detail: 'fence command exited 0: a demo 42' });
  });

  it("inherits only an allow-listed environment: the controller's own secrets stay out", async () => {
    process.env.UNDERSTUDY_TEST_SECRET = 'hunter2';
    try {
      const out = await runFenceCommand(
        [
          'sh',
          '-c',
          'echo "${UNDERSTUDY_TEST_SECRET:-unset} $UNDERSTUDY_FENCE_NODE"; command -v sh >/dev/null && echo path-ok',
        ],
        target,
        5_000,
      );
      expect(out).to.deep.equal({ ok: true, detail: 'fence command exited 0: unset a\npath-ok' });
    } finally {
      delete process.env.UNDERSTUDY_TEST_SECRET;
    }
  });

  it('reports a failing command with its output', async () => {
    const out = await runFenceCommand(['sh', '-c', 'echo "BMC unreachable" >&2; exit 3'], target, 5_000);
    expect(out.ok).to.equal(false);
    expect(out.detail).to.match(/fence command sh failed: .*BMC unreachable/);
  });

  it('kills a command that overruns its timeout and reports it', async () => {
    const out = await runFenceCommand(['sleep', '5'], target, 100);
    expect(out).to.deep.include({ ok: false });
    expect(out.detail).to.match(/did not finish within 100 ms/);
  });

  it('reports a command that does not exist', async () => {
    const out = await runFenceCommand(['/nonexistent/fence'], target, 1_000);
    expect(out.ok).to.equal(false);
    expect(out.detail).to.match(/\/nonexistent\/fence/);
  });
});

describe('controller fencing: the Kubernetes pod delete', () => {
  let server: Server;
  let dir: string;
  let seen: Array<{ method?: string; url?: string; auth?: string }>;
  let status: number;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'understudy-k8s-'));
    await writeFile(join(dir, 'token'), 'sa-token\n');
    server = createServer((req: IncomingMessage, res) => {
      seen.push({ method: req.method, url: req.url, auth: req.headers.authorization });
      res.statusCode = status;
      res.end('{}');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  });
  beforeEach(() => {
    seen = [];
    status = 200;
  });
  after(async () => {
    await new Promise((r) => server.close(r));
    await rm(dir, { recursive: true, force: true });
  });

  const k8s = () => ({
    namespace: 'prod',
    apiServer: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    tokenFile: join(dir, 'token'),
    caFile: join(dir, 'no-ca'),
    podName: 'understudy-{node}',
  });

  it("deletes the node's pod at once with the service account token", async () => {
    const out = await deletePod(k8s(), target, 2_000);
    expect(out).to.deep.equal({ ok: true, detail: 'pod prod/understudy-a deleted' });
    expect(seen).to.deep.equal([
      {
        method: 'DELETE',
        url: '/api/v1/namespaces/prod/pods/understudy-a?gracePeriodSeconds=0',
        auth: 'Bearer sa-token',
      },
    ]);
  });

  it('counts a pod that is already gone as fenced', async () => {
    status = 404;
    expect((await deletePod(k8s(), target, 2_000)).ok).to.equal(true);
  });

  it('reports a refusal with a hint about RBAC', async () => {
    status = 403;
    const out = await deletePod(k8s(), target, 2_000);
    expect(out.ok).to.equal(false);
    expect(out.detail).to.match(/HTTP 403; check the controller's RBAC/);
  });
});

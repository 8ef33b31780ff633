// The Kubernetes manifests in k8s/ (the base and the demo overlay), built the way kubectl would
// build them and checked for what a cluster accepts without a word and then gets wrong: objects
// against the Kubernetes schemas, selectors that select, ports that exist, references that
// resolve, the fence's RBAC, secrets kept out of the repository, hardened containers, configs
// the programs themselves accept, and who may reach whom. The last part breaks the manifests on
// purpose and shows each check notices.
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, posix } from 'node:path';
import { parseAllDocuments } from 'yaml';
import { parseAgentConfig } from '../../pkg/config/agent.js';
import { parseControllerConfig } from '../../pkg/config/controller.js';
import { parseUserSpec, type RoleUserSpec } from '../../pkg/natsauth/keys.js';
import { readSpecFile } from '../../pkg/spec/store.js';
import {
  build,
  containersOf,
  hardeningProblems,
  id,
  ingressAllowed,
  KustomizeError,
  podTemplates,
  rbacProblems,
  referenceProblems,
  REPO,
  resolvePort,
  schemaProblems,
  secretProblems,
  selects,
  unknownFieldProblems,
  type ExternalSecrets,
  type Json,
  type K8sObject,
  type Labels,
  type Peer,
  type PodTemplate,
} from '../support/k8s-manifests.js';

const BUILDS = [
  { name: 'base', dir: 'k8s/base', namespace: 'understudy' },
  { name: 'demo overlay', dir: 'k8s/overlays/demo', namespace: 'understudy-demo' },
];
const README = readFileSync(join(REPO, 'k8s/README.md'), 'utf8');
/** The address a pod's status.podIP stands for when its environment is worked out. */
const POD_IP = '10.244.0.7';

// ---- what the README has the operator run ------------------------------------------------

/** The README's shell commands, continuation lines joined. */
function readmeCommands(): string[] {
  return README.replace(/\\\n\s*/g, ' ').split('\n');
}

/** Secrets the README's `kubectl create secret generic` commands make, with their keys. */
function externalSecrets(): ExternalSecrets {
  const secrets: ExternalSecrets = new Map();
  for (const line of readmeCommands()) {
    const m = /create secret generic (\S+)/.exec(line);
    if (!m) continue;
    const keys = [...line.matchAll(/--from-file=(\S+)/g)].map(([, arg]) => {
      const unquoted = arg!.replaceAll('"', '');
      return unquoted.includes('=') ? unquoted.slice(0, unquoted.indexOf('=')) : basename(unquoted);
    });
    secrets.set(m[1]!, new Set(keys));
  }
  return secrets;
}

/** The NATS users of the README's pkg/natsauth/main.ts command, as that program reads them. */
function readmeNatsUsers(): RoleUserSpec[] {
  const line = readmeCommands().find((l) =>
    l.trimStart().startsWith('node --import tsx pkg/natsauth/main.ts'),
  );
  if (!line) throw new Error('k8s/README.md has no pkg/natsauth/main.ts command');
  const words = line.trim().split(/\s+/);
  const args = words.slice(words.indexOf('pkg/natsauth/main.ts') + 1);
  const users: RoleUserSpec[] = [];
  for (let i = 0; i < args.length; i++) {
    if (args[i]!.startsWith('--')) i++;
    else users.push(parseUserSpec(args[i]!));
  }
  return users;
}

// ---- pods, files and environments --------------------------------------------------------

const ofComponent = (objects: K8sObject[], component: string) =>
  podTemplates(objects).filter((t) => t.labels['app.kubernetes.io/component'] === component);

function the(objects: K8sObject[], kind: string, name: string): K8sObject {
  const found = objects.find((o) => o.kind === kind && o.metadata.name === name);
  if (!found) throw new Error(`no ${kind}/${name} in the build`);
  return found;
}

const mainContainer = (t: PodTemplate) => (t.spec.containers as Json[])[0]!;
const initContainer = (t: PodTemplate) => ((t.spec.initContainers as Json[] | undefined) ?? [])[0];

/** A container's environment in pod `podName`, as the kubelet makes it. */
function podEnv(t: PodTemplate, container: Json, podName: string): Record<string, string> {
  const env: Record<string, string> = {};
  const fields: Record<string, string> = {
    'metadata.name': podName,
    'metadata.namespace': t.owner.metadata.namespace ?? 'default',
    'status.podIP': POD_IP,
  };
  for (const e of (container.env as Json[] | undefined) ?? []) {
    const name = String(e.name);
    if (typeof e.value === 'string')
      env[name] = e.value.replace(/\$\((\w+)\)/g, (m, v: string) => env[v] ?? m);
    else {
      const field = (e.valueFrom as Json | undefined)?.fieldRef as Json | undefined;
      const value = field && fields[String(field.fieldPath)];
      if (value === undefined)
        throw new Error(`${id(t.owner)}: env ${name}: a source this test cannot stand in for`);
      env[name] = value;
    }
  }
  return env;
}

/**
 * What a path inside a container is: the volume mounted there, whether the container may write
 * it, and the ConfigMaps or Secrets (with the key) it may come from, projections included.
 */
function fileIn(t: PodTemplate, container: Json, file: string) {
  for (const m of (container.volumeMounts as Json[] | undefined) ?? []) {
    const dir = String(m.mountPath);
    if (!file.startsWith(`${dir}/`)) continue;
    const relative = file.slice(dir.length + 1);
    const volume = ((t.spec.volumes as Json[] | undefined) ?? []).find((v) => v.name === m.name) ?? {};
    const projected = ((volume.projected as Json | undefined)?.sources as Json[] | undefined) ?? [];
    const sources = [volume, ...projected].flatMap((source) => {
      const ref = (source.configMap ?? source.secret) as Json | undefined;
      if (!ref) return [];
      const item = ((ref.items as Json[] | undefined) ?? []).find((i) => i.path === relative);
      const name = String(ref.name ?? ref.secretName);
      const key = String(item?.key ?? relative);
      return [source.configMap ? { configMap: name, key } : { secret: name, key }];
    });
    return { mount: String(m.name), volume, sources, readOnly: m.readOnly === true };
  }
  return undefined;
}

/** The text of a file a container reads from a ConfigMap. */
function configMapFile(objects: K8sObject[], t: PodTemplate, container: Json, file: string): string {
  for (const source of fileIn(t, container, file)?.sources ?? []) {
    if (source.configMap === undefined) continue;
    const text = (the(objects, 'ConfigMap', source.configMap).data as Labels)[source.key];
    if (text !== undefined) return text;
  }
  throw new Error(`${id(t.owner)}: ${file} comes from no ConfigMap`);
}

const argAfter = (args: unknown, flag: string) => {
  const list = args as string[];
  return list[list.indexOf(flag) + 1]!;
};

/** Each agent pod's config as the agent parses it: the ConfigMap's file and the pod's environment. */
function agentConfigs(objects: K8sObject[]) {
  return ofComponent(objects, 'agent').flatMap((t) => {
    const c = mainContainer(t);
    const file = argAfter(c.args, '--config');
    const text = configMapFile(objects, t, c, file);
    return t.podNames.map((pod) => ({ t, c, pod, config: parseAgentConfig(text, file, podEnv(t, c, pod)) }));
  });
}

function controllerConfigs(objects: K8sObject[]) {
  return ofComponent(objects, 'controller').flatMap((t) => {
    const c = mainContainer(t);
    const file = argAfter(c.args, '--config');
    const text = configMapFile(objects, t, c, file);
    return t.podNames.map((pod) => ({
      t,
      c,
      pod,
      config: parseControllerConfig(text, file, podEnv(t, c, pod)),
    }));
  });
}

/** The URLs of every pod of a StatefulSet through its headless Service, on a named port. */
function memberUrls(objects: K8sObject[], component: string, scheme: string, portName: string): string[] {
  const [t] = ofComponent(objects, component);
  const service = String((t!.owner.spec as Json).serviceName);
  return t!.podNames.map((pod) => `${scheme}://${pod}.${service}:${resolvePort(t!.spec, portName)}`);
}

const portOf = (hostPort: string) => Number(hostPort.slice(hostPort.lastIndexOf(':') + 1));

/** The seed file a config names is the one its init container writes, in memory, for this container only. */
function expectSeedCopiedFor(t: PodTemplate, c: Json, nkeyFile: string) {
  const at = fileIn(t, c, nkeyFile);
  expect(at?.volume.emptyDir, `${id(t.owner)}: ${nkeyFile} on an emptyDir`).to.deep.include({
    medium: 'Memory',
  });
  expect(String(((initContainer(t)?.command as string[] | undefined) ?? []).join(' '))).to.include(
    `install -m 0600 "$seed" ${nkeyFile}`,
  );
  expect(((c.volumeMounts as Json[]) ?? []).map((m) => m.name)).not.to.include('nats-seeds');
}

// ---- the checks, run on both builds --------------------------------------------------------

const built = new Map<string, K8sObject[]>();
/** A build, made once; each test gets its own copy to read or break. */
function objectsOf(dir: string): K8sObject[] {
  let objects = built.get(dir);
  if (!objects) built.set(dir, (objects = build(dir).map((m) => m.object)));
  return structuredClone(objects);
}

describe('k8s manifests', () => {
  for (const b of BUILDS) {
    describe(`${b.name} (${b.dir})`, () => {
      it('every object is of a kind the cluster serves, and valid by its Kubernetes schema (kubernetes-models)', () => {
        const objects = objectsOf(b.dir);
        expect(objects.length).to.be.greaterThan(20);
        expect(schemaProblems(objects)).to.deep.equal([]);
      });

      it('no object has a field the API server does not know (a misspelt probe would be no probe)', () => {
        expect(unknownFieldProblems(objectsOf(b.dir))).to.deep.equal([]);
      });

      it(`every namespaced object lands in ${b.namespace}`, () => {
        for (const o of objectsOf(b.dir)) expect(o.metadata.namespace, id(o)).to.equal(b.namespace);
      });

      it('selectors match labels, Service, probe and NetworkPolicy ports exist, every ConfigMap, ServiceAccount and Role named exists, every Secret is one the README creates', () => {
        expect(referenceProblems(objectsOf(b.dir), externalSecrets())).to.deep.equal([]);
      });

      it('no Secret is inlined, and no ConfigMap holds a seed, a key or a token', () => {
        expect(secretProblems(objectsOf(b.dir))).to.deep.equal([]);
      });

      it('every container runs as a non-root uid on a read-only root, without capabilities, with requests, limits and probes', () => {
        expect(hardeningProblems(objectsOf(b.dir))).to.deep.equal([]);
      });

      it('the fence may get and delete exactly the agent pods, by name, in its namespace; only the controllers hold a token', () => {
        const objects = objectsOf(b.dir);
        expect(rbacProblems(objects)).to.deep.equal([]);
        const agentPods = ofComponent(objects, 'agent').flatMap((t) => t.podNames);
        const named = objects
          .filter((o) => o.kind === 'Role')
          .flatMap((o) => (o.rules as Json[]).flatMap((r) => r.resourceNames as string[]));
        expect([...named].sort()).to.deep.equal([...agentPods].sort());

        const [controller, ...others] = ofComponent(objects, 'controller');
        expect(others).to.deep.equal([]);
        for (const o of objects.filter((x) => x.kind === 'RoleBinding'))
          expect(o.subjects, id(o)).to.deep.equal([
            { kind: 'ServiceAccount', name: controller!.spec.serviceAccountName, namespace: b.namespace },
          ]);
        for (const t of podTemplates(objects)) {
          expect(t.spec.automountServiceAccountToken, id(t.owner)).to.equal(t.owner === controller!.owner);
        }
      });

      it('each agent pod parses its config with the agent’s own schema: its node is its pod name, its own NATS seed, its health port', () => {
        const objects = objectsOf(b.dir);
        const secrets = externalSecrets();
        const users = readmeNatsUsers();
        const configs = agentConfigs(objects);
        expect(configs.length).to.be.greaterThan(1);
        for (const { t, c, pod, config } of configs) {
          expect(config.node, pod).to.equal(pod);
          expect(config.etcd.endpoints).to.deep.equal(memberUrls(objects, 'etcd', 'http', 'client'));
          expect(config.nats.servers).to.deep.equal(memberUrls(objects, 'nats', 'nats', 'client'));
          expect(config.health?.listen).to.match(/^0\.0\.0\.0:/);
          expect(portOf(config.health!.listen)).to.equal(resolvePort(t.spec, 'health'));
          const run = fileIn(t, c, `${config.runDir}/x`);
          expect(run?.volume.emptyDir, `${pod}: runDir on an emptyDir`).to.not.equal(undefined);
          expect(run?.readOnly).to.equal(false);
          expectSeedCopiedFor(t, c, config.nats.nkeyFile!);
          // Its init container copies `<pod>.nk`: the README's Secret and NATS user for this very node.
          const secret = String(
            ((t.spec.volumes as Json[]).find((v) => v.name === 'nats-seeds')!.secret as Json).secretName,
          );
          if (b.name === 'demo overlay') {
            expect([...(secrets.get(secret) ?? [])], `Secret ${secret}`).to.include(`${pod}.nk`);
            expect(users, `NATS user for ${pod}`).to.deep.include({
              name: pod,
              role: 'agent',
              node: pod,
              identities: Object.keys(config.identities).sort(),
            });
          }
        }
      });

      it('the agents’ readiness is the leader endpoint of the identity their group hosts', () => {
        for (const { t, c, config } of agentConfigs(objectsOf(b.dir))) {
          const probe = (c.readinessProbe as Json).httpGet as Json;
          const identity = /^\/identities\/([^/]+)\/leader$/.exec(String(probe.path))?.[1];
          expect(Object.keys(config.identities), id(t.owner)).to.include(identity);
          expect(resolvePort(t.spec, probe.port)).to.equal(portOf(config.health!.listen));
          // Liveness is the process alone: an etcd outage must not restart every agent at once.
          expect((c.livenessProbe as Json).httpGet).to.deep.include({ path: '/livez' });
        }
      });

      it('a leader Service selects the pods of both StatefulSets of its group, whose disruption budget keeps the leader', () => {
        const objects = objectsOf(b.dir);
        const leader = the(objects, 'Service', 'demo-leader');
        const group = ofComponent(objects, 'agent');
        expect(group.map((t) => id(t.owner))).to.deep.equal([
          'StatefulSet/agent-demo',
          'StatefulSet/agent-demo-cold',
        ]);
        for (const t of group)
          expect(selects((leader.spec as Json).selector, t.labels), id(t.owner)).to.equal(true);
        const pdb = the(objects, 'PodDisruptionBudget', 'agent-demo').spec as Json;
        expect(pdb).to.deep.include({ minAvailable: 1, unhealthyPodEvictionPolicy: 'IfHealthyBudget' });
        for (const t of group) expect(selects(pdb.selector, t.labels), id(t.owner)).to.equal(true);
      });

      it('the cold standby is a StatefulSet at 0 replicas, its pod template the warm one’s but for its labels and a lower priority', () => {
        const objects = objectsOf(b.dir);
        const warm = the(objects, 'StatefulSet', 'agent-demo');
        const cold = the(objects, 'StatefulSet', 'agent-demo-cold');
        expect((cold.spec as Json).replicas).to.equal(0);
        expect((warm.spec as Json).replicas).to.be.greaterThan(0);
        const comparable = (sts: K8sObject) => {
          const template = structuredClone((sts.spec as Json).template as Json);
          delete ((template.metadata as Json).labels as Labels)['understudy.io/standby'];
          const agent = ((template.spec as Json).containers as Json[])[0]!;
          agent.env = (agent.env as Json[]).filter((e) => e.name !== 'UNDERSTUDY_PRIORITY');
          return template;
        };
        expect(comparable(cold)).to.deep.equal(comparable(warm));
        const [warmPod, coldPod] = [warm, cold].map((o) =>
          agentConfigs(objects).find((a) => a.t.owner === o)!,
        );
        expect(coldPod!.config.priority).to.be.lessThan(warmPod!.config.priority);
      });

      it('the controllers parse their config with the controller’s own schema; the fence targets the agents’ namespace and pod names', () => {
        const objects = objectsOf(b.dir);
        const secrets = externalSecrets();
        const agentPods = ofComponent(objects, 'agent').flatMap((t) => t.podNames);
        const configs = controllerConfigs(objects);
        expect(configs).to.have.length(1);
        for (const { t, c, pod, config } of configs) {
          expect(config.name).to.equal(pod);
          expect((t.owner.spec as Json).replicas).to.equal(2);
          expect(config.etcd.endpoints).to.deep.equal(memberUrls(objects, 'etcd', 'http', 'client'));
          expect(config.nats.servers).to.deep.equal(memberUrls(objects, 'nats', 'nats', 'client'));
          expect(portOf(config.http.listen)).to.equal(resolvePort(t.spec, 'http'));
          expect(config.http.advertiseUrl).to.equal(`http://${POD_IP}:${resolvePort(t.spec, 'http')}`);
          expectSeedCopiedFor(t, c, config.nats.nkeyFile!);
          for (const token of config.auth.tokens) {
            expect(token.token, `${token.name}: inline`).to.equal(undefined);
            const [from] = fileIn(t, c, token.tokenFile!)?.sources ?? [];
            expect(from?.secret, `${token.name}: tokenFile from a Secret`).to.be.a('string');
            expect(
              [...(secrets.get(from!.secret!) ?? [])],
              `${token.name} in Secret ${from!.secret}`,
            ).to.include(from!.key);
          }
          const fence = config.fencing.kubernetes!;
          expect(fence.namespace).to.equal(b.namespace);
          for (const agent of agentPods) expect(fence.podName.replaceAll('{node}', agent)).to.equal(agent);
        }
        expect(readmeNatsUsers()).to.deep.include({ name: 'controller', role: 'controller' });
        expect([...(secrets.get('controller-nats') ?? [])]).to.include('controller.nk');
      });

      it('etcd has three members, each in --initial-cluster; NATS three servers, each a route; its users come from the Secret it includes', () => {
        const objects = objectsOf(b.dir);
        const [etcd] = ofComponent(objects, 'etcd');
        expect(etcd!.podNames).to.have.length(3);
        const peers = memberUrls(objects, 'etcd', 'http', 'peer');
        const args = mainContainer(etcd!).args as string[];
        expect(args).to.include(
          `--initial-cluster=${etcd!.podNames.map((p, i) => `${p}=${peers[i]}`).join(',')}`,
        );
        expect(args).to.include(`--initial-advertise-peer-urls=http://$(POD_NAME).etcd:2380`);

        const [nats] = ofComponent(objects, 'nats');
        expect(nats!.podNames).to.have.length(3);
        const c = mainContainer(nats!);
        const conf = configMapFile(objects, nats!, c, argAfter(c.args, '--config'));
        const routes = /routes: \[([^\]]*)\]/.exec(conf)?.[1]?.trim().split(/\s+/);
        expect(routes).to.deep.equal(memberUrls(objects, 'nats', 'nats', 'cluster'));
        expect(conf).to.match(/^server_name: \$POD_NAME$/m);
        expect(podEnv(nats!, c, 'nats-0')).to.deep.include({ POD_NAME: 'nats-0' });
        expect(conf).to.match(/^jetstream \{\n\s+store_dir: \/data\/jetstream$/m);
        expect(fileIn(nats!, c, '/data/jetstream/x')?.mount).to.equal('data');
        expect(
          ((nats!.owner.spec as Json).volumeClaimTemplates as Json[]).map((v) => (v.metadata as Json).name),
        ).to.include('data');
        const include = /^include \.\/(\S+)$/m.exec(conf)?.[1];
        const beside = `${posix.dirname(argAfter(c.args, '--config'))}/${include}`;
        expect(fileIn(nats!, c, beside)?.sources).to.deep.include({ secret: 'nats-auth', key: include });
        expect([...(externalSecrets().get('nats-auth') ?? [])]).to.include(include);
      });

      it('the understudy containers run the compiled entry points of this repository on understudy:latest; the others are pinned', () => {
        // The final stage's WORKDIR: where the image runs dist/ from.
        const workdir = [
          ...readFileSync(join(REPO, 'Dockerfile'), 'utf8').matchAll(/^WORKDIR (\S+)$/gm),
        ].pop()?.[1];
        expect(workdir).to.equal('/app');
        for (const { owner, container, init } of containersOf(objectsOf(b.dir))) {
          const image = String(container.image);
          if (!image.startsWith('understudy')) {
            expect(image, id(owner)).to.match(/:v?\d+\.\d+\.\d+$/);
            continue;
          }
          expect(image, id(owner)).to.equal('understudy:latest');
          if (init) continue;
          const entry = String((container.args as string[])[0]);
          expect(entry, id(owner)).to.match(/^dist\/cmd\/[a-z]+\/main\.js$/);
          expect(
            existsSync(join(REPO, entry.replace(/^dist\//, '').replace(/\.js$/, '.ts'))),
            entry,
          ).to.equal(true);
        }
      });

      it('NetworkPolicies: each port open to its callers only (the matrix of k8s/README.md)', () => {
        const objects = objectsOf(b.dir);
        const namespace = b.namespace;
        const inNamespace = (labels: Labels): Peer => ({
          labels,
          namespace,
          namespaceLabels: { ns: namespace },
        });
        const components = ['etcd', 'nats', 'controller', 'agent'];
        const peers: Record<string, Peer> = {
          ...Object.fromEntries(components.map((c) => [c, inNamespace(ofComponent(objects, c)[0]!.labels)])),
          'nats-client': inNamespace({ 'understudy.io/nats-client': 'true' }),
          'api-client': inNamespace({ 'understudy.io/api-client': 'true' }),
          'leader-client': inNamespace({ 'understudy.io/leader-client': 'true' }),
          scraper: {
            labels: { 'understudy.io/scraper': 'true' },
            namespace: 'monitoring',
            namespaceLabels: {},
          },
          'other pod': inNamespace({ app: 'other' }),
          'other namespace': { labels: {}, namespace: 'elsewhere', namespaceLabels: {} },
        };
        const allowed: string[] = [];
        for (const target of components) {
          const t = ofComponent(objects, target)[0]!;
          for (const port of (mainContainer(t).ports as Json[]).map((p) => String(p.name))) {
            const from = Object.keys(peers).filter((p) =>
              ingressAllowed(objects, peers[p]!, t, resolvePort(t.spec, port)!),
            );
            allowed.push(`${target} ${port} <- ${from.join(', ')}`);
          }
        }
        expect(allowed).to.deep.equal([
          'etcd client <- etcd, controller, agent',
          'etcd peer <- etcd',
          'etcd metrics <- scraper',
          'nats client <- controller, agent, nats-client',
          'nats cluster <- nats',
          'nats monitor <- scraper',
          'controller http <- api-client, scraper',
          'agent health <- leader-client, scraper',
        ]);
      });
    });
  }

  it('no file under k8s/ holds a Secret, whether a kustomization uses it or not', () => {
    const files = readdirSync(join(REPO, 'k8s'), { recursive: true, encoding: 'utf8' }).filter((f) =>
      /\.ya?ml$/.test(f),
    );
    expect(files.length).to.be.greaterThan(10);
    for (const file of files) {
      const docs = parseAllDocuments(readFileSync(join(REPO, 'k8s', file), 'utf8'), { version: '1.1' });
      const kinds = docs.map((d) => (d.toJS() as { kind?: unknown } | null)?.kind);
      expect(kinds, `k8s/${file}`).not.to.include('Secret');
    }
  });

  describe('demo overlay: the exchange-rate bot of npm start', () => {
    it('two warm agents and a cold standby host demo; its spec parses with the spec reader and runs only what the agents allow', async () => {
      const objects = objectsOf('k8s/overlays/demo');
      expect((the(objects, 'StatefulSet', 'agent-demo').spec as Json).replicas).to.equal(2);
      const dir = mkdtempSync(join(tmpdir(), 'understudy-k8s-'));
      for (const { t, c, config } of agentConfigs(objects)) {
        expect(Object.keys(config.identities)).to.deep.equal(['demo']);
        const file = join(dir, 'specs.yaml');
        writeFileSync(file, configMapFile(objects, t, c, config.bootstrapSpecs!));
        const [spec, ...more] = await readSpecFile(file);
        expect(more).to.deep.equal([]);
        expect(spec!.name).to.equal('demo');
        const service = spec!.service;
        if (service.driver !== 'process') throw new Error('the demo is a process service');
        expect(config.allow.commands).to.include(service.command[0]);
        expect(service.cwd).to.equal('/app');
        expect(
          existsSync(join(REPO, service.command[1]!.replace(/^dist\//, '').replace(/\.js$/, '.ts'))),
        ).to.equal(true);
        const feed = JSON.parse(configMapFile(objects, t, c, argAfter(service.command, '--feed'))) as Json;
        expect(feed).to.include.keys('base', 'asOf', 'rates');
      }
    });

    it('the README turns the cold standby on with kubectl scale, and names every Secret the manifests need', () => {
      expect(README).to.include('kubectl -n understudy-demo scale statefulset agent-demo-cold --replicas=1');
      expect([...externalSecrets().keys()].sort()).to.deep.equal([
        'agent-demo-nats',
        'controller-api-tokens',
        'controller-nats',
        'nats-auth',
      ]);
      // Each agent user's seed file is <name>.nk; the init container copies <pod name>.nk.
      for (const user of readmeNatsUsers().filter((u) => u.role === 'agent'))
        expect(user.name).to.equal(user.node);
    });
  });

  describe('the checks catch what they are for', () => {
    const demo = () => objectsOf('k8s/overlays/demo');
    const problems = (objects: K8sObject[]) => [
      ...schemaProblems(objects),
      ...referenceProblems(objects, externalSecrets()),
      ...rbacProblems(objects),
      ...secretProblems(objects),
      ...hardeningProblems(objects),
    ];

    it('a Service selector that selects no pod, naming the Service and the field', () => {
      const objects = demo();
      ((the(objects, 'Service', 'controller').spec as Json).selector as Labels)[
        'app.kubernetes.io/component'
      ] = 'controler';
      expect(problems(objects)).to.deep.equal([
        'Service/controller: spec.selector {app.kubernetes.io/part-of=understudy, app.kubernetes.io/component=controler} selects no pod template',
      ]);
    });

    it('a Deployment selector that does not match its own pod labels', () => {
      const objects = demo();
      const selector = (the(objects, 'Deployment', 'controller').spec as Json).selector as Json;
      (selector.matchLabels as Labels)['app.kubernetes.io/component'] = 'controllers';
      expect(problems(objects)).to.deep.equal([
        'Deployment/controller: spec.selector.matchLabels {app.kubernetes.io/part-of=understudy, app.kubernetes.io/component=controllers} ' +
          'does not match its own spec.template.metadata.labels {app.kubernetes.io/part-of=understudy, app.kubernetes.io/name=understudy, app.kubernetes.io/component=controller}',
      ]);
    });

    it('a targetPort, a probe port or a NetworkPolicy port the pods do not have', () => {
      const objects = demo();
      ((the(objects, 'Service', 'agent-demo').spec as Json).ports as Json[])[0]!.targetPort = 'healht';
      const etcd = ofComponent(objects, 'etcd')[0]!;
      ((mainContainer(etcd).readinessProbe as Json).httpGet as Json).port = 2382;
      const policy = the(objects, 'NetworkPolicy', 'nats').spec as Json;
      ((policy.ingress as Json[])[1]!.ports as Json[])[0]!.port = 'routes';
      expect(problems(objects)).to.have.members([
        'Service/agent-demo: spec.ports[0].targetPort: healht is no container port of StatefulSet/agent-demo',
        'Service/agent-demo: spec.ports[0].targetPort: healht is no container port of StatefulSet/agent-demo-cold',
        'StatefulSet/etcd: containers[etcd].readinessProbe: port 2382 is not a port of this container',
        'NetworkPolicy/nats: spec.ingress[1].ports[0].port: routes is no port of the pods it selects',
      ]);
    });

    it('a Role that may do more than get and delete the agent pods by name, or a ClusterRole', () => {
      const objects = demo();
      const role = the(objects, 'Role', 'fence-agent-demo');
      const rule = (role.rules as Json[])[0]!;
      rule.verbs = ['get', 'delete', 'create'];
      delete rule.resourceNames;
      objects.push({ ...structuredClone(role), kind: 'ClusterRole', metadata: { name: 'fence-everywhere' } });
      expect(rbacProblems(objects)).to.include.members([
        'Role/fence-agent-demo: rules[0].verbs: ["get","delete","create"]; the fence needs get and delete, nothing more',
        'Role/fence-agent-demo: rules[0].resourceNames: missing; name the agent pods, or the controller may delete any pod',
        'ClusterRole/fence-everywhere: cluster-wide; the fence needs a namespaced Role',
      ]);
    });

    it('an inlined Secret, a seed or a token in a ConfigMap, a Secret the README does not create', () => {
      const objects = demo();
      objects.push({
        apiVersion: 'v1',
        kind: 'Secret',
        metadata: { name: 'controller-nats', namespace: 'understudy-demo' },
        stringData: { 'controller.nk': 'SUAM...' },
      });
      const config = the(objects, 'ConfigMap', 'controller-config').data as Labels;
      config['controller.yaml'] = config['controller.yaml']!.replace(
        'tokenFile: /etc/understudy/api-tokens/viewer',
        'token: correct-horse-battery-staple',
      );
      (the(objects, 'ConfigMap', 'demo-identity').data as Labels).seed = `S${'UA'}${'B'.repeat(55)}`;
      const secrets = externalSecrets();
      secrets.delete('controller-api-tokens');
      expect([...secretProblems(objects), ...referenceProblems(objects, secrets)]).to.have.members([
        'Secret/controller-nats: stringData: Secrets are created by the operator (k8s/README.md), never inlined here',
        'ConfigMap/controller-config: data.controller.yaml: holds an inline token or password; put it in a Secret',
        'ConfigMap/demo-identity: data.seed: holds an nkey seed; put it in a Secret',
        'Deployment/controller: volumes[api-tokens]: Secret controller-api-tokens is neither in the build nor created by a command in k8s/README.md',
      ]);
    });

    it('a kind the cluster does not serve, a misspelt field, a schema violation', () => {
      const objects = demo();
      objects.push({ apiVersion: 'extensions/v1beta1', kind: 'Deployment', metadata: { name: 'old' } });
      const agent = mainContainer(ofComponent(objects, 'agent')[0]!);
      agent.readinesProbe = agent.readinessProbe;
      const nats = mainContainer(ofComponent(objects, 'nats')[0]!);
      (nats.ports as Json[])[0]!.containerPort = '4222';
      expect(schemaProblems(objects)).to.deep.equal([
        'StatefulSet/nats: data/spec/template/spec/containers/0/ports/0/containerPort must be integer',
        'Deployment/old: extensions/v1beta1 Deployment is not a kind this cluster serves (no kubernetes-models class)',
      ]);
      const unknown = unknownFieldProblems(objects.filter((o) => o.metadata.name !== 'old'));
      expect(unknown).to.have.length(2);
      expect(unknown[0]).to.match(
        /^StatefulSet\/agent-demo: "readinesProbe": \{: .*'"readinesProbe"' does not exist/,
      );
      expect(unknown[1]).to.match(
        /^StatefulSet\/nats: .*"containerPort": "4222".*not assignable to type 'number'/,
      );
    });

    it('a container that may run as root, write its root file system or keep capabilities', () => {
      const objects = demo();
      const controller = ofComponent(objects, 'controller')[0]!;
      delete (controller.spec.securityContext as Json).runAsUser;
      const c = mainContainer(controller);
      (c.securityContext as Json).readOnlyRootFilesystem = false;
      (c.securityContext as Json).capabilities = { drop: ['ALL'], add: ['NET_ADMIN'] };
      delete (c.resources as Json).limits;
      expect(hardeningProblems(objects)).to.have.members([
        'Deployment/controller: initContainers[nats-seed].securityContext.runAsUser: give a non-zero uid (runAsNonRoot cannot check a user name)',
        'Deployment/controller: containers[controller].securityContext.runAsUser: give a non-zero uid (runAsNonRoot cannot check a user name)',
        'Deployment/controller: containers[controller].securityContext.readOnlyRootFilesystem: not true',
        'Deployment/controller: containers[controller].securityContext.capabilities.add: none may be added',
        'Deployment/controller: containers[controller].resources.limits.cpu: missing',
        'Deployment/controller: containers[controller].resources.limits.memory: missing',
      ]);
    });

    it('an agent config the agent would refuse fails, naming the field', () => {
      const objects = demo();
      const data = the(objects, 'ConfigMap', 'agent-demo-config').data as Labels;
      data['agent.yaml'] = data['agent.yaml']!.replace(
        'lease: { ttlSeconds: 5 }',
        'lease: { ttlSeconds: 1 }',
      );
      expect(() => agentConfigs(objects)).to.throw(/lease\.ttlSeconds/);
    });

    it('the loader refuses the kustomize features it does not apply, by name', () => {
      const dir = mkdtempSync(join(tmpdir(), 'understudy-kustomize-'));
      const attempt = (kustomization: string, files: Record<string, string> = {}) => {
        const at = mkdtempSync(join(dir, 'k-'));
        writeFileSync(join(at, 'kustomization.yaml'), kustomization);
        for (const [name, text] of Object.entries(files)) {
          mkdirSync(join(at, posix.dirname(name)), { recursive: true });
          writeFileSync(join(at, name), text);
        }
        return () => build(at);
      };
      const service = 'apiVersion: v1\nkind: Service\nmetadata: { name: s }\n';
      expect(attempt('kind: Kustomization\nconfigMapGenerator: []\n')).to.throw(
        KustomizeError,
        /'configMapGenerator' is a kustomize feature/,
      );
      expect(attempt('kind: Kustomization\ncommonLabels: { a: b }\n')).to.throw(
        KustomizeError,
        /'commonLabels'/,
      );
      expect(
        attempt('kind: Kustomization\nlabels: [{ pairs: { a: b }, includeSelectors: true }]\n'),
      ).to.throw(KustomizeError, /includeSelectors/);
      expect(
        attempt(
          'kind: Kustomization\nresources: [s.yaml]\npatches: [{ path: p.yaml, target: { kind: Service } }]\n',
          {
            's.yaml': service,
            'p.yaml': service,
          },
        ),
      ).to.throw(KustomizeError, /only \{ path: FILE \}/);
      expect(
        attempt('kind: Kustomization\nresources: [s.yaml]\npatches: [{ path: p.yaml }]\n', {
          's.yaml': service,
          'p.yaml': `${service}spec: { $patch: replace }\n`,
        }),
      ).to.throw(KustomizeError, /the directive \$patch is not supported/);
      expect(
        attempt('kind: Kustomization\nresources: [s.yaml]\npatches: [{ path: p.yaml }]\n', {
          's.yaml': service,
          'p.yaml': service.replace('name: s', 'name: t'),
        }),
      ).to.throw(KustomizeError, /Service\/t, which the resources hold 0 times/);
    });
  });

  it('the loader builds what kubectl kustomize builds (when a kubectl with kustomize v5 is installed)', function () {
    const version = spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' });
    const kustomize = /Kustomize Version: v(\d+)/.exec(version.stdout ?? '')?.[1];
    if (version.error || Number(kustomize ?? 0) < 5) return this.skip();
    this.timeout(30_000);
    const key = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;
    for (const b of BUILDS) {
      const run = spawnSync('kubectl', ['kustomize', join(REPO, b.dir)], { encoding: 'utf8' });
      expect(run.status, run.stderr).to.equal(0);
      const theirs = parseAllDocuments(run.stdout, { version: '1.1' }).map((d) => d.toJS() as K8sObject);
      const ours = objectsOf(b.dir);
      expect(ours.map(key).sort(), b.dir).to.deep.equal(theirs.map(key).sort());
      for (const o of ours)
        expect(o, `${b.dir}: ${key(o)}`).to.deep.equal(theirs.find((t) => key(t) === key(o)));
    }
  });
});

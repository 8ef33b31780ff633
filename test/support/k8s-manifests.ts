// The Kubernetes manifests under k8s/ as a cluster would receive them, without kubectl: a small
// kustomize (resources, namespace, labels, images, strategic-merge patches of whole objects; any
// other kustomize feature is refused by name, so nobody adds one that this build would silently
// skip), and the checks a cluster would only make at apply time or, worse, never: the
// Kubernetes schemas (kubernetes-models), unknown fields, and the cross-references between
// objects that the API server accepts broken (a Service selecting nothing, a probe on a port the
// container does not have, a Secret nobody creates).
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { parseAllDocuments } from 'yaml';
import * as apps from 'kubernetes-models/apps/v1';
import * as networking from 'kubernetes-models/networking.k8s.io/v1';
import * as policy from 'kubernetes-models/policy/v1';
import * as rbac from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as core from 'kubernetes-models/v1';
import { repoRoot as REPO } from './paths.js';

export { REPO };

export type Labels = Record<string, string>;
export type Json = Record<string, unknown>;

export interface K8sObject extends Json {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels } & Json;
}

/** An object of a build and the file it came from (relative to the repository). */
export interface Manifest {
  object: K8sObject;
  source: string;
}

export class KustomizeError extends Error {
  override name = 'KustomizeError';
}

// ---------------------------------------------------------------------------------------------
// The build

/** The kustomization fields this build applies; anything else is refused rather than skipped. */
const KUSTOMIZATION_FIELDS = new Set([
  'apiVersion',
  'kind',
  'resources',
  'namespace',
  'labels',
  'images',
  'patches',
]);

/** Kinds without a namespace: the `namespace` field leaves them alone, as kustomize does. */
const CLUSTER_SCOPED = new Set([
  'Namespace',
  'ClusterRole',
  'ClusterRoleBinding',
  'PersistentVolume',
  'StorageClass',
]);

/** Kinds with a pod template (the images transformer and the checks reach into it), and where. */
const TEMPLATE_PATHS: Record<string, string[]> = {
  Deployment: ['spec', 'template'],
  StatefulSet: ['spec', 'template'],
  DaemonSet: ['spec', 'template'],
  ReplicaSet: ['spec', 'template'],
  Job: ['spec', 'template'],
  CronJob: ['spec', 'jobTemplate', 'spec', 'template'],
};

const rel = (path: string) => relative(REPO, path) || '.';
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * YAML as kubectl reads it: YAML 1.1, so `defaultMode: 0400` is octal (256) as the API server
 * will see it, not the decimal 400 a YAML 1.2 parser makes of it.
 */
function readYaml(file: string): unknown[] {
  return parseAllDocuments(readFileSync(file, 'utf8'), { version: '1.1' }).flatMap((doc) => {
    if (doc.errors.length > 0) throw new KustomizeError(`${rel(file)}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS();
    return value === null || value === undefined ? [] : [value];
  });
}

function asObject(value: unknown, where: string): K8sObject {
  if (
    !isObject(value) ||
    typeof value.apiVersion !== 'string' ||
    typeof value.kind !== 'string' ||
    !isObject(value.metadata) ||
    typeof value.metadata.name !== 'string'
  ) {
    throw new KustomizeError(`${where}: not a Kubernetes object (apiVersion, kind and metadata.name)`);
  }
  return value as K8sObject;
}

/** Build `dir` (a directory with a kustomization.yaml) as `kubectl kustomize dir` would. */
export function build(dir: string): Manifest[] {
  const root = resolve(REPO, dir);
  const file = join(root, 'kustomization.yaml');
  if (!existsSync(file)) throw new KustomizeError(`${rel(root)}: no kustomization.yaml`);
  const [k, ...more] = readYaml(file);
  if (!isObject(k) || more.length > 0) throw new KustomizeError(`${rel(file)}: must be one mapping`);
  for (const field of Object.keys(k)) {
    if (!KUSTOMIZATION_FIELDS.has(field)) {
      throw new KustomizeError(
        `${rel(file)}: '${field}' is a kustomize feature test/support/k8s-manifests.ts does not apply; ` +
          `keep to ${[...KUSTOMIZATION_FIELDS].join(', ')} or teach the loader (and its test) first`,
      );
    }
  }
  if (k.kind !== 'Kustomization') throw new KustomizeError(`${rel(file)}: kind must be Kustomization`);

  const out: Manifest[] = [];
  for (const entry of list(k.resources, `${rel(file)}: resources`)) {
    if (typeof entry !== 'string' || /^[a-z]+:\/\//.test(entry)) {
      throw new KustomizeError(`${rel(file)}: resources: ${String(entry)} is not a local file or directory`);
    }
    const path = resolve(root, entry);
    if (!existsSync(path)) throw new KustomizeError(`${rel(file)}: resources: ${entry} does not exist`);
    if (statSync(path).isDirectory()) out.push(...build(path));
    else
      out.push(
        ...readYaml(path).map((v, i) => ({
          object: asObject(v, `${rel(path)} document ${i + 1}`),
          source: rel(path),
        })),
      );
  }
  // kustomize's order: this kustomization's patches, then its transformers.
  for (const patch of list(k.patches, `${rel(file)}: patches`)) applyPatch(out, patch, root, file);
  if (k.namespace !== undefined) setNamespace(out, k.namespace, file);
  for (const labels of list(k.labels, `${rel(file)}: labels`)) addLabels(out, labels, file);
  for (const image of list(k.images, `${rel(file)}: images`)) setImage(out, image, file);
  return out;
}

function list(value: unknown, where: string): unknown[] {
  if (value === undefined) return [];
  if (!Array.isArray(value)) throw new KustomizeError(`${where}: must be a list`);
  return value;
}

function applyPatch(out: Manifest[], entry: unknown, root: string, file: string): void {
  if (!isObject(entry) || typeof entry.path !== 'string' || Object.keys(entry).length !== 1) {
    throw new KustomizeError(
      `${rel(file)}: patches: only { path: FILE } is supported (a strategic-merge patch of one whole ` +
        `object, found by kind and name); inline patches, targets, options and JSON patches are not`,
    );
  }
  const path = resolve(root, entry.path);
  const docs = readYaml(path);
  if (docs.length !== 1) throw new KustomizeError(`${rel(path)}: a patch file holds exactly one object`);
  const patch = asObject(docs[0], rel(path));
  if (patch.metadata.namespace !== undefined) {
    throw new KustomizeError(
      `${rel(path)}: metadata.namespace in a patch is not supported (namespace is set by the kustomization)`,
    );
  }
  const matches = out.filter(
    (m) =>
      m.object.kind === patch.kind &&
      m.object.apiVersion === patch.apiVersion &&
      m.object.metadata.name === patch.metadata.name,
  );
  if (matches.length !== 1) {
    throw new KustomizeError(
      `${rel(path)}: patches ${patch.kind}/${patch.metadata.name}, which the resources hold ${matches.length} times (must be once)`,
    );
  }
  const target = matches[0]!;
  target.object = strategicMerge(target.object, patch, [], patch.kind, rel(path)) as K8sObject;
}

/**
 * Lists the API merges item by item in a strategic-merge patch, and their merge key (the
 * patchMergeKey of the Kubernetes types). Other lists are replaced whole, as the API does.
 */
function mergeKey(path: string[], kind: string): string | undefined {
  const field = path[path.length - 1];
  if (field === 'ports') {
    if (path.includes('containers') || path.includes('initContainers')) return 'containerPort';
    if (kind === 'Service' && path.join('.') === 'spec.ports') return 'port';
  }
  if (field === 'volumeMounts') return 'mountPath';
  if (field && ['containers', 'initContainers', 'volumes', 'env', 'imagePullSecrets'].includes(field))
    return 'name';
  return undefined;
}

/** Merge lists whose merge this build does not implement: refused, never replaced by mistake. */
const UNSUPPORTED_MERGE_LISTS = new Set([
  'hostAliases',
  'topologySpreadConstraints',
  'finalizers',
  'ownerReferences',
  'volumeDevices',
  'resourceClaims',
  'schedulingGates',
  'ephemeralContainers',
]);

/** A strategic-merge patch as the API server applies it, for the lists of mergeKey(). */
export function strategicMerge(
  base: unknown,
  patch: unknown,
  path: string[],
  kind: string,
  source: string,
): unknown {
  const at = path.join('.') || '(root)';
  if (Array.isArray(patch)) {
    const field = path[path.length - 1] ?? '';
    if (UNSUPPORTED_MERGE_LISTS.has(field)) {
      throw new KustomizeError(`${source}: ${at}: merging this list is not supported by the loader`);
    }
    const key = mergeKey(path, kind);
    if (key === undefined || !Array.isArray(base)) return structuredClone(patch);
    const keyOf = (item: unknown): unknown => {
      if (!isObject(item) || item[key] === undefined) {
        throw new KustomizeError(`${source}: ${at}: every item needs its merge key '${key}'`);
      }
      return item[key];
    };
    // The API's order: the patch's items (merged with a base item of the same key), then the
    // base items the patch does not name.
    const named = new Set(patch.map(keyOf));
    const merged = patch.map((item) => {
      const original = base.find((b) => keyOf(b) === keyOf(item));
      return original === undefined
        ? structuredClone(item)
        : strategicMerge(original, item, path, kind, source);
    });
    return [...merged, ...base.filter((b) => !named.has(keyOf(b))).map((b) => structuredClone(b))];
  }
  if (!isObject(patch)) return patch;
  const out: Json = isObject(base) ? structuredClone(base) : {};
  for (const [key, value] of Object.entries(patch)) {
    if (key.startsWith('$')) {
      throw new KustomizeError(`${source}: ${at}: the directive ${key} is not supported by the loader`);
    }
    if (value === null) delete out[key];
    else out[key] = strategicMerge(out[key], value, [...path, key], kind, source);
  }
  return out;
}

function setNamespace(out: Manifest[], namespace: unknown, file: string): void {
  if (typeof namespace !== 'string') throw new KustomizeError(`${rel(file)}: namespace must be a string`);
  // Binding subjects follow a ServiceAccount of the build when they named it in its old
  // namespace (unset counting as `default`); kustomize leaves other subjects alone.
  const accounts = new Map(
    out
      .filter((m) => m.object.kind === 'ServiceAccount')
      .map((m) => [m.object.metadata.name, m.object.metadata.namespace ?? 'default']),
  );
  for (const m of out) {
    if (!m.object.kind.endsWith('RoleBinding')) continue;
    for (const subject of (m.object.subjects as Json[] | undefined) ?? []) {
      const was = accounts.get(String(subject.name));
      if (subject.kind === 'ServiceAccount' && was !== undefined && (subject.namespace ?? 'default') === was)
        subject.namespace = namespace;
    }
  }
  for (const m of out) if (!CLUSTER_SCOPED.has(m.object.kind)) m.object.metadata.namespace = namespace;
}

function addLabels(out: Manifest[], entry: unknown, file: string): void {
  if (!isObject(entry) || !isObject(entry.pairs) || Object.keys(entry).some((k) => k !== 'pairs')) {
    throw new KustomizeError(
      `${rel(file)}: labels: only { pairs } is supported (labels on each object's metadata); ` +
        `includeSelectors, includeTemplates and fields are not: write selectors and pod labels by hand`,
    );
  }
  for (const m of out) m.object.metadata.labels = { ...m.object.metadata.labels, ...(entry.pairs as Labels) };
}

function setImage(out: Manifest[], entry: unknown, file: string): void {
  const allowed = ['name', 'newName', 'newTag', 'digest'];
  if (
    !isObject(entry) ||
    typeof entry.name !== 'string' ||
    Object.keys(entry).some((k) => !allowed.includes(k))
  ) {
    throw new KustomizeError(`${rel(file)}: images: each entry is { name, newName?, newTag?, digest? }`);
  }
  for (const { container } of containersOf(out.map((m) => m.object))) {
    const image = String(container.image ?? '');
    const at = image.indexOf('@');
    const withoutDigest = at === -1 ? image : image.slice(0, at);
    const colon = withoutDigest.lastIndexOf(':');
    const hasTag = colon > withoutDigest.lastIndexOf('/');
    const name = hasTag ? withoutDigest.slice(0, colon) : withoutDigest;
    if (name !== entry.name) continue;
    const tag = hasTag ? withoutDigest.slice(colon) : '';
    const digest = at === -1 ? '' : image.slice(at);
    const newName = typeof entry.newName === 'string' ? entry.newName : name;
    if (typeof entry.digest === 'string') container.image = `${newName}@${entry.digest}`;
    else if (typeof entry.newTag === 'string') container.image = `${newName}:${entry.newTag}`;
    else container.image = `${newName}${tag}${digest}`;
  }
}

// ---------------------------------------------------------------------------------------------
// Pods, as the workloads will make them

export interface PodTemplate {
  owner: K8sObject;
  labels: Labels;
  spec: Json;
  /** Names of the pods it makes: exact for a StatefulSet, a sample for a Deployment. */
  podNames: string[];
}

const dig = (o: unknown, keys: string[]): unknown =>
  keys.reduce<unknown>((v, k) => (isObject(v) ? v[k] : undefined), o);

/** The pod templates of every workload, with the names their pods get. */
export function podTemplates(objects: K8sObject[]): PodTemplate[] {
  return objects.flatMap((owner) => {
    const at = TEMPLATE_PATHS[owner.kind];
    if (!at) return [];
    const template = dig(owner, at);
    const name = owner.metadata.name;
    // A StatefulSet at 0 replicas is a cold standby, made to be scaled to 1: its pod counts.
    const replicas = Number(dig(owner, ['spec', 'replicas']) ?? 1);
    const podNames =
      owner.kind === 'StatefulSet'
        ? Array.from({ length: Math.max(replicas, 1) }, (_, i) => `${name}-${i}`)
        : [`${name}-5d8f7c9b6-x2x4q`];
    return [
      {
        owner,
        labels: (dig(template, ['metadata', 'labels']) as Labels | undefined) ?? {},
        spec: (dig(template, ['spec']) as Json | undefined) ?? {},
        podNames,
      },
    ];
  });
}

export interface ContainerRef {
  owner: K8sObject;
  pod: Json;
  container: Json;
  init: boolean;
}

export function containersOf(objects: K8sObject[]): ContainerRef[] {
  return podTemplates(objects).flatMap(({ owner, spec }) => [
    ...((spec.initContainers as Json[] | undefined) ?? []).map((container) => ({
      owner,
      pod: spec,
      container,
      init: true,
    })),
    ...((spec.containers as Json[] | undefined) ?? []).map((container) => ({
      owner,
      pod: spec,
      container,
      init: false,
    })),
  ]);
}

export const id = (o: K8sObject) => `${o.kind}/${o.metadata.name}`;

/** Does a label selector (matchLabels and matchExpressions, or a Service's plain map) match? */
export function selects(selector: unknown, labels: Labels): boolean {
  if (!isObject(selector)) return false;
  const isLabelSelector = 'matchLabels' in selector || 'matchExpressions' in selector;
  const matchLabels = (isLabelSelector ? selector.matchLabels : selector) as Labels | undefined;
  for (const [k, v] of Object.entries(matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const e of (isLabelSelector ? (selector.matchExpressions as Json[] | undefined) : undefined) ?? []) {
    const value = labels[String(e.key)];
    const values = (e.values as string[] | undefined) ?? [];
    const ok =
      e.operator === 'In'
        ? value !== undefined && values.includes(value)
        : e.operator === 'NotIn'
          ? value === undefined || !values.includes(value)
          : e.operator === 'Exists'
            ? value !== undefined
            : value === undefined;
    if (!ok) return false;
  }
  return true;
}

/** The containers' ports of a pod template, by name and number. */
function podPorts(spec: Json): Json[] {
  return ((spec.containers as Json[] | undefined) ?? []).flatMap(
    (c) => (c.ports as Json[] | undefined) ?? [],
  );
}

/** The number a port reference (name or number) means on a pod, or undefined if it has none. */
export function resolvePort(spec: Json, port: unknown): number | undefined {
  const ports = podPorts(spec);
  if (typeof port === 'number') return ports.some((p) => p.containerPort === port) ? port : undefined;
  return ports.find((p) => p.name === port)?.containerPort as number | undefined;
}

// ---------------------------------------------------------------------------------------------
// The Kubernetes schemas

/**
 * The API versions served for what understudy deploys. Anything else (an old extensions/v1beta1
 * Deployment, a custom resource) has no model here and is refused.
 */
const SERVED = [core, apps, policy, rbac, networking];

interface ModelClass {
  apiVersion: string;
  kind: string;
  new (data: unknown): { validate(): void };
}

const MODELS = new Map<string, ModelClass>();
for (const group of SERVED) {
  for (const value of Object.values(group) as unknown[]) {
    const model = value as Partial<ModelClass>;
    if (typeof value === 'function' && typeof model.apiVersion === 'string' && typeof model.kind === 'string')
      MODELS.set(`${model.apiVersion}/${model.kind}`, value as ModelClass);
  }
}

/** The kubernetes-models class for an object's apiVersion and kind; undefined: not served. */
export function modelFor(o: { apiVersion: string; kind: string }): ModelClass | undefined {
  return MODELS.get(`${o.apiVersion}/${o.kind}`);
}

/** Problems the JSON schema of each object's kind finds (kubernetes-models' validate()). */
export function schemaProblems(objects: K8sObject[]): string[] {
  return objects.flatMap((o) => {
    const Model = modelFor(o);
    if (!Model)
      return [
        `${id(o)}: ${o.apiVersion} ${o.kind} is not a kind this cluster serves (no kubernetes-models class)`,
      ];
    try {
      new Model(o).validate();
      return [];
    } catch (err) {
      return [`${id(o)}: ${(err as Error).message}`];
    }
  });
}

/**
 * Fields the API server does not know. The JSON schemas let them through (Kubernetes' OpenAPI
 * allows extra properties), but `kubectl apply` refuses them, or an older client drops them
 * silently: a misspelt `readinesProbe` would be no probe at all. Each object is type-checked as
 * an object literal of its kubernetes-models interface, whose excess-property check names the
 * field.
 */
export function unknownFieldProblems(objects: K8sObject[]): string[] {
  const files = new Map<string, { object: K8sObject; text: string }>();
  objects.forEach((object, i) => {
    const [group, version] = object.apiVersion.includes('/')
      ? object.apiVersion.split('/')
      : ['', object.apiVersion];
    const module = `kubernetes-models/${group ? `${group}/` : ''}${version}/${object.kind}`;
    const text = `import type { I${object.kind} as T } from '${module}';\nexport const o: T = ${JSON.stringify(object, null, 1)};\n`;
    files.set(join(REPO, 'test', 'support', `__k8s_manifest_${i}.ts`), { object, text });
  });
  const options: ts.CompilerOptions = {
    target: ts.ScriptTarget.ES2022,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    strict: true,
    noEmit: true,
    skipLibCheck: true,
    types: [],
    lib: ['lib.es2022.d.ts'],
  };
  const host = ts.createCompilerHost(options);
  const { getSourceFile, fileExists, readFile } = host;
  host.getSourceFile = (name, language, ...rest) => {
    const virtual = files.get(name);
    return virtual
      ? ts.createSourceFile(name, virtual.text, language)
      : getSourceFile.call(host, name, language, ...rest);
  };
  host.fileExists = (name) => files.has(name) || fileExists.call(host, name);
  host.readFile = (name) => files.get(name)?.text ?? readFile.call(host, name);
  const program = ts.createProgram([...files.keys()], options, host);
  return ts.getPreEmitDiagnostics(program).map((d) => {
    const virtual = d.file && files.get(d.file.fileName);
    const message = ts.flattenDiagnosticMessageText(d.messageText, ' ');
    if (!virtual || d.start === undefined) return message;
    const { line } = d.file!.getLineAndCharacterOfPosition(d.start);
    return `${id(virtual.object)}: ${virtual.text.split('\n')[line]?.trim()}: ${message}`;
  });
}

// ---------------------------------------------------------------------------------------------
// Cross-references: what the API server accepts and the cluster then gets wrong

const sameNamespace = (a: K8sObject, b: K8sObject) => a.metadata.namespace === b.metadata.namespace;
const show = (labels: unknown) =>
  `{${Object.entries((labels as Labels | undefined) ?? {})
    .map(([k, v]) => `${k}=${v}`)
    .join(', ')}}`;

/** Secrets the operator creates (name → the keys the README's command gives them). */
export type ExternalSecrets = Map<string, Set<string>>;

/**
 * Selectors that select, ports that exist, and every ConfigMap, Secret, ServiceAccount and Role
 * named somewhere present in the build (a Secret: or among those the README has the operator
 * create). Each problem names the object and the field.
 */
export function referenceProblems(objects: K8sObject[], external: ExternalSecrets): string[] {
  const problems: string[] = [];
  const templates = podTemplates(objects);
  const find = (kind: string, name: unknown, near: K8sObject) =>
    objects.find((o) => o.kind === kind && o.metadata.name === name && sameNamespace(o, near));

  const seen = new Set<string>();
  for (const o of objects) {
    const key = `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    if (seen.has(key))
      problems.push(`${id(o)}: defined twice in namespace ${o.metadata.namespace ?? '(none)'}`);
    seen.add(key);
  }

  for (const t of templates) {
    const selector = dig(t.owner, ['spec', 'selector']);
    if (!isObject(selector) || Object.keys((selector.matchLabels as Labels | undefined) ?? {}).length === 0) {
      problems.push(`${id(t.owner)}: spec.selector.matchLabels: empty; select the pods by their labels`);
    } else if (!selects(selector, t.labels)) {
      problems.push(
        `${id(t.owner)}: spec.selector.matchLabels ${show(selector.matchLabels)} does not match its own ` +
          `spec.template.metadata.labels ${show(t.labels)}`,
      );
    }
    for (const other of templates) {
      if (other !== t && sameNamespace(other.owner, t.owner) && selects(selector, other.labels))
        problems.push(
          `${id(t.owner)}: spec.selector also matches the pods of ${id(other.owner)}: both would own them`,
        );
    }
  }
  const selected = (selector: unknown, near: K8sObject) =>
    templates.filter((t) => sameNamespace(t.owner, near) && selects(selector, t.labels));

  for (const o of objects) {
    const spec = (o.spec as Json | undefined) ?? {};
    if (o.kind === 'Service') {
      const pods = selected(spec.selector, o);
      if (Object.keys((spec.selector as Labels | undefined) ?? {}).length === 0 || pods.length === 0) {
        problems.push(`${id(o)}: spec.selector ${show(spec.selector)} selects no pod template`);
      }
      ((spec.ports as Json[] | undefined) ?? []).forEach((p, i) => {
        const target = p.targetPort ?? p.port;
        for (const t of pods) {
          if (resolvePort(t.spec, target) === undefined)
            problems.push(
              `${id(o)}: spec.ports[${i}].targetPort: ${String(target)} is no container port of ${id(t.owner)}`,
            );
        }
      });
    }
    if (o.kind === 'StatefulSet') {
      const service = find('Service', spec.serviceName, o);
      const own = templates.find((t) => t.owner === o)!;
      if (!service) problems.push(`${id(o)}: spec.serviceName: no Service ${String(spec.serviceName)}`);
      else if (
        dig(service, ['spec', 'clusterIP']) !== 'None' ||
        !selects(dig(service, ['spec', 'selector']), own.labels)
      )
        problems.push(`${id(o)}: spec.serviceName: ${id(service)} must be headless and select these pods`);
    }
    if (o.kind === 'PodDisruptionBudget' && selected(spec.selector, o).length === 0) {
      problems.push(
        `${id(o)}: spec.selector ${show(dig(spec, ['selector', 'matchLabels']))} selects no pod template`,
      );
    }
    if (o.kind === 'NetworkPolicy') {
      const everyPod = Object.keys(spec.podSelector ?? {}).length === 0;
      const pods = everyPod
        ? templates.filter((t) => sameNamespace(t.owner, o))
        : selected(spec.podSelector, o);
      if (pods.length === 0)
        problems.push(
          `${id(o)}: spec.podSelector ${show(dig(spec, ['podSelector', 'matchLabels']))} selects no pod template`,
        );
      ((spec.ingress as Json[] | undefined) ?? []).forEach((rule, i) =>
        ((rule.ports as Json[] | undefined) ?? []).forEach((p, j) => {
          if (pods.length > 0 && !pods.some((t) => resolvePort(t.spec, p.port) !== undefined))
            problems.push(
              `${id(o)}: spec.ingress[${i}].ports[${j}].port: ${String(p.port)} is no port of the pods it selects`,
            );
        }),
      );
    }
    if (o.kind === 'RoleBinding') {
      const ref = o.roleRef as Json;
      if (ref.kind !== 'Role' || !find('Role', ref.name, o))
        problems.push(`${id(o)}: roleRef: no Role ${String(ref.name)}`);
      for (const s of (o.subjects as Json[] | undefined) ?? []) {
        if (s.kind !== 'ServiceAccount' || !find('ServiceAccount', s.name, o))
          problems.push(`${id(o)}: subjects: no ServiceAccount ${String(s.name)}`);
      }
    }
  }

  for (const t of templates) {
    const where = id(t.owner);
    const sa = t.spec.serviceAccountName;
    if (sa !== undefined && !find('ServiceAccount', sa, t.owner))
      problems.push(`${where}: spec.template.spec.serviceAccountName: no ServiceAccount ${String(sa)}`);
    const volumes = (t.spec.volumes as Json[] | undefined) ?? [];
    const containers = [
      ...((t.spec.initContainers as Json[] | undefined) ?? []),
      ...((t.spec.containers as Json[] | undefined) ?? []),
    ];
    const mounted = new Set(
      containers.flatMap((c) => ((c.volumeMounts as Json[] | undefined) ?? []).map((m) => m.name)),
    );
    const claims = ((dig(t.owner, ['spec', 'volumeClaimTemplates']) as Json[] | undefined) ?? []).map((c) =>
      dig(c, ['metadata', 'name']),
    );
    for (const c of containers) {
      for (const m of (c.volumeMounts as Json[] | undefined) ?? []) {
        if (!volumes.some((v) => v.name === m.name) && !claims.includes(m.name))
          problems.push(`${where}: containers[${String(c.name)}].volumeMounts: no volume ${String(m.name)}`);
      }
      for (const probe of ['livenessProbe', 'readinessProbe', 'startupProbe']) {
        const handler = dig(c, [probe]) as Json | undefined;
        const port =
          dig(handler, ['httpGet', 'port']) ??
          dig(handler, ['tcpSocket', 'port']) ??
          dig(handler, ['grpc', 'port']);
        if (port === undefined) continue;
        const ports = (c.ports as Json[] | undefined) ?? [];
        if (!ports.some((p) => p.name === port || p.containerPort === port))
          problems.push(
            `${where}: containers[${String(c.name)}].${probe}: port ${String(port)} is not a port of this container`,
          );
      }
      for (const e of (c.env as Json[] | undefined) ?? []) {
        const cm = dig(e, ['valueFrom', 'configMapKeyRef']) as Json | undefined;
        const secret = dig(e, ['valueFrom', 'secretKeyRef']) as Json | undefined;
        if (cm) configMapRef(cm.name, [cm.key], `containers[${String(c.name)}].env[${String(e.name)}]`);
        if (secret)
          secretRef(secret.name, [secret.key], `containers[${String(c.name)}].env[${String(e.name)}]`);
      }
      for (const e of (c.envFrom as Json[] | undefined) ?? []) {
        if (isObject(e.configMapRef))
          configMapRef(e.configMapRef.name, [], `containers[${String(c.name)}].envFrom`);
        if (isObject(e.secretRef)) secretRef(e.secretRef.name, [], `containers[${String(c.name)}].envFrom`);
      }
    }
    for (const v of volumes) {
      if (!mounted.has(v.name))
        problems.push(`${where}: volumes[${String(v.name)}]: mounted by no container`);
      const keys = (items: unknown) => ((items as Json[] | undefined) ?? []).map((i) => i.key);
      const sources = [v, ...((dig(v, ['projected', 'sources']) as Json[] | undefined) ?? [])];
      for (const src of sources) {
        const at = `volumes[${String(v.name)}]`;
        if (isObject(src.configMap)) configMapRef(src.configMap.name, keys(src.configMap.items), at);
        if (isObject(src.secret))
          secretRef(src.secret.secretName ?? src.secret.name, keys(src.secret.items), at);
      }
    }
    function configMapRef(name: unknown, keys: unknown[], at: string) {
      const cm = find('ConfigMap', name, t.owner);
      if (!cm) return void problems.push(`${where}: ${at}: no ConfigMap ${String(name)}`);
      for (const k of keys) {
        if (!isObject(cm.data) || !(String(k) in cm.data))
          problems.push(`${where}: ${at}: ${id(cm)} has no key ${String(k)}`);
      }
    }
    function secretRef(name: unknown, keys: unknown[], at: string) {
      const known = external.get(String(name));
      if (!known) {
        return void problems.push(
          `${where}: ${at}: Secret ${String(name)} is neither in the build nor created by a command in k8s/README.md`,
        );
      }
      for (const k of keys) {
        if (!known.has(String(k)))
          problems.push(
            `${where}: ${at}: the README creates Secret ${String(name)} without the key ${String(k)}`,
          );
      }
    }
  }
  return problems;
}

/**
 * The fence deletes the node's pod (pkg/controller/fencing.ts): each Role may get and delete
 * named pods in its own namespace, and nothing more; no ClusterRole at all.
 */
export function rbacProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    if (o.kind === 'ClusterRole' || o.kind === 'ClusterRoleBinding')
      problems.push(`${id(o)}: cluster-wide; the fence needs a namespaced Role`);
    if (o.kind !== 'Role') continue;
    const rules = (o.rules as Json[] | undefined) ?? [];
    if (rules.length === 0) problems.push(`${id(o)}: rules: empty`);
    rules.forEach((rule, i) => {
      const at = `${id(o)}: rules[${i}]`;
      const same = (v: unknown, want: string[]) =>
        JSON.stringify([...((v as string[] | undefined) ?? [])].sort()) === JSON.stringify(want);
      if (!same(rule.apiGroups, ['']))
        problems.push(
          `${at}.apiGroups: ${JSON.stringify(rule.apiGroups)}; the fence needs the core group [''] only`,
        );
      if (!same(rule.resources, ['pods']))
        problems.push(`${at}.resources: ${JSON.stringify(rule.resources)}; the fence needs pods only`);
      if (!same(rule.verbs, ['delete', 'get']))
        problems.push(
          `${at}.verbs: ${JSON.stringify(rule.verbs)}; the fence needs get and delete, nothing more`,
        );
      if (!Array.isArray(rule.resourceNames) || rule.resourceNames.length === 0)
        problems.push(
          `${at}.resourceNames: missing; name the agent pods, or the controller may delete any pod`,
        );
      const extra = Object.keys(rule).filter(
        (k) => !['apiGroups', 'resources', 'verbs', 'resourceNames'].includes(k),
      );
      if (extra.length > 0) problems.push(`${at}: ${extra.join(', ')}: more than the fence needs`);
    });
  }
  return problems;
}

/** Seeds, private keys and inline credentials: what a ConfigMap must never hold. */
const SECRET_TEXT: Array<[RegExp, string]> = [
  [/\bS[UANOCPX][A-Z2-7]{55,}\b/, 'an nkey seed'],
  [/-----BEGIN [A-Z ]*PRIVATE KEY-----/, 'a private key'],
  [/["']?\b(?:token|password|pass|secret)["']?\s*:\s*["']?[^\s"'#,}]/i, 'an inline token or password'],
];

/** No Secret is written in the repository, and no ConfigMap holds what belongs in one. */
export function secretProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  for (const o of objects) {
    if (o.kind === 'Secret') {
      const fields = ['data', 'stringData'].filter((f) => o[f] !== undefined);
      problems.push(
        `${id(o)}: ${fields.join(', ') || 'kind Secret'}: Secrets are created by the operator (k8s/README.md), never inlined here`,
      );
    }
    if (o.kind === 'ConfigMap') {
      for (const [key, value] of Object.entries({ ...(o.data as Labels), ...(o.binaryData as Labels) })) {
        for (const [pattern, what] of SECRET_TEXT)
          if (pattern.test(String(value)))
            problems.push(`${id(o)}: data.${key}: holds ${what}; put it in a Secret`);
      }
    }
  }
  return problems;
}

/** Every container: unprivileged, read-only, without capabilities, sized, and probed. */
export function hardeningProblems(objects: K8sObject[]): string[] {
  const problems: string[] = [];
  for (const t of podTemplates(objects)) {
    const where = id(t.owner);
    const pod = (t.spec.securityContext as Json | undefined) ?? {};
    for (const f of ['hostNetwork', 'hostPID', 'hostIPC'])
      if (t.spec[f]) problems.push(`${where}: spec.template.spec.${f}: true`);
    for (const v of (t.spec.volumes as Json[] | undefined) ?? [])
      if (v.hostPath) problems.push(`${where}: volumes[${String(v.name)}]: hostPath`);
    for (const { container: c, init } of containersOf([t.owner])) {
      const at = `${where}: ${init ? 'initContainers' : 'containers'}[${String(c.name)}]`;
      const sc = (c.securityContext as Json | undefined) ?? {};
      const effective = (f: string) => sc[f] ?? pod[f];
      if (effective('runAsNonRoot') !== true) problems.push(`${at}.securityContext.runAsNonRoot: not true`);
      const uid = effective('runAsUser');
      if (typeof uid !== 'number' || uid === 0)
        problems.push(
          `${at}.securityContext.runAsUser: give a non-zero uid (runAsNonRoot cannot check a user name)`,
        );
      if (sc.readOnlyRootFilesystem !== true)
        problems.push(`${at}.securityContext.readOnlyRootFilesystem: not true`);
      if (sc.allowPrivilegeEscalation !== false)
        problems.push(`${at}.securityContext.allowPrivilegeEscalation: not false`);
      if (sc.privileged) problems.push(`${at}.securityContext.privileged: true`);
      const drop = (dig(sc, ['capabilities', 'drop']) as string[] | undefined) ?? [];
      if (!drop.includes('ALL')) problems.push(`${at}.securityContext.capabilities.drop: not [ALL]`);
      if (dig(sc, ['capabilities', 'add']) !== undefined)
        problems.push(`${at}.securityContext.capabilities.add: none may be added`);
      for (const kind of ['requests', 'limits'])
        for (const r of ['cpu', 'memory'])
          if (dig(c, ['resources', kind, r]) === undefined)
            problems.push(`${at}.resources.${kind}.${r}: missing`);
      if (!init)
        for (const probe of ['livenessProbe', 'readinessProbe'])
          if (c[probe] === undefined) problems.push(`${at}.${probe}: missing`);
    }
  }
  return problems;
}

// ---------------------------------------------------------------------------------------------
// NetworkPolicies, evaluated

/** A pod that may open a connection: its labels, and its namespace's. */
export interface Peer {
  labels: Labels;
  namespace: string;
  namespaceLabels: Labels;
}

/**
 * May `from` connect to `to` (a pod template in `namespace`) on `port`, under the build's
 * NetworkPolicies? As the API defines it: a pod no Ingress policy selects takes anything; a
 * selected pod takes what one of its policies' rules allows.
 */
export function ingressAllowed(objects: K8sObject[], from: Peer, to: PodTemplate, port: number): boolean {
  const namespace = to.owner.metadata.namespace;
  const policies = objects.filter(
    (o) =>
      o.kind === 'NetworkPolicy' &&
      o.metadata.namespace === namespace &&
      selects(dig(o, ['spec', 'podSelector']), to.labels) &&
      ((dig(o, ['spec', 'policyTypes']) as string[] | undefined) ?? ['Ingress']).includes('Ingress'),
  );
  if (policies.length === 0) return true;
  return policies.some((policy) =>
    ((dig(policy, ['spec', 'ingress']) as Json[] | undefined) ?? []).some((rule) => {
      const peers = (rule.from as Json[] | undefined) ?? [];
      const peerOk =
        peers.length === 0 ||
        peers.some((p) => {
          if (p.ipBlock !== undefined) throw new Error(`${id(policy)}: ipBlock peers are not evaluated here`);
          const nsOk =
            p.namespaceSelector === undefined
              ? from.namespace === namespace
              : selects(p.namespaceSelector, from.namespaceLabels);
          const podOk = p.podSelector === undefined || selects(p.podSelector, from.labels);
          return nsOk && podOk;
        });
      const ports = (rule.ports as Json[] | undefined) ?? [];
      const portOk =
        ports.length === 0 ||
        ports.some((p) => (p.protocol ?? 'TCP') === 'TCP' && resolvePort(to.spec, p.port) === port);
      return peerOk && portOk;
    }),
  );
}

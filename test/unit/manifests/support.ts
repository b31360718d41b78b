import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { DaemonSet } from 'kubernetes-models/apps/v1/DaemonSet';
import { ClusterRole } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRole';
import { ClusterRoleBinding } from 'kubernetes-models/rbac.authorization.k8s.io/v1/ClusterRoleBinding';
import { ConfigMap } from 'kubernetes-models/v1/ConfigMap';
import { ServiceAccount } from 'kubernetes-models/v1/ServiceAccount';
import { parseAllDocuments } from 'yaml';
import { repoRoot } from './support-paths.ts';
import { unknownFields } from './unknown-fields.ts';

/**
 * Rendering and schema validation of the kustomize manifests, shared by the manifest tests. Rendering uses
 * the real `kubectl kustomize` (what `kubectl apply -k` runs); validation uses the Kubernetes OpenAPI
 * schemas compiled into kubernetes-models.
 */

export { repoRoot };
export const manifestsDir = join(repoRoot, 'manifests');

/** A skip reason for describe.skipIf, or undefined when `kubectl kustomize` can run. */
export const kubectlSkipReason: string | undefined = (() => {
  try {
    execFileSync('kubectl', ['version', '--client'], { stdio: 'ignore' });
    return undefined;
  } catch (err) {
    return `needs kubectl in PATH to render the kustomizations (${(err as Error).message.split('\n')[0]})`;
  }
})();

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

/** Renders a kustomization directory with `kubectl kustomize` and parses every document. */
export function render(dir: string): K8sObject[] {
  const out = execFileSync('kubectl', ['kustomize', dir], { encoding: 'utf8' });
  return parseYamlStream(out);
}

export function parseYamlStream(text: string): K8sObject[] {
  const objects: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`YAML error: ${doc.errors[0]?.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) continue;
    if (typeof value !== 'object' || Array.isArray(value)) throw new Error('a document is not a mapping');
    const o = value as Partial<K8sObject>;
    if (
      typeof o.apiVersion !== 'string' ||
      typeof o.kind !== 'string' ||
      typeof o.metadata?.name !== 'string'
    ) {
      throw new Error(`a document lacks apiVersion, kind or metadata.name: ${JSON.stringify(value)}`);
    }
    objects.push(o as K8sObject);
  }
  return objects;
}

// The kinds trellis ships, with their kubernetes-models module. A new kind must be added here, so
// nothing ships unvalidated.
const models: Record<string, { model: string; make: (data: never) => { validate(): void } }> = {
  'v1/ServiceAccount': { model: 'v1/ServiceAccount', make: (d) => new ServiceAccount(d) },
  'v1/ConfigMap': { model: 'v1/ConfigMap', make: (d) => new ConfigMap(d) },
  'apps/v1/DaemonSet': { model: 'apps/v1/DaemonSet', make: (d) => new DaemonSet(d) },
  'rbac.authorization.k8s.io/v1/ClusterRole': {
    model: 'rbac.authorization.k8s.io/v1/ClusterRole',
    make: (d) => new ClusterRole(d),
  },
  'rbac.authorization.k8s.io/v1/ClusterRoleBinding': {
    model: 'rbac.authorization.k8s.io/v1/ClusterRoleBinding',
    make: (d) => new ClusterRoleBinding(d),
  },
};

/**
 * Validates one object against its Kubernetes schema (types, enums, required fields: a ValidationError
 * naming the bad field) and rejects fields the API does not know, as `kubectl apply` would.
 */
export function validateObject(obj: K8sObject): void {
  const entry = models[`${obj.apiVersion}/${obj.kind}`];
  if (entry === undefined) throw new Error(`no schema registered for ${obj.apiVersion} ${obj.kind}`);
  entry.make(structuredClone(obj) as never).validate();
  const unknown = unknownFields(entry.model, obj);
  if (unknown.length > 0) {
    throw new Error(`${obj.kind} ${obj.metadata.name}: unknown field(s) ${unknown.join(', ')}`);
  }
}

export function findOne<T>(objects: K8sObject[], kind: string, name: string): T {
  const found = objects.filter((o) => o.kind === kind && o.metadata.name === name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`);
  return found[0] as T;
}

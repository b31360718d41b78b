/**
 * Where the agent's Kubernetes credentials come from, decided once at start:
 *   1. an explicit kubeconfig path (the --kubeconfig flag),
 *   2. else $KUBECONFIG (the first entry of the list),
 *   3. else the pod's service account, when running in a pod ($KUBERNETES_SERVICE_HOST set).
 * Anything else is an error that names what was tried.
 */
import { existsSync } from 'node:fs';
import { KubeConfig } from '@kubernetes/client-node';
import { K8sError, K8sReason } from './errors.ts';

export type KubeConfigSource = 'flag' | 'env' | 'in-cluster';

/** An opaque, validated connection description. Only pkg/k8s looks inside. */
export class KubeConnection {
  readonly #kc: KubeConfig;
  /** The API server URL, for logs. */
  readonly server: string;
  readonly source: KubeConfigSource;

  constructor(kc: KubeConfig, source: KubeConfigSource) {
    this.#kc = kc;
    this.source = source;
    this.server = kc.getCurrentCluster()?.server ?? '';
  }

  /** @internal for pkg/k8s only. */
  kubeConfig(): KubeConfig {
    return this.#kc;
  }
}

export interface LoadKubeConfigOptions {
  kubeconfigPath?: string;
  /** Default process.env. */
  env?: Record<string, string | undefined>;
  /** Prefix for the service account files (tests); default ''. */
  serviceAccountRoot?: string;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

function configError(message: string, cause?: unknown): K8sError {
  return new K8sError(
    'load kubeconfig',
    message,
    undefined,
    K8sReason.CONFIG,
    cause === undefined ? undefined : { cause },
  );
}

export function loadKubeConfig(opts: LoadKubeConfigOptions = {}): KubeConnection {
  const env = opts.env ?? process.env;
  const kc = new KubeConfig();
  let source: KubeConfigSource;
  let path = opts.kubeconfigPath;
  if (path !== undefined && path !== '') {
    source = 'flag';
  } else {
    const fromEnv = (env.KUBECONFIG ?? '').split(':').find((p) => p !== '');
    path = fromEnv;
    source = 'env';
  }

  if (path !== undefined) {
    if (!existsSync(path)) {
      throw configError(
        `kubeconfig ${path} (from ${source === 'flag' ? '--kubeconfig' : '$KUBECONFIG'}) does not exist`,
      );
    }
    try {
      kc.loadFromFile(path);
    } catch (err) {
      throw configError(`kubeconfig ${path} could not be read: ${(err as Error).message}`, err);
    }
  } else if (env.KUBERNETES_SERVICE_HOST !== undefined && env.KUBERNETES_SERVICE_HOST !== '') {
    source = 'in-cluster';
    const root = opts.serviceAccountRoot ?? '';
    if (!existsSync(`${root}${SA_DIR}/token`)) {
      throw configError(
        `running in a pod ($KUBERNETES_SERVICE_HOST is set) but ${root}${SA_DIR}/token does not exist: is automountServiceAccountToken off?`,
      );
    }
    if (env.KUBERNETES_SERVICE_PORT === undefined || env.KUBERNETES_SERVICE_PORT === '') {
      throw configError('$KUBERNETES_SERVICE_HOST is set but $KUBERNETES_SERVICE_PORT is not');
    }
    // loadFromCluster reads process.env; pass ours through for the duration of the call.
    const saved = { host: process.env.KUBERNETES_SERVICE_HOST, port: process.env.KUBERNETES_SERVICE_PORT };
    process.env.KUBERNETES_SERVICE_HOST = env.KUBERNETES_SERVICE_HOST;
    process.env.KUBERNETES_SERVICE_PORT = env.KUBERNETES_SERVICE_PORT;
    try {
      kc.loadFromCluster(root);
    } finally {
      restoreEnv('KUBERNETES_SERVICE_HOST', saved.host);
      restoreEnv('KUBERNETES_SERVICE_PORT', saved.port);
    }
  } else {
    throw configError(
      'no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG, or run in a pod with a service account',
    );
  }

  const cluster = kc.getCurrentCluster();
  if (cluster === null)
    throw configError(`kubeconfig (${source}) has no current context or its cluster is missing`);
  let url: URL;
  try {
    url = new URL(cluster.server);
  } catch (err) {
    throw configError(`cluster ${cluster.name}: server ${JSON.stringify(cluster.server)} is not a URL`, err);
  }
  if (url.protocol === 'http:' && cluster.skipTLSVerify !== true) {
    // @kubernetes/client-node refuses plain HTTP otherwise, at the first request: say so now.
    throw configError(
      `cluster ${cluster.name}: server ${cluster.server} is plain http, which needs insecure-skip-tls-verify: true`,
    );
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw configError(`cluster ${cluster.name}: server ${cluster.server} must be http(s)`);
  }
  return new KubeConnection(kc, source);
}

function restoreEnv(key: string, value: string | undefined): void {
  if (value === undefined) delete process.env[key];
  else process.env[key] = value;
}

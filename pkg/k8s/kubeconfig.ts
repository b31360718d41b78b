/**
 * Where the agent's Kubernetes credentials come from, decided once at start:
 *   1. an explicit kubeconfig path (the --kubeconfig flag),
 *   2. else $KUBECONFIG: the first file of the list that exists (kubectl merges every file of the list;
 *      we read one, so it must hold the cluster, user and context itself),
 *   3. else the pod's service account, when running in a pod ($KUBERNETES_SERVICE_HOST set).
 * Anything else is an error that names what was tried.
 *
 * The result also decides the transport: the small node:http(s) one (http-transport.ts) for the
 * in-cluster config and for kubeconfigs with token / tokenFile / client certificates, and
 * @kubernetes/client-node (loaded only then) for the rest: exec plugins, auth providers, basic auth,
 * impersonation, proxies. kubeconfig-parse.ts reads the file; this module only picks the source.
 */
import { existsSync, readFileSync } from 'node:fs';
import { K8sError, K8sReason } from './errors.ts';
import { type HttpSpec, parseKubeconfig } from './kubeconfig-parse.ts';
import type { TransportName } from './transport.ts';

export type KubeConfigSource = 'flag' | 'env' | 'in-cluster';

/** What the client-node fallback needs to load the same config itself. */
export type FallbackSpec =
  /** `text`: the file as read at load time, so both transports use what was validated. */
  | { readonly kind: 'file'; readonly path: string; readonly text: string; readonly context: string }
  | { readonly kind: 'in-cluster'; readonly host: string; readonly port: string; readonly root: string };

/** An opaque, validated connection description. Only pkg/k8s looks inside. */
export class KubeConnection {
  /** The API server URL, for logs. */
  readonly server: string;
  readonly source: KubeConfigSource;
  /** The kubeconfig context in use ('' in-cluster). */
  readonly context: string;
  /** The kubeconfig file read (undefined in-cluster). */
  readonly file: string | undefined;
  /** Which transport createK8sClient will use. */
  readonly transport: TransportName;
  /** Why client-node is used ('' for the native transport), for the log. */
  readonly transportReason: string;
  readonly #http: HttpSpec | undefined;
  readonly #fallback: FallbackSpec | undefined;

  constructor(
    fields: {
      server: string;
      source: KubeConfigSource;
      context: string;
      file?: string;
      transportReason?: string;
    },
    http: HttpSpec | undefined,
    fallback: FallbackSpec | undefined,
  ) {
    this.server = fields.server;
    this.source = fields.source;
    this.context = fields.context;
    this.file = fields.file;
    this.#http = http;
    this.#fallback = fallback;
    this.transport = http === undefined ? 'client-node' : 'native';
    this.transportReason = http === undefined ? (fields.transportReason ?? '') : '';
  }

  /** @internal for pkg/k8s only: the native transport's settings (undefined: use client-node). */
  httpSpec(): HttpSpec | undefined {
    return this.#http;
  }

  /** @internal for pkg/k8s only. */
  fallbackSpec(): FallbackSpec | undefined {
    return this.#fallback;
  }
}

export interface LoadKubeConfigOptions {
  kubeconfigPath?: string;
  /** A kubeconfig context other than its current-context. */
  context?: string;
  /** Default process.env. */
  env?: Readonly<Record<string, string | undefined>>;
  /** Prefix for the service account files (tests); default ''. */
  serviceAccountRoot?: string;
  /**
   * 'client-node' forces the @kubernetes/client-node transport even where the native one would do
   * (tests keep the real library covered with it; an escape hatch otherwise). Default 'auto'.
   */
  transport?: 'auto' | 'client-node';
  /**
   * How long a token read from a file (the service account's, or a kubeconfig tokenFile) is used
   * before the file is read again: bound service account tokens rotate. Default 60_000 ms, as
   * client-go.
   */
  tokenReloadMs?: number;
  /**
   * How long a client certificate and key read from files are used before the files are read
   * again (the kubelet's rotate in place). Default 300_000 ms, as client-go.
   */
  certReloadMs?: number;
}

const SA_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';
const DEFAULT_TOKEN_RELOAD_MS = 60_000;
const DEFAULT_CERT_RELOAD_MS = 300_000;

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
  const tokenReloadMs = opts.tokenReloadMs ?? DEFAULT_TOKEN_RELOAD_MS;
  if (!(Number.isFinite(tokenReloadMs) && tokenReloadMs >= 0))
    throw new RangeError(`tokenReloadMs must be a number >= 0 (got ${tokenReloadMs})`);
  const certReloadMs = opts.certReloadMs ?? DEFAULT_CERT_RELOAD_MS;
  if (!(Number.isFinite(certReloadMs) && certReloadMs >= 0))
    throw new RangeError(`certReloadMs must be a number >= 0 (got ${certReloadMs})`);
  const forceFallback = opts.transport === 'client-node';
  let source: KubeConfigSource;
  let path = opts.kubeconfigPath;
  if (path !== undefined && path !== '') {
    source = 'flag';
  } else {
    // A list, as kubectl takes it: the first file that exists (entries that do not are skipped, as
    // kubectl skips them).
    const list = (env.KUBECONFIG ?? '').split(':').filter((p) => p !== '');
    path = list.find((p) => existsSync(p));
    if (path === undefined && list.length > 1) {
      throw configError(`none of the kubeconfigs $KUBECONFIG lists exists: ${list.join(', ')}`);
    }
    path ??= list[0];
    source = 'env';
  }

  if (path !== undefined) {
    const origin = source === 'flag' ? '--kubeconfig' : '$KUBECONFIG';
    if (!existsSync(path)) {
      throw configError(`kubeconfig ${path} (from ${origin}) does not exist`);
    }
    let text: string;
    try {
      text = readFileSync(path, 'utf8');
    } catch (err) {
      throw configError(
        `kubeconfig ${path} (from ${origin}) could not be read: ${(err as Error).message}`,
        err,
      );
    }
    const parsed = parseKubeconfig(text, path, {
      context: opts.context,
      tokenReloadMs,
      certReloadMs,
      origin,
    });
    const fallback: FallbackSpec = { kind: 'file', path, text, context: parsed.context };
    const reason = forceFallback ? 'forced by the transport option' : parsed.unsupported;
    return new KubeConnection(
      { server: parsed.server, source, context: parsed.context, file: path, transportReason: reason },
      forceFallback ? undefined : parsed.http,
      fallback,
    );
  }

  const host = env.KUBERNETES_SERVICE_HOST;
  if (host === undefined || host === '') {
    throw configError(
      'no Kubernetes credentials: pass --kubeconfig, set $KUBECONFIG, or run in a pod with a service account',
    );
  }
  const root = opts.serviceAccountRoot ?? '';
  const tokenFile = `${root}${SA_DIR}/token`;
  const caFile = `${root}${SA_DIR}/ca.crt`;
  if (!existsSync(tokenFile)) {
    throw configError(
      `running in a pod ($KUBERNETES_SERVICE_HOST is set) but ${tokenFile} does not exist: is automountServiceAccountToken off?`,
    );
  }
  const port = env.KUBERNETES_SERVICE_PORT;
  if (port === undefined || port === '') {
    throw configError('$KUBERNETES_SERVICE_HOST is set but $KUBERNETES_SERVICE_PORT is not');
  }
  const server = `https://${host.includes(':') ? `[${host}]` : host}:${port}`;
  let url: URL;
  try {
    url = new URL(server);
  } catch (err) {
    throw configError(`$KUBERNETES_SERVICE_HOST/PORT make ${server}, which is not a URL`, err);
  }
  let ca: Buffer;
  try {
    ca = readFileSync(caFile);
  } catch (err) {
    throw configError(`the service account CA ${caFile} could not be read: ${(err as Error).message}`, err);
  }
  if (!ca.toString('latin1').includes('-----BEGIN CERTIFICATE-----')) {
    throw configError(`the service account CA ${caFile} holds no PEM certificate`);
  }
  try {
    readFileSync(tokenFile);
  } catch (err) {
    throw configError(
      `the service account token ${tokenFile} could not be read: ${(err as Error).message}`,
      err,
    );
  }
  const http: HttpSpec = {
    server: url,
    ca,
    insecure: false,
    token: { kind: 'file', path: tokenFile, reloadMs: tokenReloadMs },
  };
  return new KubeConnection(
    {
      server,
      source: 'in-cluster',
      context: '',
      ...(forceFallback ? { transportReason: 'forced by the transport option' } : {}),
    },
    forceFallback ? undefined : http,
    { kind: 'in-cluster', host, port, root },
  );
}

/**
 * A kubeconfig file (YAML) -> what the native transport needs, or the reason it cannot serve it
 * (then client-node does). Follows kubectl's rules where they matter: the context is
 * current-context unless one is named; file references are relative to the kubeconfig's directory;
 * *-data fields are base64 PEM. Every error names the file and the field.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, isAbsolute, resolve } from 'node:path';
import { K8sError, K8sReason } from './errors.ts';

export type TokenSource =
  | { readonly kind: 'static'; readonly value: string }
  /**
   * Read again every reloadMs (bound service account tokens rotate). `fallback`: the kubeconfig's
   * inline token, sent while the file has not been read yet (tried again on every request).
   */
  | { readonly kind: 'file'; readonly path: string; readonly reloadMs: number; readonly fallback?: string };

/** The settings of the native transport. */
export interface HttpSpec {
  readonly server: URL;
  /** PEM; undefined means the system's roots. */
  readonly ca?: Buffer;
  readonly insecure: boolean;
  readonly tlsServerName?: string;
  readonly cert?: Buffer;
  readonly key?: Buffer;
  /**
   * Where cert and key were read from, when both came from files: read again every reloadMs, as
   * client-go does, since the kubelet's client certificate (and others managed so) rotates in place.
   */
  readonly certFiles?: { readonly cert: string; readonly key: string; readonly reloadMs: number };
  readonly token?: TokenSource;
}

export interface ParsedKubeconfig {
  readonly server: string;
  readonly context: string;
  /** Set when the native transport supports this config. */
  readonly http: HttpSpec | undefined;
  /** Why not (for the log), when http is undefined. */
  readonly unsupported: string;
}

type Obj = Record<string, unknown>;

const isObj = (v: unknown): v is Obj => typeof v === 'object' && v !== null && !Array.isArray(v);

/** User fields only client-node implements, with what they are called in the log. */
const FALLBACK_USER_FIELDS: readonly [string, string][] = [
  ['exec', 'exec credential plugin'],
  ['auth-provider', 'auth-provider'],
  ['username', 'basic auth'],
  ['password', 'basic auth'],
  ['as', 'impersonation'],
  ['as-groups', 'impersonation'],
  ['as-uid', 'impersonation'],
  ['as-user-extra', 'impersonation'],
];

export function parseKubeconfig(
  text: string,
  file: string,
  opts: {
    context?: string | undefined;
    tokenReloadMs: number;
    /** How often client-certificate and client-key files are read again (HttpSpec.certFiles). */
    certReloadMs: number;
    /** Where the path came from, for messages: "--kubeconfig", "$KUBECONFIG". */
    origin?: string | undefined;
  },
): ParsedKubeconfig {
  const where = opts.origin === undefined ? file : `${file} (from ${opts.origin})`;
  const fail = (message: string, cause?: unknown): K8sError =>
    new K8sError(
      'load kubeconfig',
      `kubeconfig ${where}: ${message}`,
      undefined,
      K8sReason.CONFIG,
      cause === undefined ? undefined : { cause },
    );
  let doc: unknown;
  try {
    doc = parseDocument(text);
  } catch (err) {
    throw new K8sError(
      'load kubeconfig',
      `kubeconfig ${where} could not be read: ${firstLine((err as Error).message)}`,
      undefined,
      K8sReason.CONFIG,
      { cause: err },
    );
  }
  if (!isObj(doc)) throw fail('is not a YAML mapping');
  const base = dirname(resolve(file));

  /** The entry `name` of the list `listKey`, and its `inner` mapping. */
  const named = (listKey: string, inner: string, name: string, referrer: string): Obj => {
    const list = doc[listKey] ?? [];
    if (!Array.isArray(list)) throw fail(`${listKey} must be a list`);
    const entry = list.find((e) => isObj(e) && e.name === name) as Obj | undefined;
    if (entry === undefined) throw fail(`${referrer} names ${listKey} "${name}", which is not in ${listKey}`);
    const v = entry[inner];
    if (!isObj(v)) throw fail(`${listKey}[name=${name}].${inner} must be a mapping`);
    return v;
  };

  const context = opts.context ?? doc['current-context'];
  if (typeof context !== 'string' || context === '')
    throw fail('current-context is not set (and no context was named)');
  const ctx = named(
    'contexts',
    'context',
    context,
    opts.context !== undefined ? 'the context option' : 'current-context',
  );
  if (typeof ctx.cluster !== 'string' || ctx.cluster === '')
    throw fail(`contexts[name=${context}].context.cluster must be a non-empty string`);
  const clusterName = ctx.cluster;
  const cluster = named('clusters', 'cluster', clusterName, `contexts[name=${context}].context.cluster`);
  const cField = (k: string): string => `clusters[name=${clusterName}].cluster.${k}`;

  const server = cluster.server;
  if (typeof server !== 'string' || server === '') throw fail(`${cField('server')} must be a URL`);
  let url: URL;
  try {
    url = new URL(server);
  } catch (err) {
    throw fail(`${cField('server')} ${JSON.stringify(server)} is not a URL`, err);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:')
    throw fail(`${cField('server')} ${server} must be http(s)`);
  const insecure = optionalBool(cluster, 'insecure-skip-tls-verify', cField, fail) ?? false;
  if (url.protocol === 'http:' && !insecure) {
    // client-node refuses plain HTTP otherwise (at the first request); both transports behave alike.
    throw fail(`${cField('server')} ${server} is plain http, which needs insecure-skip-tls-verify: true`);
  }

  let user: Obj = {};
  let uField = (k: string): string => `user.${k}`;
  if (ctx.user !== undefined && ctx.user !== '') {
    if (typeof ctx.user !== 'string') throw fail(`contexts[name=${context}].context.user must be a string`);
    const userName = ctx.user;
    user = named('users', 'user', userName, `contexts[name=${context}].context.user`);
    uField = (k) => `users[name=${userName}].user.${k}`;
  }

  const unsupported = [
    ...new Set([
      ...(cluster['proxy-url'] !== undefined ? ['cluster proxy-url'] : []),
      ...FALLBACK_USER_FIELDS.filter(([k]) => user[k] !== undefined).map(([, what]) => what),
    ]),
  ].join(', ');

  /** The files PEM blocks were read from, by field (a *-data field has none). */
  const readFrom = new Map<string, string>();
  const pem = (
    obj: Obj,
    fileKey: string,
    dataKey: string,
    field: (k: string) => string,
  ): Buffer | undefined => {
    const data = obj[dataKey];
    const path = obj[fileKey];
    let buf: Buffer | undefined;
    let where: string;
    if (data !== undefined) {
      where = field(dataKey);
      if (typeof data !== 'string') throw fail(`${where} must be a base64 string`);
      buf = Buffer.from(data, 'base64');
    } else if (path !== undefined) {
      where = field(fileKey);
      if (typeof path !== 'string' || path === '') throw fail(`${where} must be a file path`);
      const abs = isAbsolute(path) ? path : resolve(base, path);
      try {
        buf = readFileSync(abs);
      } catch (err) {
        throw fail(`${where} ${abs} could not be read: ${(err as Error).message}`, err);
      }
      readFrom.set(fileKey, abs);
    } else {
      return undefined;
    }
    if (!buf.toString('latin1').includes('-----BEGIN ')) throw fail(`${where} holds no PEM block`);
    return buf;
  };

  const ca = pem(cluster, 'certificate-authority', 'certificate-authority-data', cField);
  const tlsServerName = cluster['tls-server-name'];
  if (tlsServerName !== undefined && typeof tlsServerName !== 'string')
    throw fail(`${cField('tls-server-name')} must be a string`);
  const cert = pem(user, 'client-certificate', 'client-certificate-data', uField);
  const key = pem(user, 'client-key', 'client-key-data', uField);
  if ((cert === undefined) !== (key === undefined)) {
    const [has, lacks] =
      cert === undefined ? ['client-key', 'client-certificate'] : ['client-certificate', 'client-key'];
    throw fail(`${uField(has)}(-data) is set without ${lacks}(-data)`);
  }

  // Both set: the file wins, re-read as it rotates, and the inline token serves only while the file
  // cannot be read (client-go's BearerTokenFile over BearerToken).
  let token: HttpSpec['token'];
  if (user.token !== undefined) {
    if (typeof user.token !== 'string' || user.token === '')
      throw fail(`${uField('token')} must be a string`);
    token = { kind: 'static', value: user.token };
  }
  if (user.tokenFile !== undefined) {
    if (typeof user.tokenFile !== 'string' || user.tokenFile === '')
      throw fail(`${uField('tokenFile')} must be a file path`);
    const abs = isAbsolute(user.tokenFile) ? user.tokenFile : resolve(base, user.tokenFile);
    try {
      readFileSync(abs);
    } catch (err) {
      if (token === undefined)
        throw fail(`${uField('tokenFile')} ${abs} could not be read: ${(err as Error).message}`, err);
    }
    // Unreadable now (written a moment later, a symlink being swapped): the file is still tried on
    // every request, and wins once it can be read; the inline token would expire in its place.
    token = {
      kind: 'file',
      path: abs,
      reloadMs: opts.tokenReloadMs,
      ...(token?.kind === 'static' ? { fallback: token.value } : {}),
    };
  }

  if (unsupported !== '') return { server, context, http: undefined, unsupported };
  const certFile = readFrom.get('client-certificate');
  const keyFile = readFrom.get('client-key');
  const http: HttpSpec = {
    server: url,
    insecure,
    ...(ca !== undefined && !insecure ? { ca } : {}),
    ...(typeof tlsServerName === 'string' && tlsServerName !== '' ? { tlsServerName } : {}),
    ...(cert !== undefined && key !== undefined ? { cert, key } : {}),
    ...(certFile !== undefined && keyFile !== undefined
      ? { certFiles: { cert: certFile, key: keyFile, reloadMs: opts.certReloadMs } }
      : {}),
    ...(token !== undefined ? { token } : {}),
  };
  return { server, context, http, unsupported: '' };
}

/**
 * JSON is YAML: a JSON kubeconfig is parsed without the yaml package, which costs ~10 MB of RSS once
 * loaded and is loaded (synchronously, on first need) only for real YAML. The in-cluster config
 * never needs it.
 */
function parseDocument(text: string): unknown {
  if (text.trimStart().startsWith('{')) {
    try {
      return JSON.parse(text);
    } catch {
      // Flow-style YAML that is not JSON: the YAML parser decides.
    }
  }
  const yaml = createRequire(import.meta.url)('yaml') as typeof import('yaml');
  return yaml.parse(text);
}

function optionalBool(
  obj: Obj,
  key: string,
  field: (k: string) => string,
  fail: (m: string) => K8sError,
): boolean | undefined {
  const v = obj[key];
  if (v === undefined) return undefined;
  if (typeof v !== 'boolean') throw fail(`${field(key)} must be true or false`);
  return v;
}

function firstLine(s: string): string {
  const i = s.indexOf('\n');
  return i < 0 ? s : s.slice(0, i);
}

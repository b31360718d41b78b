/**
 * Which transport a kubeconfig / the in-cluster config gets, and that the native one really
 * authenticates as configured: against the test API server over HTTPS with a certificate made by
 * openssl (CA, server certificate for 127.0.0.1, client certificate), checked by what the server
 * saw (Authorization, User-Agent, the verified client certificate's CN).
 */
import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { HttpTransport } from '../../../pkg/k8s/http-transport.ts';
import { createK8sClient, loadKubeConfig, USER_AGENT } from '../../../pkg/k8s/index.ts';
import type { HttpSpec } from '../../../pkg/k8s/kubeconfig-parse.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { makeClientCert, makeTestPki, type TestPki } from '../../support/apiserver/tls.ts';
import { configError, nodeObject, rejection } from './helpers.ts';

let pki: TestPki;
let other: TestPki;
let tlsServer: TestApiServer;
let dir: string;

beforeAll(async () => {
  pki = makeTestPki();
  other = makeTestPki();
  tlsServer = await startTestApiServer({
    bookmarkIntervalMs: 0,
    tls: { cert: pki.serverCert, key: pki.serverKey, ca: pki.caCert },
  });
  tlsServer.store.addNode(nodeObject('n1'));
});

afterAll(async () => {
  await tlsServer.close();
  pki.remove();
  other.remove();
});

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'trellis-kc-'));
  tlsServer.store.clearRequests();
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const b64 = (s: string): string => Buffer.from(s).toString('base64');

/** A kubeconfig with one context "main" -> cluster "c" -> user "u", written as YAML-compatible JSON. */
function kubeconfig(cluster: Record<string, unknown>, user: Record<string, unknown>, extra = {}): string {
  const p = join(dir, 'kubeconfig');
  writeFileSync(
    p,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: tlsServer.url, ...cluster } }],
      users: [{ name: 'u', user }],
      contexts: [{ name: 'main', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'main',
      ...extra,
    }),
  );
  return p;
}

/** One listNodes through a fresh client (one request: one Node); what the server recorded about it. */
async function oneRequest(path: string, opts: { context?: string; tokenReloadMs?: number } = {}) {
  const conn = loadKubeConfig({ kubeconfigPath: path, env: {}, ...opts });
  const c = createK8sClient(conn);
  expect((await c.listNodes()).items.map((n) => n.name)).toEqual(['n1']);
  const r = tlsServer.store.requests().at(-1)!;
  return { conn, client: c, r };
}

/**
 * One watch through the native transport (its own connection, not node:https): resolves with the
 * first event's type and Node name and the server's record of the watch request, or rejects.
 */
async function oneWatchEvent(spec: Partial<HttpSpec>) {
  const t = new HttpTransport(
    { server: new URL(tlsServer.url), insecure: false, ...spec },
    { userAgent: USER_AGENT, watchIdleMs: 5_000 },
  );
  const ac = new AbortController();
  const name = `w-${Math.random().toString(36).slice(2, 8)}`;
  const params = { resourceVersion: '', allowWatchBookmarks: false, timeoutSeconds: 60 };
  let added = false;
  try {
    const got = await new Promise<string>((resolve, reject) => {
      const opened = (): void => {
        tlsServer.store.addNode(nodeObject(name));
        added = true;
      };
      t.watch(
        'watch nodes',
        '/api/v1/nodes',
        { ...params, onOpen: opened },
        (type, o) => {
          const n = (o as { metadata: { name: string } }).metadata.name;
          if (n === name) resolve(`${type} ${n}`);
        },
        ac.signal,
      ).then(() => reject(new Error('the watch ended without the event')), reject);
    });
    const r = tlsServer.store.requests().find((q) => q.watch)!;
    return { got, name, r };
  } finally {
    ac.abort();
    t.close();
    // The other tests list exactly n1.
    if (added) tlsServer.store.deleteNode(name);
  }
}

describe('watches over TLS, on their own connection', () => {
  it('verify the server by its CA and present the client certificate and the token', async () => {
    const { got, name, r } = await oneWatchEvent({
      ca: Buffer.from(pki.caCert),
      cert: Buffer.from(pki.clientCert),
      key: Buffer.from(pki.clientKey),
      token: { kind: 'static', value: 'w-tok' },
    });
    expect(got).toBe(`ADDED ${name}`);
    expect([r.clientCertCN, r.authorization, r.userAgent]).toEqual([
      'trellis-client',
      'Bearer w-tok',
      USER_AGENT,
    ]);
  });

  it('refuse an unknown CA before anything is sent, and skip the check only when insecure', async () => {
    const e = await rejection(
      oneWatchEvent({ ca: Buffer.from(other.caCert), token: { kind: 'static', value: 'x' } }),
    );
    expect([e.statusCode, e.reason]).toEqual([undefined, 'NetworkError']);
    expect(e.message).toMatch(/certificate/i);
    expect(tlsServer.store.requests()).toHaveLength(0);
    expect((await oneWatchEvent({ insecure: true })).got).toMatch(/^ADDED /);
  });

  it('check the certificate against tls-server-name, not the address they connect to', async () => {
    // The server's certificate names 127.0.0.1, ::1 and localhost.
    const ok = await oneWatchEvent({ ca: Buffer.from(pki.caCert), tlsServerName: 'localhost' });
    expect(ok.got).toMatch(/^ADDED /);
    const e = await rejection(
      oneWatchEvent({ ca: Buffer.from(pki.caCert), tlsServerName: 'api.example.com' }),
    );
    expect(e.reason).toBe('NetworkError');
    expect(e.message).toMatch(/api\.example\.com/);
  });
});

describe('native transport over TLS', () => {
  it('trusts certificate-authority-data, sends the token and its User-Agent', async () => {
    const { conn, r } = await oneRequest(
      kubeconfig({ 'certificate-authority-data': b64(pki.caCert) }, { token: 'tok-1' }),
    );
    expect([conn.transport, conn.transportReason, conn.context]).toEqual(['native', '', 'main']);
    expect(r.authorization).toBe('Bearer tok-1');
    expect(r.userAgent).toBe(USER_AGENT);
    expect(USER_AGENT).toMatch(/^trellis-agent\/\d+\.\d+\.\d+/);
    expect(r.clientCertCN).toBeUndefined();
  });

  it('presents a client certificate from files (paths relative to the kubeconfig) and from data', async () => {
    mkdirSync(join(dir, 'pki'));
    writeFileSync(join(dir, 'pki', 'ca.crt'), pki.caCert);
    writeFileSync(join(dir, 'pki', 'client.crt'), pki.clientCert);
    writeFileSync(join(dir, 'pki', 'client.key'), pki.clientKey);
    const fromFiles = await oneRequest(
      kubeconfig(
        { 'certificate-authority': 'pki/ca.crt' },
        { 'client-certificate': 'pki/client.crt', 'client-key': 'pki/client.key' },
      ),
    );
    expect([fromFiles.conn.transport, fromFiles.r.clientCertCN, fromFiles.r.authorization]).toEqual([
      'native',
      'trellis-client',
      undefined,
    ]);
    const fromData = await oneRequest(
      kubeconfig(
        { 'certificate-authority': pki.files.caCert },
        { 'client-certificate-data': b64(pki.clientCert), 'client-key-data': b64(pki.clientKey) },
      ),
    );
    expect(fromData.r.clientCertCN).toBe('trellis-client');
  });

  it('reads rotated client certificate files again after certReloadMs (default 5 min), never half a pair', async () => {
    const next = makeClientCert(pki, 'client-next', 'trellis-client-next');
    mkdirSync(join(dir, 'pki'));
    const certFile = join(dir, 'pki', 'client.crt');
    const keyFile = join(dir, 'pki', 'client.key');
    writeFileSync(certFile, pki.clientCert);
    writeFileSync(keyFile, pki.clientKey);
    const path = kubeconfig(
      { 'certificate-authority-data': b64(pki.caCert) },
      { 'client-certificate': 'pki/client.crt', 'client-key': 'pki/client.key' },
    );
    const cached = createK8sClient(loadKubeConfig({ kubeconfigPath: path, env: {} }));
    const fresh = createK8sClient(loadKubeConfig({ kubeconfigPath: path, env: {}, certReloadMs: 0 }));
    await cached.listNodes();
    await fresh.listNodes();
    // Half a rotation (the new certificate beside the old key) is not taken: the old pair serves.
    writeFileSync(certFile, next.cert);
    await fresh.listNodes();
    writeFileSync(keyFile, next.key);
    await cached.listNodes();
    await fresh.listNodes();
    expect(tlsServer.store.requests().map((r) => r.clientCertCN)).toEqual([
      'trellis-client',
      'trellis-client',
      'trellis-client',
      'trellis-client', // within the default 5 min: the pair read before
      'trellis-client-next', // a new connection with the new pair
    ]);
    // A watch's own connection presents the new pair too.
    const { r } = await oneWatchEvent({
      ca: Buffer.from(pki.caCert),
      cert: Buffer.from(pki.clientCert),
      key: Buffer.from(pki.clientKey),
      certFiles: { cert: certFile, key: keyFile, reloadMs: 0 },
    });
    expect(r.clientCertCN).toBe('trellis-client-next');
  });

  it('skips verification only with insecure-skip-tls-verify, and refuses an unknown CA otherwise', async () => {
    const insecure = await oneRequest(kubeconfig({ 'insecure-skip-tls-verify': true }, { token: 't' }));
    expect(insecure.r.authorization).toBe('Bearer t');

    const systemRoots = createK8sClient(
      loadKubeConfig({ kubeconfigPath: kubeconfig({}, { token: 't' }), env: {} }),
    );
    const e1 = await rejection(systemRoots.listNodes());
    expect([e1.statusCode, e1.reason]).toEqual([undefined, 'NetworkError']);
    const wrongCa = createK8sClient(
      loadKubeConfig({
        kubeconfigPath: kubeconfig({ 'certificate-authority-data': b64(other.caCert) }, { token: 't' }),
        env: {},
      }),
    );
    const e2 = await rejection(wrongCa.listNodes());
    expect([e2.statusCode, e2.reason]).toEqual([undefined, 'NetworkError']);
    expect(e2.message).toMatch(/certificate/i);
    // Neither reached the API: the handshake failed.
    expect(tlsServer.store.requests().filter((r) => r.authorization === 'Bearer t')).toHaveLength(1);
  });

  it('re-reads a tokenFile after tokenReloadMs, and only then', async () => {
    writeFileSync(join(dir, 'token'), 'file-token-1\n');
    const path = kubeconfig({ 'certificate-authority-data': b64(pki.caCert) }, { tokenFile: 'token' });
    const cached = createK8sClient(loadKubeConfig({ kubeconfigPath: path, env: {} }));
    const fresh = createK8sClient(loadKubeConfig({ kubeconfigPath: path, env: {}, tokenReloadMs: 0 }));
    await cached.listNodes();
    await fresh.listNodes();
    writeFileSync(join(dir, 'token'), 'file-token-2\n');
    await cached.listNodes();
    await fresh.listNodes();
    expect(tlsServer.store.requests().map((r) => r.authorization)).toEqual([
      'Bearer file-token-1',
      'Bearer file-token-1',
      'Bearer file-token-1', // within the default 60 s: the cached token
      'Bearer file-token-2',
    ]);
  });

  it('with both token and tokenFile, sends the file (rotating); the inline token only while the file is unreadable', async () => {
    writeFileSync(join(dir, 'token'), 'file-token\n');
    const ca = { 'certificate-authority-data': b64(pki.caCert) };
    const both = kubeconfig(ca, { token: 'inline-token', tokenFile: 'token' });
    await createK8sClient(loadKubeConfig({ kubeconfigPath: both, env: {} })).listNodes();
    const missing = kubeconfig(ca, { token: 'inline-token', tokenFile: 'nope' });
    await createK8sClient(loadKubeConfig({ kubeconfigPath: missing, env: {} })).listNodes();
    expect(tlsServer.store.requests().map((r) => r.authorization)).toEqual([
      'Bearer file-token',
      'Bearer inline-token',
    ]);
  });

  it('a tokenFile unreadable at start is tried on every request and wins once it can be read', async () => {
    const ca = { 'certificate-authority-data': b64(pki.caCert) };
    const later = kubeconfig(ca, { token: 'inline-token', tokenFile: 'later' });
    const client = createK8sClient(loadKubeConfig({ kubeconfigPath: later, env: {} }));
    await client.listNodes();
    await client.listNodes();
    writeFileSync(join(dir, 'later'), 'file-token\n');
    await client.listNodes();
    expect(tlsServer.store.requests().map((r) => r.authorization)).toEqual([
      'Bearer inline-token',
      'Bearer inline-token',
      'Bearer file-token',
    ]);
  });

  it('uses an explicit context instead of current-context', async () => {
    const path = kubeconfig(
      { 'certificate-authority-data': b64(pki.caCert) },
      { token: 'main-token' },
      {
        clusters: [
          { name: 'c', cluster: { server: tlsServer.url, 'certificate-authority-data': b64(pki.caCert) } },
          { name: 'dead', cluster: { server: 'https://127.0.0.1:1' } },
        ],
        users: [
          { name: 'u', user: { token: 'main-token' } },
          { name: 'v', user: { token: 'other-token' } },
        ],
        contexts: [
          { name: 'main', context: { cluster: 'dead', user: 'u' } },
          { name: 'other', context: { cluster: 'c', user: 'v' } },
        ],
      },
    );
    expect(loadKubeConfig({ kubeconfigPath: path, env: {} })).toMatchObject({
      context: 'main',
      server: 'https://127.0.0.1:1',
    });
    const { conn, r } = await oneRequest(path, { context: 'other' });
    expect([conn.context, r.authorization]).toEqual(['other', 'Bearer other-token']);
    expect(
      configError(() => loadKubeConfig({ kubeconfigPath: path, env: {}, context: 'nope' })).message,
    ).toBe(
      `load kubeconfig: kubeconfig ${path} (from --kubeconfig): the context option names contexts "nope", which is not in contexts`,
    );
  });
});

describe('client-node fallback', () => {
  it('is chosen for exec plugins, auth providers, basic auth, impersonation and proxies, and says why', () => {
    const cases: [Record<string, unknown>, Record<string, unknown>, string][] = [
      [
        {},
        { exec: { apiVersion: 'client.authentication.k8s.io/v1', command: 'x' } },
        'exec credential plugin',
      ],
      [{}, { 'auth-provider': { name: 'oidc' } }, 'auth-provider'],
      [{}, { username: 'a', password: 'b' }, 'basic auth'],
      [{}, { token: 't', as: 'someone' }, 'impersonation'],
      [{ 'proxy-url': 'http://127.0.0.1:3128' }, { token: 't' }, 'cluster proxy-url'],
    ];
    for (const [cluster, user, reason] of cases) {
      const conn = loadKubeConfig({
        kubeconfigPath: kubeconfig({ 'insecure-skip-tls-verify': true, ...cluster }, user),
        env: {},
      });
      expect([conn.transport, conn.transportReason]).toEqual(['client-node', reason]);
    }
  });

  it('serves an exec credential plugin through the real client-node', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      srv.store.addNode(nodeObject('n1'));
      const plugin = join(dir, 'credential-plugin');
      writeFileSync(
        plugin,
        `#!/bin/sh\necho '{"apiVersion":"client.authentication.k8s.io/v1","kind":"ExecCredential","status":{"token":"from-exec"}}'\n`,
      );
      chmodSync(plugin, 0o755);
      const path = kubeconfig(
        { server: srv.url, 'insecure-skip-tls-verify': true },
        {
          exec: { apiVersion: 'client.authentication.k8s.io/v1', command: plugin, interactiveMode: 'Never' },
        },
      );
      const c = createK8sClient(loadKubeConfig({ kubeconfigPath: path, env: {} }));
      expect(c.transport).toBe('client-node');
      expect((await c.listNodes()).items.map((n) => n.name)).toEqual(['n1']);
      expect(srv.store.requests().map((r) => r.authorization)).toEqual(['Bearer from-exec']);
    } finally {
      await srv.close();
    }
  });
});

describe('malformed kubeconfigs', () => {
  it('name the file and the field', () => {
    const msg = (cluster: Record<string, unknown>, user: Record<string, unknown>, extra = {}): string => {
      const p = kubeconfig(cluster, user, extra);
      return configError(() => loadKubeConfig({ kubeconfigPath: p, env: {} })).message.replace(p, 'KC');
    };
    expect(msg({ 'certificate-authority-data': b64('not a pem') }, { token: 't' })).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): clusters[name=c].cluster.certificate-authority-data holds no PEM block',
    );
    expect(
      msg({ 'insecure-skip-tls-verify': true }, { 'client-certificate': 'missing.crt', 'client-key': 'k' }),
    ).toMatch(
      /^load kubeconfig: kubeconfig KC \(from --kubeconfig\): users\[name=u\]\.user\.client-certificate \/.*\/missing\.crt could not be read: ENOENT/,
    );
    expect(msg({ 'insecure-skip-tls-verify': true }, { 'client-key-data': b64(pki.clientKey) })).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): users[name=u].user.client-key(-data) is set without client-certificate(-data)',
    );
    expect(msg({ server: 'not a url', 'insecure-skip-tls-verify': true }, {})).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): clusters[name=c].cluster.server "not a url" is not a URL',
    );
    expect(msg({ 'insecure-skip-tls-verify': 'yes' }, {})).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): clusters[name=c].cluster.insecure-skip-tls-verify must be true or false',
    );
    expect(msg({ 'insecure-skip-tls-verify': true }, { tokenFile: 'nope' })).toMatch(
      /users\[name=u\]\.user\.tokenFile \/.*\/nope could not be read/,
    );
    expect(msg({}, {}, { 'current-context': undefined })).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): current-context is not set (and no context was named)',
    );
    expect(msg({}, {}, { contexts: [{ name: 'main', context: { cluster: 'gone', user: 'u' } }] })).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): contexts[name=main].context.cluster names clusters "gone", which is not in clusters',
    );
    expect(msg({}, {}, { clusters: 'oops' })).toBe(
      'load kubeconfig: kubeconfig KC (from --kubeconfig): clusters must be a list',
    );
    writeFileSync(join(dir, 'kubeconfig'), '- just\n- a list\n');
    expect(
      configError(() => loadKubeConfig({ kubeconfigPath: join(dir, 'kubeconfig'), env: {} })).message,
    ).toMatch(/kubeconfig .*: is not a YAML mapping$/);
  });
});

describe('in-cluster config', () => {
  const env = (): Record<string, string> => ({
    KUBERNETES_SERVICE_HOST: '127.0.0.1',
    KUBERNETES_SERVICE_PORT: String(tlsServer.port),
  });

  it('trusts the service account CA and re-reads the rotated token', async () => {
    const sa = join(dir, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'ca.crt'), pki.caCert);
    writeFileSync(join(sa, 'token'), 'bound-1');
    const conn = loadKubeConfig({ env: env(), serviceAccountRoot: dir, tokenReloadMs: 0 });
    expect([conn.source, conn.transport, conn.server]).toEqual([
      'in-cluster',
      'native',
      `https://127.0.0.1:${tlsServer.port}`,
    ]);
    const cached = createK8sClient(loadKubeConfig({ env: env(), serviceAccountRoot: dir }));
    const c = createK8sClient(conn);
    await c.listNodes();
    await cached.listNodes();
    // The kubelet rotates by swapping files; a new token must be used without a restart.
    writeFileSync(join(sa, 'token'), 'bound-2');
    await c.listNodes();
    await cached.listNodes();
    // A failed re-read (the file is briefly missing) keeps the last token.
    rmSync(join(sa, 'token'));
    await c.listNodes();
    expect(tlsServer.store.requests().map((r) => r.authorization)).toEqual([
      'Bearer bound-1',
      'Bearer bound-1',
      'Bearer bound-2',
      'Bearer bound-1',
      'Bearer bound-2',
    ]);
  });

  it('works through the forced client-node transport too', async () => {
    const sa = join(dir, 'var/run/secrets/kubernetes.io/serviceaccount');
    mkdirSync(sa, { recursive: true });
    writeFileSync(join(sa, 'ca.crt'), pki.caCert);
    writeFileSync(join(sa, 'token'), 'bound-cn');
    const c = createK8sClient(
      loadKubeConfig({ env: env(), serviceAccountRoot: dir, transport: 'client-node' }),
    );
    expect(c.transport).toBe('client-node');
    expect((await c.listNodes()).items.map((n) => n.name)).toEqual(['n1']);
    expect(tlsServer.store.requests().map((r) => r.authorization)).toEqual(['Bearer bound-cn']);
  });
});

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { createK8sClient, loadKubeConfig } from '../../../pkg/k8s/index.ts';
import { startTestApiServer, writeKubeconfig } from '../../support/apiserver/server.ts';
import { makeTestPki, type TestPki } from '../../support/apiserver/tls.ts';
import { configError } from './helpers.ts';

let dir: string;
let pki: TestPki;
beforeAll(() => {
  pki = makeTestPki();
});
afterAll(() => {
  pki.remove();
});
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'trellis-kc-'));
});
afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

/** A service account directory under `root`; returns it. */
function serviceAccount(root: string, ca = pki.caCert, token = 'sa-token'): string {
  const sa = join(root, 'var/run/secrets/kubernetes.io/serviceaccount');
  mkdirSync(sa, { recursive: true });
  writeFileSync(join(sa, 'token'), token);
  writeFileSync(join(sa, 'ca.crt'), ca);
  writeFileSync(join(sa, 'namespace'), 'kube-system');
  return sa;
}

describe('loadKubeConfig', () => {
  it('uses the explicit path first, then $KUBECONFIG', () => {
    const a = join(dir, 'a');
    const b = join(dir, 'b');
    writeKubeconfig(a, 'http://127.0.0.1:1');
    writeKubeconfig(b, 'http://127.0.0.1:2');
    const env = {
      KUBECONFIG: `${b}:${a}`,
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      KUBERNETES_SERVICE_PORT: '443',
    };
    expect(loadKubeConfig({ kubeconfigPath: a, env })).toMatchObject({
      source: 'flag',
      server: 'http://127.0.0.1:1',
    });
    expect(loadKubeConfig({ env })).toMatchObject({ source: 'env', server: 'http://127.0.0.1:2' });
  });

  it('$KUBECONFIG is a list: its first file that exists is read; the messages name $KUBECONFIG', () => {
    const a = join(dir, 'a');
    const missing = join(dir, 'missing');
    writeKubeconfig(a, 'http://127.0.0.1:1');
    const env = { KUBECONFIG: `${missing}::${a}` };
    expect(loadKubeConfig({ env })).toMatchObject({ source: 'env', file: a, server: 'http://127.0.0.1:1' });
    expect(
      configError(() => loadKubeConfig({ env: { KUBECONFIG: `${missing}:${join(dir, 'b')}` } })).message,
    ).toBe(
      `load kubeconfig: none of the kubeconfigs $KUBECONFIG lists exists: ${missing}, ${join(dir, 'b')}`,
    );
    writeFileSync(join(dir, 'bad'), 'clusters: [');
    expect(
      configError(() => loadKubeConfig({ env: { KUBECONFIG: `${missing}:${join(dir, 'bad')}` } })).message,
    ).toMatch(
      new RegExp(
        `^load kubeconfig: kubeconfig ${join(dir, 'bad')} \\(from \\$KUBECONFIG\\) could not be read: `,
      ),
    );
    expect(configError(() => loadKubeConfig({ kubeconfigPath: join(dir, 'bad'), env })).message).toMatch(
      new RegExp(
        `^load kubeconfig: kubeconfig ${join(dir, 'bad')} \\(from --kubeconfig\\) could not be read: `,
      ),
    );
    writeFileSync(join(dir, 'list'), '[]');
    expect(configError(() => loadKubeConfig({ kubeconfigPath: join(dir, 'list'), env })).message).toBe(
      `load kubeconfig: kubeconfig ${join(dir, 'list')} (from --kubeconfig): is not a YAML mapping`,
    );
  });

  it('uses the service account in a pod when no kubeconfig is given', () => {
    serviceAccount(dir);
    const c = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
      serviceAccountRoot: dir,
    });
    expect(c).toMatchObject({ source: 'in-cluster', server: 'https://10.96.0.1:443' });
    const v6 = loadKubeConfig({
      env: { KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '6443' },
      serviceAccountRoot: dir,
    });
    expect(v6.server).toBe('https://[fd00::1]:6443');
  });

  it('explains what is missing', () => {
    expect(configError(() => loadKubeConfig({ env: {} })).message).toMatch(
      /pass --kubeconfig, set \$KUBECONFIG, or run in a pod/,
    );
    expect(configError(() => loadKubeConfig({ kubeconfigPath: join(dir, 'nope'), env: {} })).message).toMatch(
      /from --kubeconfig\) does not exist/,
    );
    expect(configError(() => loadKubeConfig({ env: { KUBECONFIG: join(dir, 'nope') } })).message).toMatch(
      /from \$KUBECONFIG\) does not exist/,
    );
    expect(
      configError(() =>
        loadKubeConfig({
          env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
          serviceAccountRoot: dir,
        }),
      ).message,
    ).toMatch(/serviceaccount\/token does not exist/);
    serviceAccount(dir, '');
    expect(
      configError(() =>
        loadKubeConfig({
          env: { KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' },
          serviceAccountRoot: dir,
        }),
      ).message,
    ).toMatch(/serviceaccount\/ca.crt holds no PEM certificate/);
  });

  it('rejects plain http without insecure-skip-tls-verify (client-node would refuse it later)', () => {
    const p = join(dir, 'kc');
    writeFileSync(
      p,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [{ name: 'c', cluster: { server: 'http://127.0.0.1:1' } }],
        users: [{ name: 'u', user: { token: 't' } }],
        contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
        'current-context': 'x',
      }),
    );
    expect(configError(() => loadKubeConfig({ kubeconfigPath: p, env: {} })).message).toMatch(
      /needs insecure-skip-tls-verify: true/,
    );
    writeFileSync(p, 'clusters: [');
    expect(configError(() => loadKubeConfig({ kubeconfigPath: p, env: {} })).message).toMatch(
      /could not be read/,
    );
  });

  it('the test server kubeconfig works with the real client and sends the dummy token', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      const c = createK8sClient(loadKubeConfig({ kubeconfigPath: srv.kubeconfigPath, env: {} }));
      expect((await c.listNodes()).items).toEqual([]);
      expect(srv.store.requests().map((r) => r.authorization)).toEqual(['Bearer trellis-test-token']);
    } finally {
      await srv.close();
    }
  });
});

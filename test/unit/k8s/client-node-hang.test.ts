/**
 * The client-node fallback with an exec credential plugin that never returns (waiting on a prompt or
 * a token endpoint): client-node runs it before its request with no timeout of its own. A list or
 * patch must fail within the request timeout, a watch give up as a silent one, and a stopping agent
 * must not wait for any of them. The real client-node, a real plugin process, the test API server.
 */
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CoreApi } from '../../../pkg/k8s/api.ts';
import { createClientNodeTransport } from '../../../pkg/k8s/client-node-transport.ts';
import { type K8sError, loadKubeConfig } from '../../../pkg/k8s/index.ts';
import { startNodeInformerOn } from '../../../pkg/k8s/informer.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { nodeObject, waitFor } from './helpers.ts';

let dir: string;
let srv: TestApiServer;

beforeEach(async () => {
  dir = mkdtempSync(join(tmpdir(), 'trl-exec-hang-'));
  srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
  srv.store.addNode(nodeObject('n1'));
});
afterEach(async () => {
  await srv.close();
  rmSync(dir, { recursive: true, force: true });
});

/** A transport whose credential plugin sleeps for 20 s (or runs `script`). */
function hangingTransport(opts: { requestTimeoutMs?: number; watchIdleMs?: number }, script?: string) {
  const plugin = join(dir, 'credential-plugin');
  // Its process id and its child's noted, for the test that neither runs on: a wrapper script that
  // runs its tool without exec (the shell and the tool are two processes).
  const pids = join(dir, 'pids');
  writeFileSync(plugin, script ?? `#!/bin/sh\necho $$ >> ${pids}\nsleep 20 &\necho $! >> ${pids}\nwait\n`);
  chmodSync(plugin, 0o755);
  const path = join(dir, 'kubeconfig');
  writeFileSync(
    path,
    JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'c', cluster: { server: srv.url, 'insecure-skip-tls-verify': true } }],
      users: [
        {
          name: 'u',
          user: {
            exec: {
              apiVersion: 'client.authentication.k8s.io/v1',
              command: plugin,
              interactiveMode: 'Never',
            },
          },
        },
      ],
      contexts: [{ name: 'main', context: { cluster: 'c', user: 'u' } }],
      'current-context': 'main',
    }),
  );
  const conn = loadKubeConfig({ kubeconfigPath: path, env: {} });
  expect(conn.transport).toBe('client-node');
  return createClientNodeTransport(conn.fallbackSpec()!, opts);
}

describe('client-node transport, a credential plugin that never returns', () => {
  it('a list and a patch fail within the request timeout, naming it', async () => {
    const t = hangingTransport({ requestTimeoutMs: 300 });
    const started = performance.now();
    const err = await t.listPage('list nodes', '/api/v1/nodes', { limit: 10 }).catch((e: unknown) => e);
    expect((err as K8sError).message).toMatch(/no answer within 300 ms/);
    expect(performance.now() - started).toBeLessThan(5_000);
    const patched = await t
      .patch('patch node', '/api/v1/nodes/n1', 'merge', { metadata: { annotations: { a: 'b' } } })
      .catch((e: unknown) => e);
    expect((patched as K8sError).message).toMatch(/no answer within 300 ms/);
    expect(srv.store.requests()).toEqual([]);
  });

  it('the plugin is killed once it has run for the request timeout: abandoned calls leave no process behind', async () => {
    const t = hangingTransport({ requestTimeoutMs: 300 });
    for (let i = 0; i < 3; i++) {
      const err = await t.listPage('list nodes', '/api/v1/nodes', { limit: 10 }).catch((e: unknown) => e);
      expect((err as K8sError).message).toMatch(/no answer within 300 ms/);
    }
    const pids = readFileSync(join(dir, 'pids'), 'utf8').trim().split('\n').map(Number);
    expect(pids).toHaveLength(6); // three scripts, each with its sleep
    const running = (pid: number): boolean => {
      try {
        return !readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.startsWith('Z');
      } catch {
        return false;
      }
    };
    await waitFor(() => pids.every((pid) => !running(pid)), 'the plugins killed', 5_000);
  });

  it('a list and a watch end at once when their signal aborts; a watch never set up ends as a silent one', async () => {
    const t = hangingTransport({});
    const ac = new AbortController();
    const list = t.listPage('list nodes', '/api/v1/nodes', { limit: 10 }, ac.signal).catch((e: unknown) => e);
    const watch = t.watch(
      'watch nodes',
      '/api/v1/nodes',
      { resourceVersion: '1', allowWatchBookmarks: true, timeoutSeconds: 300 },
      () => {},
      ac.signal,
    );
    setTimeout(() => ac.abort(), 100);
    const started = performance.now();
    expect(((await list) as K8sError).message).toMatch(/abandoned: the client is stopping/);
    expect(await watch).toBe('closed');
    expect(performance.now() - started).toBeLessThan(2_000);

    const idle = hangingTransport({ watchIdleMs: 200 });
    const quiet = await idle.watch(
      'watch nodes',
      '/api/v1/nodes',
      { resourceVersion: '1', allowWatchBookmarks: true, timeoutSeconds: 300 },
      () => {},
      new AbortController().signal,
    );
    expect(quiet).toBe('timeout');
  });

  it('a call whose signal has already aborted is refused, and its failing request leaves no unhandled rejection', async () => {
    const t = hangingTransport({}, '#!/bin/sh\nexit 1\n'); // the plugin fails at once: the request rejects
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    process.on('unhandledRejection', onUnhandled);
    try {
      const ac = new AbortController();
      ac.abort();
      const err = await t
        .listPage('list nodes', '/api/v1/nodes', { limit: 10 }, ac.signal)
        .catch((e: unknown) => e);
      expect((err as K8sError).message).toMatch(/abandoned: the client is stopping/);
      await new Promise((r) => setTimeout(r, 1_000)); // the plugin has run and failed by then
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('the Node informer over it reports the failure, and stops at once when the agent stops', async () => {
    const t = hangingTransport({ requestTimeoutMs: 200 });
    const errors: K8sError[] = [];
    const ac = new AbortController();
    const informer = startNodeInformerOn(new CoreApi(t, 100), {
      signal: ac.signal,
      backoff: { initialMs: 20, maxMs: 50 },
      onEvent: () => {},
      onError: (err) => errors.push(err),
    });
    await waitFor(() => errors.length > 0, 'the failed list reported', 5_000);
    expect(errors[0]!.message).toMatch(/no answer within 200 ms/);
    const stopping = performance.now();
    ac.abort();
    await informer.done;
    expect(performance.now() - stopping).toBeLessThan(1_000);
  });
});

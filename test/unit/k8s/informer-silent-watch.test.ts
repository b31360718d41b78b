/**
 * A watch the API server (or a proxy) holds open and silent: no event, not even a BOOKMARK, for
 * longer than kubelets' status reports leave a Node watch (5 minutes). Resuming from the same
 * resourceVersion would hear nothing for ever while Nodes change; eight silent watches in a row
 * (12 minutes at the transport's 90 s) are a failure that relists.
 * Real HTTP against the test API server, with the transport's inactivity timeout shortened.
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { CoreApi } from '../../../pkg/k8s/api.ts';
import { createClientNodeTransport } from '../../../pkg/k8s/client-node-transport.ts';
import { HttpTransport } from '../../../pkg/k8s/http-transport.ts';
import { type K8sError, loadKubeConfig, type NodeInformer } from '../../../pkg/k8s/index.ts';
import { startNodeInformerOn } from '../../../pkg/k8s/informer.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { nodeObject, waitFor } from './helpers.ts';

let server: TestApiServer | undefined;
let ac: AbortController | undefined;
let informer: NodeInformer | undefined;
let transportName: 'native' | 'client-node' = 'native';

afterEach(async () => {
  ac?.abort();
  await informer?.done;
  await server?.close();
  server = undefined;
  transportName = 'native';
});

async function start(bookmarkIntervalMs: number, onAnswered?: () => void) {
  server = await startTestApiServer({ bookmarkIntervalMs });
  server.store.addNode(nodeObject('a'));
  const conn = loadKubeConfig({
    kubeconfigPath: server.kubeconfigPath,
    ...(transportName === 'client-node' ? { transport: 'client-node' as const } : {}),
  });
  const transport =
    transportName === 'client-node'
      ? createClientNodeTransport(conn.fallbackSpec()!, { watchIdleMs: 150 })
      : new HttpTransport(conn.httpSpec()!, { userAgent: 'trellis-agent/test', watchIdleMs: 150 });
  const errors: K8sError[] = [];
  const events: string[] = [];
  ac = new AbortController();
  informer = startNodeInformerOn(new CoreApi(transport, 100), {
    signal: ac.signal,
    backoff: { initialMs: 20, maxMs: 50 },
    onEvent: (type, node) => events.push(`${type} ${node.name}`),
    onError: (err) => errors.push(err),
    ...(onAnswered === undefined ? {} : { onAnswered }),
  });
  await waitFor(() => informer!.hasSynced(), 'first list');
  return { errors, events, listed: informer.relists };
}

// Both transports: client-node's Watch has an inactivity timeout of its own (30 s by default), which
// must be the one trellis sets, or a quiet cluster's watch ends before the first BOOKMARK.
describe.each(['native', 'client-node'] as const)(
  'node informer: a watch that hears nothing at all (%s transport)',
  (name) => {
    beforeEach(() => {
      transportName = name;
    });

    it('is a failure after eight in a row (not before): reported once, counted as a restart, and a relist follows', async () => {
      const { errors, events, listed } = await start(0);
      const t0 = Date.now();
      await waitFor(() => errors.length > 0, 'the silent watches reported', 5_000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(7 * 150); // seven inactivity timeouts passed quietly
      expect(errors[0]!.message).toContain('8 watches in a row heard no event and no BOOKMARK');
      await waitFor(() => informer!.relists > listed, 'a relist', 5_000);
      expect(informer!.restarts).toBeGreaterThanOrEqual(1);
      // The informer still follows changes.
      server!.store.addNode(nodeObject('b'));
      await waitFor(() => events.includes('ADDED b'), 'the new Node seen', 5_000);
    });

    it('a server that sends BOOKMARKs keeps the watch without errors or relists', async () => {
      const { errors, listed } = await start(50);
      await new Promise((r) => setTimeout(r, 1_500)); // ten inactivity timeouts' worth
      expect(errors).toEqual([]);
      expect(informer!.relists).toBe(listed);
    });
  },
);

describe('node informer: the API answering again', () => {
  it('is said as soon as a watch is accepted after failures, not at the next change of a Node', async () => {
    let answered = 0;
    const { errors } = await start(0, () => answered++);
    await waitFor(() => answered >= 1, 'the first watch accepted', 5_000);
    // The API refuses watches for a while (an outage), then serves them again; no Node changes.
    let refusing = true;
    // The open watch hears nothing (no BOOKMARKs here) and ends on the inactivity timeout.
    server!.store.failRequests(() => refusing);
    await waitFor(() => errors.length > 0, 'a refused watch', 5_000);
    const before = answered;
    const relists = informer!.relists;
    refusing = false;
    await waitFor(() => answered > before, 'answered again', 5_000);
    // Said by the watch being accepted, not by a list.
    expect(informer!.relists).toBe(relists);
  });
});

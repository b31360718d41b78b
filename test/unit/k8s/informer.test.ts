/**
 * The node informer against the test API server over real HTTP on 127.0.0.1 and a kubeconfig
 * file, through both transports: the native one, and the real @kubernetes/client-node
 * (CoreV1Api.listNode + Watch; the fallback, forced here so the library stays covered).
 */
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  createK8sClient,
  type K8sClient,
  type K8sError,
  loadKubeConfig,
  type NodeEventType,
  type NodeInformer,
  type NodeInformerOptions,
  type NodeView,
} from '../../../pkg/k8s/index.ts';
import {
  startTestApiServer,
  type TestApiServer,
  THROTTLE_RETRY_AFTER_SECONDS,
} from '../../support/apiserver/server.ts';
import { api, nodeObject, waitFor } from './helpers.ts';

let server: TestApiServer;
let client: K8sClient;
let ac: AbortController;
let informer: NodeInformer | undefined;
let mode: 'auto' | 'client-node' = 'auto';

async function startServer(opts: { bookmarkIntervalMs?: number; historySize?: number } = {}): Promise<void> {
  server = await startTestApiServer({ bookmarkIntervalMs: opts.bookmarkIntervalMs ?? 0, ...opts });
  client = createK8sClient(loadKubeConfig({ kubeconfigPath: server.kubeconfigPath, transport: mode }));
}

interface Recorded {
  syncs: string[][];
  events: { type: NodeEventType; name: string }[];
  errors: { err: K8sError; delay: number }[];
  invalid: string[];
  ignored: string[];
}

function start(extra: Partial<NodeInformerOptions> = {}): Recorded {
  const rec: Recorded = { syncs: [], events: [], errors: [], invalid: [], ignored: [] };
  informer = client.startNodeInformer({
    signal: ac.signal,
    backoff: { initialMs: 20, maxMs: 200 },
    onSync: (nodes: readonly NodeView[]) => rec.syncs.push(nodes.map((n) => n.name)),
    onEvent: (type, node) => rec.events.push({ type, name: node.name }),
    onError: (err, delay) => rec.errors.push({ err, delay }),
    onInvalid: (p) => rec.invalid.push(p),
    onIgnored: (p) => rec.ignored.push(p),
    ...extra,
  });
  return rec;
}

/** A sleep that records the delay asked for and waits 5 ms instead (the backoff tests' clock). */
function recordingSleep(delays: number[]): NonNullable<NodeInformerOptions['sleep']> {
  return (ms, signal) => {
    delays.push(ms);
    return new Promise((r) => {
      const t = setTimeout(r, 5);
      signal.addEventListener('abort', () => {
        clearTimeout(t);
        r();
      });
    });
  };
}

const names = (): string[] => informer!.list().map((n) => n.name);
const requestsTo = (path: string, watch: boolean) =>
  server.store.requests().filter((r) => r.method === 'GET' && r.path === path && r.watch === watch);

beforeEach(() => {
  ac = new AbortController();
  informer = undefined;
});

afterEach(async () => {
  ac.abort();
  if (informer) await informer.done;
  await server.close();
});

describe.each(['auto', 'client-node'] as const)('node informer, transport %s', (transport) => {
  beforeEach(() => {
    mode = transport;
  });

  it('syncs the initial list into plain NodeViews', async () => {
    await startServer();
    server.store.addNode(nodeObject('b', { podCIDRs: ['10.244.2.0/24'], ips: ['192.168.0.2'] }));
    server.store.addNode(
      nodeObject('a', { podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'], ips: ['192.168.0.1', 'fd00::1'] }),
    );
    server.store.addNode(nodeObject('c'));
    const rec = start();
    expect(informer!.hasSynced()).toBe(false);
    await waitFor(() => informer!.hasSynced(), 'first sync');
    expect(rec.syncs).toEqual([['a', 'b', 'c']]);
    expect(informer!.get('a')).toMatchObject({
      name: 'a',
      podCIDRs: ['10.244.1.0/24', 'fd00:1::/64'],
      internalIPs: ['192.168.0.1', 'fd00::1'],
    });
    expect(informer!.get('c')?.podCIDRs).toEqual([]);
    expect(informer!.relists).toBe(1);
    expect(informer!.restarts).toBe(0);
  });

  it('follows add, update and delete made through the API', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');

    expect(
      (await api(server.url, 'POST', '/api/v1/nodes', nodeObject('b', { ips: ['10.0.0.2'] }))).status,
    ).toBe(201);
    await waitFor(() => informer!.get('b') !== undefined, 'ADDED b');

    const patch = { spec: { podCIDRs: ['10.244.9.0/24'] } };
    expect(
      (await api(server.url, 'PATCH', '/api/v1/nodes/b', patch, 'application/merge-patch+json')).status,
    ).toBe(200);
    await waitFor(() => informer!.get('b')?.podCIDRs[0] === '10.244.9.0/24', 'MODIFIED b');

    expect((await api(server.url, 'DELETE', '/api/v1/nodes/a')).status).toBe(200);
    await waitFor(() => informer!.get('a') === undefined, 'DELETED a');

    expect(rec.events).toEqual([
      { type: 'ADDED', name: 'a' },
      { type: 'ADDED', name: 'b' },
      { type: 'MODIFIED', name: 'b' },
      { type: 'DELETED', name: 'a' },
    ]);
    expect(names()).toEqual(['b']);
    expect(informer!.resourceVersion).toBe(String(server.store.currentResourceVersion()));
    // One list, one watch: the changes came over the watch, not through relists.
    expect(requestsTo('/api/v1/nodes', false)).toHaveLength(1);
    expect(requestsTo('/api/v1/nodes', true)).toHaveLength(1);
  });

  it('passes on no kubelet status report: a MODIFIED that changes nothing a view holds keeps the view', async () => {
    await startServer();
    server.store.addNode(nodeObject('a', { podCIDRs: ['10.244.1.0/24'], ips: ['192.168.0.1'] }));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    const view = informer!.get('a');
    // Heartbeats: conditions and images change, the resourceVersion moves; twice.
    for (const beat of ['2026-12-01T06:00:00Z', '2026-12-01T06:05:00Z']) {
      server.store.updateNode('a', (n) => ({
        ...n,
        status: {
          ...(n.status as object),
          conditions: [{ type: 'Ready', status: 'True', lastHeartbeatTime: beat }],
          images: [{ names: [`img@${beat}`], sizeBytes: 1 }],
        },
      }));
    }
    const rv = String(server.store.currentResourceVersion());
    await waitFor(() => informer!.resourceVersion === rv, 'both reports read');
    expect(informer!.unchangedEvents).toBe(2);
    expect(informer!.get('a')).toBe(view); // the same object: derived data keyed on it stays valid
    // A change the agent reads is passed on at once.
    server.store.updateNode('a', (n) => ({ ...n, spec: { podCIDRs: ['10.244.7.0/24'] } }));
    await waitFor(() => informer!.get('a')?.podCIDRs[0] === '10.244.7.0/24', 'MODIFIED a');
    expect(rec.events).toEqual([
      { type: 'ADDED', name: 'a' },
      { type: 'MODIFIED', name: 'a' },
    ]);
    expect(informer!.unchangedEvents).toBe(2);
  });

  it('keeps only the annotations asked for: another one changing (an agent report) is no change, one kept is', async () => {
    await startServer();
    server.store.addNode(nodeObject('a', { podCIDRs: ['10.244.1.0/24'], ips: ['192.168.0.1'] }));
    const routing = 'trellis.dev/vtep-mac-v4';
    const rec = start({ annotations: (key) => key === routing });
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    const annotate = (extra: Record<string, string>) =>
      server.store.updateNode('a', (n) => {
        const meta = n.metadata as { annotations?: Record<string, string> };
        return { ...n, metadata: { ...meta, annotations: { ...(meta.annotations ?? {}), ...extra } } };
      });
    const view = informer!.get('a');
    annotate({ 'trellis.dev/agent': '{"version":"1","ready":true}' });
    annotate({ 'trellis.dev/agent': '{"version":"1","ready":false}' });
    let rv = String(server.store.currentResourceVersion());
    await waitFor(() => informer!.resourceVersion === rv, 'both reports read');
    expect(informer!.unchangedEvents).toBe(2);
    expect(informer!.get('a')).toBe(view);
    expect(informer!.get('a')?.annotations).toEqual({});
    annotate({ [routing]: '0a:58:0a:f4:01:00' });
    rv = String(server.store.currentResourceVersion());
    await waitFor(() => informer!.resourceVersion === rv, 'the MAC read');
    expect(informer!.get('a')?.annotations).toEqual({ [routing]: '0a:58:0a:f4:01:00' });
    expect(rec.events).toEqual([
      { type: 'ADDED', name: 'a' },
      { type: 'MODIFIED', name: 'a' },
    ]);
    expect(informer!.unchangedEvents).toBe(2);
  });

  it('relists after 410 Gone and converges on what it missed', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    server.store.addNode(nodeObject('b'));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    server.store.addNode(nodeObject('c'));
    await waitFor(() => informer!.get('c') !== undefined, 'ADDED c');
    const cBefore = informer!.get('c');
    const listed = informer!.list();
    listed.pop(); // the caller's copy: the informer's list is unaffected
    expect(names()).toEqual(['a', 'b', 'c']);

    // All synchronous, so the informer cannot see any of it over a watch: it must resume from an
    // rv that was compacted away, get the 410 ERROR event, and relist.
    server.store.closeAllWatches();
    server.store.deleteNode('a');
    server.store.updateNode('b', (n) => ({ ...n, spec: { podCIDRs: ['10.244.2.0/24'] } }));
    server.store.addNode(nodeObject('d'));
    server.store.compactHistory();

    await waitFor(() => informer!.relists === 2, 'relist');
    expect(names()).toEqual(['b', 'c', 'd']);
    expect(informer!.get('b')?.podCIDRs).toEqual(['10.244.2.0/24']);
    expect(rec.syncs.at(-1)).toEqual(['b', 'c', 'd']);
    // The relist kept the view of the Node that did not change (the controller keys derived data on it).
    expect(informer!.get('c')).toBe(cBefore);
    expect(rec.events.slice(-3)).toEqual([
      { type: 'DELETED', name: 'a' },
      { type: 'MODIFIED', name: 'b' },
      { type: 'ADDED', name: 'd' },
    ]);
    // 410 is the protocol working, not a failure.
    expect(informer!.restarts).toBe(0);
    expect(rec.errors).toEqual([]);
    // And it is watching again, from the new list.
    await waitFor(() => server.store.openWatches() === 1, 'watch reopened');
    server.store.addNode(nodeObject('e'));
    await waitFor(() => informer!.get('e') !== undefined, 'ADDED e after relist');
  });

  it('restarts with capped exponential backoff when the server fails, then syncs', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    server.store.failRequests({ count: 4, match: (r) => r.path === '/api/v1/nodes' && !r.watch });
    const delays: number[] = [];
    const rec = start({ resyncMs: 0, random: () => 0.999999, sleep: recordingSleep(delays) });
    await waitFor(() => informer!.hasSynced(), 'sync after failures');
    expect(names()).toEqual(['a']);
    expect(informer!.restarts).toBe(4);
    expect(delays).toEqual([20, 40, 80, 160]);
    expect(rec.errors.map((e) => [e.err.statusCode, e.err.reason, e.delay])).toEqual([
      [500, 'InternalError', 20],
      [500, 'InternalError', 40],
      [500, 'InternalError', 80],
      [500, 'InternalError', 160],
    ]);
  });

  it('survives dropped connections: watch reset and refused reconnects', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    server.store.failRequests({ count: 3, mode: 'drop' });
    server.store.closeAllWatches('destroy');
    server.store.addNode(nodeObject('b'));
    await waitFor(() => informer!.get('b') !== undefined, 'b after reconnect');
    expect(informer!.restarts).toBeGreaterThanOrEqual(3);
    expect(rec.errors.length).toBe(informer!.restarts);
    expect(rec.errors.every((e) => e.err.statusCode === undefined && e.err.reason === 'NetworkError')).toBe(
      true,
    );
    // The watch resumed from its resourceVersion: no relist was needed.
    expect(informer!.relists).toBe(1);
  });

  it('says how long the API has been silent: nothing before its first answer, then since the last list, watch or line', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    let now = 0;
    server.store.failRequests({ count: 2, mode: 'drop' });
    start({ clock: { now: () => now } });
    await waitFor(() => informer!.restarts >= 2, 'two refused lists');
    expect(informer!.silentMs).toBeUndefined();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    now = 70_000;
    expect(informer!.silentMs).toBe(70_000);
    // A watch line (here an event) is an answer too.
    server.store.addNode(nodeObject('b'));
    await waitFor(() => informer!.get('b') !== undefined, 'b');
    expect(informer!.silentMs).toBe(0);
  });

  it('a watch cut after it delivered events starts the backoff over: cuts hours apart never reach the cap', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    const rec = start({ resyncMs: 0, random: () => 0.999999 });
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    for (const [i, name] of ['b', 'c', 'd', 'e', 'f'].entries()) {
      server.store.addNode(nodeObject(name));
      await waitFor(() => informer!.get(name) !== undefined, `${name} through the watch`);
      server.store.closeAllWatches('destroy');
      await waitFor(() => rec.errors.length === i + 1 && server.store.openWatches() === 1, 'watch reopened');
    }
    // Each cut is the first failure after a healthy watch: the first backoff step, never 40, 80, ...
    expect(rec.errors.map((e) => e.delay)).toEqual([20, 20, 20, 20, 20]);
    expect(informer!.relists).toBe(1);
  });

  it('a server that answers every watch with an ERROR event is backed off from, not retried at once', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    server.store.failRequests({
      count: 5,
      match: (r) => r.path === '/api/v1/nodes' && r.watch,
      mode: 'watchError500',
    });
    const delays: number[] = [];
    const rec = start({ resyncMs: 0, random: () => 0.999999, sleep: recordingSleep(delays) });
    await waitFor(
      () => rec.errors.length >= 5 && server.store.openWatches() === 1,
      'five refused watches, then one',
    );
    // The ERROR event is the server failing: it is not a watch that worked, so the backoff grows.
    expect(delays.slice(0, 5)).toEqual([20, 40, 80, 160, 200]);
    expect(rec.errors.slice(0, 5).every((e) => e.err.statusCode === 500)).toBe(true);
  });

  it('resumes from its resourceVersion when the server ends a watch at timeoutSeconds, without relisting', async () => {
    await startServer({ bookmarkIntervalMs: 100 });
    server.store.addNode(nodeObject('a'));
    start({ watchTimeoutSeconds: 1, random: () => 0 });
    await waitFor(
      () => requestsTo('/api/v1/nodes', true).length >= 3,
      'two server-side watch timeouts',
      8000,
    );
    const watches = requestsTo('/api/v1/nodes', true);
    expect(watches.every((w) => w.query.get('timeoutSeconds') === '1')).toBe(true);
    expect(watches.every((w) => w.query.get('resourceVersion') === '1')).toBe(true);
    expect(informer!.relists).toBe(1);
    expect(informer!.restarts).toBe(0);
  });

  it('treats watches that close at once without events as failures (no spinning)', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    const killer = setInterval(() => server.store.closeAllWatches('end'), 1);
    let rec: Recorded;
    try {
      rec = start();
      await waitFor(() => informer!.restarts >= 3, 'three restarts');
    } finally {
      clearInterval(killer);
    }
    expect(rec.errors.slice(0, 3).map((e) => e.err.reason)).toEqual([
      'WatchFailed',
      'WatchFailed',
      'WatchFailed',
    ]);
    expect(rec.errors[2]!.delay).toBeGreaterThan(rec.errors[0]!.delay);
    // Once watches stay open, it follows changes again.
    await waitFor(() => server.store.openWatches() === 1, 'watch open');
    server.store.addNode(nodeObject('b'));
    await waitFor(() => informer!.get('b') !== undefined, 'b');
  });

  it('relists when a restarted (stateless) server has not reached its resourceVersion', async () => {
    await startServer();
    for (const n of ['a', 'b', 'c', 'd']) server.store.addNode(nodeObject(n));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync');
    const port = server.port;
    await server.close();
    server = await startTestApiServer({ port, bookmarkIntervalMs: 0 });
    server.store.addNode(nodeObject('z'));
    await waitFor(() => names().join() === 'z', 'converged on the new server', 10_000);
    expect(informer!.relists).toBe(2);
    expect(rec.errors.some((e) => e.err.isResourceVersionTooLarge && e.err.statusCode === 504)).toBe(true);
  });

  it('waits as long as a throttling server asks (429 with Retry-After) before it lists again', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    server.store.failRequests({
      count: 2,
      mode: 'throttle429',
      match: (r) => r.path === '/api/v1/nodes' && !r.watch,
    });
    const rec = start();
    await waitFor(() => informer!.hasSynced(), 'sync after the throttling', 15_000);
    expect(rec.errors.map((e) => [e.err.statusCode, e.err.retryAfterMs])).toEqual([
      [429, THROTTLE_RETRY_AFTER_SECONDS * 1000],
      [429, THROTTLE_RETRY_AFTER_SECONDS * 1000],
    ]);
    // The informer's own backoff here is 20-200 ms: the delays are the server's.
    expect(rec.errors.map((e) => e.delay)).toEqual([2000, 2000]);
    const lists = requestsTo('/api/v1/nodes', false);
    expect(lists).toHaveLength(3);
    for (let i = 1; i < lists.length; i++) {
      expect(lists[i]!.at - lists[i - 1]!.at).toBeGreaterThanOrEqual(
        THROTTLE_RETRY_AFTER_SECONDS * 1000 - 50,
      );
    }
  }, 20_000);

  // client-node's Watch keeps neither the headers nor the body of a refused watch: there it waits the
  // 1 s floor the API server's own filters ask for.
  const watchWaitMs = transport === 'auto' ? THROTTLE_RETRY_AFTER_SECONDS * 1000 : 1000;
  it(`waits as long as a throttling server asks before it watches again (${watchWaitMs} ms)`, async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    server.store.failRequests({
      count: 1,
      mode: 'throttle429',
      match: (r) => r.path === '/api/v1/nodes' && r.watch,
    });
    const rec = start();
    await waitFor(() => requestsTo('/api/v1/nodes', true).length === 2, 'the second watch', 15_000);
    expect(rec.errors.map((e) => [e.err.statusCode, e.delay])).toEqual([[429, watchWaitMs]]);
    const [refused, next] = requestsTo('/api/v1/nodes', true);
    expect(next!.at - refused!.at).toBeGreaterThanOrEqual(watchWaitMs - 50);
  }, 20_000);

  it('takes a relisted Node whose resourceVersion is an old one but whose content is new (etcd restored)', async () => {
    await startServer();
    server.store.addNode(nodeObject('a', { podCIDRs: ['10.244.1.0/24'], ips: ['192.168.0.1'] }));
    server.store.addNode(nodeObject('b'));
    server.store.addNode(nodeObject('c'));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync');
    const before = informer!.get('a')!;
    const port = server.port;
    await server.close();
    // The new server's history starts again: 'a' is created first, so it gets the resourceVersion
    // the informer holds for the old 'a', with another pod CIDR and address.
    server = await startTestApiServer({ port, bookmarkIntervalMs: 0 });
    server.store.addNode(nodeObject('a', { podCIDRs: ['10.244.9.0/24'], ips: ['192.168.0.9'] }));
    await waitFor(() => informer!.relists === 2, 'relisted', 10_000);
    const after = informer!.get('a')!;
    expect(after.resourceVersion).toBe(before.resourceVersion);
    expect(after.podCIDRs).toEqual(['10.244.9.0/24']);
    expect(after.internalIPs).toEqual(['192.168.0.9']);
    expect(rec.events.filter((e) => e.name === 'a').map((e) => e.type)).toEqual(['ADDED', 'MODIFIED']);
  });

  it('stays on one watch through BOOKMARKs and advances its resourceVersion with them', async () => {
    await startServer({ bookmarkIntervalMs: 30 });
    server.store.addNode(nodeObject('a'));
    start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    // A pod change moves the global resourceVersion; the node watch learns it only from a BOOKMARK.
    server.store.addPod({ metadata: { name: 'p', namespace: 'default' }, spec: { nodeName: 'a' } });
    const target = String(server.store.currentResourceVersion());
    await waitFor(() => informer!.resourceVersion === target, 'bookmark rv');
    await new Promise((r) => setTimeout(r, 300));
    expect(requestsTo('/api/v1/nodes', true)).toHaveLength(1);
    expect(requestsTo('/api/v1/nodes', true)[0]!.query.get('allowWatchBookmarks')).toBe('true');
    expect(informer!.restarts).toBe(0);
    expect(names()).toEqual(['a']);
  });

  it('skips and reports nodes it cannot read, and drops a node that turns bad', async () => {
    await startServer();
    server.store.addNode(nodeObject('good', { ips: ['10.0.0.1'] }));
    server.store.addNode(nodeObject('bad', { podCIDRs: ['10.244.0.0/33'] }), { unchecked: true });
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync');
    expect(names()).toEqual(['good']);
    expect(rec.invalid).toEqual(['node bad: spec.podCIDRs has an invalid CIDR "10.244.0.0/33"']);
    server.store.updateNode(
      'good',
      (n) => ({ ...n, metadata: { ...(n.metadata as object), annotations: { x: 1 } } }) as never,
      { unchecked: true },
    );
    await waitFor(() => informer!.get('good') === undefined, 'good turned bad');
    expect(rec.invalid).toHaveLength(2);
    expect(rec.events.at(-1)).toEqual({ type: 'DELETED', name: 'good' });
  });

  it('keeps a node with a malformed InternalIP, its good ones used, and says so once per change, not per status report', async () => {
    await startServer();
    const status = (n: never, reason: string) =>
      ({
        ...(n as object),
        status: {
          ...(n as { status: object }).status,
          conditions: [{ type: 'Ready', status: 'True', reason }],
        },
      }) as never;
    server.store.addNode(nodeObject('n1', { ips: ['10.100.0.101', 'fd00:100::101', 'not-an-ip'] }), {
      unchecked: true,
    });
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync');
    expect(informer!.get('n1')?.internalIPs).toEqual(['10.100.0.101', 'fd00:100::101']);
    expect(rec.invalid).toEqual([]);
    expect(rec.ignored).toEqual(['node n1: InternalIP "not-an-ip" is not an IP address; ignored']);
    // Kubelet status reports change nothing the view holds: not said again.
    for (const reason of ['a', 'b', 'c'])
      server.store.updateNode('n1', (n) => status(n as never, reason), { unchecked: true });
    await waitFor(() => informer!.unchangedEvents === 3, 'three status reports');
    expect(rec.ignored).toHaveLength(1);
    // Another bad value is a change: said once.
    server.store.updateNode(
      'n1',
      (n) =>
        ({
          ...nodeObject('n1', { ips: ['10.100.0.101', 'fd00:100::101', 'nope'] }),
          metadata: n.metadata,
        }) as never,
      { unchecked: true },
    );
    await waitFor(() => rec.ignored.length === 2, 'the new value reported');
    expect(rec.ignored[1]).toBe('node n1: InternalIP "nope" is not an IP address; ignored');
    expect(rec.events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED']);
  });

  it('lists 1,200 nodes in pages of 100', async () => {
    await startServer();
    for (let i = 0; i < 1200; i++) server.store.addNode(nodeObject(`n${String(i).padStart(4, '0')}`));
    const rec = start();
    await waitFor(() => informer!.hasSynced(), 'sync');
    expect(informer!.list()).toHaveLength(1200);
    expect(rec.syncs[0]).toHaveLength(1200);
    const lists = requestsTo('/api/v1/nodes', false);
    expect(lists.map((r) => [r.query.get('limit'), r.query.has('continue')])).toEqual(
      Array.from({ length: 12 }, (_, i) => ['100', i > 0]),
    );
  });

  it('re-delivers the cache every resyncMs without calling the API', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    const rec = start({ resyncMs: 50 });
    await waitFor(() => rec.syncs.length >= 4, 'resyncs');
    expect(rec.syncs.every((s) => s.join() === 'a')).toBe(true);
    expect(requestsTo('/api/v1/nodes', false)).toHaveLength(1);
  });

  it('relists when a watch request itself is answered 410 Gone', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    const rec = start();
    await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
    // Past the "short watch" threshold, so the clean end below is not a failure.
    await new Promise((r) => setTimeout(r, 1100));
    server.store.failRequests({ count: 1, mode: 'gone410', match: (r) => r.watch });
    server.store.closeAllWatches('end');
    server.store.addNode(nodeObject('b'));
    await waitFor(() => informer!.relists === 2, 'relist after HTTP 410');
    expect(names()).toEqual(['a', 'b']);
    expect(requestsTo('/api/v1/nodes', true).map((r) => r.status)).toContain(410);
    expect(informer!.restarts).toBe(0);
    expect(rec.errors).toEqual([]);
  });

  it('backs off and reports when watches from a fresh list keep expiring at once, instead of listing every second', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    // Every watch is answered 410, the first one (from the start-up list) included: a watch cache
    // behind its list, or a proxy mixing API servers.
    server.store.failRequests({ count: 4, mode: 'gone410', match: (r) => r.watch });
    const sleeps: number[] = [];
    /** How many failures had been reported each time the API was said to answer. */
    const answeredAfter: number[] = [];
    const rec: Recorded = start({
      resyncMs: 0,
      random: () => 1,
      sleep: recordingSleep(sleeps),
      onAnswered: () => answeredAfter.push(rec.errors.length),
    });
    await waitFor(
      () => informer!.relists === 5 && server.store.openWatches() === 1,
      'watching after 4 refusals',
    );
    // Failures: growing delays (initialMs 20, maxMs 200), each said through onError, each a restart.
    expect(sleeps).toEqual([20, 40, 80, 160]);
    expect(rec.errors.map((e) => e.delay)).toEqual([20, 40, 80, 160]);
    expect(rec.errors[0]?.err.message).toContain(
      "the watch from a fresh list's resourceVersion expired at once (410 Gone)",
    );
    // One text for the one failure going on: the log says it once, not once per attempt.
    expect(new Set(rec.errors.map((e) => e.err.message)).size).toBe(1);
    expect(informer!.restarts).toBe(4);
    // The watch that now works is the API answering.
    // And once the server serves the watch, the informer works as ever.
    server.store.addNode(nodeObject('b'));
    await waitFor(() => informer!.get('b') !== undefined, 'ADDED b over the watch');
    expect(informer!.relists).toBe(5);
    // Each list worked and each watch was accepted, only to expire: none of that was the API
    // answering again (a log would say the failure over, then the same failure anew, every attempt).
    // The watch that works is (accepted and held, or its first line for a transport that does not
    // say when it is accepted), said once, after the fourth failure.
    expect(answeredAfter).toEqual([4]);
  });

  it('backs off when watches from a fresh list keep getting 504 ResourceVersionTooLarge, instead of listing every second', async () => {
    await startServer();
    server.store.addNode(nodeObject('a'));
    // A watch cache stuck behind the list it serves: every watch from the fresh list's
    // resourceVersion is refused as too large (Status retryAfterSeconds 1).
    server.store.failRequests({ count: 4, mode: 'tooLarge504', match: (r) => r.watch });
    const sleeps: number[] = [];
    const rec = start({
      resyncMs: 0,
      random: () => 1,
      sleep: recordingSleep(sleeps),
      backoff: { initialMs: 800, maxMs: 5000 },
    });
    await waitFor(
      () => rec.errors.length === 4 && server.store.openWatches() === 1,
      'watching after 4 refusals',
    );
    // Each refusal waits longer than the one before (the native transport reads the Status and lists
    // again, honouring its 1 s; client-node's watch sees only the 504 and asks the watch again):
    // never a list every second.
    expect(sleeps.slice(1)).toEqual([1600, 3200, 5000]);
    expect(sleeps[0]).toBeGreaterThanOrEqual(800);
    expect(informer!.relists).toBeLessThanOrEqual(5);
    server.store.addNode(nodeObject('b'));
    await waitFor(() => informer!.get('b') !== undefined, 'ADDED b over the watch');
  });

  for (const how of ['ERROR event', 'HTTP 410'] as const) {
    it(`waits a jittered moment after 410 Gone (${how}) before relisting, and loses no change`, async () => {
      await startServer();
      server.store.addNode(nodeObject('a'));
      const sleeps: number[] = [];
      let wake: (() => void) | undefined;
      const rec = start({
        resyncMs: 0,
        random: () => 0.25,
        // The relist must wait for this sleep: it is held until the test wakes it.
        sleep: (ms, signal) => {
          sleeps.push(ms);
          return new Promise<void>((r) => {
            wake = r;
            signal.addEventListener('abort', () => r(), { once: true });
          });
        },
      });
      await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
      // An event on the first watch, so its end below is not a "short watch" failure.
      server.store.addNode(nodeObject('b'));
      await waitFor(() => informer!.get('b') !== undefined, 'ADDED b');

      // Changes the informer cannot see over a watch: it must relist to find them.
      if (how === 'HTTP 410') server.store.failRequests({ count: 1, mode: 'gone410', match: (r) => r.watch });
      server.store.closeAllWatches();
      server.store.deleteNode('a');
      server.store.addNode(nodeObject('c'));
      if (how === 'ERROR event') server.store.compactHistory();

      await waitFor(() => sleeps.length > 0 || informer!.relists > 1, 'the wait before the relist');
      // Uniform in [0, 2 x backoff.initialMs): 0.25 of 40 ms here (0-1 s with the default backoff).
      expect(sleeps).toEqual([10]);
      await new Promise((r) => setTimeout(r, 100));
      expect(informer!.relists).toBe(1);
      expect(requestsTo('/api/v1/nodes', false)).toHaveLength(1);
      expect(names()).toEqual(['a', 'b']);

      wake!();
      await waitFor(() => informer!.relists === 2, 'relist after the wait');
      expect(names()).toEqual(['b', 'c']);
      expect(rec.events).toEqual([
        { type: 'ADDED', name: 'a' },
        { type: 'ADDED', name: 'b' },
        { type: 'DELETED', name: 'a' },
        { type: 'ADDED', name: 'c' },
      ]);
      // Still the protocol working, not a failure.
      expect([informer!.restarts, rec.errors]).toEqual([0, []]);
      await waitFor(() => server.store.openWatches() === 1, 'watching again');
    });
  }

  for (const cut of ['end', 'destroy'] as const) {
    it(`drops a watch event cut mid-line (${cut}) and gets it whole on the next watch`, async () => {
      await startServer();
      server.store.addNode(nodeObject('a'));
      const rec = start();
      await waitFor(() => informer!.hasSynced() && server.store.openWatches() === 1, 'sync and open watch');
      // Let the watch live past the "short watch" threshold, so a clean end is not a failure.
      await new Promise((r) => setTimeout(r, 1100));
      const half = nodeObject('half', { ips: ['10.0.0.9'] });
      const rvBefore = informer!.resourceVersion;
      expect(
        server.store.cutWatches(
          { type: 'ADDED', object: { ...half, metadata: { name: 'half', resourceVersion: '999' } } },
          cut,
        ),
      ).toBe(1);
      // The cut event was never applied: nothing named "half", the rv did not move.
      await waitFor(() => server.store.openWatches() === 1, 'watch reopened');
      expect(informer!.get('half')).toBeUndefined();
      const reopened = requestsTo('/api/v1/nodes', true).at(-1)!;
      expect(reopened.query.get('resourceVersion')).toBe(rvBefore);
      // Now the real object; it arrives over the resumed watch, without a relist.
      server.store.addNode(half);
      await waitFor(() => informer!.get('half') !== undefined, 'half added');
      expect(informer!.relists).toBe(1);
      expect(rec.events.map((e) => `${e.type} ${e.name}`)).toEqual(['ADDED a', 'ADDED half']);
    });
  }

  it('stops on abort and leaves no watch open', async () => {
    await startServer();
    start();
    await waitFor(() => server.store.openWatches() === 1, 'open watch');
    ac.abort();
    await informer!.done;
    await waitFor(() => server.store.openWatches() === 0, 'watch closed on the server');
  });
});

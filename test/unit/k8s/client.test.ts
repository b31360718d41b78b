/**
 * pkg/k8s client ports against the test API server, through both transports: the native one and
 * the real @kubernetes/client-node (the fallback, forced here so the library stays covered).
 * What the server stored is checked with plain HTTP GETs, not through the code under test.
 */
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import type { AgentPorts } from '../../../pkg/agent/agent.ts';
import {
  createK8sClient,
  K8S_API_USAGE,
  type K8sClient,
  loadKubeConfig,
  NETWORK_UP_REASON,
  type NodeReader,
} from '../../../pkg/k8s/index.ts';
import type { JsonObject } from '../../support/apiserver/patch.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { api, nodeObject, podObject, rejection, waitFor } from './helpers.ts';

let server: TestApiServer;
let client: K8sClient;
let mode: 'auto' | 'client-node' = 'auto';

function connect(kubeconfigPath: string, opts: { pageSize?: number } = {}): K8sClient {
  return createK8sClient(loadKubeConfig({ kubeconfigPath, transport: mode }), opts);
}

beforeEach(() => {
  server.store.clearFailures();
  server.store.clearRequests();
});

async function rawNode(name: string): Promise<JsonObject> {
  const r = await api(server.url, 'GET', `/api/v1/nodes/${name}`);
  expect(r.status).toBe(200);
  return r.json;
}

function conditions(node: JsonObject): JsonObject[] {
  return ((node.status as JsonObject).conditions ?? []) as JsonObject[];
}

describe.each(['auto', 'client-node'] as const)('transport %s', (transport) => {
  // A server per transport: the tests below create objects with fixed names.
  beforeAll(async () => {
    mode = transport;
    server = await startTestApiServer({ bookmarkIntervalMs: 0 });
    client = connect(server.kubeconfigPath, { pageSize: 500 });
  });

  afterAll(async () => {
    await server.close();
  });

  it('uses the transport asked for', () => {
    expect(client.transport).toBe(transport === 'auto' ? 'native' : 'client-node');
  });

  describe('setNetworkUnavailable', () => {
    it('sets NetworkUnavailable=False by strategic merge, keeping the other conditions', async () => {
      server.store.addNode(nodeObject('cond-1'));
      await client.setNetworkUnavailable('cond-1', false, NETWORK_UP_REASON, 'trellis agent is running');
      let conds = conditions(await rawNode('cond-1'));
      expect(conds.map((c) => c.type)).toEqual(['Ready', 'NetworkUnavailable']);
      expect(conds[1]).toMatchObject({
        status: 'False',
        reason: 'TrellisIsUp',
        message: 'trellis agent is running',
      });
      expect(conds[1]!.lastTransitionTime).toMatch(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

      // The condition is merged by type: a second call updates it in place, never duplicates it.
      await client.setNetworkUnavailable('cond-1', true, 'TrellisIsDown', 'agent stopping');
      conds = conditions(await rawNode('cond-1'));
      expect(conds.map((c) => [c.type, c.status, c.reason])).toEqual([
        ['Ready', 'True', 'KubeletReady'],
        ['NetworkUnavailable', 'True', 'TrellisIsDown'],
      ]);
      const patches = server.store.requests().filter((r) => r.method === 'PATCH');
      expect(patches.map((r) => r.path)).toEqual([
        '/api/v1/nodes/cond-1/status',
        '/api/v1/nodes/cond-1/status',
      ]);
    });

    it('bumps the resourceVersion', async () => {
      const before = server.store.addNode(nodeObject('cond-2'));
      await client.setNetworkUnavailable('cond-2', false, NETWORK_UP_REASON, 'up');
      const after = await rawNode('cond-2');
      expect(Number((after.metadata as JsonObject).resourceVersion)).toBeGreaterThan(
        Number((before.metadata as JsonObject).resourceVersion),
      );
    });

    it('reports a missing node as a K8sError carrying 404 NotFound', async () => {
      const e = await rejection(client.setNetworkUnavailable('nope', false, NETWORK_UP_REASON, 'x'));
      expect([e.statusCode, e.reason, e.isNotFound]).toEqual([404, 'NotFound', true]);
      expect(e.message).toContain('nodes "nope" not found');
    });
  });

  describe('annotateNode', () => {
    it('merge-patches annotations and removes those set to null', async () => {
      server.store.addNode(
        nodeObject('ann-1', { annotations: { keep: 'me', drop: 'me' }, labels: { l: 'v' } }),
      );
      await client.annotateNode('ann-1', { 'trellis.dev/vtep-mac': '02:00:00:00:00:01', drop: null });
      const n = await rawNode('ann-1');
      const meta = n.metadata as JsonObject;
      expect(meta.annotations).toEqual({ keep: 'me', 'trellis.dev/vtep-mac': '02:00:00:00:00:01' });
      expect(meta.labels).toEqual({ l: 'v' });
      const view = (await client.listNodes()).items.find((v) => v.name === 'ann-1');
      expect(view?.annotations['trellis.dev/vtep-mac']).toBe('02:00:00:00:00:01');
    });
  });

  describe('listPodsOnNode', () => {
    it('returns only the pods scheduled to that node, across namespaces, from the watch cache', async () => {
      const small = connect(server.kubeconfigPath, { pageSize: 2 });
      server.store.addPod(podObject('default', 'a1', 'pods-a', '10.244.1.5'));
      server.store.addPod(podObject('kube-system', 'a2', 'pods-a', '10.244.1.6'));
      server.store.addPod(podObject('other', 'a3', 'pods-a'));
      server.store.addPod(podObject('default', 'b1', 'pods-b', '10.244.2.5'));
      server.store.addPod(podObject('default', 'unscheduled', undefined));
      const r = await small.listPodsOnNode('pods-a');
      expect(r.problems).toEqual([]);
      expect(r.items.map((p) => `${p.namespace}/${p.name}`).sort()).toEqual([
        'default/a1',
        'kube-system/a2',
        'other/a3',
      ]);
      expect(r.items.find((p) => p.name === 'a1')).toMatchObject({
        nodeName: 'pods-a',
        phase: 'Running',
        podIPs: ['10.244.1.5'],
      });
      // resourceVersion=0: the API server answers from its watch cache (indexed by spec.nodeName), not
      // from etcd, and then ignores limit: one request, three pods, although pageSize is 2.
      const lists = server.store.requests().filter((q) => q.path === '/api/v1/pods');
      expect(lists.map((q) => Object.fromEntries(q.query))).toEqual([
        { limit: '2', resourceVersion: '0', fieldSelector: 'spec.nodeName=pods-a' },
      ]);
      expect((await small.listPodsOnNode('pods-none')).items).toEqual([]);
    });
  });

  describe('listNodes', () => {
    it('starts over when its continue token expires mid-list', async () => {
      const s = await startTestApiServer({ bookmarkIntervalMs: 0 });
      try {
        for (let i = 0; i < 1200; i++) s.store.addNode(nodeObject(`x${String(i).padStart(4, '0')}`));
        let compacted = false;
        // Compact the history just before the second page is served: its token is then too old.
        s.store.failRequests((r) => {
          if (!compacted && r.query.has('continue')) {
            compacted = true;
            s.store.addNode(nodeObject('late'));
            s.store.compactHistory();
          }
          return false;
        });
        const c = connect(s.kubeconfigPath, { pageSize: 500 });
        const r = await c.listNodes();
        expect(r.items).toHaveLength(1201);
        const statuses = s.store.requests().map((q) => [q.query.has('continue'), q.status]);
        expect(statuses).toEqual([
          [false, 200],
          [true, 410],
          [false, 200],
          [true, 200],
          [true, 200],
        ]);
      } finally {
        await s.close();
      }
    });

    it('lists everything in one answer when every continue token expires (a history compacted faster than it pages)', async () => {
      const s = await startTestApiServer({ bookmarkIntervalMs: 0 });
      try {
        for (let i = 0; i < 1200; i++) s.store.addNode(nodeObject(`x${String(i).padStart(4, '0')}`));
        let late = 0;
        s.store.failRequests((r) => {
          if (r.query.has('continue')) {
            s.store.addNode(nodeObject(`late${late++}`));
            s.store.compactHistory();
          }
          return false;
        });
        const c = connect(s.kubeconfigPath, { pageSize: 500 });
        const r = await c.listNodes();
        expect(r.items).toHaveLength(1200 + late);
        const asked = s.store
          .requests()
          .map((q) => [q.query.get('limit'), q.query.has('continue'), q.status]);
        expect(asked).toEqual([
          ['500', false, 200],
          ['500', true, 410],
          ['500', false, 200],
          ['500', true, 410],
          ['0', false, 200],
        ]);
      } finally {
        await s.close();
      }
    });

    it('lists 5,000 nodes in 50 pages of 100 (speed is bench/route-convergence.ts)', async () => {
      const s = await startTestApiServer({ bookmarkIntervalMs: 0 });
      try {
        for (let i = 0; i < 5000; i++) {
          s.store.addNode(
            nodeObject(`node-${String(i).padStart(5, '0')}`, {
              podCIDRs: [`10.${(i >> 8) & 255}.${i & 255}.0/24`, `fd00:${i.toString(16)}::/64`],
              ips: [`192.168.${(i >> 8) & 255}.${i & 255}`, `fd01::${i.toString(16)}`],
              labels: { 'kubernetes.io/hostname': `node-${i}`, 'kubernetes.io/os': 'linux' },
              annotations: { 'trellis.dev/vtep-mac': '02:00:00:00:00:01' },
            }),
          );
        }
        const c = connect(s.kubeconfigPath);
        const r = await c.listNodes();
        expect(r.items).toHaveLength(5000);
        expect(new Set(r.items.map((n) => n.name)).size).toBe(5000);
        const pages = s.store.requests().filter((q) => q.path === '/api/v1/nodes');
        expect(pages.map((q) => q.query.get('limit'))).toEqual(Array(50).fill('100'));
      } finally {
        await s.close();
      }
    });
  });

  describe('errors', () => {
    it('maps a 500 Status and a refused connection to K8sError', async () => {
      server.store.addNode(nodeObject('err-1'));
      server.store.failRequests(1);
      const e500 = await rejection(client.listNodes());
      expect([e500.statusCode, e500.reason]).toEqual([500, 'InternalError']);

      const s = await startTestApiServer({ bookmarkIntervalMs: 0 });
      const c = connect(s.kubeconfigPath);
      await s.close();
      const eNet = await rejection(c.listNodes());
      expect([eNet.statusCode, eNet.reason]).toEqual([undefined, 'NetworkError']);
      expect(eNet.message).toMatch(/ECONNREFUSED/);
    });
  });

  describe('K8S_API_USAGE', () => {
    it('is exactly what the client does on the wire, and the client is exactly what trellis calls', async () => {
      server.store.addNode(nodeObject('usage-1'));
      server.store.clearRequests();
      // One call per method: the agent's API port and the CLI's NodeReader (the type keeps this
      // complete). The client must have no other method: one nothing calls would still need a grant.
      const calls: Record<keyof NonNullable<AgentPorts['kube']> | keyof NodeReader, () => Promise<unknown>> =
        {
          listNodes: () => client.listNodes(),
          setNetworkUnavailable: () =>
            client.setNetworkUnavailable('usage-1', false, NETWORK_UP_REASON, 'up'),
          annotateNode: () => client.annotateNode('usage-1', { a: 'b' }),
          listPodsOnNode: () => client.listPodsOnNode('usage-1'),
          startNodeInformer: async () => {
            const ac = new AbortController();
            const inf = client.startNodeInformer({ signal: ac.signal });
            await waitFor(() => server.store.openWatches() === 1, 'informer watch');
            ac.abort();
            await inf.done;
          },
          // No request of its own: what the last Node list or watch was answered in.
          nodesEncoding: async () => client.nodesEncoding(),
        };
      const methods = Object.keys(client).filter((k) => typeof client[k as keyof K8sClient] === 'function');
      expect(methods.sort()).toEqual(Object.keys(calls).sort());
      for (const call of Object.values(calls)) await call();

      const seen = new Map<string, Set<string>>();
      for (const r of server.store.requests()) {
        const m = /^\/api\/v1\/(nodes|pods)(\/[^/]+)?(\/status)?$/.exec(r.path);
        if (!m) continue;
        const resource = `${m[1]}${m[3] ?? ''}`;
        const verb =
          r.method === 'GET'
            ? r.watch
              ? 'watch'
              : m[2]
                ? 'get'
                : 'list'
            : r.method === 'PATCH'
              ? 'patch'
              : r.method;
        if (!seen.has(resource)) seen.set(resource, new Set());
        seen.get(resource)!.add(verb);
      }
      const declared = Object.fromEntries(K8S_API_USAGE.map((u) => [u.resource, [...u.verbs].sort()]));
      const observed = Object.fromEntries([...seen].map(([k, v]) => [k, [...v].sort()]));
      expect(observed).toEqual(declared);
      expect(K8S_API_USAGE.every((u) => u.apiGroup === '')).toBe(true);
    });
  });
});

/**
 * The test API server's protocol, checked on the wire with plain fetch: the other tests trust it to
 * behave like a real kube-apiserver, so its own behaviour is pinned here.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parse as parseYaml } from 'yaml';
import type { JsonObject } from '../../support/apiserver/patch.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { api, collectWatch, nodeObject, podObject } from './helpers.ts';

let s: TestApiServer;

beforeAll(async () => {
  s = await startTestApiServer({ bookmarkIntervalMs: 0, historySize: 1000 });
});
afterAll(async () => {
  await s.close();
});

const meta = (o: JsonObject) => o.metadata as JsonObject;
const rvOf = (o: JsonObject) => Number(meta(o).resourceVersion);

describe('discovery and kubeconfig', () => {
  it('serves /api and /api/v1', async () => {
    expect((await api(s.url, 'GET', '/api')).json.versions).toEqual(['v1']);
    const v1 = (await api(s.url, 'GET', '/api/v1')).json;
    expect((v1.resources as JsonObject[]).map((r) => r.name)).toEqual([
      'nodes',
      'nodes/status',
      'pods',
      'pods/status',
    ]);
  });
  it('writes a kubeconfig for plain http with a dummy token', () => {
    const kc = parseYaml(readFileSync(s.kubeconfigPath, 'utf8'));
    expect(kc.clusters[0].cluster).toEqual({ server: s.url, 'insecure-skip-tls-verify': true });
    expect(kc['current-context']).toBe('trellis-test');
  });
  it('answers unknown paths with a 404 Status', async () => {
    const r = await api(s.url, 'GET', '/apis/apps/v1/deployments');
    expect([r.status, r.json.kind, r.json.reason]).toEqual([404, 'Status', 'NotFound']);
  });
});

describe('writes', () => {
  it('creates with uid, creationTimestamp and a fresh resourceVersion; 409 on a duplicate', async () => {
    const before = s.store.currentResourceVersion();
    const r = await api(s.url, 'POST', '/api/v1/nodes', nodeObject('w-1'));
    expect(r.status).toBe(201);
    expect(rvOf(r.json)).toBe(before + 1);
    expect(meta(r.json).uid).toMatch(/^[0-9a-f-]{36}$/);
    expect(meta(r.json).creationTimestamp).toMatch(/Z$/);
    const dup = await api(s.url, 'POST', '/api/v1/nodes', nodeObject('w-1'));
    expect([dup.status, dup.json.reason, dup.json.message]).toEqual([
      409,
      'AlreadyExists',
      'nodes "w-1" already exists',
    ]);
  });

  it('rejects invalid objects with 422 and field causes', async () => {
    const r = await api(s.url, 'POST', '/api/v1/nodes', {
      metadata: { name: 'Bad_Name' },
      spec: { podCIDRs: ['10.0.0.0/99'] },
    });
    expect([r.status, r.json.reason]).toEqual([422, 'Invalid']);
    const causes = (r.json.details as JsonObject).causes as JsonObject[];
    expect(causes.map((c) => c.field)).toEqual(['metadata.name', 'spec.podCIDRs[0]']);
  });

  it('PUT needs the current resourceVersion (409 Conflict) and leaves status to /status', async () => {
    const created = (await api(s.url, 'POST', '/api/v1/nodes', nodeObject('w-2'))).json;
    const stale = { ...created, status: { phase: 'changed' } };
    const ok = await api(s.url, 'PUT', '/api/v1/nodes/w-2', { ...stale, spec: { unschedulable: true } });
    expect(ok.status).toBe(200);
    expect(ok.json.spec).toEqual({ unschedulable: true });
    expect(ok.json.status).toEqual(created.status);
    const conflict = await api(s.url, 'PUT', '/api/v1/nodes/w-2', stale);
    expect([conflict.status, conflict.json.reason]).toEqual([409, 'Conflict']);

    const st = await api(s.url, 'PUT', '/api/v1/nodes/w-2/status', {
      ...ok.json,
      spec: {},
      status: { phase: 'x' },
    });
    expect(st.json.status).toEqual({ phase: 'x' });
    expect(st.json.spec).toEqual({ unschedulable: true });
  });

  it('supports merge, strategic merge and JSON patch; 415 for anything else', async () => {
    await api(s.url, 'POST', '/api/v1/nodes', nodeObject('w-3', { labels: { a: '1', b: '2' } }));
    const merge = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-3',
      { metadata: { labels: { a: null, c: '3' } } },
      'application/merge-patch+json',
    );
    expect(meta(merge.json).labels).toEqual({ b: '2', c: '3' });

    const sp = {
      status: {
        conditions: [
          { type: 'NetworkUnavailable', status: 'False' },
          { type: 'Ready', status: 'False' },
        ],
      },
    };
    const strategic = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-3/status',
      sp,
      'application/strategic-merge-patch+json',
    );
    expect(
      ((strategic.json.status as JsonObject).conditions as JsonObject[]).map((c) => [c.type, c.status]),
    ).toEqual([
      ['Ready', 'False'],
      ['NetworkUnavailable', 'False'],
    ]);
    const del = { status: { conditions: [{ type: 'Ready', $patch: 'delete' }] } };
    const afterDel = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-3/status',
      del,
      'application/strategic-merge-patch+json',
    );
    expect(((afterDel.json.status as JsonObject).conditions as JsonObject[]).map((c) => c.type)).toEqual([
      'NetworkUnavailable',
    ]);
    // The status subresource ignores everything but status.
    const ignored = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-3/status',
      { metadata: { labels: { z: '1' } } },
      'application/merge-patch+json',
    );
    expect(meta(ignored.json).labels).toEqual({ b: '2', c: '3' });

    const jp = [
      { op: 'add', path: '/metadata/annotations', value: { 'x~y/z': 'v' } },
      { op: 'test', path: '/metadata/annotations/x~0y~1z', value: 'v' },
    ];
    const json = await api(s.url, 'PATCH', '/api/v1/nodes/w-3', jp, 'application/json-patch+json');
    expect(meta(json.json).annotations).toEqual({ 'x~y/z': 'v' });
    const failed = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-3',
      [{ op: 'test', path: '/spec/x', value: 1 }],
      'application/json-patch+json',
    );
    expect(failed.status).toBe(422);
    const bad = await api(s.url, 'PATCH', '/api/v1/nodes/w-3', {}, 'application/yaml');
    expect(bad.status).toBe(415);
    const precondition = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-3',
      { metadata: { resourceVersion: '1' } },
      'application/merge-patch+json',
    );
    expect(precondition.status).toBe(409);
  });

  it('does not bump the resourceVersion for a no-op patch', async () => {
    const n = (await api(s.url, 'POST', '/api/v1/nodes', nodeObject('w-4'))).json;
    const p = await api(
      s.url,
      'PATCH',
      '/api/v1/nodes/w-4',
      { metadata: { name: 'w-4' } },
      'application/merge-patch+json',
    );
    expect(meta(p.json).resourceVersion).toBe(meta(n).resourceVersion);
  });

  it('handles namespaced pods and DELETE', async () => {
    const p = await api(s.url, 'POST', '/api/v1/namespaces/ns1/pods', podObject('ns1', 'p1', 'w-1'));
    expect(p.status).toBe(201);
    const mismatch = await api(s.url, 'POST', '/api/v1/namespaces/ns2/pods', podObject('ns1', 'p1', 'w-1'));
    expect(mismatch.status).toBe(400);
    expect((await api(s.url, 'GET', '/api/v1/namespaces/ns1/pods/p1')).status).toBe(200);
    expect((await api(s.url, 'GET', '/api/v1/namespaces/ns2/pods/p1')).status).toBe(404);
    const d = await api(s.url, 'DELETE', '/api/v1/namespaces/ns1/pods/p1');
    expect([d.status, d.json.kind]).toEqual([200, 'Pod']);
    expect((await api(s.url, 'POST', '/api/v1/nodes', nodeObject('w-del'))).status).toBe(201);
    const dn = await api(s.url, 'DELETE', '/api/v1/nodes/w-del');
    expect([dn.status, dn.json.kind, dn.json.status]).toEqual([200, 'Status', 'Success']);
    expect((await api(s.url, 'DELETE', '/api/v1/nodes/w-del')).status).toBe(404);
  });
});

describe('lists', () => {
  it('filters by label and field selectors, 400 for unsupported fields', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      srv.store.addNode(nodeObject('l-1', { labels: { role: 'a' } }));
      srv.store.addNode(nodeObject('l-2', { labels: { role: 'b' } }));
      srv.store.addNode(nodeObject('l-3'));
      const names = async (q: string) =>
        ((await api(srv.url, 'GET', `/api/v1/nodes?${q}`)).json.items as JsonObject[]).map(
          (i) => meta(i).name,
        );
      expect(await names('labelSelector=role%3Da')).toEqual(['l-1']);
      expect(await names('labelSelector=role')).toEqual(['l-1', 'l-2']);
      expect(await names('labelSelector=!role')).toEqual(['l-3']);
      expect(await names('labelSelector=role%20in%20(a,b)')).toEqual(['l-1', 'l-2']);
      expect(await names('labelSelector=role!%3Da')).toEqual(['l-2', 'l-3']);
      expect(await names('fieldSelector=metadata.name%3Dl-2')).toEqual(['l-2']);
      const bad = await api(srv.url, 'GET', '/api/v1/nodes?fieldSelector=spec.podCIDR%3Dx');
      expect([bad.status, bad.json.message]).toEqual([400, 'field label not supported: spec.podCIDR']);
      srv.store.addPod(podObject('a', 'p1', 'l-1'));
      srv.store.addPod(podObject('b', 'p2', 'l-2'));
      const pods = await api(srv.url, 'GET', '/api/v1/pods?fieldSelector=spec.nodeName%3Dl-2');
      expect((pods.json.items as JsonObject[]).map((i) => meta(i).name)).toEqual(['p2']);
      const nsPods = await api(srv.url, 'GET', '/api/v1/namespaces/a/pods');
      expect((nsPods.json.items as JsonObject[]).map((i) => meta(i).name)).toEqual(['p1']);
      expect(nsPods.json.kind).toBe('PodList');
    } finally {
      await srv.close();
    }
  });

  it('paginates from one consistent snapshot, and 410s a token whose snapshot was compacted', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      for (let i = 0; i < 10; i++) srv.store.addNode(nodeObject(`p-${i}`));
      const page1 = (await api(srv.url, 'GET', '/api/v1/nodes?limit=4')).json;
      const lm = page1.metadata as JsonObject;
      expect([(page1.items as JsonObject[]).length, lm.remainingItemCount, lm.resourceVersion]).toEqual([
        4,
        6,
        '10',
      ]);
      // Changes after the first page must not show in the later pages.
      srv.store.deleteNode('p-7');
      srv.store.addNode(nodeObject('p-99'));
      srv.store.updateNode('p-5', (n) => ({ ...n, metadata: { ...meta(n), labels: { changed: 'yes' } } }));
      const rest: JsonObject[] = [];
      let cont = lm.continue as string | undefined;
      while (cont) {
        const page = (await api(srv.url, 'GET', `/api/v1/nodes?limit=4&continue=${encodeURIComponent(cont)}`))
          .json;
        expect((page.metadata as JsonObject).resourceVersion).toBe('10');
        rest.push(...(page.items as JsonObject[]));
        cont = (page.metadata as JsonObject).continue as string | undefined;
      }
      expect(rest.map((i) => meta(i).name)).toEqual(['p-4', 'p-5', 'p-6', 'p-7', 'p-8', 'p-9']);
      expect(meta(rest[1]!).labels).toBeUndefined();
      // List items carry no kind/apiVersion, as on a real server.
      expect(rest[0]!.kind).toBeUndefined();

      srv.store.compactHistory();
      const gone = await api(
        srv.url,
        'GET',
        `/api/v1/nodes?limit=4&continue=${encodeURIComponent(lm.continue as string)}`,
      );
      expect([gone.status, gone.json.reason, gone.json.code]).toEqual([410, 'Expired', 410]);
    } finally {
      await srv.close();
    }
  });
  it('serves resourceVersion=0 whole, as the watch cache does: limit ignored, no continue token', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      for (let i = 0; i < 5; i++) srv.store.addPod(podObject('default', `c-${i}`, i < 4 ? 'n1' : 'n2'));
      const cached = await api(
        srv.url,
        'GET',
        '/api/v1/pods?limit=2&resourceVersion=0&fieldSelector=spec.nodeName%3Dn1',
      );
      const cm = cached.json.metadata as JsonObject;
      expect((cached.json.items as JsonObject[]).map((i) => meta(i).name)).toEqual([
        'c-0',
        'c-1',
        'c-2',
        'c-3',
      ]);
      expect([cm.continue, cm.resourceVersion]).toEqual([undefined, '5']);
      // Without resourceVersion (a quorum read) limit still pages.
      const quorum = await api(srv.url, 'GET', '/api/v1/pods?limit=2&fieldSelector=spec.nodeName%3Dn1');
      expect((quorum.json.items as JsonObject[]).length).toBe(2);
      expect(typeof (quorum.json.metadata as JsonObject).continue).toBe('string');
    } finally {
      await srv.close();
    }
  });
});

describe('watch', () => {
  it('replays history after a resourceVersion, then follows live changes', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      srv.store.addNode(nodeObject('a'));
      const from = srv.store.currentResourceVersion();
      srv.store.addNode(nodeObject('b'));
      srv.store.updateNode('a', (n) => ({ ...n, spec: { unschedulable: true } }));
      const { events } = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=true&resourceVersion=${from}`,
        (ev) => ev.length >= 3,
        5000,
        () => setTimeout(() => srv.store.deleteNode('b'), 20),
      );
      expect(events.map((e) => [e.type, meta(e.object).name, e.object.kind])).toEqual([
        ['ADDED', 'b', 'Node'],
        ['MODIFIED', 'a', 'Node'],
        ['DELETED', 'b', 'Node'],
      ]);
      expect(events.map((e) => rvOf(e.object))).toEqual([from + 1, from + 2, from + 3]);
    } finally {
      await srv.close();
    }
  });

  it('starts with ADDED for every object when resourceVersion is unset, and ends at timeoutSeconds', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      srv.store.addNode(nodeObject('a'));
      srv.store.addNode(nodeObject('b'));
      const t0 = Date.now();
      const { events, ended } = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=1&timeoutSeconds=1`,
        () => false,
        5000,
      );
      expect(ended).toBe(true);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(900);
      expect(events.map((e) => [e.type, meta(e.object).name])).toEqual([
        ['ADDED', 'a'],
        ['ADDED', 'b'],
      ]);
    } finally {
      await srv.close();
    }
  });

  it('answers a compacted resourceVersion with an ERROR event carrying a 410 Expired Status', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      srv.store.addNode(nodeObject('a'));
      srv.store.addNode(nodeObject('b'));
      srv.store.compactHistory();
      const { events, ended } = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=true&resourceVersion=1`,
        () => false,
      );
      expect(ended).toBe(true);
      expect(events).toEqual([
        {
          type: 'ERROR',
          object: {
            kind: 'Status',
            apiVersion: 'v1',
            metadata: {},
            status: 'Failure',
            message: 'too old resource version: 1 (3)',
            reason: 'Expired',
            code: 410,
          },
        },
      ]);
    } finally {
      await srv.close();
    }
  });

  it('keeps a bounded history: an rv far enough behind gets 410 without an explicit compaction', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0, historySize: 10 });
    try {
      for (let i = 0; i < 25; i++) srv.store.addNode(nodeObject(`h-${i}`));
      const { events } = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=true&resourceVersion=1`,
        () => false,
      );
      expect(events[0]!.type).toBe('ERROR');
      const recent = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=true&resourceVersion=20`,
        (ev) => ev.length >= 5,
        2000,
      );
      expect(recent.events.map((e) => meta(e.object).name)).toEqual(['h-20', 'h-21', 'h-22', 'h-23', 'h-24']);
    } finally {
      await srv.close();
    }
  });

  it('a field-selected pod watch sees a pod arrive as ADDED and leave as DELETED', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    try {
      srv.store.addPod(podObject('default', 'mover', undefined));
      const from = srv.store.currentResourceVersion();
      srv.store.updatePod('default', 'mover', (p) => ({
        ...p,
        spec: { ...(p.spec as JsonObject), nodeName: 'n1' },
      }));
      srv.store.updatePod('default', 'mover', (p) => ({ ...p, status: { phase: 'Running' } }));
      srv.store.updatePod('default', 'mover', (p) => ({
        ...p,
        spec: { ...(p.spec as JsonObject), nodeName: 'n2' },
      }));
      const { events } = await collectWatch(
        `${srv.url}/api/v1/pods?watch=true&fieldSelector=spec.nodeName%3Dn1&resourceVersion=${from}`,
        (ev) => ev.length >= 3,
      );
      expect(events.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'DELETED']);
      expect(rvOf(events[2]!.object)).toBe(from + 3);
    } finally {
      await srv.close();
    }
  });

  it('sends BOOKMARKs with the current resourceVersion to watches that ask for them', async () => {
    const srv = await startTestApiServer({ bookmarkIntervalMs: 25 });
    try {
      srv.store.addNode(nodeObject('a'));
      srv.store.addPod(podObject('default', 'p', 'a'));
      const rv = srv.store.currentResourceVersion();
      const withB = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=true&resourceVersion=${rv}&allowWatchBookmarks=true`,
        (ev) => ev.length >= 2,
      );
      expect(withB.events.map((e) => e.type)).toEqual(['BOOKMARK', 'BOOKMARK']);
      expect(withB.events[0]!.object).toEqual({
        kind: 'Node',
        apiVersion: 'v1',
        metadata: { resourceVersion: String(rv) },
      });
      const without = await collectWatch(
        `${srv.url}/api/v1/nodes?watch=true&resourceVersion=${rv}`,
        () => false,
        200,
      );
      expect(without.events).toEqual([]);
    } finally {
      await srv.close();
    }
  });
});

describe('fault injection', () => {
  it('fails the next n requests with a 500 Status, or drops matching connections', async () => {
    s.store.failRequests(2);
    expect((await api(s.url, 'GET', '/api/v1/nodes')).status).toBe(500);
    const second = await api(s.url, 'GET', '/api/v1/nodes');
    expect([second.status, second.json.reason]).toEqual([500, 'InternalError']);
    expect((await api(s.url, 'GET', '/api/v1/nodes')).status).toBe(200);

    s.store.failRequests((r) => r.path === '/api/v1/pods', 'drop');
    await expect(fetch(`${s.url}/api/v1/pods`)).rejects.toThrow();
    expect((await api(s.url, 'GET', '/api/v1/nodes')).status).toBe(200);
    s.store.clearFailures();
    expect((await api(s.url, 'GET', '/api/v1/pods')).status).toBe(200);
  });

  it('latencyMs holds every request but a watch that long, reading the store after the wait', async () => {
    const slow = await startTestApiServer({ bookmarkIntervalMs: 0, latencyMs: 1000 });
    try {
      const t0 = performance.now();
      const listing = api(slow.url, 'GET', '/api/v1/nodes');
      while (slow.store.requests().length === 0) await new Promise((r) => setTimeout(r, 5));
      // The request is in and waiting: a Node added now is in its answer.
      slow.store.addNode(nodeObject('late'));
      const listed = await listing;
      expect(performance.now() - t0).toBeGreaterThanOrEqual(990);
      expect((listed.json.items as JsonObject[]).map((n) => meta(n).name)).toEqual(['late']);
      const opened = performance.now();
      let openedAt = Number.NaN;
      const watching = collectWatch(
        `${slow.url}/api/v1/nodes?watch=true&resourceVersion=${slow.store.currentResourceVersion()}`,
        () => false,
        2000,
        () => {
          openedAt = performance.now();
        },
      );
      while (slow.store.openWatches() === 0) await new Promise((r) => setTimeout(r, 5));
      slow.store.closeAllWatches();
      await watching;
      expect(openedAt - opened).toBeLessThan(500);
    } finally {
      await slow.close();
    }
  });

  it('closeAllWatches ends open watches', async () => {
    const p = collectWatch(
      `${s.url}/api/v1/nodes?watch=true&resourceVersion=${s.store.currentResourceVersion()}`,
      () => false,
      5000,
    );
    while (s.store.openWatches() === 0) await new Promise((r) => setTimeout(r, 5));
    expect(s.store.closeAllWatches()).toBe(1);
    expect((await p).ended).toBe(true);
  });
});

describe('CLI (main.ts)', () => {
  it('listens where told, writes the kubeconfig and stops on SIGTERM', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-apiserver-cli-'));
    const kc = join(dir, 'kubeconfig');
    const child = spawn(
      process.execPath,
      ['test/support/apiserver/main.ts', '--listen', '127.0.0.1:0', '--kubeconfig-out', kc],
      {
        stdio: ['ignore', 'pipe', 'inherit'],
      },
    );
    try {
      const first = await new Promise<string>((resolve, reject) => {
        createInterface(child.stdout!).once('line', resolve);
        child.once('exit', (code) => reject(new Error(`exited ${code}`)));
      });
      const { url, kubeconfig } = JSON.parse(first) as { url: string; kubeconfig: string };
      expect(kubeconfig).toBe(kc);
      expect(parseYaml(readFileSync(kc, 'utf8')).clusters[0].cluster.server).toBe(url);
      expect((await api(url, 'POST', '/api/v1/nodes', nodeObject('cli'))).status).toBe(201);
      expect((await api(url, 'GET', '/api/v1/nodes/cli')).status).toBe(200);
      const exited = new Promise<number | null>((r) => child.once('exit', r));
      child.kill('SIGTERM');
      expect(await exited).toBe(0);
    } finally {
      if (child.exitCode === null) child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('watch ahead of the server', () => {
  it('answers a resourceVersion the server has not reached with a ResourceVersionTooLarge Status', async () => {
    const { events, ended } = await collectWatch(
      `${s.url}/api/v1/nodes?watch=true&resourceVersion=999999`,
      () => false,
    );
    expect(ended).toBe(true);
    expect(events).toHaveLength(1);
    expect(events[0]!.type).toBe('ERROR');
    expect(events[0]!.object).toMatchObject({
      code: 504,
      reason: 'Timeout',
      details: { causes: [{ reason: 'ResourceVersionTooLarge' }] },
    });
  });
});

/**
 * Node watches in protobuf through the native transport, end to end: the real HttpTransport (and the
 * informer above it) against the test API server, which frames each event as kube-apiserver does
 * (its own encoder, test/support/apiserver/protobuf.ts), or against a raw server sending bytes no
 * reader could take. JSON stays the answer where protobuf is not one.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CoreApi, NODES_PATH } from '../../../pkg/k8s/api.ts';
import { fromStatus } from '../../../pkg/k8s/errors.ts';
import { HttpTransport } from '../../../pkg/k8s/http-transport.ts';
import { startNodeInformerOn } from '../../../pkg/k8s/informer.ts';
import { NODES_ACCEPT } from '../../../pkg/k8s/node-proto.ts';
import { toNodeView } from '../../../pkg/k8s/views.ts';
import type { JsonObject } from '../../support/apiserver/patch.ts';
import { PROTOBUF_WATCH_CONTENT_TYPE } from '../../support/apiserver/protobuf.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { closeRawServer, nodeObject, rejection, waitFor } from './helpers.ts';

let srv: TestApiServer | undefined;
let raw: Server | undefined;
const stops: AbortController[] = [];

afterEach(async () => {
  for (const s of stops.splice(0)) s.abort();
  await srv?.close();
  srv = undefined;
  await closeRawServer(raw);
  raw = undefined;
});

function transportOf(url: string): HttpTransport {
  return new HttpTransport(
    { server: new URL(url), insecure: true },
    { userAgent: 'trellis-agent/test', requestTimeoutMs: 5_000, watchIdleMs: 5_000 },
  );
}

function stopper(): AbortSignal {
  const ac = new AbortController();
  stops.push(ac);
  return ac.signal;
}

/** A kubelet's Node: what the view reads, and status the protobuf reader steps over. */
const kubeletNode = (name: string, cidr: string): JsonObject => {
  const n = nodeObject(name, {
    podCIDRs: [cidr],
    ips: ['172.18.0.9'],
    annotations: { 'trellis.dev/a': name },
  });
  (n.status as JsonObject).images = [{ names: ['registry.k8s.io/pause:3.10'], sizeBytes: 320_000 }];
  (n.status as JsonObject).nodeInfo = { kubeletVersion: 'v1.31.4', architecture: 'amd64' };
  return n;
};

interface Seen {
  type: string;
  view: unknown;
}

/** A watch from `rv` through the transport, its events' views collected until the signal aborts. */
function watchInto(t: HttpTransport, rv: string, seen: Seen[], signal: AbortSignal) {
  return t.watch(
    'watch nodes',
    NODES_PATH,
    { resourceVersion: rv, allowWatchBookmarks: true, timeoutSeconds: 60, nodeViewsOnly: true },
    (type, object) => {
      const v = type === 'BOOKMARK' || type === 'ERROR' ? object : toNodeView(object);
      seen.push({ type, view: v });
    },
    signal,
  );
}

/** The same changes against a server, watched: the views seen, and the watch request's record. */
async function changesWatched(opts: { protobuf?: boolean }) {
  srv = await startTestApiServer({ ...opts, bookmarkIntervalMs: 0 });
  srv.store.addNode(kubeletNode('a', '10.244.1.0/24'));
  const rv = String(srv.store.currentResourceVersion());
  const seen: Seen[] = [];
  const signal = stopper();
  const t = transportOf(srv.url);
  const done = watchInto(t, rv, seen, signal);
  await waitFor(() => srv!.store.openWatches() === 1, 'the watch');
  srv.store.addNode(kubeletNode('b', '10.244.2.0/24'));
  srv.store.updateNode('a', (n) => ({ ...n, spec: { podCIDRs: ['10.244.9.0/24'] } }));
  srv.store.updateNode('b', (n) => {
    (n.status as JsonObject).images = [{ names: ['x'], sizeBytes: 1 }];
    return n;
  });
  srv.store.deleteNode('a');
  srv.store.sendBookmarks();
  await waitFor(() => seen.length === 5, 'five events');
  const [request] = srv.store.requests().filter((r) => r.watch);
  (stops.at(-1) as AbortController).abort();
  expect(await done).toBe('closed');
  const encoding = t.nodesEncoding();
  t.close();
  return { seen, request: request!, encoding };
}

describe('a Node watch in protobuf', () => {
  it('is asked for and read frame by frame, its views the same as from JSON', async () => {
    const proto = await changesWatched({});
    expect([proto.request.accept, proto.request.contentType]).toEqual([
      NODES_ACCEPT,
      PROTOBUF_WATCH_CONTENT_TYPE,
    ]);
    await srv!.close();
    const json = await changesWatched({ protobuf: false });
    expect(json.request.contentType).toBe('application/json');
    // What the operator's view says: how the server answered, not what was asked.
    expect([proto.encoding, json.encoding]).toEqual(['protobuf', 'json']);
    expect(proto.seen.map((e) => e.type)).toEqual(['ADDED', 'MODIFIED', 'MODIFIED', 'DELETED', 'BOOKMARK']);
    // Each server made its own uids and resourceVersions; all else the agent reads is the same (a
    // protobuf object's type is its envelope's, not its fields).
    const unread = new Set(['uid', 'resourceVersion', 'kind', 'apiVersion']);
    const plain = (e: Seen) => JSON.parse(JSON.stringify(e.view, (k, v) => (unread.has(k) ? undefined : v)));
    expect(proto.seen.map(plain)).toEqual(json.seen.map(plain));
    expect(proto.seen[1]!.view).toMatchObject({ ok: true, node: { name: 'a', podCIDRs: ['10.244.9.0/24'] } });
    expect(proto.seen[4]!.view).toEqual({ metadata: { resourceVersion: expect.stringMatching(/^\d+$/) } });
  });

  it("carries an expired resourceVersion's 410 as an ERROR event with its Status", async () => {
    srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    srv.store.addNode(kubeletNode('a', '10.244.1.0/24'));
    srv.store.addNode(kubeletNode('b', '10.244.2.0/24'));
    srv.store.compactHistory();
    const seen: Seen[] = [];
    const t = transportOf(srv.url);
    expect(await watchInto(t, '1', seen, stopper())).toBe('closed');
    expect(seen).toHaveLength(1);
    expect(seen[0]!.type).toBe('ERROR');
    expect(fromStatus('watch nodes', seen[0]!.view)).toMatchObject({ statusCode: 410, isGone: true });
    expect(srv.store.requests().find((r) => r.watch)?.contentType).toBe(PROTOBUF_WATCH_CONTENT_TYPE);
    t.close();
  });

  it("reads a refused watch's protobuf Status: code, reason, message", async () => {
    srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    srv.store.failRequests({ count: 1, mode: 'tooLarge504', match: (r) => r.watch });
    const t = transportOf(srv.url);
    const err = await rejection(watchInto(t, '99', [], stopper()));
    expect([err.statusCode, err.message]).toEqual([
      504,
      'watch nodes: Too large resource version: 99, current: 98',
    ]);
    expect(srv.store.requests().find((r) => r.watch)?.contentType).toBe(
      'application/vnd.kubernetes.protobuf',
    );
    t.close();
  });

  it('the informer gets a Node the server cannot encode as JSON, on the watch after the protobuf one ends', async () => {
    srv = await startTestApiServer({ bookmarkIntervalMs: 0 });
    srv.store.addNode(kubeletNode('a', '10.244.1.0/24'));
    const invalid: string[] = [];
    const events: string[] = [];
    startNodeInformerOn(new CoreApi(transportOf(srv.url), 100), {
      signal: stopper(),
      backoff: { initialMs: 20, maxMs: 200 },
      onEvent: (type, node) => events.push(`${type} ${node.name}`),
      onInvalid: (p) => invalid.push(p),
    });
    await waitFor(() => srv!.store.openWatches() === 1, 'the first watch');
    srv.store.addNode(kubeletNode('b', '10.244.2.0/24'));
    await waitFor(() => events.length === 2, 'b added');
    // A number where a string goes: storable unchecked, not in protobuf.
    srv.store.addNode(
      { ...kubeletNode('c', '10.244.3.0/24'), spec: { podCIDRs: [42] } },
      { unchecked: true },
    );
    await waitFor(() => invalid.length === 1, 'c reported');
    srv.store.addNode(kubeletNode('d', '10.244.4.0/24'));
    await waitFor(() => events.length === 3, 'd added');
    expect(events).toEqual(['ADDED a', 'ADDED b', 'ADDED d']);
    expect(invalid[0]).toMatch(/^node c: /);
    const watches = srv.store.requests().filter((r) => r.watch);
    expect(watches.map((r) => r.contentType)).toEqual([PROTOBUF_WATCH_CONTENT_TYPE, 'application/json']);
    // The second resumed where the first ended: no relist.
    expect(srv.store.requests().filter((r) => !r.watch && r.path === NODES_PATH)).toHaveLength(1);
  });

  it('asks for JSON from then on when a frame cannot be read, saying so once', async () => {
    const accepts: string[] = [];
    raw = createServer((req, res) => {
      accepts.push(req.headers.accept ?? '');
      if (req.url?.includes('watch=true')) {
        res.writeHead(200, { 'content-type': PROTOBUF_WATCH_CONTENT_TYPE });
        // A whole frame of 3 bytes that are no WatchEvent: a field 1 string 127 bytes long.
        res.end(Buffer.from([0, 0, 0, 3, 0x0a, 0x7f, 0x41]));
      } else {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"kind":"NodeList","metadata":{"resourceVersion":"5"},"items":[]}');
      }
    });
    await new Promise<void>((r) => raw!.listen(0, '127.0.0.1', () => r()));
    const t = transportOf(`http://127.0.0.1:${(raw.address() as AddressInfo).port}`);
    const err = await rejection(watchInto(t, '5', [], stopper()));
    expect([err.reason, err.message]).toEqual([
      'WatchFailed',
      'watch nodes: the watch sent an event that is not readable protobuf (the watch event cannot be read: index out of range: 2 + 127 > 3); Nodes are asked for in JSON from now on',
    ]);
    expect(t.nodesEncoding()).toBe('protobuf');
    await new CoreApi(t, 10).listNodes();
    expect(t.nodesEncoding()).toBe('json');
    await rejection(watchInto(t, '5', [], stopper())); // the same bytes, now not asked for
    expect(accepts).toEqual([NODES_ACCEPT, 'application/json', 'application/json']);
    t.close();
  });
});

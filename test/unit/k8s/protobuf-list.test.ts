/**
 * Node lists in protobuf through the native transport, end to end: the real HttpTransport and
 * CoreApi against the test API server (its own protobuf encoder), or a raw server that holds a
 * protobuf page's body back after its head. JSON stays the answer where protobuf is not one.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CoreApi } from '../../../pkg/k8s/api.ts';
import { HttpTransport } from '../../../pkg/k8s/http-transport.ts';
import { PROTOBUF_CONTENT_TYPE } from '../../../pkg/k8s/node-proto.ts';
import { type NodeViewResult, toNodeView } from '../../../pkg/k8s/views.ts';
import { encodeNodeList } from '../../support/apiserver/protobuf.ts';
import { startTestApiServer, type TestApiServer } from '../../support/apiserver/server.ts';
import { closeRawServer, rejection } from './helpers.ts';

let srv: TestApiServer | undefined;
let raw: Server | undefined;

afterEach(async () => {
  await srv?.close();
  srv = undefined;
  await closeRawServer(raw);
  raw = undefined;
});

function apiOf(url: string, pageSize: number): CoreApi {
  const t = new HttpTransport(
    { server: new URL(url), insecure: true },
    { userAgent: 'trellis-agent/test', requestTimeoutMs: 5_000, watchIdleMs: 5_000 },
  );
  return new CoreApi(t, pageSize);
}

const node = (i: number) => ({
  metadata: {
    name: `p-${i}`,
    labels: { 'kubernetes.io/os': 'linux' },
    annotations: { 'trellis.dev/a': `${i}` },
  },
  spec: { podCIDR: `10.244.${i}.0/24`, podCIDRs: [`10.244.${i}.0/24`], providerID: `kind://p-${i}` },
  status: {
    addresses: [{ type: 'InternalIP', address: `172.18.0.${i}` }],
    conditions: [
      { type: 'Ready', status: 'True', lastHeartbeatTime: '2026-12-07T00:00:00Z', reason: 'KubeletReady' },
    ],
    images: [{ names: ['registry.k8s.io/pause:3.10'], sizeBytes: 320_000 }],
  },
});

const names = (views: NodeViewResult[]): string[] => views.map((v) => (v.ok ? v.node.name : v.problem));

async function listWith(opts: { protobuf?: boolean }) {
  srv = await startTestApiServer(opts);
  for (let i = 1; i <= 5; i++) srv.store.addNode(node(i));
  const api = apiOf(srv.url, 2);
  const before = api.transport.nodesEncoding?.();
  const list = await api.listNodes(undefined, (o) => toNodeView(o));
  const pages = srv.store.requests().filter((r) => r.path === '/api/v1/nodes');
  return { list, pages, encoding: [before, api.transport.nodesEncoding?.()] };
}

describe('a Node list in protobuf', () => {
  it('is asked for and read page by page, the views the same as from JSON', async () => {
    const proto = await listWith({});
    expect(proto.pages.map((r) => [r.accept, r.contentType])).toEqual(
      Array(3).fill([`${PROTOBUF_CONTENT_TYPE}, application/json`, PROTOBUF_CONTENT_TYPE]),
    );
    await srv!.close();
    const json = await listWith({ protobuf: false });
    expect(json.pages.map((r) => r.contentType)).toEqual(Array(3).fill('application/json'));
    expect([proto.encoding, json.encoding]).toEqual([
      [undefined, 'protobuf'],
      [undefined, 'json'],
    ]);
    expect(names(proto.list.items)).toEqual(['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    // The same views but for uid (each server made its own): everything the agent reads.
    const noUid = (v: NodeViewResult) => (v.ok ? { ...v.node, uid: '' } : v);
    expect(proto.list.items.map(noUid)).toEqual(json.list.items.map(noUid));
    expect(proto.list.items.every((v) => v.ok && v.node.uid !== '')).toBe(true);
  });

  it('falls back to JSON for a page the server cannot encode, and the bad Node is reported, not dropped', async () => {
    srv = await startTestApiServer();
    srv.store.addNode(node(1));
    srv.store.addNode({ ...node(2), spec: { podCIDRs: 'not-a-list' } }, { unchecked: true });
    const list = await apiOf(srv.url, 10).listNodes(undefined, (o) => toNodeView(o));
    expect(srv.store.requests().find((r) => r.path === '/api/v1/nodes')?.contentType).toBe(
      'application/json',
    );
    expect(names(list.items)).toEqual(['p-1', 'node p-2: spec.podCIDRs is not a list']);
  });

  it("reads the server's refusals from protobuf Statuses: reason, message, Retry-After", async () => {
    srv = await startTestApiServer();
    srv.store.addNode(node(1));
    srv.store.failRequests({ count: 1 }, 'throttle429');
    const throttled = await rejection(apiOf(srv.url, 10).listNodes());
    expect(srv.store.requests().at(-1)?.contentType).toBe(PROTOBUF_CONTENT_TYPE);
    expect([throttled.statusCode, throttled.reason, throttled.retryAfterMs]).toEqual([
      429,
      'TooManyRequests',
      2000,
    ]);
    srv.store.failRequests({ count: 1 }, 'error500');
    const failed = await rejection(apiOf(srv.url, 10).listNodes());
    expect([failed.statusCode, failed.reason, failed.message]).toEqual([
      500,
      'InternalError',
      'list nodes: Internal error occurred: injected failure (test API server)',
    ]);
  });

  it('starts over when a continued page has expired (410 as a protobuf Status)', async () => {
    srv = await startTestApiServer();
    for (let i = 1; i <= 5; i++) srv.store.addNode(node(i));
    srv.store.failRequests({ count: 1, match: (r) => r.query.has('continue') }, 'gone410');
    const list = await apiOf(srv.url, 2).listNodes(undefined, (o) => toNodeView(o));
    expect(names(list.items)).toEqual(['p-1', 'p-2', 'p-3', 'p-4', 'p-5']);
    const statuses = srv.store.requests().map((r) => r.status);
    expect(statuses).toContain(410);
  });

  it('asks for JSON from then on when a protobuf NodeList cannot be read, saying so once', async () => {
    const accepts: string[] = [];
    raw = createServer((req, res) => {
      accepts.push(req.headers.accept ?? '');
      if (req.headers.accept?.includes(PROTOBUF_CONTENT_TYPE)) {
        // The prefix and an envelope whose raw field runs past the body: a reader that cannot follow.
        res.writeHead(200, { 'content-type': PROTOBUF_CONTENT_TYPE });
        res.end(Buffer.from([0x6b, 0x38, 0x73, 0x00, 0x12, 0x7f, 0x01]));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ kind: 'NodeList', metadata: { resourceVersion: '3' }, items: [node(1)] }));
    });
    await new Promise<void>((r) => raw!.listen(0, '127.0.0.1', () => r()));
    const { port } = raw.address() as AddressInfo;
    const api = apiOf(`http://127.0.0.1:${port}`, 10);
    const first = await rejection(api.listNodes());
    expect([first.reason, first.message]).toEqual([
      'InvalidObject',
      'list nodes: the answer is not a readable protobuf NodeList (the protobuf envelope cannot be read: index out of range: 2 + 127 > 3); Nodes are asked for in JSON from now on',
    ]);
    const list = await api.listNodes(undefined, (o) => toNodeView(o));
    expect(names(list.items)).toEqual(['p-1']);
    expect(accepts).toEqual([`${PROTOBUF_CONTENT_TYPE}, application/json`, 'application/json']);
  });

  it("asks for the next page once this one's protobuf head names it, its body still held back", async () => {
    const meta = (cont?: string) => ({
      resourceVersion: '9',
      ...(cont === undefined ? {} : { continue: cont }),
    });
    const first = encodeNodeList(meta('t1'), [node(1), node(2)]);
    const second = encodeNodeList(meta(), [node(3)]);
    const headEnd = first.indexOf(Buffer.from('t1')) + 2;
    const seen: string[] = [];
    let asked!: () => void;
    const secondAsked = new Promise<void>((r) => {
      asked = r;
    });
    raw = createServer((req, res) => {
      const token = new URL(req.url ?? '/', 'http://x').searchParams.get('continue');
      seen.push(token ?? '-');
      res.writeHead(200, {
        'content-type': PROTOBUF_CONTENT_TYPE,
        'content-length': String(token ? second.length : first.length),
      });
      if (token === 't1') {
        asked();
        res.end(second);
        return;
      }
      res.write(first.subarray(0, headEnd));
      // The rest only once the next page was asked for: a reader waiting for the whole page would
      // hang here (the test's timeout).
      void secondAsked.then(() => res.end(first.subarray(headEnd)));
    });
    await new Promise<void>((r) => raw!.listen(0, '127.0.0.1', () => r()));
    const { port } = raw.address() as AddressInfo;
    const list = await apiOf(`http://127.0.0.1:${port}`, 2).listNodes(undefined, (o) => toNodeView(o));
    expect(seen).toEqual(['-', 't1']);
    expect(names(list.items)).toEqual(['p-1', 'p-2', 'p-3']);
  });
});

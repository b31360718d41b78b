/**
 * The native transport against a raw node:http server that misbehaves in ways the test API server
 * does not: non-Status error bodies, non-JSON answers and watch lines, silence (timeouts).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { HttpTransport } from '../../../pkg/k8s/http-transport.ts';
import { rejection } from './helpers.ts';

let server: Server | undefined;
const open = new Set<ServerResponse>();

afterEach(async () => {
  for (const r of open) r.destroy();
  open.clear();
  if (server !== undefined) {
    server.closeAllConnections();
    await new Promise<void>((r) => server!.close(() => r()));
  }
  server = undefined;
});

async function serve(handler: (req: IncomingMessage, res: ServerResponse) => void): Promise<HttpTransport> {
  server = createServer((req, res) => {
    open.add(res);
    handler(req, res);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return new HttpTransport(
    { server: new URL(`http://127.0.0.1:${port}`), insecure: true },
    { userAgent: 'trellis-agent/test', requestTimeoutMs: 300, watchIdleMs: 300 },
  );
}

const params = { resourceVersion: '5', allowWatchBookmarks: true, timeoutSeconds: 60 };

describe('HttpTransport', () => {
  it('maps an error answer without a Status body to the code, with the body as message', async () => {
    const t = await serve((_req, res) => {
      res.writeHead(503, { 'content-type': 'text/html' });
      res.end('<html>upstream down</html>\n<p>more</p>');
    });
    const e = await rejection(t.patch('annotate node a', '/api/v1/nodes/a', 'merge', {}));
    expect([e.statusCode, e.reason, e.message]).toEqual([
      503,
      'InternalError',
      'annotate node a: <html>upstream down</html>',
    ]);
  });

  it('reads reason and causes from a Status body', async () => {
    const t = await serve((_req, res) => {
      res.writeHead(504, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          kind: 'Status',
          code: 504,
          reason: 'Timeout',
          message: 'Too large resource version',
          details: { causes: [{ reason: 'ResourceVersionTooLarge' }] },
        }),
      );
    });
    const e = await rejection(t.listPage('list nodes', '/api/v1/nodes', { limit: 5 }));
    expect([e.statusCode, e.reason, e.isResourceVersionTooLarge]).toEqual([504, 'Timeout', true]);
  });

  it('rejects a 200 that is not JSON, or a list without items', async () => {
    let body = 'not json';
    const t = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(body);
    });
    expect((await rejection(t.patch('annotate node a', '/api/v1/nodes/a', 'merge', {}))).reason).toBe(
      'InvalidObject',
    );
    body = '{"kind":"NodeList"}';
    expect((await rejection(t.listPage('list nodes', '/api/v1/nodes', { limit: 5 }))).reason).toBe(
      'InvalidObject',
    );
  });

  it('times out a request that gets no answer', async () => {
    const t = await serve(() => {
      // Never answer.
    });
    const e = await rejection(t.patch('annotate node a', '/api/v1/nodes/a', 'merge', {}));
    expect([e.statusCode, e.reason, e.message]).toEqual([
      undefined,
      'NetworkError',
      'annotate node a: no answer within 300 ms',
    ]);
  });

  it('a list page that gets no answer ends at once when its signal aborts, connection closed', async () => {
    let closed: Promise<void> = new Promise(() => {});
    await serve((req) => {
      closed = new Promise((r) => req.socket.once('close', () => r()));
      // Never answer.
    });
    const { port } = server!.address() as AddressInfo;
    const t = new HttpTransport(
      { server: new URL(`http://127.0.0.1:${port}`), insecure: true },
      { userAgent: 'trellis-agent/test', requestTimeoutMs: 60_000, watchIdleMs: 60_000 },
    );
    const stop = new AbortController();
    const listing = rejection(t.listPage('list nodes', '/api/v1/nodes', { limit: 5 }, stop.signal));
    await vi.waitFor(() => expect(open.size).toBe(1));
    const started = performance.now();
    stop.abort();
    const e = await listing;
    expect(performance.now() - started).toBeLessThan(1000);
    expect([e.reason, e.message]).toEqual(['NetworkError', 'list nodes: abandoned: the client is stopping']);
    await closed; // the request's connection is gone too, not left to the 60 s timeout
    // Already aborted: no request at all.
    const before = open.size;
    expect(
      (await rejection(t.listPage('list nodes', '/api/v1/nodes', { limit: 5 }, stop.signal))).message,
    ).toContain('abandoned');
    expect(open.size).toBe(before);
  });

  it('sends the query, headers and body a patch needs', async () => {
    const seen: { url: string; headers: IncomingMessage['headers']; body: string }[] = [];
    const t = await serve((req, res) => {
      let body = '';
      req.on('data', (c: Buffer) => {
        body += c.toString();
      });
      req.on('end', () => {
        seen.push({ url: req.url ?? '', headers: req.headers, body });
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end('{"items":[],"metadata":{"resourceVersion":"1"}}');
      });
    });
    await t.patch('annotate node a', '/api/v1/nodes/a', 'merge', { metadata: { annotations: { x: null } } });
    await t.listPage('list pods', '/api/v1/pods', {
      limit: 7,
      continue: 'c&1',
      fieldSelector: 'spec.nodeName=a b',
    });
    expect(seen[0]).toMatchObject({
      url: '/api/v1/nodes/a',
      body: '{"metadata":{"annotations":{"x":null}}}',
      headers: { 'content-type': 'application/merge-patch+json', 'user-agent': 'trellis-agent/test' },
    });
    expect(seen[0]!.headers.authorization).toBeUndefined();
    expect(new URL(seen[1]!.url, 'http://x').searchParams.toString()).toBe(
      'limit=7&fieldSelector=spec.nodeName%3Da+b&continue=c%261',
    );
  });

  it('fails a watch on a line that is not JSON, after delivering the lines before it', async () => {
    const t = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"type":"ADDED","object":{"metadata":{"name":"a"}}}\n{"type":"ADD');
      res.write('ED","object":{"metadata":{"name":"b"}}}\n');
      res.write('<html>\n');
    });
    const got: string[] = [];
    const e = await rejection(
      t.watch(
        'watch nodes',
        '/api/v1/nodes',
        params,
        (type, o) => got.push(`${type} ${(o as { metadata: { name: string } }).metadata.name}`),
        new AbortController().signal,
      ),
    );
    expect(got).toEqual(['ADDED a', 'ADDED b']);
    expect([e.reason, e.message]).toEqual([
      'WatchFailed',
      'watch nodes: the watch sent a line that is not JSON: <html>',
    ]);
  });

  it('fails a watch whose line never ends (a stream that lost its framing) instead of holding it all', async () => {
    const chunk = 'a'.repeat(1024 * 1024);
    let sent = 0;
    const t = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      // Bytes keep coming (so the inactivity timer never ends it), never a newline.
      const more = (): void => {
        if (res.destroyed || sent >= 64) return;
        sent++;
        if (res.write(chunk)) setImmediate(more);
        else res.once('drain', more);
      };
      more();
    });
    const e = await rejection(
      t.watch('watch nodes', '/api/v1/nodes', params, () => undefined, new AbortController().signal),
    );
    expect(e.reason).toBe('WatchFailed');
    expect(e.message).toMatch(/a watch line grew past 16777216 bytes without its end/);
    expect(sent).toBeLessThan(64);
  });

  it('ends a silent watch with "timeout", and an aborted one with "closed"', async () => {
    const urls: string[] = [];
    const t = await serve((req, res) => {
      urls.push(req.url ?? '');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
    });
    const noEvent = (): void => {
      throw new Error('no event expected');
    };
    expect(await t.watch('watch nodes', '/api/v1/nodes', params, noEvent, new AbortController().signal)).toBe(
      'timeout',
    );
    const ac = new AbortController();
    const p = t.watch('watch nodes', '/api/v1/nodes', params, noEvent, ac.signal);
    setTimeout(() => ac.abort(), 50);
    expect(await p).toBe('closed');
    expect(new URL(urls[0]!, 'http://x').searchParams.toString()).toBe(
      'watch=true&allowWatchBookmarks=true&timeoutSeconds=60&resourceVersion=5',
    );
  });

  it('by default keeps a watch that gets a BOOKMARK once a minute, and ends one silent for 90 s', async () => {
    // The API server's cacher sends each watch a BOOKMARK every minute: a quiet cluster's healthy
    // watch must not be taken for dead (and re-made) between two of them.
    let res: ServerResponse | undefined;
    server = createServer((_req, r) => {
      open.add(r);
      r.writeHead(200, { 'content-type': 'application/json' });
      r.flushHeaders();
      res = r;
    });
    await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
    const { port } = server.address() as AddressInfo;
    const t = new HttpTransport(
      { server: new URL(`http://127.0.0.1:${port}`), insecure: true },
      { userAgent: 'trellis-agent/test' },
    );
    const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
    const until = async (cond: () => boolean): Promise<void> => {
      for (let i = 0; i < 10_000 && !cond(); i++) await turn();
      expect(cond()).toBe(true);
    };
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout'] });
    try {
      const rvs: string[] = [];
      let end: string | undefined;
      void t
        .watch(
          'watch nodes',
          '/api/v1/nodes',
          params,
          (_type, o) => rvs.push((o as { metadata: { resourceVersion: string } }).metadata.resourceVersion),
          new AbortController().signal,
        )
        .then((e) => {
          end = e;
        });
      // The idle timer is armed once the answer's headers are in.
      await until(() => res !== undefined && vi.getTimerCount() > 0);
      for (let minute = 1; minute <= 5; minute++) {
        vi.advanceTimersByTime(60_000);
        res!.write(`{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"${minute}"}}}\n`);
        await until(() => rvs.length === minute);
      }
      expect(end).toBeUndefined();
      vi.advanceTimersByTime(89_000);
      for (let i = 0; i < 20; i++) await turn();
      expect(end).toBeUndefined();
      vi.advanceTimersByTime(1_000);
      await until(() => end !== undefined);
      expect([end, rvs]).toEqual(['timeout', ['1', '2', '3', '4', '5']]);
    } finally {
      vi.useRealTimers();
    }
  });

  it('after a 401 reads a token file again for the next request, and names the credentials', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-token-'));
    try {
      const file = join(dir, 'token');
      writeFileSync(file, 'old\n');
      const seen: string[] = [];
      server = createServer((req, res) => {
        seen.push(req.headers.authorization ?? '');
        const ok = req.headers.authorization === 'Bearer new';
        res.writeHead(ok ? 200 : 401, { 'content-type': 'application/json' });
        res.end(
          ok
            ? '{"items":[]}'
            : '{"kind":"Status","code":401,"message":"Unauthorized","reason":"Unauthorized"}',
        );
      });
      await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
      const { port } = server.address() as AddressInfo;
      const t = new HttpTransport(
        {
          server: new URL(`http://127.0.0.1:${port}`),
          insecure: true,
          token: { kind: 'file', path: file, reloadMs: 60_000 },
        },
        { userAgent: 'trellis-agent/test', requestTimeoutMs: 1000, watchIdleMs: 1000 },
      );
      const e = await rejection(t.listPage('list nodes', '/api/v1/nodes', { limit: 10 }));
      expect(e.statusCode).toBe(401);
      expect(e.message).toContain(`the bearer token of ${file}, read again for the next request`);
      // The kubelet rotated the file: the next request sends the new token (the 60 s reload not waited for).
      writeFileSync(file, 'new\n');
      await t.listPage('list nodes', '/api/v1/nodes', { limit: 10 });
      expect(seen).toEqual(['Bearer old', 'Bearer new']);
      t.close();
      // The inline token sent while the file is missing: a 401 names it, not the file.
      const missing = join(dir, 'missing');
      const inline = new HttpTransport(
        {
          server: new URL(`http://127.0.0.1:${port}`),
          insecure: true,
          token: { kind: 'file', path: missing, reloadMs: 0, fallback: 'inline' },
        },
        { userAgent: 'trellis-agent/test', requestTimeoutMs: 1000, watchIdleMs: 1000 },
      );
      const refused = await rejection(inline.listPage('list nodes', '/api/v1/nodes', { limit: 10 }));
      expect(refused.message).toContain(
        `the inline token of the kubeconfig, sent while ${missing} cannot be read`,
      );
      writeFileSync(missing, 'new\n');
      await inline.listPage('list nodes', '/api/v1/nodes', { limit: 10 });
      expect(seen).toEqual(['Bearer old', 'Bearer new', 'Bearer inline', 'Bearer new']);
      // Read from the file once: a refused token is the file's, even while the file cannot be read.
      writeFileSync(missing, 'old\n');
      await rejection(inline.listPage('list nodes', '/api/v1/nodes', { limit: 10 }));
      rmSync(missing);
      const stale = await rejection(inline.listPage('list nodes', '/api/v1/nodes', { limit: 10 }));
      expect(seen.slice(-2)).toEqual(['Bearer old', 'Bearer old']);
      expect(stale.message).toContain(`the bearer token of ${missing}, read again for the next request`);
      inline.close();
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects (never throws) when node:http refuses the request itself', async () => {
    await serve((_req, res) => res.end('{}'));
    const { port } = server!.address() as AddressInfo;
    const t = new HttpTransport(
      {
        server: new URL(`http://127.0.0.1:${port}`),
        insecure: true,
        token: { kind: 'static', value: 'line1\nline2' },
      },
      { userAgent: 'x' },
    );
    const e = await rejection(t.patch('annotate node a', '/api/v1/nodes/a', 'merge', {}));
    expect(e.message).toMatch(/^annotate node a: Invalid character in header content \["authorization"\]/);
    const w = await rejection(
      t.watch('watch nodes', '/api/v1/nodes', params, () => undefined, new AbortController().signal),
    );
    expect(w.op).toBe('watch nodes');
  });

  it('turns on TCP keepalive (30 s idle) for a watch: a partition is found before the 90 s inactivity timeout', async () => {
    const t = await serve((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{"type":"BOOKMARK","object":{"metadata":{"resourceVersion":"6"}}}\n');
    });
    const { port } = server!.address() as AddressInfo;
    const ac = new AbortController();
    let timers = '';
    const ended = t.watch(
      'watch nodes',
      '/api/v1/nodes',
      params,
      () => {
        // The watch's own socket, as the kernel has it: its timer is keepalive's, due within 30 s.
        timers ||= execFileSync('ss', ['-tnoH', 'state', 'established', 'dst', `127.0.0.1:${port}`], {
          encoding: 'utf8',
        });
        ac.abort();
      },
      ac.signal,
    );
    expect(await ended).toBe('closed');
    const due = /timer:\(keepalive,(\d+)sec,0\)/.exec(timers);
    expect(due, timers).not.toBeNull();
    expect(Number(due![1])).toBeLessThanOrEqual(30);
  });

  it('reports a refused connection as NetworkError with its errno', async () => {
    await serve(() => undefined);
    const { port } = server!.address() as AddressInfo;
    await new Promise<void>((r) => server!.close(() => r()));
    server = undefined;
    const dead = new HttpTransport(
      { server: new URL(`http://127.0.0.1:${port}`), insecure: true },
      { userAgent: 'x' },
    );
    const e = await rejection(dead.patch('annotate node a', '/api/v1/nodes/a', 'merge', {}));
    expect([e.statusCode, e.reason]).toEqual([undefined, 'NetworkError']);
    expect(e.message).toMatch(/ECONNREFUSED/);
    const w = await rejection(
      dead.watch('watch nodes', '/api/v1/nodes', params, () => undefined, new AbortController().signal),
    );
    expect(w.reason).toBe('NetworkError');
  });
});

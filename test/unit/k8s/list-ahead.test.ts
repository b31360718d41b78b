/**
 * A paginated list one page ahead (api.ts's listAll, page-fetches.ts) through the native transport,
 * against a raw node:http server that holds each page's body back until the test says: what the
 * test API server (which answers every page whole at once) cannot show.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { CoreApi } from '../../../pkg/k8s/api.ts';
import { HttpTransport } from '../../../pkg/k8s/http-transport.ts';
import { rejection } from './helpers.ts';

let server: Server | undefined;

afterEach(async () => {
  if (server !== undefined) {
    server.closeAllConnections();
    await new Promise<void>((r) => server!.close(() => r()));
  }
  server = undefined;
});

/** What the server saw, in order: 'GET <token>' (first page: 'GET -'), 'end <token>', 'closed <token>'. */
type Seen = string[];

interface Served {
  api: CoreApi;
  seen: Seen;
  /** Resolves once `entry` is in `seen`. */
  saw(entry: string): Promise<void>;
}

/**
 * `answer` gets every list request by its continue token ('-' for the first) and writes the page;
 * the server notes when each request came, when its answer ended and when its connection closed
 * before that.
 */
async function serve(
  answer: (token: string, res: ServerResponse, req: IncomingMessage) => void,
): Promise<Served> {
  const seen: Seen = [];
  const waiters: { entry: string; done: () => void }[] = [];
  const note = (entry: string): void => {
    seen.push(entry);
    for (const w of waiters.filter((x) => x.entry === entry)) w.done();
  };
  server = createServer((req, res) => {
    const token = new URL(req.url ?? '/', 'http://x').searchParams.get('continue') ?? '-';
    note(`GET ${token}`);
    res.on('finish', () => note(`end ${token}`));
    res.on('close', () => {
      if (!res.writableFinished) note(`closed ${token}`);
    });
    answer(token, res, req);
  });
  await new Promise<void>((r) => server!.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  const transport = new HttpTransport(
    { server: new URL(`http://127.0.0.1:${port}`), insecure: true },
    { userAgent: 'trellis-agent/test', requestTimeoutMs: 60_000, watchIdleMs: 60_000 },
  );
  return {
    api: new CoreApi(transport, 2),
    seen,
    saw: (entry) =>
      seen.includes(entry) ? Promise.resolve() : new Promise((done) => waiters.push({ entry, done })),
  };
}

const item = (name: string): string => JSON.stringify({ metadata: { name } });

/** A page's head: everything up to the items, as the API server writes it first. */
function head(res: ServerResponse, cont: string | undefined): void {
  const metadata = { resourceVersion: '9', ...(cont !== undefined ? { continue: cont } : {}) };
  res.writeHead(200, { 'content-type': 'application/json' });
  res.write(`{"kind":"NodeList","apiVersion":"v1","metadata":${JSON.stringify(metadata)},"items":[`);
}

/** The rest of a page: its items and the closing brackets. */
function rest(res: ServerResponse, names: string[]): void {
  res.end(`${names.map(item).join(',')}]}`);
}

const names = (r: { items: unknown[] }): string[] =>
  r.items.map((o) => (o as { metadata: { name: string } }).metadata.name);

describe('a list one page ahead', () => {
  it('asks for the next page as soon as the head of this one names it, while its body is still coming', async () => {
    const s = await serve((token, res) => {
      if (token === '-') {
        head(res, 't1');
        // The rest of the first page only once the second has been asked for; a reader that waits
        // for the whole page before asking would wait here until the fallback 3 s later.
        const fallback = setTimeout(() => rest(res, ['a', 'b']), 3000);
        void s.saw('GET t1').then(() => {
          clearTimeout(fallback);
          rest(res, ['a', 'b']);
        });
      } else {
        head(res, undefined);
        rest(res, ['c']);
      }
    });
    const r = await s.api.listNodes();
    expect(names(r)).toEqual(['a', 'b', 'c']);
    expect(r.resourceVersion).toBe('9');
    expect(s.seen.indexOf('GET t1')).toBeLessThan(s.seen.indexOf('end -'));
  });

  it('is never more than one page ahead: the page after next waits until this one is read', async () => {
    const s = await serve((token, res) => {
      if (token === '-') {
        head(res, 't1');
        // Held 300 ms past the second request: time enough for a third, were one to go out.
        void s.saw('GET t1').then(() => setTimeout(() => rest(res, ['a', 'b']), 300));
      } else if (token === 't1') {
        head(res, 't2'); // names the third page at once
        void s.saw('end -').then(() => rest(res, ['c', 'd']));
      } else {
        head(res, undefined);
        rest(res, ['e']);
      }
    });
    const r = await s.api.listNodes();
    expect(names(r)).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(s.seen.indexOf('GET t2')).toBeGreaterThan(s.seen.indexOf('end -'));
  });

  it('trusts the page, not its head: a head naming another page has that request ended and the right one asked', async () => {
    const s = await serve((token, res) => {
      if (token === '-') {
        // metadata twice: the head names "wrong", the parsed page (its last metadata) "right".
        head(res, 'wrong');
        void s
          .saw('GET wrong')
          .then(() => res.end(`${item('a')}],"metadata":{"resourceVersion":"9","continue":"right"}}`));
      } else if (token === 'wrong') {
        head(res, undefined); // its head, never its rest: only an ended request gets past it
      } else {
        head(res, undefined);
        rest(res, ['b']);
      }
    });
    const r = await s.api.listNodes();
    expect(names(r)).toEqual(['a', 'b']);
    await s.saw('closed wrong');
    expect(s.seen.filter((e) => e.startsWith('GET'))).toEqual(['GET -', 'GET wrong', 'GET right']);
  });

  it('a page broken mid-answer fails the list at once and ends the request ahead of it', async () => {
    const s = await serve((token, res, req) => {
      if (token === '-') {
        head(res, 't1');
        void s.saw('GET t1').then(() => req.socket.destroy());
      }
      // t1: never answered.
    });
    const started = performance.now();
    const e = await rejection(s.api.listNodes());
    expect(e.reason).toBe('NetworkError');
    expect(performance.now() - started).toBeLessThan(5000); // not the 60 s request timeout
    await s.saw('closed t1');
  });

  it('the transport leaves a held page unread, its token told, until it is released', async () => {
    const s = await serve((_token, res) => {
      head(res, 't9');
      rest(res, ['a']); // the whole page, at once
    });
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const told: string[] = [];
    let read = false;
    const transport = s.api.transport as HttpTransport;
    const page = transport
      .listPage('list nodes', '/api/v1/nodes', { limit: 2 }, undefined, {
        onContinue: (t) => told.push(t),
        held: () => gate,
      })
      .then((p) => {
        read = true;
        return p;
      });
    await s.saw('end -');
    await new Promise((r) => setTimeout(r, 200));
    expect([told, read]).toEqual([['t9'], false]);
    release();
    expect(names(await page)).toEqual(['a']);
  });

  it('a held page is not timed out while held, and gets a whole request timeout once released', async () => {
    const s = await serve((_token, res) => {
      head(res, undefined);
      rest(res, ['a']);
    });
    const { port } = server!.address() as AddressInfo;
    const transport = new HttpTransport(
      { server: new URL(`http://127.0.0.1:${port}`), insecure: true },
      { userAgent: 'trellis-agent/test', requestTimeoutMs: 300, watchIdleMs: 300 },
    );
    let release: () => void = () => {};
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const page = transport.listPage('list nodes', '/api/v1/nodes', { limit: 2 }, undefined, {
      onContinue: () => {},
      held: () => gate,
    });
    await s.saw('end -');
    await new Promise((r) => setTimeout(r, 600)); // twice the request timeout, held
    release();
    expect(names(await page)).toEqual(['a']);
  });

  it('an aborted list ends the page ahead too', async () => {
    const stop = new AbortController();
    const s = await serve((token, res) => {
      head(res, token === '-' ? 't1' : 't2'); // heads only: every page stays open
    });
    const listing = rejection(s.api.listNodes(stop.signal));
    await s.saw('GET t1');
    stop.abort();
    expect((await listing).message).toContain('abandoned');
    await Promise.all([s.saw('closed -'), s.saw('closed t1')]);
  });
});

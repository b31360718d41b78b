/**
 * A watch's own connection against raw TCP servers that write HTTP byte by byte as the test says:
 * framing cut anywhere, answers with and without a length, cut connections, non-HTTP answers; and
 * the request it sends.
 */
import { createServer, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { openStream, type StreamTarget } from '../../../pkg/k8s/watch-connection.ts';

let server: Server | undefined;
const sockets = new Set<Socket>();

afterEach(async () => {
  for (const s of sockets) s.destroy();
  sockets.clear();
  if (server !== undefined) await new Promise<void>((r) => server!.close(() => r()));
  server = undefined;
});

/** A server that answers each connection with `answer` once the request head is in. */
async function serve(
  answer: (socket: Socket, request: string) => void,
  host = '127.0.0.1',
): Promise<StreamTarget> {
  server = createServer((socket) => {
    sockets.add(socket);
    let request = '';
    socket.on('data', (d) => {
      request += d.toString('latin1');
      if (request.endsWith('\r\n\r\n')) answer(socket, request);
    });
  });
  await new Promise<void>((r) => server!.listen(0, host, () => r()));
  const port = (server.address() as { port: number }).port;
  return { protocol: 'http:', host, port, rejectUnauthorized: true };
}

interface Seen {
  status?: number;
  headers?: ReadonlyMap<string, string>;
  body: Buffer[];
  activity: number;
  end: 'end' | Error | undefined;
  after: number;
}

/** Opens a stream and resolves once it ends or fails, with what the handlers saw. */
function read(target: StreamTarget, headers: Record<string, string> = {}): Promise<Seen> {
  return new Promise((resolve) => {
    const seen: Seen = { body: [], activity: 0, end: undefined, after: 0 };
    const over = (end: 'end' | Error): void => {
      if (seen.end !== undefined) seen.after++;
      seen.end = end;
      // Anything after the end would be counted before the next turn settles.
      setTimeout(() => resolve(seen), 20);
    };
    openStream(target, '/api/v1/nodes?watch=true', headers, {
      onHead: (status, h) => {
        seen.status = status;
        seen.headers = h;
      },
      onBody: (piece) => seen.body.push(Buffer.from(piece)),
      onActivity: () => seen.activity++,
      onEnd: () => over('end'),
      onError: (err) => over(err),
    });
  });
}

/** Writes the pieces one by one, each in its own TCP segment (Nagle off, a pause between). */
async function writeSlowly(socket: Socket, pieces: string[]): Promise<void> {
  socket.setNoDelay(true);
  for (const p of pieces) {
    socket.write(p);
    await new Promise((r) => setTimeout(r, 5));
  }
}

describe('openStream', () => {
  it('reads a chunked answer whose framing is cut anywhere, and ends at its last chunk', async () => {
    const head = 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n';
    const body = '{"type":"ADDED"}\n{"type":"MODIFIED"}\n';
    const framed = `${head}10\r\n${body.slice(0, 16)}\r\n${(body.length - 16).toString(16)};ext=1\r\n${body.slice(16)}\r\n0\r\n\r\n`;
    // Cut in the status line, a header, a chunk size line, a chunk's data and its CRLF.
    const cuts = [
      5,
      30,
      head.length + 1,
      head.length + 9,
      framed.length - 20,
      framed.length - 6,
      framed.length - 1,
    ];
    const pieces = [0, ...cuts].map((at, i) => framed.slice(at, cuts[i] ?? framed.length));
    const target = await serve((s) => void writeSlowly(s, pieces));
    const seen = await read(target);
    expect([seen.status, seen.headers?.get('content-type'), seen.end, seen.after]).toEqual([
      200,
      'application/json',
      'end',
      0,
    ]);
    expect(Buffer.concat(seen.body).toString()).toBe(body);
    expect(seen.activity).toBeGreaterThan(1);
  });

  it('reads an error answer with a Content-Length, and one that ends with its connection', async () => {
    const status = '{"kind":"Status","code":410}';
    const sized = await serve((s) =>
      s.end(
        `HTTP/1.1 410 Gone\r\nRetry-After: 3\r\nWarning: a\r\nwarning: b\r\nContent-Length: ${status.length}\r\n\r\n${status}`,
      ),
    );
    const a = await read(sized);
    expect([a.status, a.headers?.get('retry-after'), a.headers?.get('warning'), a.end]).toEqual([
      410,
      '3',
      'a, b',
      'end',
    ]);
    expect(Buffer.concat(a.body).toString()).toBe(status);
    await new Promise<void>((r) => server!.close(() => r()));

    const closeDelimited = await serve((s) =>
      s.end(`HTTP/1.1 500 Oops\r\nConnection: close\r\n\r\n${status}`),
    );
    const b = await read(closeDelimited);
    expect([b.status, b.end, Buffer.concat(b.body).toString()]).toEqual([500, 'end', status]);
  });

  it('says the connection broke when it is cut mid-answer, and refuses an answer that is not HTTP', async () => {
    const cut = await serve((s) =>
      s.end('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n100\r\n{"type":"ADDED"'),
    );
    const a = await read(cut);
    expect(a.end).toBeInstanceOf(Error);
    expect([(a.end as Error).message, (a.end as { code?: string }).code]).toEqual([
      'the connection broke mid-answer',
      'ECONNRESET',
    ]);
    expect(Buffer.concat(a.body).toString()).toBe('{"type":"ADDED"');
    await new Promise<void>((r) => server!.close(() => r()));

    const notHttp = await serve((s) => s.write('<html>hello</html>\r\n\r\n'));
    const b = await read(notHttp);
    expect([b.status, (b.end as Error).message, b.after]).toEqual([
      undefined,
      'the answer is not HTTP/1.1: HPE_INVALID_CONSTANT',
      0,
    ]);
  });

  it('sends GET with Host (port, IPv6 brackets), its headers and Connection: close', async () => {
    let request = '';
    const target = await serve((s, req) => {
      request = req;
      s.end('HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n');
    }, '::1');
    const seen = await read(target, { accept: 'application/json', authorization: 'Bearer t' });
    expect(seen.end).toBe('end');
    expect(request).toBe(
      `GET /api/v1/nodes?watch=true HTTP/1.1\r\nHost: [::1]:${target.port}\r\naccept: application/json\r\n` +
        'authorization: Bearer t\r\nConnection: close\r\n\r\n',
    );
  });

  it('throws at once for a header it could not send, and calls no handler after destroy()', async () => {
    const target = await serve((s) =>
      s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n'),
    );
    const handlers = {
      onHead: () => undefined,
      onBody: () => undefined,
      onActivity: () => undefined,
      onEnd: () => {
        throw new Error('no end expected');
      },
      onError: (e: Error) => {
        throw e;
      },
    };
    expect(() => openStream(target, '/', { authorization: 'Bearer a\nb' }, handlers)).toThrow(
      /Invalid character in header content \["authorization"\]/,
    );
    let bodies = 0;
    const conn = openStream(target, '/', {}, { ...handlers, onBody: () => bodies++ });
    for (let i = 0; i < 200 && bodies === 0; i++) await new Promise((r) => setTimeout(r, 5));
    expect(bodies).toBe(1);
    conn.destroy();
    for (const s of sockets) s.end('0\r\n\r\n');
    await new Promise((r) => setTimeout(r, 30));
  });

  it('ends the answer with the error a handler throws, instead of letting it escape the socket', async () => {
    const target = await serve((s) => s.write('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n'));
    const seen = await new Promise<Error>((resolve) => {
      openStream(
        target,
        '/',
        {},
        {
          onHead: () => {
            throw new Error('handler failed');
          },
          onBody: () => undefined,
          onActivity: () => undefined,
          onEnd: () => undefined,
          onError: resolve,
        },
      );
    });
    expect(seen.message).toBe('handler failed');
  });
});

/**
 * One watch request on its own HTTP/1.1 connection, read without node:http: a net or tls socket whose
 * reads land in one reused buffer (the socket's `onread` option) and go straight through
 * http-parser-js. A 5,000-node cluster's kubelets send ~17 status reports a second, each a ~5 KB
 * event the agent reads to learn it can ignore it; through node:http each one also crossed the socket's
 * stream, the response's stream and the parser's glue: 0.51 ms of CPU per event on the bench VM, against
 * 0.33 ms this way (both with JSON.parse; bench/HISTORY.md, session 36). Bounded requests (lists,
 * patches) stay on node:http and its keep-alive pool.
 */
import * as net from 'node:net';
import * as tls from 'node:tls';
import { HTTPParser } from 'http-parser-js';
import { TCP_KEEPALIVE_IDLE_MS } from './transport.ts';

// node:http through process.getBuiltinModule (see http-transport.ts): only for its header checks.
const { validateHeaderName, validateHeaderValue } = process.getBuiltinModule('node:http');

/** Where to connect, and how (the kubeconfig's TLS settings). */
export interface StreamTarget {
  protocol: 'http:' | 'https:';
  /** A name or an IP address (an IPv6 one without brackets). */
  host: string;
  port: number;
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
  /** False only with insecure-skip-tls-verify. */
  rejectUnauthorized: boolean;
  /** The name to ask for (SNI) and to check the certificate against; default: host, unless an IP. */
  servername?: string;
}

export interface StreamHandlers {
  /** The status line and headers are in: header names lower-case, a repeated header's values joined. */
  onHead(status: number, headers: ReadonlyMap<string, string>): void;
  /** A piece of the body: a view into the read buffer, valid only during the call. */
  onBody(piece: Buffer): void;
  /** Bytes arrived (any: the head, the body, a chunk's framing). */
  onActivity(): void;
  /** The answer is complete. */
  onEnd(): void;
  /** The connection failed, or broke before the answer was complete, or the answer is not HTTP. */
  onError(err: Error): void;
}

export interface StreamConnection {
  /** Closes the connection; no handler is called after. */
  destroy(): void;
}

const READ_BUFFER_BYTES = 64 * 1024;

/**
 * Sends `GET path` with these headers (Host and Connection are added) and hands the answer to the
 * handlers. Throws synchronously, as node:http does, on a header it could not send (a token with a
 * newline, say); everything later goes to onError, once, and nothing follows it or onEnd.
 */
export function openStream(
  target: StreamTarget,
  path: string,
  headers: Readonly<Record<string, string>>,
  h: StreamHandlers,
): StreamConnection {
  const head = requestHead(target, path, headers);
  let done = false;
  const finish = (err?: Error): void => {
    if (done) return;
    done = true;
    socket.destroy();
    if (err === undefined) h.onEnd();
    else h.onError(err);
  };

  const parser = new HTTPParser(HTTPParser.RESPONSE);
  parser[HTTPParser.kOnHeadersComplete] = (info) => {
    const named = new Map<string, string>();
    for (let i = 0; i + 1 < info.headers.length; i += 2) {
      const name = info.headers[i]!.toLowerCase();
      const prev = named.get(name);
      named.set(name, prev === undefined ? info.headers[i + 1]! : `${prev}, ${info.headers[i + 1]}`);
    }
    h.onHead(info.statusCode, named);
  };
  parser[HTTPParser.kOnBody] = (piece) => {
    if (!done) h.onBody(piece);
  };
  parser[HTTPParser.kOnMessageComplete] = () => finish();

  const onread = {
    buffer: Buffer.allocUnsafe(READ_BUFFER_BYTES),
    callback: (n: number, buf: Buffer): boolean => {
      if (done) return false;
      // A handler's throw comes out of execute (http-parser-js rethrows them): it ends the answer
      // here, where it would otherwise escape from the socket's read callback.
      try {
        h.onActivity();
        const parsed = parser.execute(buf, 0, n);
        if (parsed instanceof Error) {
          const why = (parsed as { code?: unknown }).code ?? parsed.message;
          finish(new Error(`the answer is not HTTP/1.1: ${String(why)}`));
        }
      } catch (err) {
        finish(err as Error);
      }
      return true;
    },
  };
  const options = { host: target.host, port: target.port, onread };
  const socket =
    target.protocol === 'https:'
      ? tls.connect({
          ...options,
          rejectUnauthorized: target.rejectUnauthorized,
          ...(target.ca !== undefined ? { ca: target.ca } : {}),
          ...(target.cert !== undefined ? { cert: target.cert } : {}),
          ...(target.key !== undefined ? { key: target.key } : {}),
          // SNI takes a name, never an address (RFC 6066; node warns): an IP is checked as an IP.
          ...(serverName(target) !== undefined ? { servername: serverName(target) } : {}),
        })
      : net.connect(options);
  socket.setNoDelay(true);
  // A watch can stay quiet for a minute between BOOKMARKs: keepalive probes (after 30 s idle) find a
  // partitioned peer (`read ETIMEDOUT`) before the 90 s inactivity timeout does (WATCH_IDLE_MS).
  socket.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
  socket.write(head); // held until the connection (and its TLS handshake) is up
  socket.on('error', (err) => finish(err));
  socket.on('close', () => {
    if (done) return;
    // An answer without a length ends with its connection; any other answer was cut.
    parser.finish();
    if (!done) finish(brokenMidAnswer());
  });
  return {
    destroy: () => {
      done = true;
      socket.destroy();
    },
  };
}

/** A connection that closed before its answer was complete (ECONNRESET, as node:http says it). */
export function brokenMidAnswer(): Error {
  return Object.assign(new Error('the connection broke mid-answer'), { code: 'ECONNRESET' });
}

function serverName(t: StreamTarget): string | undefined {
  return t.servername ?? (net.isIP(t.host) === 0 ? t.host : undefined);
}

function requestHead(t: StreamTarget, path: string, headers: Readonly<Record<string, string>>): string {
  const defaultPort = t.protocol === 'https:' ? 443 : 80;
  const host = net.isIP(t.host) === 6 ? `[${t.host}]` : t.host;
  let head = `GET ${path} HTTP/1.1\r\nHost: ${t.port === defaultPort ? host : `${host}:${t.port}`}\r\n`;
  for (const [name, value] of Object.entries(headers)) {
    validateHeaderName(name);
    validateHeaderValue(name, value);
    head += `${name}: ${value}\r\n`;
  }
  // One watch per connection: when its answer ends, so does the connection.
  return `${head}Connection: close\r\n\r\n`;
}

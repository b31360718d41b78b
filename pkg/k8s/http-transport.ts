/**
 * The native transport: node:https (or node:http for a plain-HTTP test server) with one keep-alive
 * agent and JSON bodies (Nodes in protobuf: node-proto.ts); each watch on its own connection
 * (watch-connection.ts), read as newline-delimited JSON or, for Nodes, length-delimited protobuf. It
 * exists because @kubernetes/client-node loads every generated API and model class on import (~90 MB
 * of RSS), while the agent needs five calls.
 *
 * - Bearer token from the kubeconfig, or from a file re-read every reloadMs (bound service account
 *   tokens rotate; client-go re-reads about every minute). A failed re-read keeps the last token.
 * - Non-watch requests time out after requestTimeoutMs; a watch after watchIdleMs without a byte
 *   (a partitioned connection must not hang the informer forever; WATCH_IDLE_MS).
 * - A watch line that is not JSON (or a frame that is not a protobuf event) fails the watch (resumed
 *   from the last resourceVersion, so the event is replayed) instead of being skipped: a skipped
 *   event would never come back.
 */
import { readFileSync } from 'node:fs';
import type * as Http from 'node:http';
import * as https from 'node:https';
import { ClientCertFiles } from './client-cert-files.ts';
import { fromHttpResponse, K8sError, K8sReason, toK8sError } from './errors.ts';
import type { HttpSpec } from './kubeconfig-parse.ts';
import { continueFromHead, LIST_HEAD_MAX_BYTES } from './list-head.ts';
import {
  continueFromProtoHead,
  decodeNodeListPage,
  decodeNodeWatchEvent,
  decodeStatus,
  isProtobuf,
  NODES_ACCEPT,
  ProtobufBodyError,
} from './node-proto.ts';
import {
  type ListParams,
  type NodesEncoding,
  type Page,
  type PageAhead,
  type PatchType,
  TCP_KEEPALIVE_IDLE_MS,
  type Transport,
  WATCH_IDLE_MS,
  type WatchEnd,
  type WatchParams,
} from './transport.ts';
import { brokenMidAnswer, openStream, type StreamConnection, type StreamTarget } from './watch-connection.ts';
import { WatchFrames, WatchFrameTooLong } from './watch-frames.ts';
import { WatchLines, WatchLineTooLong } from './watch-lines.ts';

// node:http through process.getBuiltinModule, not an ESM import: building the ESM namespace of node:http
// reads its lazy exports (WebSocket and friends) and so loads undici, http2 and web streams (~8 MB RSS
// for code the agent never runs).
const http: typeof Http = process.getBuiltinModule('node:http');

export interface HttpTransportOptions {
  userAgent: string;
  /** Default 60_000. */
  requestTimeoutMs?: number;
  /** Default WATCH_IDLE_MS. */
  watchIdleMs?: number;
  /** For the token reload; default Date.now. */
  now?: () => number;
}

/** How much of a refused watch's body is kept for its error: a Status is a few hundred bytes. */
const MAX_REFUSAL_BYTES = 64 * 1024;

const CONTENT_TYPE: Record<PatchType, string> = {
  'strategic-merge': 'application/strategic-merge-patch+json',
  merge: 'application/merge-patch+json',
};

interface Request {
  method: 'GET' | 'PATCH';
  path: string;
  query?: URLSearchParams;
  body?: string;
  contentType?: string;
  /** A list page asked for ahead of its reader (2xx answers only). */
  ahead?: PageAhead;
  /** A Node list read into NodeViews only (ListParams.nodeViewsOnly): its encoding is noted. */
  nodes?: boolean;
  /** Such a list asked for in protobuf (until #protobufNodes is off). */
  nodeList?: boolean;
}

export class HttpTransport implements Transport {
  readonly name = 'native' as const;
  readonly #spec: HttpSpec;
  /** Replaced when the client certificate files change (#freshCerts). */
  #agent: Http.Agent;
  readonly #mod: typeof Http | typeof https;
  readonly #userAgent: string;
  readonly #requestTimeoutMs: number;
  readonly #watchIdleMs: number;
  readonly #now: () => number;
  /** The server and TLS settings, for node:http and for watches' own connections. */
  #target: StreamTarget;
  readonly #certs: ClientCertFiles | undefined;
  readonly #basePath: string;
  /**
   * Node lists and watches are asked for in protobuf until an answer cannot be read: from then on in
   * JSON, which every server answers. A safety net: a reader that fails on some server's bytes must
   * not leave the agent without its Nodes.
   */
  #protobufNodes = true;
  /** How the last Node list page or watch was answered (nodesEncoding). */
  #nodesEncoding: NodesEncoding | undefined;
  #token: string | undefined;
  #tokenReadAt = Number.NEGATIVE_INFINITY;
  /** `#token` was read from the token file (not the kubeconfig's inline fallback): for a 401's text. */
  #tokenFromFile = false;

  constructor(spec: HttpSpec, opts: HttpTransportOptions) {
    this.#spec = spec;
    this.#userAgent = opts.userAgent;
    this.#requestTimeoutMs = opts.requestTimeoutMs ?? 60_000;
    this.#watchIdleMs = opts.watchIdleMs ?? WATCH_IDLE_MS;
    this.#now = opts.now ?? Date.now;
    this.#target = streamTarget(spec);
    this.#mod = this.#target.protocol === 'https:' ? https : http;
    this.#agent = agentFor(this.#target);
    this.#certs =
      spec.certFiles !== undefined && spec.cert !== undefined && spec.key !== undefined
        ? new ClientCertFiles(spec.certFiles, { cert: spec.cert, key: spec.key }, this.#now)
        : undefined;
    if (spec.token?.kind === 'static') this.#token = spec.token.value;
    // Until the file is first read (#tokenReadAt stays -Infinity, so every request tries it).
    else if (spec.token?.kind === 'file') this.#token = spec.token.fallback;
    this.#basePath = spec.server.pathname.replace(/\/+$/, '');
  }

  async listPage(
    op: string,
    path: string,
    params: ListParams,
    signal?: AbortSignal,
    ahead?: PageAhead,
  ): Promise<Page> {
    const query = new URLSearchParams({ limit: String(params.limit) });
    if (params.fieldSelector !== undefined) query.set('fieldSelector', params.fieldSelector);
    if (params.resourceVersion !== undefined) query.set('resourceVersion', params.resourceVersion);
    if (params.continue !== undefined) query.set('continue', params.continue);
    const page = await this.#json(
      op,
      {
        method: 'GET',
        path,
        query,
        ...(ahead !== undefined ? { ahead } : {}),
        ...(params.nodeViewsOnly === true ? { nodes: true } : {}),
        ...(params.nodeViewsOnly === true && this.#protobufNodes ? { nodeList: true } : {}),
      },
      signal,
    );
    if (typeof page !== 'object' || page === null || !Array.isArray((page as Page).items))
      throw new K8sError(op, 'the list response has no items array', undefined, K8sReason.INVALID_OBJECT);
    return page as Page;
  }

  async patch(op: string, path: string, type: PatchType, body: unknown): Promise<unknown> {
    return this.#json(op, {
      method: 'PATCH',
      path,
      body: JSON.stringify(body),
      contentType: CONTENT_TYPE[type],
    });
  }

  watch(
    op: string,
    path: string,
    params: WatchParams,
    onEvent: (type: string, object: unknown) => void,
    signal: AbortSignal,
  ): Promise<WatchEnd> {
    const query = new URLSearchParams({
      watch: 'true',
      allowWatchBookmarks: String(params.allowWatchBookmarks),
      timeoutSeconds: String(params.timeoutSeconds),
    });
    if (params.resourceVersion !== '') query.set('resourceVersion', params.resourceVersion);
    const askProtobuf = params.nodeViewsOnly === true && this.#protobufNodes;
    return new Promise<WatchEnd>((resolve, reject) => {
      if (signal.aborted) return resolve('closed');
      let settled = false;
      let idle: NodeJS.Timeout | undefined;
      let conn: StreamConnection | undefined;
      const finish = (end: WatchEnd | K8sError): void => {
        if (settled) return;
        settled = true;
        if (idle !== undefined) clearTimeout(idle);
        signal.removeEventListener('abort', onAbort);
        conn?.destroy();
        if (end instanceof K8sError) reject(end);
        else resolve(end);
      };
      const onAbort = (): void => finish('closed');
      // Re-armed on every read: refresh() moves the one timer, where clear + set made a new one each
      // time (a measurable share of an idle agent's CPU under thousands of Nodes' status reports).
      const armIdle = (): void => {
        if (idle !== undefined) idle.refresh();
        else idle = setTimeout(() => finish('timeout'), this.#watchIdleMs);
      };
      // Each event handed on as it completes; false stops the rest of the piece.
      const deliver = (ev: { type: string; object: unknown } | K8sError): boolean => {
        if (ev instanceof K8sError) {
          finish(ev);
          return false;
        }
        try {
          onEvent(ev.type, ev.object);
        } catch (err) {
          finish(toK8sError(op, err));
          return false;
        }
        if (signal.aborted) finish('closed');
        return !settled;
      };
      const onLine = (line: string): boolean => deliver(watchEvent(op, line));
      const onFrame = (frame: Buffer): boolean => deliver(this.#protobufWatchEvent(op, frame));
      /** The body's reader, by the encoding the server chose (known at its head). */
      let body: ((piece: Buffer) => void) | undefined;
      /** An error answer's body, read whole before it becomes the error. */
      let refusal:
        | { status: number; retryAfter: string | undefined; proto: boolean; body: Buffer[]; bytes: number }
        | undefined;
      try {
        this.#freshCerts();
        const headers = this.#headers();
        if (askProtobuf) headers.accept = NODES_ACCEPT;
        conn = openStream(this.#target, this.#pathOf(path, query), headers, {
          onActivity: armIdle,
          onHead: (status, headers) => {
            // Only what was asked for is read as protobuf; a server may answer JSON to anything.
            const proto = askProtobuf && isProtobuf(headers.get('content-type'));
            if (status !== 200) {
              refusal = { status, retryAfter: headers.get('retry-after'), proto, body: [], bytes: 0 };
              return;
            }
            if (params.nodeViewsOnly === true) this.#nodesEncoding = proto ? 'protobuf' : 'json';
            if (proto) {
              const frames = new WatchFrames();
              body = (piece) => frames.push(piece, onFrame);
            } else {
              const lines = new WatchLines();
              body = (piece) => lines.push(piece, onLine);
            }
            params.onOpen?.();
          },
          onBody: (piece) => {
            if (refusal !== undefined) {
              // A Status is small: what runs past the limit is not kept (nor grows the agent).
              if (refusal.bytes < MAX_REFUSAL_BYTES) refusal.body.push(Buffer.from(piece));
              refusal.bytes += piece.length;
              return;
            }
            try {
              body?.(piece);
            } catch (err) {
              if (!(err instanceof WatchLineTooLong || err instanceof WatchFrameTooLong)) throw err;
              finish(new K8sError(op, err.message, undefined, K8sReason.WATCH));
            }
          },
          // A stream ended mid-event drops that event; it comes again on the next watch, which
          // resumes from the last resourceVersion applied.
          onEnd: () => {
            if (refusal === undefined) return finish('closed');
            const bytes = Buffer.concat(refusal.body);
            const text = refusal.proto ? JSON.stringify(decodeStatus(bytes) ?? {}) : bytes.toString('utf8');
            finish(this.#refused(fromHttpResponse(op, refusal.status, text, refusal.retryAfter)));
          },
          onError: (err) => finish(signal.aborted ? 'closed' : watchFailure(op, err, refusal === undefined)),
        });
      } catch (err) {
        // A header that cannot be sent (e.g. a token with a newline), refused before connecting.
        return reject(toK8sError(op, err));
      }
      signal.addEventListener('abort', onAbort, { once: true });
      armIdle();
    });
  }

  nodesEncoding(): NodesEncoding | undefined {
    return this.#nodesEncoding;
  }

  /**
   * One protobuf frame of a Node watch as its event, or the error that fails the watch. A frame this
   * reader cannot read turns Node watches and lists to JSON for good (#protobufNodes): the watch
   * resumes from its last resourceVersion, so the event comes again, as JSON.
   */
  #protobufWatchEvent(op: string, frame: Buffer): { type: string; object: unknown } | K8sError {
    try {
      return decodeNodeWatchEvent(frame);
    } catch (err) {
      if (!(err instanceof ProtobufBodyError)) throw err;
      this.#protobufNodes = false;
      return new K8sError(
        op,
        `the watch sent an event that is not readable protobuf (${err.message}); ${JSON_FROM_NOW_ON}`,
        undefined,
        K8sReason.WATCH,
      );
    }
  }

  /**
   * One request with a JSON answer (or a Node list's protobuf, Request.nodeList); non-2xx becomes a
   * K8sError from the Status in the body. `signal` ends it at once (rejected as a network error
   * saying so).
   */
  #json(op: string, r: Request, signal?: AbortSignal): Promise<unknown> {
    return new Promise<unknown>((resolve, reject) => {
      let settled = false;
      const onAbort = (): void =>
        fail(new K8sError(op, 'abandoned: the client is stopping', undefined, K8sReason.NETWORK));
      const fail = (err: unknown): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        req.destroy();
        reject(toK8sError(op, err));
      };
      if (signal?.aborted) {
        return reject(new K8sError(op, 'abandoned: the client is stopping', undefined, K8sReason.NETWORK));
      }
      let req: Http.ClientRequest;
      try {
        req = this.#request(r);
      } catch (err) {
        // Synchronous refusals from node:http (e.g. a token with characters a header cannot carry).
        return reject(toK8sError(op, err));
      }
      const arm = (): NodeJS.Timeout =>
        setTimeout(
          () =>
            fail(
              new K8sError(op, `no answer within ${this.#requestTimeoutMs} ms`, undefined, K8sReason.NETWORK),
            ),
          this.#requestTimeoutMs,
        );
      let timer = arm();
      // A list page held unread behind the one before (PageAhead) is not waiting for the server: no
      // timeout while it is held, a whole one for the rest of it once it is released.
      const onHeld = (released: Promise<void>): void => {
        clearTimeout(timer);
        void released.then(() => {
          if (!settled) timer = arm();
        });
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      req.on('error', fail);
      req.on('response', (res) => {
        const status = res.statusCode ?? 0;
        const ok = status >= 200 && status <= 299;
        // Only what was asked for is read as protobuf; a server may answer JSON to anything.
        const proto = r.nodeList === true && isProtobuf(res.headers['content-type']);
        if (r.nodes === true && ok) this.#nodesEncoding = proto ? 'protobuf' : 'json';
        const headOf = proto ? continueFromProtoHead : textContinueFromHead;
        readAll(res, ok ? r.ahead : undefined, onHeld, headOf).then((body) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          signal?.removeEventListener('abort', onAbort);
          if (!ok) {
            const text = proto ? JSON.stringify(decodeStatus(body) ?? {}) : body.toString('utf8');
            return reject(this.#refused(fromHttpResponse(op, status, text, retryAfterOf(res))));
          }
          try {
            resolve(proto ? decodeNodeListPage(body) : JSON.parse(body.toString('utf8')));
          } catch (err) {
            const unreadable = err instanceof ProtobufBodyError;
            if (unreadable) this.#protobufNodes = false;
            const what = unreadable
              ? `not a readable protobuf NodeList (${(err as Error).message}); ${JSON_FROM_NOW_ON}`
              : `not JSON: ${(err as Error).message}`;
            reject(new K8sError(op, `the answer is ${what}`, status, K8sReason.INVALID_OBJECT));
          }
        }, fail);
      });
      req.end(r.body);
    });
  }

  #request(r: Request): Http.ClientRequest {
    this.#freshCerts();
    const headers = this.#headers();
    if (r.nodeList === true) headers.accept = NODES_ACCEPT;
    if (r.body !== undefined) {
      headers['content-type'] = r.contentType ?? 'application/json';
      headers['content-length'] = String(Buffer.byteLength(r.body));
    }
    return this.#mod.request({
      protocol: this.#target.protocol,
      hostname: this.#target.host,
      port: this.#target.port,
      method: r.method,
      path: this.#pathOf(r.path, r.query),
      headers,
      agent: this.#agent,
    });
  }

  /** The headers every request sends (the token as it is now). */
  #headers(): Record<string, string> {
    const headers: Record<string, string> = {
      accept: 'application/json',
      'user-agent': this.#userAgent,
    };
    const token = this.#currentToken();
    if (token !== undefined) headers.authorization = `Bearer ${token}`;
    return headers;
  }

  /** An API path under the server URL's own path, with its query. */
  #pathOf(path: string, query: URLSearchParams | undefined): string {
    const q = query?.toString() ?? '';
    return `${this.#basePath}${path}${q === '' ? '' : `?${q}`}`;
  }

  /**
   * An error answer, with a 401's credentials named. A 401 with a token file read earlier has the file
   * read again by the next request, not up to reloadMs later: the kubelet rotates it (client-go drops
   * its cached token on 401 too).
   */
  #refused(err: K8sError): K8sError {
    if (err.statusCode === 401 && this.#certs !== undefined) {
      this.#certs.expire();
      err.message += ` (the client certificate of ${this.#certs.paths}, read again for the next request)`;
    }
    const t = this.#spec.token;
    if (err.statusCode !== 401 || t === undefined) return err;
    if (t.kind === 'static') {
      err.message += ' (the bearer token of the kubeconfig)';
      return err;
    }
    if (!this.#tokenFromFile && t.fallback !== undefined) {
      err.message += ` (the inline token of the kubeconfig, sent while ${t.path} cannot be read)`;
      return err;
    }
    this.#tokenReadAt = Number.NEGATIVE_INFINITY;
    err.message += ` (the bearer token of ${t.path}, read again for the next request)`;
    return err;
  }

  #currentToken(): string | undefined {
    const t = this.#spec.token;
    if (t === undefined || t.kind === 'static') return this.#token;
    const now = this.#now();
    if (now - this.#tokenReadAt >= t.reloadMs) {
      try {
        const value = readFileSync(t.path, 'utf8').trim();
        // An empty file (being written) counts as unread: the next request tries again.
        if (value !== '') {
          this.#token = value;
          this.#tokenReadAt = now;
          this.#tokenFromFile = true;
        }
      } catch {
        // Keep the last token: a rotation in progress (the kubelet swaps a symlink) must not turn
        // into a request without credentials. The next request tries again.
      }
    }
    return this.#token;
  }

  /**
   * A rotated client certificate goes into every connection made from now on: a new agent (its
   * pool's TLS sessions were made with the old one) and the watches' target. The old agent is
   * destroyed once its requests in flight are over (they end within the request timeout).
   */
  #freshCerts(): void {
    if (this.#certs === undefined) return;
    const { pair, changed } = this.#certs.current();
    if (!changed) return;
    const old = this.#agent;
    this.#target = { ...this.#target, cert: pair.cert, key: pair.key };
    this.#agent = agentFor(this.#target);
    setTimeout(() => old.destroy(), this.#requestTimeoutMs).unref();
  }

  /** Closes the idle keep-alive sockets. */
  close(): void {
    this.#agent.destroy();
  }
}

/** The keep-alive pool for the API server's connections, with the target's TLS settings. */
function agentFor(target: StreamTarget): Http.Agent {
  const common = { keepAlive: true, keepAliveMsecs: TCP_KEEPALIVE_IDLE_MS };
  if (target.protocol !== 'https:') return new http.Agent(common);
  const { ca, cert, key, rejectUnauthorized, servername } = target;
  return new https.Agent({
    ...common,
    rejectUnauthorized,
    ...(ca !== undefined ? { ca } : {}),
    ...(cert !== undefined ? { cert } : {}),
    ...(key !== undefined ? { key } : {}),
    ...(servername !== undefined ? { servername } : {}),
  });
}

/** What the agent says when it gives up on protobuf for Nodes (HttpTransport's #protobufNodes). */
const JSON_FROM_NOW_ON = 'Nodes are asked for in JSON from now on';

/** One line of a watch as its event, or the error that fails the watch (not JSON, no type). */
function watchEvent(op: string, line: string): { type: string; object: unknown } | K8sError {
  let ev: { type?: unknown; object?: unknown };
  try {
    ev = JSON.parse(line) as { type?: unknown; object?: unknown };
  } catch {
    return new K8sError(
      op,
      `the watch sent a line that is not JSON: ${line.slice(0, 80)}`,
      undefined,
      K8sReason.WATCH,
    );
  }
  if (typeof ev.type !== 'string')
    return new K8sError(op, 'the watch sent an event without a type', undefined, K8sReason.WATCH);
  return { type: ev.type, object: ev.object };
}

/** Why a watch's connection failed; one cut while its events streamed is said as such. */
function watchFailure(op: string, err: Error, streaming: boolean): K8sError {
  if (streaming && (err as { code?: unknown }).code === 'ECONNRESET')
    return new K8sError(op, 'the watch connection broke mid-stream', undefined, K8sReason.NETWORK);
  return toK8sError(op, err);
}

/** Where the kubeconfig's server is, and its TLS settings. */
function streamTarget(spec: HttpSpec): StreamTarget {
  const { server } = spec;
  const secure = server.protocol === 'https:';
  return {
    protocol: secure ? 'https:' : 'http:',
    host: server.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: server.port === '' ? (secure ? 443 : 80) : Number(server.port),
    rejectUnauthorized: !spec.insecure,
    ...(spec.ca !== undefined ? { ca: spec.ca } : {}),
    ...(spec.cert !== undefined ? { cert: spec.cert } : {}),
    ...(spec.key !== undefined ? { key: spec.key } : {}),
    ...(spec.tlsServerName !== undefined ? { servername: spec.tlsServerName } : {}),
  };
}

/** list-head.ts's reader over the first bytes of a JSON body. */
function textContinueFromHead(head: Buffer): string | undefined | 'more' {
  return continueFromHead(head.toString('utf8'));
}

/**
 * The whole body. `ahead` (a list page asked for ahead of its reader) gets the continue token from
 * the body's head (`headOf`, by the body's encoding), and the rest of the body stays unread until it
 * is released (`onHeld` is told).
 */

function readAll(
  res: Http.IncomingMessage,
  ahead: PageAhead | undefined,
  onHeld: (released: Promise<void>) => void,
  headOf: (head: Buffer) => string | undefined | 'more',
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let headBytes = ahead === undefined ? -1 : 0;
    res.on('data', (c: Buffer) => {
      chunks.push(c);
      if (headBytes < 0 || ahead === undefined) return;
      headBytes += c.length;
      // The head is in the first chunk or two: concatenated again only until it is found.
      const head = chunks.length === 1 ? c : Buffer.concat(chunks, headBytes);
      const found = headOf(head.subarray(0, LIST_HEAD_MAX_BYTES));
      if (found === 'more' && headBytes < LIST_HEAD_MAX_BYTES) return;
      headBytes = -1;
      if (found !== undefined && found !== 'more') ahead.onContinue(found);
      const held = ahead.held();
      if (held === undefined) return;
      res.pause();
      onHeld(held);
      void held.then(() => res.resume());
    });
    res.on('end', () => resolve(chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks)));
    res.on('error', reject);
    res.on('close', () => {
      if (!res.complete) reject(brokenMidAnswer());
    });
  });
}

function retryAfterOf(res: Http.IncomingMessage): string | undefined {
  const v = res.headers['retry-after'];
  return typeof v === 'string' ? v : undefined;
}

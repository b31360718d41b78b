/**
 * A small Kubernetes API server for tests: core/v1 Nodes and Pods over plain HTTP (or HTTPS with
 * the `tls` option), speaking the
 * real list/watch protocol (resourceVersions, chunked lists, NDJSON watches, BOOKMARKs, 410 Gone,
 * Status objects) so the real @kubernetes/client-node can be pointed at it through a kubeconfig.
 * docs/test-apiserver.md lists what it implements and where it differs from the real one.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { stringify as toYaml } from 'yaml';
import { dirIfSignalled } from '../signal-undo.ts';
import {
  isObject,
  type Json,
  type JsonObject,
  jsonPatch,
  mergePatch,
  PatchError,
  strategicMergePatch,
} from './patch.ts';
import {
  encodeNodeAhead,
  encodeNodeList,
  encodeStatus,
  NotEncodable,
  PROTOBUF_CONTENT_TYPE,
  prefersProtobuf,
} from './protobuf.ts';
import { SelectorError } from './selectors.ts';
import {
  ApiStatusError,
  badRequest,
  expired,
  internalError,
  methodNotAllowed,
  notFound,
  tooLargeResourceVersion,
  tooManyRequests,
  unsupportedMediaType,
} from './status.ts';
import { KIND, keyOf, metaOf, ObjectStore, parseResourceVersion, type Resource } from './store.ts';
import { WatchHub, watchEncoding } from './watch.ts';

export interface TestApiServerOptions {
  /** Default 127.0.0.1. */
  host?: string;
  /** Default 0 (an ephemeral port). */
  port?: number;
  /** How often watches that asked for them get a BOOKMARK. Default 10_000 ms; 0 disables. */
  bookmarkIntervalMs?: number;
  /**
   * Every request but a watch is taken up this long after it arrived: a remote API server's round
   * trip, for the benches (route-convergence.ts --api-latency-ms). Default 0.
   */
  latencyMs?: number;
  /** Change events kept for watch replay and consistent pagination. Default 10_000. */
  historySize?: number;
  /** Where to write the kubeconfig. Default: a file in a fresh temp directory, removed on close(). */
  kubeconfigPath?: string;
  /**
   * Serve HTTPS with this certificate and key (PEM). Client certificates are asked for but not
   * required; their CN shows in RequestRecord.clientCertCN. The kubeconfig then carries
   * certificate-authority-data when `ca` is given, else insecure-skip-tls-verify.
   */
  tls?: { cert: string; key: string; ca?: string };
  /**
   * Answer a request whose Accept prefers Kubernetes' protobuf in it where this server can: Node
   * lists and Node watches (protobuf.ts, watch.ts), and such a request's error Statuses. Default true;
   * false answers JSON to everything, as a server (or a proxy) without protobuf for the type does.
   */
  protobuf?: boolean;
}

export interface RequestInfo {
  readonly method: string;
  readonly path: string;
  readonly query: URLSearchParams;
  readonly watch: boolean;
  /** The client's address as this server's socket sees it (tells the test bed's own client from agents). */
  readonly remoteAddress?: string;
}

export interface RequestRecord extends RequestInfo {
  /** The response status; -1 for a dropped connection. */
  status: number;
  /** The Authorization header as sent (the server accepts anything). */
  authorization: string | undefined;
  /** The User-Agent header as sent. */
  userAgent: string | undefined;
  /** The CN of the client certificate the client presented (HTTPS only), verified against tls.ca. */
  clientCertCN: string | undefined;
  /** When it arrived (performance.now()). */
  at: number;
  /** When the whole response had been handed to the OS (performance.now()); unset for a watch still open. */
  sentAt?: number;
  /** The Accept header as sent. */
  accept: string | undefined;
  /** The answer's Content-Type, once it was sent (a watch's once its head was). */
  contentType?: string;
}

export type RequestPredicate = (r: RequestInfo) => boolean;
/**
 * 'error500': answer a 500 InternalError Status; 'gone410': answer a 410 Expired Status (as an HTTP
 * status, not a watch ERROR event); 'throttle429': answer 429 TooManyRequests with `Retry-After: 2`, as
 * API Priority and Fairness sheds load; 'drop': destroy the connection without a response;
 * 'watchError500': a watch is answered 200 and its stream carries one ERROR event with a 500
 * InternalError Status, then ends (as a real server does when etcd fails under an open watch);
 * 'tooLarge504': answer the 504 ResourceVersionTooLarge Status a watch gets from a resourceVersion the
 * server's watch cache has not reached (a cache lagging behind the list it served).
 */
export type FailMode = 'error500' | 'gone410' | 'throttle429' | 'drop' | 'watchError500' | 'tooLarge504';

/** The Retry-After, in seconds, of the 'throttle429' failure. */
export const THROTTLE_RETRY_AFTER_SECONDS = 2;

export interface FailSpec {
  /** How many matching requests fail; default: every matching request until clearFailures(). */
  count?: number;
  match?: RequestPredicate;
  mode?: FailMode;
}

/** Direct access to the server's state and its fault injection, for tests and the demo. */
export interface TestApiStore {
  addNode(node: JsonObject, opts?: { unchecked?: boolean }): JsonObject;
  /** Replaces the whole Node (spec and status) with `mutate(current)`. */
  updateNode(name: string, mutate: (n: JsonObject) => JsonObject, opts?: { unchecked?: boolean }): JsonObject;
  deleteNode(name: string): JsonObject;
  getNode(name: string): JsonObject | undefined;
  addPod(pod: JsonObject, opts?: { unchecked?: boolean }): JsonObject;
  updatePod(namespace: string, name: string, mutate: (p: JsonObject) => JsonObject): JsonObject;
  deletePod(namespace: string, name: string): JsonObject;
  getPod(namespace: string, name: string): JsonObject | undefined;
  count(resource: Resource): number;
  currentResourceVersion(): number;
  /** Drops the event history: watches resuming from an older rv, and old continue tokens, get 410. */
  compactHistory(): void;
  /** Ends every open watch ('end': clean EOF; 'destroy': reset the connection). Returns how many. */
  closeAllWatches(mode?: 'end' | 'destroy'): number;
  /**
   * Writes the first half of `event` (a watch event) to every open watch, then ends it as
   * closeAllWatches(mode) does: a stream cut mid-line. Returns how many.
   */
  cutWatches(event: { type: string; object: JsonObject }, mode?: 'end' | 'destroy'): number;
  /** Sends a BOOKMARK to every watch that allows them, now. */
  sendBookmarks(): void;
  openWatches(): number;
  /** A number: the next n requests fail; a predicate: every matching request fails until cleared. */
  failRequests(spec: number | RequestPredicate | FailSpec, mode?: FailMode): void;
  clearFailures(): void;
  /** The last 10,000 requests, oldest first. */
  requests(): readonly RequestRecord[];
  clearRequests(): void;
}

export interface TestApiServer {
  readonly url: string;
  readonly host: string;
  readonly port: number;
  readonly kubeconfigPath: string;
  readonly store: TestApiStore;
  close(): Promise<void>;
}

const DEFAULT_WATCH_TIMEOUT_S = 1800;
const MAX_BODY = 16 * 1024 * 1024;

interface Route {
  resource: Resource;
  namespace: string | undefined;
  name: string | undefined;
  subresource: 'status' | undefined;
}

function parseRoute(path: string): Route | undefined {
  let m = /^\/api\/v1\/nodes(?:\/([^/]+)(?:\/(status))?)?\/?$/.exec(path);
  if (m)
    return {
      resource: 'nodes',
      namespace: undefined,
      name: dec(m[1]),
      subresource: m[2] as 'status' | undefined,
    };
  m = /^\/api\/v1\/pods\/?$/.exec(path);
  if (m) return { resource: 'pods', namespace: undefined, name: undefined, subresource: undefined };
  m = /^\/api\/v1\/namespaces\/([^/]+)\/pods(?:\/([^/]+)(?:\/(status))?)?\/?$/.exec(path);
  if (m)
    return {
      resource: 'pods',
      namespace: dec(m[1]),
      name: dec(m[2]),
      subresource: m[3] as 'status' | undefined,
    };
  return undefined;
}

function dec(s: string | undefined): string | undefined {
  return s === undefined ? undefined : decodeURIComponent(s);
}

function sendBytes(
  res: ServerResponse,
  status: number,
  body: Buffer,
  headers: Record<string, string> = {},
): void {
  // setHeader, not writeHead's object: RequestRecord.contentType reads it back.
  res.setHeader('content-type', PROTOBUF_CONTENT_TYPE);
  res.writeHead(status, { 'content-length': body.length, ...headers });
  res.end(body);
}

function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = JSON.stringify(body);
  res.setHeader('content-type', 'application/json');
  res.writeHead(status, { 'content-length': Buffer.byteLength(text), ...headers });
  res.end(text);
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req) {
    size += (c as Buffer).length;
    if (size > MAX_BODY) throw new ApiStatusError(413, 'RequestEntityTooLarge', 'request entity too large');
    chunks.push(c as Buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function parseJsonBody(text: string): Json {
  try {
    return JSON.parse(text) as Json;
  } catch (err) {
    throw badRequest(`the body of the request could not be decoded: ${(err as Error).message}`);
  }
}

/** A Node list in protobuf; undefined when one of its items cannot be (protobuf.ts's NotEncodable). */
function nodeListBytes(metadata: JsonObject, items: JsonObject[]): Buffer | undefined {
  try {
    return encodeNodeList(metadata, items);
  } catch (err) {
    if (err instanceof NotEncodable) return undefined;
    throw err;
  }
}

function withoutTypeMeta(o: JsonObject): JsonObject {
  const { kind: _k, apiVersion: _a, ...rest } = o;
  return rest;
}

const DISCOVERY_V1 = {
  kind: 'APIResourceList',
  groupVersion: 'v1',
  resources: [
    {
      name: 'nodes',
      singularName: 'node',
      namespaced: false,
      kind: 'Node',
      shortNames: ['no'],
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    },
    {
      name: 'nodes/status',
      singularName: '',
      namespaced: false,
      kind: 'Node',
      verbs: ['get', 'patch', 'update'],
    },
    {
      name: 'pods',
      singularName: 'pod',
      namespaced: true,
      kind: 'Pod',
      shortNames: ['po'],
      verbs: ['create', 'delete', 'get', 'list', 'patch', 'update', 'watch'],
    },
    {
      name: 'pods/status',
      singularName: '',
      namespaced: true,
      kind: 'Pod',
      verbs: ['get', 'patch', 'update'],
    },
  ],
};

/** Direct store updates never conflict: drop the resourceVersion precondition. */
function unconditional(mutate: (o: JsonObject) => JsonObject): (o: JsonObject) => JsonObject {
  return (cur) => {
    const next = mutate(cur);
    return { ...next, metadata: { ...metaOf(next), resourceVersion: '' } };
  };
}

/** `ca` (PEM): trust exactly that CA (certificate-authority-data) instead of skipping verification. */
export function writeKubeconfig(path: string, url: string, opts: { ca?: string } = {}): void {
  const cluster =
    opts.ca === undefined
      ? { server: url, 'insecure-skip-tls-verify': true }
      : { server: url, 'certificate-authority-data': Buffer.from(opts.ca).toString('base64') };
  const doc = {
    apiVersion: 'v1',
    kind: 'Config',
    clusters: [{ name: 'trellis-test', cluster }],
    // client-node 2.x refuses http:// unless insecure-skip-tls-verify is set; the token is a dummy
    // (the test server accepts any request) so the client has a user to apply.
    users: [{ name: 'trellis-test', user: { token: 'trellis-test-token' } }],
    contexts: [{ name: 'trellis-test', context: { cluster: 'trellis-test', user: 'trellis-test' } }],
    'current-context': 'trellis-test',
  };
  writeFileSync(path, toYaml(doc), { mode: 0o600 });
}

export async function startTestApiServer(opts: TestApiServerOptions = {}): Promise<TestApiServer> {
  const host = opts.host ?? '127.0.0.1';
  const store = new ObjectStore(opts.historySize === undefined ? {} : { historySize: opts.historySize });
  const hub = new WatchHub(store);
  const latencyMs = opts.latencyMs ?? 0;
  /** Requests waiting out latencyMs: close() drops them, their connections closed with the rest. */
  const held = new Set<NodeJS.Timeout>();
  const failures: { remaining: number; match: RequestPredicate; mode: FailMode }[] = [];
  let log: RequestRecord[] = [];
  const protobufOn = opts.protobuf ?? true;
  /**
   * False once a Node protobuf cannot carry was stored (a test's malformed object): Node watches are
   * answered in JSON from then on, as lists holding one are.
   */
  let nodesEncodable = true;
  if (protobufOn)
    store.subscribe((ev) => {
      if (ev.resource === 'nodes' && ev.type !== 'DELETED' && !encodeNodeAhead(ev.object))
        nodesEncodable = false;
    });
  const wantsProtobuf = (req: IncomingMessage): boolean => protobufOn && prefersProtobuf(req.headers.accept);
  /** An error answer, in the encoding the request asked for. */
  const sendStatus = (
    req: IncomingMessage,
    res: ServerResponse,
    code: number,
    status: JsonObject,
    headers: Record<string, string> = {},
  ): void => {
    if (wantsProtobuf(req)) sendBytes(res, code, encodeStatus(status), headers);
    else sendJson(res, code, status, headers);
  };

  const takeFailure = (info: RequestInfo): FailMode | undefined => {
    for (let i = 0; i < failures.length; i++) {
      const f = failures[i]!;
      if (!f.match(info)) continue;
      f.remaining--;
      if (f.remaining <= 0) failures.splice(i, 1);
      return f.mode;
    }
    return undefined;
  };

  const handle = async (req: IncomingMessage, res: ServerResponse, info: RequestInfo): Promise<number> => {
    const { method, path, query } = info;
    if (method === 'GET') {
      if (path === '/api') {
        sendJson(res, 200, {
          kind: 'APIVersions',
          versions: ['v1'],
          serverAddressByClientCIDRs: [{ clientCIDR: '0.0.0.0/0', serverAddress: `${host}:${port}` }],
        });
        return 200;
      }
      if (path === '/api/v1') {
        sendJson(res, 200, DISCOVERY_V1);
        return 200;
      }
      if (path === '/apis') {
        sendJson(res, 200, { kind: 'APIGroupList', apiVersion: 'v1', groups: [] });
        return 200;
      }
      if (path === '/version') {
        sendJson(res, 200, {
          major: '1',
          minor: '33',
          gitVersion: 'v1.33.0-trellis-test',
          platform: 'linux/amd64',
        });
        return 200;
      }
      if (path === '/healthz' || path === '/readyz' || path === '/livez') {
        res.writeHead(200, { 'content-type': 'text/plain' });
        res.end('ok');
        return 200;
      }
    }
    const route = parseRoute(path);
    if (route === undefined) {
      throw new ApiStatusError(404, 'NotFound', 'the server could not find the requested resource');
    }
    const { resource, namespace, name, subresource } = route;
    const kind = KIND[resource];

    if (name === undefined) {
      if (method === 'GET') {
        const labelSelector = query.get('labelSelector') ?? undefined;
        const fieldSelector = query.get('fieldSelector') ?? undefined;
        const sel = { namespace, labelSelector, fieldSelector };
        if (info.watch) {
          const rv = parseResourceVersion(query.get('resourceVersion') ?? undefined);
          const t = Number(query.get('timeoutSeconds') ?? DEFAULT_WATCH_TIMEOUT_S);
          hub.serve(
            {
              resource,
              ...sel,
              fromRv: rv === 0 ? undefined : rv,
              allowBookmarks: query.get('allowWatchBookmarks') === 'true',
              timeoutSeconds: Number.isFinite(t) && t > 0 ? t : DEFAULT_WATCH_TIMEOUT_S,
              protobuf: resource === 'nodes' && nodesEncodable && wantsProtobuf(req),
            },
            res,
          );
          return 200;
        }
        const continueToken = query.get('continue') ?? undefined;
        const exact = query.get('resourceVersionMatch') === 'Exact';
        const exactRv = exact ? parseResourceVersion(query.get('resourceVersion') ?? undefined) : undefined;
        // resourceVersion=0 without a continue token is served by the real server's watch cache,
        // which ignores `limit`: the whole result in one response, without a continue token.
        const fromCache = query.get('resourceVersion') === '0' && !exact && continueToken === undefined;
        const limit = fromCache ? 0 : Number(query.get('limit') ?? 0);
        const r = store.list(resource, {
          ...sel,
          limit: Number.isFinite(limit) ? limit : 0,
          ...(continueToken !== undefined ? { continueToken } : {}),
          ...(exactRv !== undefined ? { exactRv } : {}),
        });
        const metadata: JsonObject = { resourceVersion: r.resourceVersion };
        if (r.continueToken !== undefined) metadata.continue = r.continueToken;
        if (r.remainingItemCount !== undefined) metadata.remainingItemCount = r.remainingItemCount;
        if (resource === 'nodes' && wantsProtobuf(req)) {
          const body = nodeListBytes(metadata, r.items);
          if (body !== undefined) {
            sendBytes(res, 200, body);
            return 200;
          }
        }
        sendJson(res, 200, {
          kind: `${kind}List`,
          apiVersion: 'v1',
          metadata,
          items: r.items.map(withoutTypeMeta),
        });
        return 200;
      }
      if (method === 'POST') {
        if (resource === 'pods' && namespace === undefined) throw methodNotAllowed();
        const body = parseJsonBody(await readBody(req));
        if (!isObject(body)) throw badRequest('the body must be a JSON object');
        const meta = metaOf(body);
        if (namespace !== undefined && meta.namespace !== undefined && meta.namespace !== namespace) {
          throw badRequest(
            'the namespace of the provided object does not match the namespace sent on the request',
          );
        }
        const created = store.create(resource, {
          ...body,
          metadata: { ...meta, ...(namespace ? { namespace } : {}) },
        });
        sendJson(res, 201, created);
        return 201;
      }
      throw methodNotAllowed();
    }

    if (resource === 'pods' && namespace === undefined) throw methodNotAllowed();
    const key = keyOf(resource, namespace, name);
    if (method === 'GET') {
      const o = store.get(resource, key);
      if (o === undefined) throw notFound(resource, name);
      sendJson(res, 200, o);
      return 200;
    }
    if (method === 'DELETE') {
      if (subresource !== undefined) throw methodNotAllowed();
      const gone = store.delete(resource, key);
      if (resource === 'pods') sendJson(res, 200, gone);
      else {
        sendJson(res, 200, {
          kind: 'Status',
          apiVersion: 'v1',
          metadata: {},
          status: 'Success',
          details: { name, kind: resource, uid: metaOf(gone).uid ?? '' },
        });
      }
      return 200;
    }
    if (method === 'PUT' || method === 'PATCH') {
      const text = await readBody(req);
      const contentType = (req.headers['content-type'] ?? '').split(';')[0]!.trim();
      const body = parseJsonBody(text);
      const updated = store.update(resource, key, (current) => {
        let next: Json;
        if (method === 'PUT') {
          if (!isObject(body)) throw badRequest('the body must be a JSON object');
          const bodyName = metaOf(body).name;
          if (bodyName !== undefined && bodyName !== name) {
            throw badRequest(
              `the name of the object (${String(bodyName)}) does not match the name on the URL (${name})`,
            );
          }
          next = body;
        } else {
          try {
            if (contentType === 'application/merge-patch+json') next = mergePatch(current, body);
            else if (contentType === 'application/strategic-merge-patch+json')
              next = strategicMergePatch(current, body);
            else if (contentType === 'application/json-patch+json') next = jsonPatch(current, body);
            else throw unsupportedMediaType(contentType);
          } catch (err) {
            if (err instanceof PatchError) throw new ApiStatusError(422, 'Invalid', err.message);
            throw err;
          }
          // A patch carries no resourceVersion precondition unless it names one itself.
          if (
            isObject(next) &&
            isObject(body) &&
            !(isObject(body.metadata) && 'resourceVersion' in body.metadata)
          ) {
            next = {
              ...next,
              metadata: { ...metaOf(next), resourceVersion: metaOf(current).resourceVersion ?? '' },
            };
          }
        }
        if (!isObject(next)) throw badRequest('the result must be a JSON object');
        // The status subresource changes only .status; the main resource never changes .status.
        if (subresource === 'status') {
          const out: JsonObject = {
            ...current,
            metadata: { ...metaOf(current), resourceVersion: metaOf(next).resourceVersion ?? '' },
          };
          if (next.status === undefined) delete out.status;
          else out.status = next.status;
          return out;
        }
        const out: JsonObject = { ...next };
        if (current.status === undefined) delete out.status;
        else out.status = current.status;
        return out;
      });
      sendJson(res, 200, updated);
      return 200;
    }
    throw methodNotAllowed();
  };

  const onRequest = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://x');
    const method = req.method ?? 'GET';
    const info: RequestInfo = {
      method,
      path: url.pathname,
      query: url.searchParams,
      watch: url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1',
      ...(req.socket.remoteAddress === undefined ? {} : { remoteAddress: req.socket.remoteAddress }),
    };
    const tlsSocket = opts.tls === undefined ? undefined : (req.socket as TLSSocket);
    const peerCN = tlsSocket?.authorized === true ? tlsSocket.getPeerCertificate().subject?.CN : undefined;
    const record: RequestRecord = {
      ...info,
      status: 0,
      authorization: req.headers.authorization,
      userAgent: req.headers['user-agent'],
      clientCertCN: typeof peerCN === 'string' ? peerCN : undefined,
      at: performance.now(),
      accept: req.headers.accept,
    };
    log.push(record);
    if (log.length > 20_000) log = log.slice(-10_000);
    res.once('finish', () => {
      record.sentAt = performance.now();
      const type = res.getHeader('content-type');
      if (typeof type === 'string') record.contentType = type;
    });
    if (latencyMs > 0 && !info.watch) {
      const t = setTimeout(() => {
        held.delete(t);
        answer(req, res, info, record);
      }, latencyMs);
      held.add(t);
    } else answer(req, res, info, record);
  };

  const answer = (
    req: IncomingMessage,
    res: ServerResponse,
    info: RequestInfo,
    record: RequestRecord,
  ): void => {
    const fail = takeFailure(info);
    if (fail === 'drop') {
      record.status = -1;
      req.socket.destroy();
      return;
    }
    if (fail === 'gone410') {
      record.status = 410;
      sendStatus(req, res, 410, expired('injected expiry (test API server)').toStatus());
      return;
    }
    if (fail === 'throttle429') {
      record.status = 429;
      const retryAfter = { 'retry-after': String(THROTTLE_RETRY_AFTER_SECONDS) };
      sendStatus(req, res, 429, tooManyRequests(THROTTLE_RETRY_AFTER_SECONDS).toStatus(), retryAfter);
      return;
    }
    if (fail === 'tooLarge504') {
      record.status = 504;
      const asked = Number(info.query.get('resourceVersion') ?? 0);
      sendStatus(req, res, 504, tooLargeResourceVersion(asked, Math.max(0, asked - 1)).toStatus());
      return;
    }
    if (fail === 'error500') {
      record.status = 500;
      sendStatus(req, res, 500, internalError('injected failure (test API server)').toStatus());
      return;
    }
    if (fail === 'watchError500') {
      record.status = 200;
      const encoding = watchEncoding(info.path === '/api/v1/nodes' && wantsProtobuf(req));
      res.setHeader('content-type', encoding.contentType);
      res.writeHead(200, { 'transfer-encoding': 'chunked' });
      const status = internalError('injected watch failure (test API server)').toStatus();
      res.end(encoding.event('ERROR', status));
      return;
    }
    handle(req, res, info).then(
      (status) => {
        record.status = status;
        // A watch's answer is still open: its type is known from its head.
        const type = res.getHeader('content-type');
        if (typeof type === 'string') record.contentType ??= type;
      },
      (err: unknown) => {
        let e: ApiStatusError;
        if (err instanceof ApiStatusError) e = err;
        else if (err instanceof SelectorError) e = badRequest(err.message);
        else e = internalError(err instanceof Error ? err.message : String(err));
        record.status = e.code;
        if (res.headersSent) res.destroy();
        else sendStatus(req, res, e.code, e.toStatus());
      },
    );
  };
  const server: Server =
    opts.tls === undefined
      ? createServer(onRequest)
      : createHttpsServer(
          {
            cert: opts.tls.cert,
            key: opts.tls.key,
            ...(opts.tls.ca !== undefined ? { ca: opts.tls.ca } : {}),
            requestCert: true,
            rejectUnauthorized: false,
          },
          onRequest,
        );
  server.keepAliveTimeout = 60_000;

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const scheme = opts.tls === undefined ? 'http' : 'https';
  const url = `${scheme}://${host.includes(':') ? `[${host}]` : host}:${port}`;

  let tempDir: string | undefined;
  let unregisterTempDir = (): void => undefined;
  let kubeconfigPath = opts.kubeconfigPath;
  if (kubeconfigPath === undefined) {
    const dir = mkdtempSync(join(tmpdir(), 'trellis-apiserver-'));
    tempDir = dir;
    unregisterTempDir = dirIfSignalled(dir);
    kubeconfigPath = join(dir, 'kubeconfig');
  }
  writeKubeconfig(kubeconfigPath, url, opts.tls?.ca === undefined ? {} : { ca: opts.tls.ca });

  const bookmarkMs = opts.bookmarkIntervalMs ?? 10_000;
  const bookmarkTimer = bookmarkMs > 0 ? setInterval(() => hub.sendBookmarks(), bookmarkMs) : undefined;
  bookmarkTimer?.unref();

  const facade: TestApiStore = {
    addNode: (node, o) => store.create('nodes', node, o),
    updateNode: (name, mutate, o) => store.update('nodes', name, unconditional(mutate), o),
    deleteNode: (name) => store.delete('nodes', name),
    getNode: (name) => store.get('nodes', name),
    addPod: (pod, o) => store.create('pods', pod, o),
    updatePod: (ns, name, mutate) => store.update('pods', keyOf('pods', ns, name), unconditional(mutate)),
    deletePod: (ns, name) => store.delete('pods', keyOf('pods', ns, name)),
    getPod: (ns, name) => store.get('pods', keyOf('pods', ns, name)),
    count: (r) => store.count(r),
    currentResourceVersion: () => store.currentRv(),
    compactHistory: () => store.compact(),
    closeAllWatches: (mode = 'end') => hub.closeAll(mode),
    cutWatches: (event, mode = 'end') => hub.cutAll(event, mode),
    sendBookmarks: () => hub.sendBookmarks(),
    openWatches: () => hub.count,
    failRequests: (spec, mode = 'error500') => {
      if (typeof spec === 'number') failures.push({ remaining: spec, match: () => true, mode });
      else if (typeof spec === 'function')
        failures.push({ remaining: Number.POSITIVE_INFINITY, match: spec, mode });
      else {
        failures.push({
          remaining: spec.count ?? Number.POSITIVE_INFINITY,
          match: spec.match ?? (() => true),
          mode: spec.mode ?? mode,
        });
      }
    },
    clearFailures: () => {
      failures.length = 0;
    },
    requests: () => log.slice(-10_000),
    clearRequests: () => {
      log = [];
    },
  };

  let closed = false;
  return {
    url,
    host,
    port,
    kubeconfigPath,
    store: facade,
    close: async () => {
      if (closed) return;
      closed = true;
      if (bookmarkTimer !== undefined) clearInterval(bookmarkTimer);
      for (const t of held) clearTimeout(t);
      held.clear();
      hub.closeAll('end');
      const done = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      await done;
      if (tempDir !== undefined) rmSync(tempDir, { recursive: true, force: true });
      unregisterTempDir();
    },
  };
}

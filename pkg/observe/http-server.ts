/**
 * The agent's two HTTP listeners:
 *  - `--metrics-addr` (TCP; `:PORT` every address of both families): /metrics, /healthz, /readyz for Prometheus and the
 *    kubelet's probes;
 *  - the admin socket (unix, root-only 0600): /status, /routes, /leases as JSON for `trellis-agent
 *    status|routes|leases|doctor` run on the node (`kubectl exec ds/trellis -- trellis-agent status`).
 * Both only render; the state and the verdicts come from callbacks.
 */
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import type * as Http from 'node:http';
import type { IncomingMessage, Server, ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname } from 'node:path';
import { errorText } from '../error-text.ts';
import { type ConnectionLimits, limitConnections, METRICS_CONNECTION_LIMITS } from './connection-limits.ts';
import type { Verdict } from './health.ts';
import { LISTEN_ADDR_FORMS, splitListenAddr } from './listen-addr.ts';

// node:http through process.getBuiltinModule, not an ESM import: building the ESM namespace of node:http
// reads its lazy exports (WebSocket and friends) and so loads undici, http2 and web streams (~8 MB RSS
// for code the agent never runs).
const { createServer }: typeof Http = process.getBuiltinModule('node:http');

export type JsonHandler = () => unknown | Promise<unknown>;

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body, null, 2)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(text),
    'cache-control': 'no-store',
  });
  res.end(text);
}

function route(
  handlers: Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void> | void>,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const path = (req.url ?? '/').split('?')[0]!;
    const h = handlers[path];
    if (h === undefined) {
      sendJson(res, 404, { error: `no such path ${path}`, paths: Object.keys(handlers) });
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      sendJson(res, 405, { error: `${req.method} not allowed` });
      return;
    }
    Promise.resolve()
      .then(() => h(req, res))
      .catch((err: unknown) => {
        if (!res.headersSent) sendJson(res, 500, { error: errorText(err) });
        else res.destroy();
      });
  };
}

function verdictHandler(check: () => Verdict) {
  return (_req: IncomingMessage, res: ServerResponse): void => {
    const v = check();
    sendJson(res, v.ok ? 200 : 503, { status: v.ok ? 'ok' : 'failing', checks: v.checks });
  };
}

export interface HttpListener {
  /** "host:port" for TCP (the real port when 0 was asked), the path for a unix socket. */
  readonly address: string;
  close(): Promise<void>;
}

/**
 * listen, resolved once listening. `umask`: in force only during the synchronous listen call, which
 * binds a unix socket there and then: the umask is the whole process's, and async work that creates
 * files or directories meanwhile must not get it.
 */
async function listen(
  server: Server,
  target: { host: string; port: number } | string,
  umask?: number,
): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    const done = (): void => {
      server.off('error', reject);
      resolve();
    };
    const oldUmask = umask === undefined ? undefined : process.umask(umask);
    try {
      if (typeof target === 'string') server.listen(target, done);
      else server.listen(target.port, target.host, done);
    } finally {
      if (oldUmask !== undefined) process.umask(oldUmask);
    }
  });
}

function closer(server: Server, cleanup: () => void = () => {}): () => Promise<void> {
  return () =>
    new Promise<void>((resolve) => {
      server.close(() => {
        cleanup();
        resolve();
      });
      server.closeAllConnections();
    });
}

/** splitListenAddr, or an error naming the flag. */
export function parseListenAddr(addr: string): { host: string | undefined; port: number } {
  const parsed = splitListenAddr(addr);
  if (parsed === undefined) {
    throw new Error(`--metrics-addr must be ${LISTEN_ADDR_FORMS}, got ${JSON.stringify(addr)}`);
  }
  return parsed;
}

/**
 * Every address: one IPv6 socket that also takes IPv4 (libuv clears IPV6_V6ONLY), so the kubelet's
 * probes reach the agent on IPv4, IPv6 and dual-stack nodes alike; IPv4 alone where the kernel has
 * no IPv6 (ipv6.disable=1).
 */
async function listenAnyFamily(server: Server, port: number): Promise<void> {
  try {
    await listen(server, { host: '::', port });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code !== 'EAFNOSUPPORT' && code !== 'EADDRNOTAVAIL') throw err;
    await listen(server, { host: '0.0.0.0', port });
  }
}

export interface MetricsServerOptions {
  addr: string;
  /** Default METRICS_CONNECTION_LIMITS. */
  limits?: ConnectionLimits;
  metrics: { render(): Promise<string>; readonly contentType: string };
  liveness: () => Verdict;
  readiness: () => Verdict;
}

export async function startMetricsServer(opts: MetricsServerOptions): Promise<HttpListener> {
  // Requests that arrive while a rendering is under way share it (a burst renders once); the next
  // one after it renders afresh, so no answer is older than the rendering its request found running.
  let rendering: Promise<string> | undefined;
  const render = (): Promise<string> => {
    rendering ??= opts.metrics.render().finally(() => {
      rendering = undefined;
    });
    return rendering;
  };
  const server = createServer(
    {
      // A client that opens a connection and sends nothing (or dribbles) is dropped within seconds;
      // the checks run every second instead of Node's 30.
      headersTimeout: 5_000,
      requestTimeout: 10_000,
      keepAliveTimeout: 5_000,
      connectionsCheckingInterval: 1_000,
    },
    route({
      '/metrics': async (_req, res) => {
        const text = await render();
        res.writeHead(200, { 'content-type': opts.metrics.contentType });
        res.end(text);
      },
      '/healthz': verdictHandler(opts.liveness),
      '/livez': verdictHandler(opts.liveness),
      '/readyz': verdictHandler(opts.readiness),
    }),
  );
  limitConnections(server, opts.limits ?? METRICS_CONNECTION_LIMITS);
  const { host, port } = parseListenAddr(opts.addr);
  if (host === undefined) await listenAnyFamily(server, port);
  else await listen(server, { host, port });
  const a = server.address() as AddressInfo;
  const shown = a.family === 'IPv6' ? `[${a.address}]` : a.address;
  return { address: `${shown}:${a.port}`, close: closer(server) };
}

/** The admin socket: GET paths answered with the handlers' JSON; root-only (0600, directory 0700 when created). */
export async function startAdminServer(
  path: string,
  handlers: Record<string, JsonHandler>,
): Promise<HttpListener> {
  const wrapped: Record<string, (req: IncomingMessage, res: ServerResponse) => Promise<void>> = {};
  for (const [p, h] of Object.entries(handlers)) {
    wrapped[p] = async (_req, res) => sendJson(res, 200, await h());
  }
  const server = createServer(route(wrapped));
  mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
  // Stale from a killed agent: the caller holds the node's state lock, so no live agent owns it.
  rmSync(path, { force: true });
  await listen(server, path, 0o177);
  chmodSync(path, 0o600);
  return { address: path, close: closer(server, () => rmSync(path, { force: true })) };
}

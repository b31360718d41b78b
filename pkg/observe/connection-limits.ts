import type { Server } from 'node:http';
import type { Socket } from 'node:net';

/**
 * Bounds on the metrics and health port, which listens on the node's addresses with no
 * authentication (as kube-proxy's and the kubelet's health ports do): every pod can reach it. Without
 * them, idle connections held open (~5 KB and one descriptor each) ran the agent out of memory or
 * descriptors. The kubelet's probes come from the node itself (its own address, or loopback) and are
 * never turned away, so a flood from pods cannot get a healthy agent restarted; other clients get a
 * share per source address (a Prometheus scraping from another node has one of its own) and a total.
 */
export interface ConnectionLimits {
  /** Connections at once from one remote address that is not this node's. */
  perSource: number;
  /** Connections at once from all such addresses. */
  total: number;
  /**
   * A connection with nothing sent either way for this long is closed, whoever holds it: Node's
   * headersTimeout does not count a connection that never sent a byte.
   */
  idleMs: number;
}

export const METRICS_CONNECTION_LIMITS: ConnectionLimits = { perSource: 16, total: 256, idleMs: 5_000 };

/** A connection from this host: loopback, or from the address it reached (the kernel's choice locally). */
export function isLocalConnection(remote: string | undefined, local: string | undefined): boolean {
  if (remote === undefined) return false;
  const r = remote.startsWith('::ffff:') ? remote.slice(7) : remote;
  const l = local?.startsWith('::ffff:') === true ? local.slice(7) : local;
  return r === '::1' || r.startsWith('127.') || r === l;
}

/** Applies the limits to `server`'s connections: over them, a connection is closed at once. */
export function limitConnections(server: Server, limits: ConnectionLimits): void {
  const bySource = new Map<string, number>();
  let total = 0;
  // Node puts a keep-alive connection's timeout back to server.timeout at its next request: left at 0,
  // that cancelled the idle limit below, and a client that sent requests and never read the answers
  // held them (and their memory) for good.
  server.timeout = limits.idleMs;
  // One request per connection, as probes and scrapers send them: pipelined requests (a thousand in
  // one write) would each get a rendered answer, queued in memory for a client that need not read.
  server.maxRequestsPerSocket = 1;
  // Node answers each request past that with a 503 of its own, parsed and queued all the same: a
  // second request on a connection ends it instead.
  server.on('dropRequest', (_req, socket: Socket) => socket.destroy());
  server.on('connection', (socket: Socket) => {
    socket.setTimeout(limits.idleMs, () => socket.destroy());
    if (isLocalConnection(socket.remoteAddress, socket.localAddress)) return;
    const source = socket.remoteAddress ?? '';
    const mine = bySource.get(source) ?? 0;
    if (mine >= limits.perSource || total >= limits.total) {
      socket.destroy();
      return;
    }
    bySource.set(source, mine + 1);
    total++;
    socket.once('close', () => {
      total--;
      const left = (bySource.get(source) ?? 1) - 1;
      if (left === 0) bySource.delete(source);
      else bySource.set(source, left);
    });
  });
}

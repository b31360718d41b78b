import { rmSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { FailMode, RequestRecord, TestApiStore } from '../apiserver/server.ts';
import { UnixApiClient } from './api.ts';

/**
 * The control plane's fault switchboard, served on a unix socket next to the API forwarder
 * (control-plane.ts --admin PATH): the test bed runs in the root namespace and the API server in the
 * control-plane namespace, so the store's fault hooks are reached over a path-bound socket.
 *
 *   POST   /outage {"mode":"drop"|"error500"}  every request NOT from the test bed's own client fails
 *                                              (drop: connection destroyed, no answer; error500: a 500
 *                                              Status), and every open watch is reset
 *   DELETE /outage                             the API answers again
 *   POST   /compact                            compactHistory(): older resourceVersions get 410 Gone
 *   POST   /close-watches {"mode":"end"|"destroy"}
 *   GET    /requests                           the request log (with each client's address)
 *   DELETE /requests                           clears it
 *
 * "The test bed's own client" is the unix forwarder, which connects from the API server's own address
 * (`selfAddress`); the agents connect from their nodes' addresses. So an outage hides the API from
 * every agent while the test can still change Nodes in it, as an operator could during a partition.
 */

export type OutageMode = Extract<FailMode, 'drop' | 'error500'>;

/** A request log entry as JSON (the query as its string). */
export type RequestLogEntry = Omit<RequestRecord, 'query'> & { query: string };

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const c of req) text += String(c);
  if (text.trim() === '') return {};
  const v = JSON.parse(text) as unknown;
  return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};
}

export async function serveFaultAdmin(
  store: TestApiStore,
  selfAddress: string,
  path: string,
): Promise<Server> {
  rmSync(path, { force: true });
  const route = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const key = `${req.method ?? 'GET'} ${new URL(req.url ?? '/', 'http://x').pathname}`;
    const body = await readJson(req);
    switch (key) {
      case 'POST /outage': {
        const mode = body.mode ?? 'drop';
        if (mode !== 'drop' && mode !== 'error500') {
          send(res, 400, { error: `mode must be drop or error500, got ${JSON.stringify(mode)}` });
          return;
        }
        store.clearFailures();
        store.failRequests({ match: (r) => r.remoteAddress !== selfAddress, mode });
        send(res, 200, { mode, closedWatches: store.closeAllWatches('destroy') });
        return;
      }
      case 'DELETE /outage':
        store.clearFailures();
        send(res, 200, {});
        return;
      case 'POST /compact':
        store.compactHistory();
        send(res, 200, { resourceVersion: store.currentResourceVersion() });
        return;
      case 'POST /close-watches': {
        const mode = body.mode === 'destroy' ? 'destroy' : 'end';
        send(res, 200, { closed: store.closeAllWatches(mode) });
        return;
      }
      case 'GET /requests': {
        const items: RequestLogEntry[] = store.requests().map((r) => ({ ...r, query: r.query.toString() }));
        send(res, 200, { items });
        return;
      }
      case 'DELETE /requests':
        store.clearRequests();
        send(res, 200, {});
        return;
      default:
        send(res, 404, { error: `no such fault operation: ${key}` });
    }
  };
  const server = createServer((req, res) => {
    route(req, res).catch((err: unknown) => send(res, 500, { error: String(err) }));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

/** The test bed's side of the switchboard (a Testbed's `faults`). */
export class FaultAdminClient {
  private readonly api: UnixApiClient;

  constructor(socketPath: string) {
    this.api = new UnixApiClient(socketPath);
  }

  /** The API becomes unreachable for every agent (the test bed's own client still gets through). */
  async outage(mode: OutageMode = 'drop'): Promise<{ closedWatches: number }> {
    return this.api.call('POST', '/outage', { mode });
  }

  async restore(): Promise<void> {
    await this.api.call('DELETE', '/outage');
  }

  /** Drops the event history: a watch resuming from before now gets 410 Gone. */
  async compactHistory(): Promise<{ resourceVersion: number }> {
    return this.api.call('POST', '/compact', {});
  }

  async closeWatches(mode: 'end' | 'destroy' = 'end'): Promise<number> {
    return (await this.api.call<{ closed: number }>('POST', '/close-watches', { mode })).closed;
  }

  async requests(): Promise<RequestLogEntry[]> {
    return (await this.api.call<{ items: RequestLogEntry[] }>('GET', '/requests')).items;
  }

  async clearRequests(): Promise<void> {
    await this.api.call('DELETE', '/requests');
  }
}

/** GET a JSON document from the agent's admin socket (HTTP over a unix socket). */
import type * as Http from 'node:http';
import { dirname, join } from 'node:path';

// node:http through process.getBuiltinModule, not an ESM import: building the ESM namespace of node:http
// reads its lazy exports (WebSocket and friends) and so loads undici, http2 and web streams (~8 MB RSS
// for code the agent never runs; the agent loads this module too).
const { request }: typeof Http = process.getBuiltinModule('node:http');

/** The admin socket lives next to the CNI socket unless set: /run/trellis/cni.sock -> /run/trellis/admin.sock. */
export function defaultAdminSocket(cniSocket: string): string {
  return join(dirname(cniSocket), 'admin.sock');
}

export class AdminError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'AdminError';
  }
}

/** Why `socketPath` names no admin socket ('' turns it off; node:http takes '' for TCP to localhost:80). */
export function adminSocketProblem(socketPath: string): string | undefined {
  if (socketPath === '') {
    return "the agent's admin socket is turned off (--admin-socket '' or TRELLIS_ADMIN_SOCKET=''): status, routes and leases need it";
  }
  if (!socketPath.startsWith('/')) {
    return `the admin socket must be an absolute path, got ${JSON.stringify(socketPath)}`;
  }
  return undefined;
}

/**
 * GET `path` and parse its JSON; rejects with an AdminError. `timeoutMs` bounds the whole exchange,
 * not only the silences in it: an agent stuck mid-answer that still sends a byte now and then would
 * otherwise keep the CLI (and the doctor that asks it) waiting for good.
 */
export function adminGet<T>(socketPath: string, path: string, timeoutMs = 5000): Promise<T> {
  const problem = adminSocketProblem(socketPath);
  if (problem !== undefined) return Promise.reject(new AdminError(problem));
  return new Promise<T>((resolveAnswer, rejectAnswer) => {
    const deadline = setTimeout(
      () => req.destroy(new Error(`no whole answer within ${timeoutMs} ms`)),
      timeoutMs,
    );
    const resolve = (value: T): void => {
      clearTimeout(deadline);
      resolveAnswer(value);
    };
    const reject = (err: AdminError): void => {
      clearTimeout(deadline);
      rejectAnswer(err);
    };
    const req = request({ socketPath, path, method: 'GET' }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', (e) => reject(new AdminError(`${socketPath} ${path}: ${e.message}`)));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        if (res.statusCode !== 200) {
          let why = text.trim();
          try {
            const body = JSON.parse(text) as { error?: unknown };
            if (typeof body.error === 'string') why = body.error;
          } catch {
            // Not our JSON: show the text as it came.
          }
          reject(new AdminError(`${socketPath} ${path}: HTTP ${res.statusCode}: ${why}`));
          return;
        }
        try {
          resolve(JSON.parse(text) as T);
        } catch (e) {
          reject(new AdminError(`${socketPath} ${path}: not JSON (${(e as Error).message})`));
        }
      });
    });
    req.on('error', (e: NodeJS.ErrnoException) => {
      const hint =
        e.code === 'ENOENT'
          ? ' (no such socket: is the agent running on this node?)'
          : e.code === 'ECONNREFUSED'
            ? ' (nobody listens: the agent is not running)'
            : e.code === 'EACCES'
              ? ' (permission denied: run as root)'
              : '';
      reject(new AdminError(`${socketPath}: ${e.message}${hint}`));
    });
    req.end();
  });
}

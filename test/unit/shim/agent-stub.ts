/**
 * A small agent stand-in on a real unix socket (node:net) for shim tests: it reads one request line,
 * decodes it with the real protocol code, records it, and answers as the handler says. The handler
 * may also misbehave on purpose (stay silent, hang up, send garbage) to test the shim's edges.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  type AgentRequest,
  decodeRequest,
  encodeResponse,
  errorResponse,
  okResponse,
} from '../../../pkg/shim/protocol.ts';

export type StubAction =
  | { answer: string } // raw bytes to write, then close
  | { silent: true } // never answer, keep the connection open
  | { hangUp: true }; // close without answering

export type StubHandler = (request: AgentRequest) => StubAction | Promise<StubAction>;

export interface AgentStub {
  socketPath: string;
  dir: string;
  requests: AgentRequest[];
  /** Raw lines as received (to check framing and what the shim forwards). */
  rawLines: string[];
  close(): Promise<void>;
}

export const answerOk = (result: unknown): StubAction => ({ answer: encodeResponse(okResponse(result)) });

export async function startAgentStub(handler: StubHandler): Promise<AgentStub> {
  const dir = mkdtempSync(join(tmpdir(), 'trl-shim-'));
  const socketPath = join(dir, 'cni.sock');
  const requests: AgentRequest[] = [];
  const rawLines: string[] = [];
  const open = new Set<Socket>();
  const server: Server = createServer((conn) => {
    open.add(conn);
    conn.on('close', () => open.delete(conn));
    conn.on('error', () => {});
    let buf = '';
    let handled = false;
    conn.setEncoding('utf8');
    conn.on('data', async (chunk: string) => {
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl === -1 || handled) return;
      handled = true;
      const line = buf.slice(0, nl);
      rawLines.push(line);
      let request: AgentRequest;
      try {
        request = decodeRequest(line);
      } catch (err) {
        conn.end(encodeResponse(errorResponse(err)));
        return;
      }
      requests.push(request);
      const action = await handler(request);
      if ('answer' in action) conn.end(action.answer);
      else if ('hangUp' in action) conn.destroy();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(socketPath, () => resolve());
  });
  return {
    socketPath,
    dir,
    requests,
    rawLines,
    close: async () => {
      for (const c of open) c.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

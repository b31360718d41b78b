import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { AdminError, adminGet } from '../../../pkg/ops/admin-client.ts';

/** An admin socket served by `answer`, on a real unix socket in a temp dir. */
async function adminSocket(
  answer: (res: ServerResponse) => void,
): Promise<{ socket: string; server: Server }> {
  const dir = mkdtempSync(join(tmpdir(), 'trl-admin-'));
  const socket = join(dir, 'admin.sock');
  const server = createServer((_req, res) => answer(res));
  await new Promise<void>((resolve) => server.listen(socket, resolve));
  cleanups.push(async () => {
    server.closeAllConnections();
    await new Promise((resolve) => server.close(resolve));
    rmSync(dir, { recursive: true, force: true });
  });
  return { socket, server };
}

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  for (const undo of cleanups.splice(0)) await undo();
});

describe('adminGet: the timeout bounds the whole answer', () => {
  it('an agent that drips its answer a byte at a time is given up on at the deadline', async () => {
    const drips: NodeJS.Timeout[] = [];
    const { socket } = await adminSocket((res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write('{');
      // Never silent for long (a per-silence timeout would never fire), never done.
      drips.push(setInterval(() => res.write(' '), 20));
    });
    cleanups.push(async () => drips.forEach(clearInterval));
    const err = await adminGet(socket, '/status', 300).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(AdminError);
    expect((err as AdminError).message).toBe(`${socket}: no whole answer within 300 ms`);
  });

  it('an agent that accepts and never answers is given up on too', async () => {
    const { socket } = await adminSocket(() => {
      // Holds the request: no status line, no body.
    });
    await expect(adminGet(socket, '/status', 200)).rejects.toThrow(
      `${socket}: no whole answer within 200 ms`,
    );
  });
});

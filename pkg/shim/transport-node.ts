/**
 * A Transport on node:net, for Node programs (tests, tools, the agent's own probes). The shim binary
 * uses Bun's native client instead (cmd/cni/bun-transport.ts), which starts several times faster;
 * both follow the same contract and failure kinds.
 */
import { createConnection } from 'node:net';
import { CniCode } from '../cni/errors.ts';
import { LineReader } from './framing.ts';
import { MAX_RESPONSE_BYTES } from './protocol.ts';
import { answerOnClose, socketErrorReason, type Transport, TransportError } from './transport.ts';

export const nodeTransport: Transport = (socketPath, requestLine, { connectMs, totalMs }) =>
  new Promise<string>((resolve, reject) => {
    const reader = new LineReader(MAX_RESPONSE_BYTES, CniCode.INTERNAL, 'the trellis agent answer');
    let connected = false;
    let settled = false;
    const socket = createConnection({ path: socketPath });

    const finish = (err: Error | undefined, answer?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(totalTimer);
      socket.destroy();
      if (err !== undefined) reject(err);
      else resolve(answer ?? '');
    };

    const connectTimer = setTimeout(() => {
      if (!connected) finish(new TransportError('unreachable', `connect timed out after ${connectMs} ms`));
    }, connectMs);
    const totalTimer = setTimeout(() => {
      finish(
        connected
          ? new TransportError('timeout', `no answer within ${totalMs} ms`)
          : new TransportError('unreachable', `connect timed out after ${totalMs} ms`),
      );
    }, totalMs);

    socket.on('connect', () => {
      connected = true;
      clearTimeout(connectTimer);
      socket.write(requestLine);
    });
    socket.on('data', (chunk: Buffer) => {
      try {
        const line = reader.push(chunk);
        if (line !== undefined) finish(undefined, line);
      } catch (err) {
        finish(err as Error);
      }
    });
    socket.on('end', () => {
      try {
        finish(undefined, answerOnClose(reader.partial()));
      } catch (err) {
        finish(err as Error);
      }
    });
    socket.on('close', () => {
      finish(new TransportError(connected ? 'closed' : 'unreachable', 'connection closed'));
    });
    socket.on('error', (err) => {
      finish(
        new TransportError(connected ? 'closed' : 'unreachable', socketErrorReason(err), { cause: err }),
      );
    });
  });

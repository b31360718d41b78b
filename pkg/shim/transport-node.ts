/**
 * A Transport on node:net, for Node programs (tests, tools, the agent's own probes). The shim binary
 * uses blocking libc calls instead (blocking-transport.ts), which need no event loop; both follow the
 * same contract and failure kinds.
 */
import { createConnection } from 'node:net';
import { CniCode } from '../cni/errors.ts';
import { LineReader } from './framing.ts';
import { MAX_RESPONSE_BYTES } from './protocol.ts';
import {
  answerOnClose,
  socketErrorReason,
  type Transport,
  TransportError,
  type TransportTimeouts,
} from './transport.ts';

export const nodeTransport: Transport = (socketPath, requestLine, timeouts) =>
  new Promise<string>((resolve, reject) => {
    const socket = createConnection({ path: socketPath });
    const call = startCall(timeouts, () => socket.destroy(), resolve, reject);

    socket.on('connect', () => {
      call.connected();
      socket.write(requestLine);
    });
    socket.on('data', (chunk: Buffer) => call.data(chunk));
    socket.on('end', () => call.end());
    socket.on('close', () => {
      call.fail(new TransportError(call.isConnected ? 'closed' : 'unreachable', 'connection closed'));
    });
    socket.on('error', (err) => {
      call.fail(
        new TransportError(call.isConnected ? 'closed' : 'unreachable', socketErrorReason(err), {
          cause: err,
        }),
      );
    });
  });

/**
 * One call's bookkeeping for an event-loop client: the connect and total timers, the answer line
 * reader, and settling exactly once (closing the socket when it does). The client only forwards its
 * socket's events. Timeouts, framing and failure kinds match blockingCall's.
 */
interface TransportCall {
  /** True once the call has resolved or rejected; later events are ignored. */
  readonly settled: boolean;
  /** True once connected(): failures are then "closed" rather than "unreachable". */
  readonly isConnected: boolean;
  /** The connection is up: the connect timeout no longer applies. */
  connected(): void;
  /** Answer bytes; the first complete line resolves the call. */
  data(chunk: Uint8Array): void;
  /** The agent closed its side: resolves with a complete answer sent without newline, else fails. */
  end(): void;
  fail(err: Error): void;
}

function startCall(
  { connectMs, totalMs }: TransportTimeouts,
  close: () => void,
  resolve: (answer: string) => void,
  reject: (err: Error) => void,
): TransportCall {
  const reader = new LineReader(MAX_RESPONSE_BYTES, CniCode.INTERNAL, 'the trellis agent answer');
  let connected = false;
  let settled = false;

  const finish = (err: Error | undefined, answer?: string): void => {
    if (settled) return;
    settled = true;
    clearTimeout(connectTimer);
    clearTimeout(totalTimer);
    close();
    if (err !== undefined) reject(err);
    else resolve(answer ?? '');
  };
  /** Settles with the line `read` returns, if any, or with what it throws. */
  const settleWith = (read: () => string | undefined): void => {
    try {
      const line = read();
      if (line !== undefined) finish(undefined, line);
    } catch (err) {
      finish(err as Error);
    }
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

  return {
    get settled() {
      return settled;
    },
    get isConnected() {
      return connected;
    },
    connected() {
      connected = true;
      clearTimeout(connectTimer);
    },
    data: (chunk) => settleWith(() => reader.push(chunk)),
    end: () => settleWith(() => answerOnClose(reader.partial())),
    fail: (err) => finish(err),
  };
}

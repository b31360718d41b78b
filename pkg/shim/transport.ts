/**
 * What the shim needs from a socket client, and how a client reports failure. The Bun client
 * (cmd/cni/bun-runtime.ts) and the Node client (transport-node.ts) both implement Transport and
 * both fail only with TransportError or CniError, so the dispatcher can decide per verb.
 */

import { CniCode } from '../cni/errors.ts';
import { LineReader } from './framing.ts';
import { MAX_RESPONSE_BYTES } from './protocol.ts';

export interface TransportTimeouts {
  /** Give up connecting after this long: the agent is then "not reachable". */
  connectMs: number;
  /** Give up on the whole call (connect + request + answer) after this long. */
  totalMs: number;
}

/**
 * Sends one request line to the unix socket and resolves with the answer line (without its
 * newline), or with whatever arrived when the agent closed before sending a newline.
 */
export type Transport = (
  socketPath: string,
  requestLine: string,
  timeouts: TransportTimeouts,
) => Promise<string>;

/**
 * - unreachable: no connection was made (ENOENT, ECONNREFUSED, EACCES, connect timeout);
 * - timeout: connected, but no complete answer within totalMs;
 * - closed: connected, but the connection failed or closed before any answer.
 */
export type TransportFailure = 'unreachable' | 'timeout' | 'closed';

export class TransportError extends Error {
  readonly kind: TransportFailure;
  /** Short reason for messages: an errno name ("ECONNREFUSED") or a phrase ("connect timed out after 2000 ms"). */
  readonly reason: string;

  constructor(kind: TransportFailure, reason: string, options?: { cause?: unknown }) {
    super(`${kind}: ${reason}`, options);
    this.name = 'TransportError';
    this.kind = kind;
    this.reason = reason;
  }
}

/** The errno name of a socket error ("ECONNREFUSED"), else its message. */
export function socketErrorReason(err: unknown): string {
  if (typeof err === 'object' && err !== null) {
    if ('code' in err && typeof err.code === 'string' && err.code !== '') return err.code;
    if ('message' in err && typeof err.message === 'string' && err.message !== '') return err.message;
  }
  return String(err);
}

/**
 * The answer when the agent closed without a newline: a complete JSON text is accepted (lenient to
 * agents that forget the newline), nothing or a cut-off text means the agent hung up mid-call.
 */
export function answerOnClose(partial: string): string {
  if (partial.trim() === '') throw new TransportError('closed', 'connection closed before any answer');
  try {
    JSON.parse(partial);
    return partial;
  } catch {
    throw new TransportError('closed', 'connection closed in the middle of the answer');
  }
}

/**
 * One call's bookkeeping, shared by both clients so that they time out, frame the answer and fail the
 * same way: the connect and total timers, the answer line reader, and settling exactly once (closing
 * the socket when it does). A client only forwards its socket's events. Pure JS on purpose: the Bun
 * shim imports this file, and its start-up must not grow.
 */
export interface TransportCall {
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

export function startCall(
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

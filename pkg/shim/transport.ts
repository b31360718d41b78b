/**
 * What the shim needs from a socket client, and how a client reports failure: the shim binary's
 * blocking libc client (blocking-transport.ts over cmd/cni/libc.ts) fails only with TransportError
 * or CniError, so the dispatcher can decide per verb.
 */

export interface TransportTimeouts {
  /** Give up connecting after this long: the agent is then "not reachable". */
  connectMs: number;
  /** Give up on the whole call (connect + request + answer) after this long. */
  totalMs: number;
}

/**
 * Sends one request line to the unix socket and returns the answer line (without its newline), or
 * whatever arrived when the agent closed before sending a newline. Blocking: the shim has nothing
 * else to do meanwhile (shim.ts says why it has no event loop and no promises).
 */
export type Transport = (socketPath: string, requestLine: string, timeouts: TransportTimeouts) => string;

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

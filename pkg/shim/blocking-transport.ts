/**
 * A Transport over blocking system calls: connect, then one poll loop that sends the request and reads
 * the answer, all on the calling thread. The shim binary uses it with libc (cmd/cni/libc.ts): no event
 * loop to start, no thread to wake, which is ~1 ms of every CNI call (bench/HISTORY.md).
 */
import { CniCode } from '../cni/errors.ts';
import { LineReader } from './framing.ts';
import { MAX_RESPONSE_BYTES } from './protocol.ts';
import { answerOnClose, socketErrorReason, type Transport, TransportError } from './transport.ts';

/** A failed system call, named by its errno ("ECONNREFUSED"), which socketErrorReason reports. */
export class SyscallError extends Error {
  readonly code: string;
  readonly syscall: string;

  constructor(syscall: string, code: string) {
    super(`${syscall}: ${code}`);
    this.name = 'SyscallError';
    this.syscall = syscall;
    this.code = code;
  }
}

/** What poll reported; a hang-up or error counts as readable, so the next recv reports it. */
export interface Readiness {
  readable: boolean;
  writable: boolean;
}

/** The system calls the transport needs, over one unix stream socket. Each throws SyscallError. */
export interface BlockingSocket {
  /**
   * Connects to the socket at `path` and returns its descriptor. Waits at most `timeoutMs` for room in
   * a full listen backlog, then fails with EAGAIN.
   */
  connectUnix(path: string, timeoutMs: number): number;
  /** Waits up to `timeoutMs` for the asked events; nothing ready means the time ran out (or EINTR). */
  poll(fd: number, want: { read: boolean; write: boolean }, timeoutMs: number): Readiness;
  /** Sends without blocking; returns how many bytes the kernel took (0 when its buffer is full). */
  send(fd: number, data: Uint8Array, offset: number): number;
  /** Receives without blocking into `buf`: bytes read, 0 at end of stream, -1 when nothing is there yet. */
  recv(fd: number, buf: Uint8Array): number;
  close(fd: number): void;
  /** A monotonic clock in milliseconds. */
  now(): number;
}

/** The peer stopped reading: what it already sent may still be the answer, so keep reading. */
const PEER_GONE = new Set(['EPIPE', 'ECONNRESET']);

export function blockingTransport(sys: BlockingSocket): Transport {
  return (socketPath, requestLine, timeouts) => blockingCall(sys, socketPath, requestLine, timeouts);
}

/** Sends one request line and returns the answer line; throws TransportError or CniError. */
export function blockingCall(
  sys: BlockingSocket,
  socketPath: string,
  requestLine: string,
  { connectMs, totalMs }: { connectMs: number; totalMs: number },
): string {
  const deadline = sys.now() + totalMs;
  let fd: number;
  try {
    fd = sys.connectUnix(socketPath, connectMs);
  } catch (err) {
    if (err instanceof SyscallError && err.code === 'EAGAIN') {
      throw new TransportError('unreachable', `connect timed out after ${connectMs} ms`);
    }
    throw new TransportError('unreachable', socketErrorReason(err), { cause: err });
  }
  try {
    return exchange(sys, fd, new TextEncoder().encode(requestLine), deadline, totalMs);
  } finally {
    sys.close(fd);
  }
}

function exchange(
  sys: BlockingSocket,
  fd: number,
  request: Uint8Array,
  deadline: number,
  totalMs: number,
): string {
  const reader = new LineReader(MAX_RESPONSE_BYTES, CniCode.INTERNAL, 'the trellis agent answer');
  const buf = new Uint8Array(64 * 1024);
  let written = 0;
  for (;;) {
    const left = deadline - sys.now();
    if (left <= 0) throw new TransportError('timeout', `no answer within ${totalMs} ms`);
    const sending = written < request.length;
    try {
      const ready = sys.poll(fd, { read: true, write: sending }, Math.ceil(left));
      if (sending && ready.writable) {
        try {
          written += sys.send(fd, request, written);
        } catch (err) {
          if (!(err instanceof SyscallError && PEER_GONE.has(err.code))) throw err;
          written = request.length; // read whatever the agent said before it hung up
        }
      }
      if (!ready.readable) continue;
      const n = sys.recv(fd, buf);
      if (n === 0) return answerOnClose(reader.partial());
      if (n < 0) continue;
      const line = reader.push(buf.subarray(0, n));
      if (line !== undefined) return line;
    } catch (err) {
      if (err instanceof SyscallError) throw new TransportError('closed', err.code, { cause: err });
      throw err;
    }
  }
}

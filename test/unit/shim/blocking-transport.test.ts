/**
 * blockingCall's decisions over a scripted socket: the orders of events a real kernel produces only
 * by chance (a send cut short, an answer in pieces, EPIPE after the answer, a clock that runs out).
 * The libc socket itself is exercised through the compiled shim in test/integration/shim.
 */
import { describe, expect, it } from 'vitest';
import { CniCode } from '../../../pkg/cni/errors.ts';
import {
  type BlockingSocket,
  blockingCall,
  blockingTransport,
  type Readiness,
  SyscallError,
} from '../../../pkg/shim/blocking-transport.ts';
import { MAX_RESPONSE_BYTES } from '../../../pkg/shim/protocol.ts';
import { TransportError } from '../../../pkg/shim/transport.ts';
import { thrown, thrownAs } from '../cni/thrown.ts';

const FD = 7;
const TIMEOUTS = { connectMs: 2_000, totalMs: 5_000 };

interface Script {
  connect?: SyscallError;
  /** The most the peer takes per send (default: everything). */
  sendChunk?: number;
  /** Thrown by the first send. */
  sendError?: SyscallError;
  /** What recv hands out once the whole request arrived (or at once, with answerEarly). */
  answer?: (Uint8Array | 'eof' | SyscallError)[];
  answerEarly?: boolean;
}

/** A peer that follows a script, with a clock that poll advances when nothing is ready. */
class ScriptedSocket implements BlockingSocket {
  readonly received: number[] = [];
  readonly closed: number[] = [];
  connectTimeoutMs = -1;
  clock = 1_000;
  readonly #s: Script;
  readonly #answer: (Uint8Array | 'eof' | SyscallError)[];

  constructor(script: Script) {
    this.#s = script;
    this.#answer = [...(script.answer ?? [])];
  }

  #requestDone(): boolean {
    return this.received.includes(0x0a);
  }

  connectUnix(_path: string, timeoutMs: number): number {
    this.connectTimeoutMs = timeoutMs;
    if (this.#s.connect !== undefined) throw this.#s.connect;
    return FD;
  }

  poll(_fd: number, want: { read: boolean; write: boolean }, timeoutMs: number): Readiness {
    const readable = want.read && this.#answer.length > 0 && (this.#s.answerEarly || this.#requestDone());
    const writable = want.write;
    if (!readable && !writable) this.clock += timeoutMs;
    return { readable, writable };
  }

  send(_fd: number, data: Uint8Array, offset: number): number {
    const err = this.#s.sendError;
    if (err !== undefined) {
      this.#s.sendError = undefined;
      throw err;
    }
    const n = Math.min(this.#s.sendChunk ?? Number.MAX_SAFE_INTEGER, data.length - offset);
    this.received.push(...data.subarray(offset, offset + n));
    return n;
  }

  recv(_fd: number, buf: Uint8Array): number {
    const next = this.#answer.shift();
    if (next === undefined) return -1;
    if (next === 'eof') return 0;
    if (next instanceof SyscallError) throw next;
    buf.set(next);
    return next.length;
  }

  close(fd: number): void {
    this.closed.push(fd);
  }

  now(): number {
    return this.clock;
  }
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s);
const call = (sock: ScriptedSocket, line = '{"v":1}\n'): string =>
  blockingCall(sock, '/run/x.sock', line, TIMEOUTS);

const transportError = (fn: () => unknown): TransportError => thrownAs(TransportError, fn);

describe('blockingCall', () => {
  it('sends the whole request through short sends and joins an answer that arrives in pieces', () => {
    const request = `${JSON.stringify({ v: 1, stdin: 'x'.repeat(1000) })}\n`;
    const sock = new ScriptedSocket({ sendChunk: 7, answer: [bytes('{"ok":'), bytes('true}\nignored')] });
    expect(call(sock, request)).toBe('{"ok":true}');
    expect(new TextDecoder().decode(new Uint8Array(sock.received))).toBe(request);
    expect(sock.closed).toEqual([FD]);
    expect(sock.connectTimeoutMs).toBe(TIMEOUTS.connectMs);
  });

  it('a full backlog until the connect timeout is "unreachable", naming the timeout', () => {
    const err = transportError(() =>
      call(new ScriptedSocket({ connect: new SyscallError('connect', 'EAGAIN') })),
    );
    expect(err.kind).toBe('unreachable');
    expect(err.reason).toBe('connect timed out after 2000 ms');
  });

  it('a refused or missing socket is "unreachable" with the errno name, and nothing to close', () => {
    for (const code of ['ECONNREFUSED', 'ENOENT', 'EACCES']) {
      const sock = new ScriptedSocket({ connect: new SyscallError('connect', code) });
      const err = transportError(() => call(sock));
      expect([err.kind, err.reason]).toEqual(['unreachable', code]);
      expect(sock.closed).toEqual([]);
    }
  });

  it('no answer before the deadline is "timeout", and the socket is closed', () => {
    const sock = new ScriptedSocket({});
    const err = transportError(() => call(sock));
    expect([err.kind, err.reason]).toEqual(['timeout', 'no answer within 5000 ms']);
    expect(sock.clock).toBeGreaterThanOrEqual(1_000 + TIMEOUTS.totalMs);
    expect(sock.closed).toEqual([FD]);
  });

  it('the agent answering and hanging up mid-request (EPIPE) still yields its answer', () => {
    const sock = new ScriptedSocket({
      sendError: new SyscallError('send', 'EPIPE'),
      answer: [bytes('{"ok":false}\n')],
      answerEarly: true,
    });
    expect(call(sock)).toBe('{"ok":false}');
  });

  it('EPIPE with nothing to read is "closed"', () => {
    const sock = new ScriptedSocket({
      sendError: new SyscallError('send', 'EPIPE'),
      answer: ['eof'],
      answerEarly: true,
    });
    const err = transportError(() => call(sock));
    expect([err.kind, err.reason]).toEqual(['closed', 'connection closed before any answer']);
  });

  it('end of stream after a complete JSON text without newline is that answer; after a cut-off one, "closed"', () => {
    expect(call(new ScriptedSocket({ answer: [bytes('{"ok":true}'), 'eof'] }))).toBe('{"ok":true}');
    const err = transportError(() => call(new ScriptedSocket({ answer: [bytes('{"ok":tr'), 'eof'] })));
    expect([err.kind, err.reason]).toEqual(['closed', 'connection closed in the middle of the answer']);
  });

  it('a receive error is "closed" with its errno name', () => {
    const sock = new ScriptedSocket({ answer: [new SyscallError('recv', 'ECONNRESET')] });
    const err = transportError(() => call(sock));
    expect([err.kind, err.reason]).toEqual(['closed', 'ECONNRESET']);
    expect(sock.closed).toEqual([FD]);
  });

  it('an answer longer than the limit fails as INTERNAL before it is all read', () => {
    const chunk = new Uint8Array(64 * 1024).fill(0x61);
    const pieces = Math.ceil(MAX_RESPONSE_BYTES / chunk.length) + 1;
    const sock = new ScriptedSocket({ answer: Array.from({ length: pieces }, () => chunk) });
    expect(thrown(() => call(sock)).code).toBe(CniCode.INTERNAL);
    expect(sock.closed).toEqual([FD]);
  });

  it('blockingTransport returns the answer line and throws what blockingCall throws', () => {
    expect(blockingTransport(new ScriptedSocket({ answer: [bytes('{}\n')] }))('/s', 'x\n', TIMEOUTS)).toBe(
      '{}',
    );
    expect(() => blockingTransport(new ScriptedSocket({}))('/s', 'x\n', TIMEOUTS)).toThrow(TransportError);
  });
});

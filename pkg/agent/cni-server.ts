import { chmodSync, existsSync, mkdirSync, rmSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { dirname } from 'node:path';
import { CniCode, CniError, toCniError } from '../cni/errors.ts';
import type { Logger } from '../observe/logger.ts';
import { LineReader } from '../shim/framing.ts';
import { decodeRequest, encodeResponse, errorResponse, MAX_REQUEST_BYTES } from '../shim/protocol.ts';
import {
  type AnswerFate,
  type CniCallRecord,
  type CniHandler,
  describeRawEnv,
  elapsedMs,
} from './cni-service.ts';

/**
 * After the answer is written the peer should close; one that keeps its end open (a stuck or broken
 * client) would otherwise hold a file descriptor and its buffers for as long as it likes.
 */
export const ANSWER_LINGER_MS = 2_000;

export interface CniServerOptions {
  socketPath: string;
  handler: CniHandler;
  log: Logger;
  /** A client must send its whole request within this time (slow or stuck clients are cut off). */
  requestTimeoutMs?: number;
  /** A request refused before the handler saw it (the metrics count it like a failed call). */
  onReject?: (record: CniCallRecord) => void;
}

/**
 * The agent end of the shim protocol: a root-only (0600) unix socket, one request line in, one
 * response line out per connection. Request size and time are bounded so a bad client cannot hold
 * memory or a connection slot; every other client keeps being served meanwhile.
 */
export class CniServer {
  private server: Server;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly sockets = new Set<Socket>();
  /** Connections accepted whose request line has not come yet (each ends by its request timeout). */
  private readonly awaitingRequest = new Set<Socket>();
  /** Wakes close()'s wait when a call ends or an awaited request comes (or never will). */
  private progress: (() => void) | undefined;
  /** Connections close() cut at the end of its grace, their calls still running. */
  private readonly cutAtStop = new WeakSet<Socket>();
  private readonly opts: Required<CniServerOptions>;

  constructor(opts: CniServerOptions) {
    this.opts = { requestTimeoutMs: 10_000, onReject: () => {}, ...opts };
    this.server = this.newServer();
  }

  private newServer(): Server {
    // allowHalfOpen: the shim may half-close after its request line; we still owe it the answer.
    return createServer({ allowHalfOpen: true }, (socket) => this.onConnection(socket));
  }

  /** Whether the socket file the shim connects to is still there (something may remove it: `rm -rf /run/trellis`). */
  socketPresent(): boolean {
    return existsSync(this.opts.socketPath);
  }

  /**
   * Listens again at the socket's path, its file having been removed under the agent (a listener
   * without its file serves nobody: every ADD would fail with "is the agent running?"). Connections
   * already accepted finish on the old listener, which stops accepting.
   */
  async relisten(): Promise<void> {
    // Closed first: closing a unix socket listener unlinks its path, which would be the new file.
    this.server.close();
    this.server = this.newServer();
    await this.listen();
  }

  async listen(): Promise<void> {
    const path = this.opts.socketPath;
    mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
    // A socket file left by a previous agent (crash, SIGKILL) would make listen fail with EADDRINUSE;
    // only one agent runs per state directory (flock), so it is stale.
    rmSync(path, { force: true });
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      // The socket file is made 0600 from the start; the umask is the process's, so it is back
      // before anything else runs (listen binds a unix socket synchronously, 'listening' comes later).
      const oldUmask = process.umask(0o177);
      try {
        this.server.listen(path, () => {
          this.server.off('error', reject);
          resolve();
        });
      } finally {
        process.umask(oldUmask);
      }
    });
    chmodSync(path, 0o600);
  }

  private onConnection(socket: Socket): void {
    this.sockets.add(socket);
    this.awaitingRequest.add(socket);
    const started = performance.now();
    const reader = new LineReader(MAX_REQUEST_BYTES, CniCode.BAD_REQUEST, 'request');
    let done = false;
    const timer = setTimeout(() => {
      fail(new CniError(CniCode.BAD_REQUEST, `request not received within ${this.opts.requestTimeoutMs} ms`));
    }, this.opts.requestTimeoutMs);
    // A peer that resets or goes away ends the wait too: no timeout line later for a request that
    // can no longer come.
    socket.on('close', () => {
      clearTimeout(timer);
      this.sockets.delete(socket);
      this.requestSettled(socket);
    });
    socket.on('error', () => socket.destroy());

    const fail = (err: CniError): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      this.reject(socket, err, started);
      this.requestSettled(socket);
    };

    socket.on('data', (chunk: Buffer) => {
      if (done) return;
      let line: string | undefined;
      try {
        line = reader.push(chunk);
      } catch (err) {
        fail(err instanceof CniError ? err : new CniError(CniCode.BAD_REQUEST, String(err)));
        return;
      }
      if (line === undefined) return;
      done = true;
      clearTimeout(timer);
      this.serve(socket, line, started);
      this.requestSettled(socket);
    });
    socket.on('end', () => {
      if (!done) fail(new CniError(CniCode.BAD_REQUEST, 'connection closed before a complete request line'));
    });
  }

  private serve(socket: Socket, line: string, started: number): void {
    let request: ReturnType<typeof decodeRequest>;
    try {
      request = decodeRequest(line);
    } catch (err) {
      // Never reaches the handler, so it would leave no line of its own (a shim of another protocol
      // version, say, during an upgrade): logged here like every other refused request.
      this.reject(socket, toCniError(err), started, line);
      return;
    }
    const work = (async () => {
      let answer: string;
      // Whether the answer reached the peer: a plugin that gave up and closed its socket makes the
      // write fail (EPIPE). A half-close after the request (allowed) does not. A socket close() cut
      // at the end of its grace is the agent's doing, not the plugin's.
      let settle: (fate: AnswerFate) => void = () => {};
      const answered = new Promise<AnswerFate>((resolve) => {
        settle = resolve;
      });
      const delivered = (ok: boolean): void =>
        settle(ok ? 'heard' : this.cutAtStop.has(socket) ? 'agent-stopped' : 'plugin-gone');
      try {
        answer = encodeResponse(await this.opts.handler(request, { answered }));
      } catch (err) {
        answer = encodeResponse(errorResponse(err));
      }
      if (socket.destroyed) delivered(false);
      else this.answer(socket, answer, delivered);
    })();
    this.inFlight.add(work);
    void work.finally(() => {
      this.inFlight.delete(work);
      this.wake();
    });
  }

  /** The connection's request came (its call, if any, is in inFlight now), was refused, or never will. */
  private requestSettled(socket: Socket): void {
    if (this.awaitingRequest.delete(socket)) this.wake();
  }

  private wake(): void {
    const wake = this.progress;
    this.progress = undefined;
    wake?.();
  }

  /**
   * A request refused before any handler saw it: one warn line with what the line still says of the
   * call (a shim of another protocol version sends a readable verb and pod), counted as a failed
   * call, and the error as the answer.
   */
  private reject(socket: Socket, err: CniError, started: number, line?: string): void {
    const call = line === undefined ? {} : describeRefusedLine(line);
    const durationMs = elapsedMs(started);
    this.opts.log.warn(
      { ...call, outcome: 'error', code: err.code, error: err.message, durationMs },
      'rejected CNI socket request',
    );
    this.opts.onReject({ verb: call.verb ?? '', outcome: 'error', code: err.code, durationMs });
    if (!socket.destroyed) this.answer(socket, encodeResponse(errorResponse(err)));
  }

  /**
   * Writes the one answer line, half-closes, and cuts the connection if the peer does not close.
   * `written` hears whether the line went out.
   */
  private answer(socket: Socket, line: string, written?: (ok: boolean) => void): void {
    socket.write(line, (err) => written?.(err == null));
    socket.end();
    const linger = setTimeout(() => socket.destroy(), ANSWER_LINGER_MS);
    linger.unref();
    socket.once('close', () => clearTimeout(linger));
  }

  /**
   * Stops accepting, lets in-flight calls finish (bounded), then closes and removes the socket. A
   * connection accepted before the close may still send its request during the grace period (a shim
   * that connected just before the SIGTERM); the call it starts is waited for too, whether or not
   * another call was running. Returns how many calls were still running, or still to be read, when
   * the grace ended.
   */
  async close(graceMs = 20_000): Promise<number> {
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    let timer: ReturnType<typeof setTimeout> | undefined;
    const graceOver = new Promise<'over'>((r) => {
      timer = setTimeout(() => r('over'), graceMs);
      timer.unref();
    });
    while (this.inFlight.size > 0 || this.awaitingRequest.size > 0) {
      const progressed = new Promise<void>((r) => {
        this.progress = r;
      });
      if ((await Promise.race([progressed, graceOver])) === 'over') break;
    }
    clearTimeout(timer);
    this.progress = undefined;
    const cut = this.inFlight.size + this.awaitingRequest.size;
    for (const s of this.sockets) {
      this.cutAtStop.add(s);
      s.destroy();
    }
    await closed;
    rmSync(this.opts.socketPath, { force: true });
    return cut;
  }

  get inFlightCount(): number {
    return this.inFlight.size;
  }
}

/** The call a refused request line names, as far as its CNI_* variables can be read. */
function describeRefusedLine(line: string): ReturnType<typeof describeRawEnv> {
  try {
    return describeRawEnv((JSON.parse(line) as { env?: unknown })?.env);
  } catch {
    return {};
  }
}

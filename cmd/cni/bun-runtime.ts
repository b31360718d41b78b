/**
 * The few Bun APIs the shim binary uses, declared here (bun-types is not installed; tsc checks this
 * file with Node's types), and the Transport built on Bun.connect. Bun's native socket client makes a
 * compiled shim's start-up + round trip ~5 ms, against ~20 ms with node:net (FACTS.md).
 */
import { CniCode } from '../../pkg/cni/errors.ts';
import { LineReader } from '../../pkg/shim/framing.ts';
import { MAX_RESPONSE_BYTES } from '../../pkg/shim/protocol.ts';
import {
  answerOnClose,
  socketErrorReason,
  type Transport,
  TransportError,
} from '../../pkg/shim/transport.ts';

interface BunSocket {
  /** Returns how many bytes the kernel took; the rest must wait for `drain`. */
  write(data: Uint8Array): number;
  /** Closes without waiting for pending writes. */
  terminate(): void;
}

interface BunSocketHandler {
  open(socket: BunSocket): void;
  data(socket: BunSocket, chunk: Uint8Array): void;
  drain(socket: BunSocket): void;
  end(socket: BunSocket): void;
  close(socket: BunSocket, err?: Error): void;
  error(socket: BunSocket, err: Error): void;
}

interface BunFile {
  readonly __brand?: 'BunFile';
}

interface BunApi {
  connect(options: { unix: string; socket: BunSocketHandler }): Promise<BunSocket>;
  stdin: { text(): Promise<string> };
  stdout: BunFile;
  stderr: BunFile;
  write(destination: BunFile, data: string): Promise<number>;
}

declare const Bun: BunApi;

export const bun = {
  readStdin: (): Promise<string> => Bun.stdin.text(),
  writeStdout: (text: string): Promise<number> => Bun.write(Bun.stdout, text),
  writeStderr: (text: string): Promise<number> => Bun.write(Bun.stderr, text),
};

export const bunTransport: Transport = (socketPath, requestLine, { connectMs, totalMs }) =>
  new Promise<string>((resolve, reject) => {
    const reader = new LineReader(MAX_RESPONSE_BYTES, CniCode.INTERNAL, 'the trellis agent answer');
    const bytes = new TextEncoder().encode(requestLine);
    let written = 0;
    let connected = false;
    let settled = false;
    let socket: BunSocket | undefined;

    const finish = (err: Error | undefined, answer?: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(connectTimer);
      clearTimeout(totalTimer);
      socket?.terminate();
      if (err !== undefined) reject(err);
      else resolve(answer ?? '');
    };
    const flush = (s: BunSocket): void => {
      if (written < bytes.length) written += s.write(bytes.subarray(written));
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

    Bun.connect({
      unix: socketPath,
      socket: {
        open(s) {
          connected = true;
          socket = s;
          clearTimeout(connectTimer);
          flush(s);
        },
        drain: flush,
        data(_s, chunk) {
          try {
            const line = reader.push(chunk);
            if (line !== undefined) finish(undefined, line);
          } catch (err) {
            finish(err as Error);
          }
        },
        end() {
          try {
            finish(undefined, answerOnClose(reader.partial()));
          } catch (err) {
            finish(err as Error);
          }
        },
        close(_s, err) {
          finish(
            new TransportError('closed', err === undefined ? 'connection closed' : socketErrorReason(err)),
          );
        },
        error(_s, err) {
          finish(
            new TransportError(connected ? 'closed' : 'unreachable', socketErrorReason(err), { cause: err }),
          );
        },
      },
    }).then(
      (s) => {
        socket = s;
        if (settled) s.terminate(); // the connect timer fired first
      },
      (err: unknown) => finish(new TransportError('unreachable', socketErrorReason(err), { cause: err })),
    );
  });

/**
 * The few Bun APIs the shim binary uses, declared here (bun-types is not installed; tsc checks this
 * file with Node's types), and the Transport built on Bun.connect. Bun's native socket client makes a
 * compiled shim's start-up + round trip ~5 ms, against ~20 ms with node:net (FACTS.md).
 */
import { socketErrorReason, startCall, type Transport, TransportError } from '../../pkg/shim/transport.ts';

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

export const bunTransport: Transport = (socketPath, requestLine, timeouts) =>
  new Promise<string>((resolve, reject) => {
    const bytes = new TextEncoder().encode(requestLine);
    let written = 0;
    let socket: BunSocket | undefined;
    const call = startCall(timeouts, () => socket?.terminate(), resolve, reject);
    const flush = (s: BunSocket): void => {
      if (written < bytes.length) written += s.write(bytes.subarray(written));
    };

    Bun.connect({
      unix: socketPath,
      socket: {
        open(s) {
          socket = s;
          call.connected();
          flush(s);
        },
        drain: flush,
        data: (_s, chunk) => call.data(chunk),
        end: () => call.end(),
        close(_s, err) {
          call.fail(
            new TransportError('closed', err === undefined ? 'connection closed' : socketErrorReason(err)),
          );
        },
        error(_s, err) {
          call.fail(
            new TransportError(call.isConnected ? 'closed' : 'unreachable', socketErrorReason(err), {
              cause: err,
            }),
          );
        },
      },
    }).then(
      (s) => {
        socket = s;
        if (call.settled) s.terminate(); // the connect timer fired first
      },
      (err: unknown) => call.fail(new TransportError('unreachable', socketErrorReason(err), { cause: err })),
    );
  });

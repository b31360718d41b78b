/**
 * A Transport on node:net, for Node programs (tests, tools, the agent's own probes). The shim binary
 * uses Bun's native client instead (cmd/cni/bun-runtime.ts), which starts several times faster;
 * both follow the same contract and failure kinds.
 */
import { createConnection } from 'node:net';
import { socketErrorReason, startCall, type Transport, TransportError } from './transport.ts';

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

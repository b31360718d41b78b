/**
 * CLI for the test API server, for the multi-node test bed and the demo, which run it as its own
 * process (inside a "control-plane" network namespace):
 *
 *   node test/support/apiserver/main.ts --listen 10.0.0.1:6443 --kubeconfig-out /tmp/kc \
 *     [--bookmark-interval-ms 10000] [--history-size 10000]
 *
 * Prints one JSON line {"url": ..., "kubeconfig": ...} on stdout once it is listening, then serves
 * until SIGTERM/SIGINT.
 */
import { parseArgs } from 'node:util';
import { startTestApiServer } from './server.ts';

function splitHostPort(listen: string): { host: string; port: number } {
  const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
  if (!m) throw new Error(`--listen must be HOST:PORT (got ${JSON.stringify(listen)})`);
  return { host: m[1]!, port: Number(m[2]) };
}

const { values } = parseArgs({
  options: {
    listen: { type: 'string', default: '127.0.0.1:0' },
    'kubeconfig-out': { type: 'string' },
    'bookmark-interval-ms': { type: 'string' },
    'history-size': { type: 'string' },
  },
});

const { host, port } = splitHostPort(values.listen);
const server = await startTestApiServer({
  host,
  port,
  ...(values['kubeconfig-out'] !== undefined ? { kubeconfigPath: values['kubeconfig-out'] } : {}),
  ...(values['bookmark-interval-ms'] !== undefined
    ? { bookmarkIntervalMs: Number(values['bookmark-interval-ms']) }
    : {}),
  ...(values['history-size'] !== undefined ? { historySize: Number(values['history-size']) } : {}),
});
process.stdout.write(`${JSON.stringify({ url: server.url, kubeconfig: server.kubeconfigPath })}\n`);

const stop = (): void => {
  server.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

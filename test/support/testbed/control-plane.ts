/**
 * The test bed's control plane, run as its own process inside the control-plane namespace:
 *
 *   ip netns exec CP node test/support/testbed/control-plane.ts --listen 10.100.0.2:6443 \
 *     --kubeconfig-out DIR/kubeconfig --unix DIR/api.sock [--admin DIR/admin.sock]
 *
 * It is the test API server (test/support/apiserver) listening on the fabric address the agents
 * use, plus a byte-for-byte forwarder from a unix socket to that address. The forwarder is how the
 * test bed (in the root namespace, which must stay untouched) reaches the API: a path-bound unix
 * socket works across network namespaces, so no link into the root namespace is needed.
 * With --admin, the API server's fault hooks (outage, compaction, watch resets) are served on a second
 * unix socket (fault-admin.ts).
 * Prints one JSON line {"url", "kubeconfig", "unix"} once both listen; serves until SIGTERM/SIGINT.
 */
import { rmSync } from 'node:fs';
import { connect, createServer } from 'node:net';
import { parseArgs } from 'node:util';
import { startTestApiServer } from '../apiserver/server.ts';
import { serveFaultAdmin } from './fault-admin.ts';

const { values } = parseArgs({
  options: {
    listen: { type: 'string' },
    'kubeconfig-out': { type: 'string' },
    unix: { type: 'string' },
    admin: { type: 'string' },
  },
});
const listen = values.listen ?? '';
const m = /^\[?([^\]]*?)\]?:(\d+)$/.exec(listen);
if (!m || values['kubeconfig-out'] === undefined || values.unix === undefined) {
  process.stderr.write('usage: control-plane.ts --listen HOST:PORT --kubeconfig-out FILE --unix PATH\n');
  process.exit(2);
}
const host = m[1]!;
const port = Number(m[2]);
const unixPath = values.unix;

const api = await startTestApiServer({ host, port, kubeconfigPath: values['kubeconfig-out'] });
const adminPath = values.admin;
const admin = adminPath === undefined ? undefined : await serveFaultAdmin(api.store, host, adminPath);

rmSync(unixPath, { force: true });
const open = new Set<{ destroy(): void }>();
const forwarder = createServer((client) => {
  const upstream = connect({ host, port });
  open.add(client);
  open.add(upstream);
  client.pipe(upstream).pipe(client);
  const close = (): void => {
    client.destroy();
    upstream.destroy();
    open.delete(client);
    open.delete(upstream);
  };
  client.on('error', close);
  upstream.on('error', close);
  client.on('close', close);
  upstream.on('close', close);
});
await new Promise<void>((resolve, reject) => {
  forwarder.once('error', reject);
  forwarder.listen(unixPath, resolve);
});
process.stdout.write(`${JSON.stringify({ url: api.url, kubeconfig: api.kubeconfigPath, unix: unixPath })}\n`);

const stop = (): void => {
  forwarder.close();
  admin?.close();
  admin?.closeAllConnections();
  for (const s of open) s.destroy();
  rmSync(unixPath, { force: true });
  if (adminPath !== undefined) rmSync(adminPath, { force: true });
  // The agents' watches may still be open; they are not worth waiting for at teardown.
  setTimeout(() => process.exit(0), 500).unref();
  api.close().then(
    () => process.exit(0),
    () => process.exit(1),
  );
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);

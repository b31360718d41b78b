/**
 * Picks the transport for a connection: the native one when the kubeconfig allows it, else
 * @kubernetes/client-node, imported on the first request only (so an agent on the common paths
 * never loads it). Both sit behind the same Transport port.
 */
import { trellisVersion } from '../version.ts';
import { toK8sError } from './errors.ts';
import { HttpTransport } from './http-transport.ts';
import type { KubeConnection } from './kubeconfig.ts';
import type { Transport } from './transport.ts';

export const USER_AGENT = `trellis-agent/${trellisVersion()}`;

export function transportFor(conn: KubeConnection): Transport {
  const spec = conn.httpSpec();
  if (spec !== undefined) return new HttpTransport(spec, { userAgent: USER_AGENT });
  const fallback = conn.fallbackSpec();
  if (fallback === undefined) throw new Error('a KubeConnection without any transport (a bug in pkg/k8s)');
  let loaded: Promise<Transport> | undefined;
  const load = (op: string): Promise<Transport> => {
    loaded ??= import('./client-node-transport.ts').then((m) => m.createClientNodeTransport(fallback));
    // A config client-node rejects stays rejected: every call fails with the same CONFIG error.
    return loaded.catch((err: unknown) => {
      throw toK8sError(op, err);
    });
  };
  return {
    name: 'client-node',
    listPage: async (op, path, params, signal) => (await load(op)).listPage(op, path, params, signal),
    patch: async (op, path, type, body) => (await load(op)).patch(op, path, type, body),
    watch: async (op, path, params, onEvent, signal) =>
      (await load(op)).watch(op, path, params, onEvent, signal),
    // client-node asks for JSON only.
    nodesEncoding: () => 'json',
  };
}

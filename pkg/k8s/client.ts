/**
 * The small ports the agent uses, implemented over the real API through a Transport (native, or
 * client-node for the kubeconfigs only it supports). Each method is one API call (or one
 * paginated list) and either returns plain views or throws a K8sError.
 */
import { CoreApi, nodePath } from './api.ts';
import { type NodeInformer, type NodeInformerOptions, startNodeInformerOn } from './informer.ts';
import type { KubeConnection } from './kubeconfig.ts';
import type { NodesEncoding, TransportName } from './transport.ts';
import { transportFor } from './transports.ts';
import { type NodeView, type PodView, toNodeView, toPodView } from './views.ts';

/** A list of views plus the objects that were skipped because they could not be read. */
export interface Listed<T> {
  readonly items: T[];
  readonly problems: string[];
  readonly resourceVersion: string;
}

export interface NodeReader {
  listNodes(): Promise<Listed<NodeView>>;
}

export interface NodeStatusWriter {
  /**
   * Sets the node's NetworkUnavailable condition (status "False" when `unavailable` is false) with
   * the given reason and message, by strategic merge patch of nodes/status: other conditions stay.
   */
  setNetworkUnavailable(name: string, unavailable: boolean, reason: string, message: string): Promise<void>;
  /** Merge-patches metadata.annotations; a null value removes that annotation. */
  annotateNode(name: string, annotations: Readonly<Record<string, string | null>>): Promise<void>;
}

export interface PodLister {
  /**
   * Pods of every namespace scheduled to `nodeName` (fieldSelector spec.nodeName), from the API
   * server's watch cache: the list may lag the cluster by a moment (a pod just scheduled or just
   * deleted). Its users tolerate that: lease GC releases a lease only once the pod's network
   * namespace or its host veth is gone too (neither is while a pod runs), and the lease rebuild only
   * labels a restored lease with its pod.
   */
  listPodsOnNode(nodeName: string): Promise<Listed<PodView>>;
}

export interface NodeWatcher {
  startNodeInformer(opts: NodeInformerOptions): NodeInformer;
}

export interface K8sClient extends NodeReader, NodeStatusWriter, PodLister, NodeWatcher {
  /** 'native' (node:http/https) or 'client-node' (the fallback), for logs. */
  readonly transport: TransportName;
  /** How the API server last answered a Node list or watch (undefined before one was). */
  nodesEncoding(): NodesEncoding | undefined;
}

export interface K8sClientOptions {
  /**
   * Page size (`limit`) of every list. Default 100, not client-go's 500: a page is read, parsed and
   * dropped whole, and 500 kubelet-sized Nodes (~5 KB of JSON, ~15 KB parsed, each) grew the agent's
   * heap by ~10 MB that it kept (RSS 107-111 MB against 95-97 at 100, 5,000 Nodes, bench/footprint.ts).
   * 50 requests instead of 10 for 5,000 Nodes, once per (re)list.
   */
  pageSize?: number;
}

/** The reason trellis sets on NetworkUnavailable=False once the node's network is up. */
export const NETWORK_UP_REASON = 'TrellisIsUp';

export function createK8sClient(conn: KubeConnection, opts: K8sClientOptions = {}): K8sClient {
  const pageSize = opts.pageSize ?? 100;
  if (!Number.isInteger(pageSize) || pageSize < 1)
    throw new RangeError(`pageSize must be a positive integer (got ${pageSize})`);
  const api = new CoreApi(transportFor(conn), pageSize);

  return {
    transport: api.transport.name,
    nodesEncoding: () => api.transport.nodesEncoding?.(),

    async listNodes() {
      // Each page into views as it arrives (listAll's each): the raw Nodes are never all held.
      const raw = await api.listNodes(undefined, (o) => toNodeView(o));
      const items: NodeView[] = [];
      const problems: string[] = [];
      for (const r of raw.items) {
        if (r.ok) items.push(r.node);
        else problems.push(r.problem);
      }
      return { items, problems, resourceVersion: raw.resourceVersion };
    },

    async setNetworkUnavailable(name, unavailable, reason, message) {
      const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
      const body = {
        status: {
          conditions: [
            {
              type: 'NetworkUnavailable',
              status: unavailable ? 'True' : 'False',
              reason,
              message,
              lastTransitionTime: now,
              lastHeartbeatTime: now,
            },
          ],
        },
      };
      await api.transport.patch(
        `patch node ${name} status (NetworkUnavailable=${unavailable ? 'True' : 'False'})`,
        `${nodePath(name)}/status`,
        'strategic-merge',
        body,
      );
    },

    async annotateNode(name, annotations) {
      await api.transport.patch(`annotate node ${name}`, nodePath(name), 'merge', {
        metadata: { annotations },
      });
    },

    async listPodsOnNode(nodeName) {
      const raw = await api.listPods(`spec.nodeName=${nodeName}`);
      const items: PodView[] = [];
      const problems: string[] = [];
      for (const o of raw.items) {
        const r = toPodView(o);
        if (r.ok) items.push(r.pod);
        else problems.push(r.problem);
      }
      return { items, problems, resourceVersion: raw.resourceVersion };
    },

    startNodeInformer(informerOpts) {
      return startNodeInformerOn(api, informerOpts);
    },
  };
}

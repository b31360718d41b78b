/**
 * The port between pkg/k8s's API logic (pagination, informer, views) and the wire. Two adapters
 * implement it: http-transport.ts (node:http/https, the default: small and always loaded) and
 * client-node-transport.ts (@kubernetes/client-node, loaded by dynamic import only for kubeconfigs
 * the small one does not support: exec plugins, auth providers, proxies). Every method either
 * resolves with plain JSON or rejects with a K8sError.
 */

export type TransportName = 'native' | 'client-node';

/** How Nodes came from the API server: Kubernetes' protobuf, or JSON. */
export type NodesEncoding = 'protobuf' | 'json';

/** One page of a list: the decoded JSON of a *List object. */
export interface Page {
  items: unknown[];
  metadata?: { resourceVersion?: string; continue?: string };
}

/**
 * A list page asked for ahead of its reader (api.ts's listAll, page-fetches.ts): the transport hands
 * its continue token over as soon as the body's head holds it (list-head.ts), and leaves the rest of
 * the body unread, in the socket, until `held()` says it may be read (undefined: now). The page before
 * is then read and parsed while the server prepares this one, and only one page's objects exist at
 * a time.
 */
export interface PageAhead {
  onContinue(token: string): void;
  held(): Promise<void> | undefined;
}

export type PatchType = 'strategic-merge' | 'merge';

export interface WatchParams {
  resourceVersion: string;
  allowWatchBookmarks: boolean;
  timeoutSeconds: number;
  /** The server accepted the watch (200): it works again, before any event (optional for a transport). */
  onOpen?: () => void;
  /**
   * The watch is of Nodes, read only into NodeViews: as ListParams.nodeViewsOnly, a transport that
   * can asks for protobuf, and events' objects then hold only those fields.
   */
  nodeViewsOnly?: boolean;
}

/**
 * How a watch ended without an error: 'closed' (the server ended the stream, or `signal` aborted)
 * or 'timeout' (nothing arrived within the inactivity timeout, so the connection may be dead).
 */
export type WatchEnd = 'closed' | 'timeout';

/**
 * The inactivity timeout of a watch, so a partitioned connection cannot hang the informer forever.
 * The API server sends a BOOKMARK to every watch that allows them once a minute (its cacher's
 * bookmark frequency), so a healthy watch of a quiet cluster is never silent this long; a 30 s
 * timeout cut it and re-watched twice a minute. A dead peer is mostly found sooner, by TCP keepalive
 * (TCP_KEEPALIVE_IDLE_MS; `read ETIMEDOUT` ~40 s into a partition, api-partition.test.ts). The
 * client-node fallback transport sets its Watch's timeout to this too.
 */
export const WATCH_IDLE_MS = 90_000;

/** Idle time before TCP keepalive probes (libuv then probes every 1 s, 10 times) on API connections. */
export const TCP_KEEPALIVE_IDLE_MS = 30_000;

export interface ListParams {
  limit: number;
  continue?: string;
  fieldSelector?: string;
  resourceVersion?: string;
  /**
   * The list is of Nodes, read only into NodeViews: a transport that can asks for Kubernetes'
   * protobuf and decodes only the fields a NodeView has (node-proto.ts); one that cannot reads
   * JSON. Items are then those fields alone.
   */
  nodeViewsOnly?: boolean;
}

export interface Transport {
  readonly name: TransportName;
  /**
   * GET of one list page with limit/continue, an optional fieldSelector and resourceVersion. `signal`
   * ends the request at once (a stopping agent must not wait out the request timeout of an API server
   * that accepted the connection and never answers); the client-node fallback, which cannot end its
   * own, abandons it. `ahead`: see PageAhead; a transport that cannot read a head early ignores it
   * (its pages then come one at a time).
   */
  listPage(
    op: string,
    path: string,
    params: ListParams,
    signal?: AbortSignal,
    ahead?: PageAhead,
  ): Promise<Page>;
  patch(op: string, path: string, type: PatchType, body: unknown): Promise<unknown>;
  /**
   * A watch on a collection path. `onEvent` gets every event (ADDED, MODIFIED, DELETED, BOOKMARK,
   * ERROR) in order; the promise settles once the stream is over. HTTP errors and broken
   * connections reject (410 as a K8sError with statusCode 410).
   */
  watch(
    op: string,
    path: string,
    params: WatchParams,
    onEvent: (type: string, object: unknown) => void,
    signal: AbortSignal,
  ): Promise<WatchEnd>;
  /**
   * How the server answered the last Node list page or watch asked for with nodeViewsOnly (undefined
   * before one was; a transport that asks for JSON alone may say so from the start): for the
   * operator's view, since a proxy may answer JSON to a protobuf request.
   */
  nodesEncoding?(): NodesEncoding | undefined;
}

/** The cluster as the controller sees it: plain node records, a full-list flag. */
export interface ClusterNode {
  name: string;
  podCIDRs: readonly string[];
  internalIPs: readonly string[];
  annotations?: Readonly<Record<string, string>>;
  /** The reason of a NetworkUnavailable=True condition on the Node (k8s NodeView); absent otherwise. */
  networkUnavailable?: string;
  /** A NetworkUnavailable=False condition is on the Node (k8s NodeView.networkUp). */
  networkUp?: boolean;
  /** The Node object's identity and version, from the API (absent standalone). */
  uid?: string;
  resourceVersion?: string;
}

export interface ClusterView {
  list(): ClusterNode[];
  get(name: string): ClusterNode | undefined;
  /** True once the first full list is in; nothing may be deleted before. */
  hasSynced(): boolean;
}

/** Standalone mode: this node alone, pod CIDRs from flags. */
export function staticCluster(self: ClusterNode): ClusterView {
  return {
    list: () => [self],
    get: (name) => (name === self.name ? self : undefined),
    hasSynced: () => true,
  };
}

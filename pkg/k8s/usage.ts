/**
 * Every Kubernetes API call pkg/k8s makes, as RBAC sees it. The ClusterRole in manifests/ must grant
 * exactly this (a test there checks it), so keep it truthful: add a verb here in the same change
 * that adds the call.
 */
export interface ApiUsage {
  readonly apiGroup: '';
  readonly resource: 'nodes' | 'nodes/status' | 'pods';
  readonly verbs: readonly ('get' | 'list' | 'watch' | 'patch')[];
}

export const K8S_API_USAGE: readonly ApiUsage[] = Object.freeze([
  // listNodes and the node informer (list, watch); annotateNode (patch).
  Object.freeze({
    apiGroup: '',
    resource: 'nodes',
    verbs: Object.freeze(['list', 'watch', 'patch'] as const),
  }),
  // setNetworkUnavailable: strategic merge patch of status.conditions.
  Object.freeze({ apiGroup: '', resource: 'nodes/status', verbs: Object.freeze(['patch'] as const) }),
  // listPodsOnNode: list with fieldSelector spec.nodeName.
  Object.freeze({ apiGroup: '', resource: 'pods', verbs: Object.freeze(['list'] as const) }),
] as const);

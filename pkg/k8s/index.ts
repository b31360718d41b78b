/**
 * pkg/k8s: the Kubernetes adapter. Its own small node:http(s) transport serves the common
 * kubeconfigs and the in-cluster config; @kubernetes/client-node (of which this is the only
 * importer) is loaded by dynamic import only for the rest. Everything exported here is plain data,
 * small port interfaces and K8sError; no client-node type leaks out.
 */
export { type BackoffOptions, backoffDelay, DEFAULT_BACKOFF } from './backoff.ts';
export {
  createK8sClient,
  type K8sClient,
  type K8sClientOptions,
  type Listed,
  NETWORK_UP_REASON,
  type NodeReader,
  type NodeStatusWriter,
  type NodeWatcher,
  type PodLister,
} from './client.ts';
export { K8sError, K8sReason } from './errors.ts';
export type { Clock, NodeEventType, NodeInformer, NodeInformerOptions, Sleep } from './informer.ts';
export {
  type KubeConfigSource,
  KubeConnection,
  type LoadKubeConfigOptions,
  loadKubeConfig,
} from './kubeconfig.ts';
export { proxyFromEnvironment } from './proxy-env.ts';
export type { TransportName } from './transport.ts';
export { USER_AGENT } from './transports.ts';
export { type ApiUsage, K8S_API_USAGE } from './usage.ts';
export {
  isCidr,
  type NodeView,
  type NodeViewResult,
  type PodView,
  type PodViewResult,
  sameNodeView,
  toNodeView,
  toPodView,
} from './views.ts';

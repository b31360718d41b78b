/** Inter-node routes: Node objects -> desired routes -> diff against the routes we own -> netlink. */

export { type ApplyResult, applyRouteDiff, type RouteError } from './apply.ts';
export { desiredRoutes, vtepAddress } from './desired.ts';
export {
  diffRoutes,
  isOwnedRoute,
  MAIN_TABLE,
  type RouteConflict,
  type RouteDiff,
  routeKey,
  UNREADABLE_HOLDER,
} from './diff.ts';
export { readLocalLinks } from './local-links.ts';
export { OwnRouteChanges } from './own-changes.ts';
export { applyPeerStep, type PeerApplyResult, PeerStepError } from './peer-apply.ts';
export {
  buildPeerState,
  changedFields,
  commitPeerStep,
  type PeerRecord,
  type PeerState,
  type PeerStateBasis,
  type PeerStep,
  planPeerStep,
} from './peer-state.ts';
export {
  type OverlayPort,
  type OverlayReport,
  type PeerStepOutcome,
  type ReconcileInput,
  type ReconcileReport,
  RouteReconciler,
  type RouteReconcilerOptions,
} from './reconciler.ts';
export type {
  DesiredRoutes,
  DesiredRoutesOptions,
  LocalAddress,
  LocalLink,
  OverlayDevice,
  PeerDecision,
  PeerNode,
  Problem,
  RoutingMode,
  SelfNode,
} from './types.ts';
export { ROUTING_MODES } from './types.ts';

/**
 * Desired vs programmed routes -> the smallest set of kernel changes. Pure.
 *
 * Identity: family + destination + table. That is the kernel's key for a unicast route in a table when
 * no metric is set, so two routes with the same identity cannot coexist: a different gateway, device,
 * type or onlink flag is a `replace`, never an add plus a remove.
 *
 * Ownership. trellis tags every route it creates with protocol 126, but two parts of the agent create them:
 *   - the datapath (pkg/datapath) owns the per-pod host routes: `10.244.1.5/32 dev vethX scope link`, no
 *     gateway, type unicast;
 *   - this reconciler owns the inter-node routes (they have a gateway: the peer's node IP for direct routes,
 *     the peer's VTEP address for the `onlink` VXLAN routes via trellis.v4/v6) and the blackholes for our own
 *     pod CIDRs (type blackhole).
 * So a programmed route is ours only when it carries protocol 126 AND (has a gateway OR is a blackhole OR is
 * an IPv6 gateway-less unicast route shorter than /128: the interim route through which an IPv6 onlink
 * route is written (pkg/netlink handle.ts, rewriteOnlink6), left behind if the agent died between the
 * two writes; the datapath's host routes are all /32 or /128). The
 * diff never removes or replaces anything else, even if the caller passes it in: a pod's host route is never
 * touched by node churn. The reconciler passes the WHOLE table on purpose, so that a foreign route holding
 * the key of a desired route shows up as a conflict instead of being overwritten by a replace.
 */

import { type RouteInfo, TRELLIS_ROUTE_PROTOCOL } from '../datapath/ports.ts';
import { canonicalIp, formatCidr, parseCidr } from '../ip/index.ts';

export const MAIN_TABLE = 254;

export interface RouteDiff {
  /** New identities: created with replaceRoute (idempotent). */
  add: RouteInfo[];
  /** Same identity, different gateway/device/type/onlink: replaced atomically in place. */
  replace: RouteInfo[];
  /** Programmed routes this reconciler owns that are no longer desired. */
  remove: RouteInfo[];
  unchanged: number;
  /**
   * Desired routes whose identity is held by a programmed route we do not own (e.g. a pod host route with
   * the same prefix). Left alone and reported: clobbering it would cut off a local pod.
   */
  conflicts: RouteConflict[];
}

/** How logs and operator commands name a holder that is a route RouteInfo cannot express. */
export const UNREADABLE_HOLDER =
  'a multipath, unreachable, prohibit or throw route, which trellis cannot read';

/**
 * A desired route whose key another route holds. When the holder is a route the dump parser cannot
 * express (multipath, unreachable, prohibit, throw: listed by key, or found when the exclusive add was
 * refused), `existing` carries only its key and `existing.unreadable`.
 */
export interface RouteConflict {
  desired: RouteInfo;
  existing: RouteInfo;
}

/** True when the route is one this reconciler created and may change or delete (see the file comment). */
export function isOwnedRoute(r: RouteInfo): boolean {
  if (r.protocol !== TRELLIS_ROUTE_PROTOCOL) return false;
  if (r.type === 'blackhole' || (r.gateway !== undefined && r.gateway !== '')) return true;
  // IPv6 reports every route at universe scope, so the prefix tells the interim route (a pod CIDR)
  // from the datapath's host routes (/128); a dumped dst always carries its prefix length.
  return r.family === 6 && (r.type ?? 'unicast') === 'unicast' && !r.dst.endsWith('/128');
}

function canonicalDst(r: RouteInfo): string {
  const c = parseCidr(r.dst, { strict: false });
  return c === undefined ? r.dst : formatCidr(c);
}

/** family + dst + table, with dst canonical and the main table spelled out. */
export function routeKey(r: RouteInfo): string {
  return `${r.family} ${canonicalDst(r)} ${r.table ?? MAIN_TABLE}`;
}

/** The attributes that make two routes with the same key different kernel state. */
function routeShape(r: RouteInfo): string {
  const type = r.type ?? 'unicast';
  if (type === 'blackhole') return 'blackhole';
  const gw = r.gateway === undefined || r.gateway === '' ? '-' : (canonicalIp(r.gateway) ?? r.gateway);
  return `${type} via ${gw} dev ${r.ifindex ?? '-'} onlink ${r.onlink === true}`;
}

const NONE: readonly RouteInfo[] = [];

export function diffRoutes(desired: RouteInfo[], programmed: RouteInfo[]): RouteDiff {
  const out: RouteDiff = { add: [], replace: [], remove: [], unchanged: 0, conflicts: [] };
  const have = new Map<string, RouteInfo[]>();
  for (const r of programmed) {
    const k = routeKey(r);
    const list = have.get(k);
    if (list === undefined) have.set(k, [r]);
    else list.push(r);
  }
  const wanted = new Set<string>();
  for (const d of desired) {
    const k = routeKey(d);
    if (wanted.has(k)) continue; // The planner never emits duplicates; the first one wins if it did.
    wanted.add(k);
    const existing = have.get(k) ?? NONE;
    const foreign = existing.find((e) => !isOwnedRoute(e));
    if (foreign !== undefined) {
      out.conflicts.push({ desired: d, existing: foreign });
      continue;
    }
    if (existing.length === 0) {
      out.add.push(d); // most of a cold pass: nothing to compare the shape with
      continue;
    }
    const shape = routeShape(d);
    const same = existing.find((e) => routeShape(e) === shape);
    if (same !== undefined) out.unchanged++;
    else out.replace.push(d);
    // Extra routes with the same key (IPv6 with several metrics, say) that are ours and not the one we keep.
    for (const e of existing) {
      if (e === same || (same === undefined && e === existing[0])) continue;
      out.remove.push(e);
    }
  }
  for (const [k, rs] of have) {
    if (wanted.has(k)) continue;
    for (const r of rs) if (isOwnedRoute(r)) out.remove.push(r);
  }
  return out;
}

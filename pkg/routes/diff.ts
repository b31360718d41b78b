/**
 * Desired vs programmed routes -> the smallest set of kernel changes. Pure.
 *
 * Identity: family + destination + table (routeKey), plus the metric: the kernel keys a route by prefix,
 * table, tos and metric (priority), so two routes of one key cannot coexist, and a different gateway,
 * device, type or onlink flag is a `replace`, never an add plus a remove. The routes we write carry no
 * metric, which the kernel stores as 0 (IPv4) or 1024 (IPv6); a route of ours at another is removed.
 *
 * A route we do not own on a desired prefix is a conflict when it holds our key (the same metric: ours
 * cannot be there beside it) or sits in front of ours (a lower metric, IPv6 only: it wins every lookup).
 * One behind ours (a higher metric) changes nothing: ours is added, replaced and removed as usual. tos
 * is not read (RouteInfo has none): a foreign route with one counts as holding the key.
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
   * Desired routes whose key is held by a programmed route we do not own (e.g. a pod host route with
   * the same prefix), or that such a route shadows (IPv6, a lower metric). Left alone and reported:
   * clobbering it would cut off a local pod.
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
  // Listed by key only (multipath, unreachable...): never ours to change. An IPv6 route of ours that
  // someone appended a nexthop to (`ip -6 route append`, kernels without nexthop objects) is dumped
  // with our protocol, and replacing it would delete the operator's nexthop with ours.
  if (r.unreadable === true) return false;
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

/** IP6_RT_PRIO_USER: what the kernel stores for an IPv6 route written without a metric (or with 0). */
const IP6_DEFAULT_METRIC = 1024;

/** The metric the kernel stores: unset is 0 for IPv4 (left out of dumps), 1024 for IPv6 (0 becomes it too). */
export function kernelMetric(r: RouteInfo): number {
  return r.family === 6 ? r.metric || IP6_DEFAULT_METRIC : (r.metric ?? 0);
}

/**
 * True when a route we do not own, on the prefix of one of ours at `metric`, holds its key or wins its
 * lookups (see the file comment). A holder listed by key only carries no metric: it may be either.
 */
export function outranks(foreign: RouteInfo, metric: number): boolean {
  if (foreign.unreadable === true && foreign.metric === undefined) return true;
  return kernelMetric(foreign) <= metric;
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
  // Indexed loops over the route lists, as the planner's (desired.ts): no iterator result per route.
  for (let i = 0; i < programmed.length; i++) {
    const r = programmed[i]!;
    const k = routeKey(r);
    const list = have.get(k);
    if (list === undefined) have.set(k, [r]);
    else list.push(r);
  }
  const wanted = new Set<string>();
  for (let i = 0; i < desired.length; i++) {
    const d = desired[i]!;
    const k = routeKey(d);
    if (wanted.has(k)) continue; // The planner never emits duplicates; the first one wins if it did.
    wanted.add(k);
    const existing = have.get(k) ?? NONE;
    if (existing.length === 0) {
      out.add.push(d); // most of a cold pass: nothing to compare the shape with
      continue;
    }
    const metric = kernelMetric(d);
    const foreign = existing.find((e) => !isOwnedRoute(e) && outranks(e, metric));
    if (foreign !== undefined) {
      out.conflicts.push({ desired: d, existing: foreign });
      continue;
    }
    // Ours on the key: one in the desired shape stays, else the first is replaced in place (a replace
    // writes at our metric, so only a route there can be the one replaced).
    const shape = routeShape(d);
    let same: RouteInfo | undefined;
    let first: RouteInfo | undefined;
    for (const e of existing) {
      if (!isOwnedRoute(e) || kernelMetric(e) !== metric) continue;
      first ??= e;
      if (routeShape(e) === shape) {
        same = e;
        break;
      }
    }
    const kept = same ?? first;
    if (same !== undefined) out.unchanged++;
    else if (first !== undefined) out.replace.push(d);
    else out.add.push(d);
    // Our other routes on the prefix: a second one on the key, or ours at another metric.
    for (const e of existing) {
      if (e === kept || !isOwnedRoute(e) || dumpedTwice(e, kept)) continue;
      out.remove.push(e);
    }
  }
  have.forEach((rs, k) => {
    if (wanted.has(k)) return;
    let first: RouteInfo | undefined;
    for (const r of rs) {
      if (!isOwnedRoute(r) || dumpedTwice(r, first)) continue;
      first ??= r;
      out.remove.push(r);
    }
  });
  return out;
}

/**
 * `e` is `kept` read a second time: an IPv6 route dump the table changed under restarts by skipping
 * as many routes as it had sent, so it can hand a route twice (unflagged). IPv6 holds one route per
 * prefix, table and metric (a second at the metric joins the first as a multipath nexthop), so
 * another at kept's metric is kept itself, and removing it would delete the route. IPv4 dumps resume
 * by key, and `ip route append` makes real second routes at one metric: those stay removable.
 */
function dumpedTwice(e: RouteInfo, kept: RouteInfo | undefined): boolean {
  return kept !== undefined && e.family === 6 && kernelMetric(e) === kernelMetric(kept);
}

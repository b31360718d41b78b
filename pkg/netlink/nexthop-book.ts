import { isIPv4 } from 'node:net';
import type { RouteInfo } from '../datapath/ports.ts';
import { RT_TABLE_MAIN } from './constants.ts';
import { bytesToIp, ipToBytes, parsePrefix } from './ip.ts';

/** 0-32 without a leading zero: how the kernel's dumps spell an IPv4 prefix length. */
const IPV4_PREFIX_LEN = /^(?:[0-9]|[12][0-9]|3[0-2])$/;

/**
 * Which nexthop object each of our gateway routes points at, and which ids are free.
 *
 * Why nexthop objects: IPv4 hashes a route's shared nexthop info (fib_info) by device, protocol,
 * scope, source and metric but not by gateway, so thousands of routes through one device with
 * distinct gateways (one per peer node) all land in one hash chain and every insert walks it: 4,999
 * such routes took the kernel ~370 ms here. A route that names a nexthop object hashes by the
 * object's id instead; the objects and the routes together take ~115 ms. Each route gets an object of its own, so changing or
 * deleting one never touches another route.
 *
 * Plain bookkeeping, no IO: the netlink handle feeds it dumps and asks it for ids. The kernel stays
 * the truth; a stale entry here costs at most an orphaned object, which pruning removes.
 */

/** trellis' ids: 126 (its route protocol) in the top byte, so they sort apart from other users'. */
export const NEXTHOP_ID_BASE = 0x7e000000;
const NEXTHOP_ID_COUNT = 1 << 24;

/** Routes that get a nexthop object: ours (protocol), unicast, through a gateway on a known device. */
export function usesNexthop(r: RouteInfo, protocol: number): boolean {
  return (
    r.protocol === protocol &&
    (r.type === undefined || r.type === 'unicast') &&
    r.gateway !== undefined &&
    r.gateway !== '' &&
    r.ifindex !== undefined
  );
}

/** A prefix as the kernel's dumps spell it (parseRoute), whatever spelling the planner used. */
export function canonicalPrefix(dst: string): string {
  // An IPv4 prefix as the planner writes it is already spelled that way: checked, not rebuilt (a pass
  // asks twice per route, and rebuilding cost ~4 µs each in the agent's interpreter).
  const slash = dst.indexOf('/');
  if (slash > 0 && isIPv4(dst.slice(0, slash)) && IPV4_PREFIX_LEN.test(dst.slice(slash + 1))) return dst;
  const p = parsePrefix(dst);
  return `${bytesToIp(ipToBytes(p.address))}/${p.prefixLen}`;
}

/**
 * The rest of a route's kernel key: family, table and metric. Nearly every route is in the main
 * table with the default metric, and those use the family number itself, so a resync that looks at
 * every dumped route allocates no key for it.
 */
function groupOf(r: RouteInfo): number | string {
  const table = r.table ?? RT_TABLE_MAIN;
  const metric = r.metric ?? defaultMetric(r.family);
  return table === RT_TABLE_MAIN && metric === defaultMetric(r.family)
    ? r.family
    : `${r.family} ${table} ${metric}`;
}

/** What the kernel stores for a route written without a metric: IPv6 dumps show 1024 (IP6_RT_PRIO_USER). */
function defaultMetric(family: number): number {
  return family === 6 ? 1024 : 0;
}

export class NexthopBook {
  /** Every id the kernel held at the last dump plus those handed out since: never handed out again. */
  private readonly taken = new Set<number>();
  /** Ids of objects carrying our protocol. */
  private readonly owned = new Set<number>();
  /** Route key (groupOf, then canonical destination) -> the id of its object. */
  private readonly byRoute = new Map<number | string, Map<string, number>>();
  private cursor = NEXTHOP_ID_BASE;
  private readonly protocol: number;

  constructor(protocol: number) {
    this.protocol = protocol;
  }

  /** A full dump of the kernel's nexthop objects replaces what was known about ids. */
  learnNexthops(list: readonly { id: number; protocol: number }[]): void {
    this.taken.clear();
    this.owned.clear();
    for (let i = 0; i < list.length; i++) {
      const nh = list[i]!;
      this.taken.add(nh.id);
      if (nh.protocol === this.protocol) this.owned.add(nh.id);
    }
    this.forgetWhere((id) => !this.owned.has(id));
  }

  /**
   * A route of ours seen in a dump (destination spelled canonically), pointing at object id:
   * remembered only if that object is ours.
   */
  learnRoute(dumped: RouteInfo, id: number): void {
    if (!this.owned.has(id)) return;
    const group = this.group(dumped, true)!;
    if (group.get(dumped.dst) !== id) group.set(dumped.dst, id);
  }

  /** True when some route is remembered as written through object id (a scan: deletions are rare). */
  routes(id: number): boolean {
    for (const group of this.byRoute.values()) for (const v of group.values()) if (v === id) return true;
    return false;
  }

  current(r: RouteInfo): number | undefined {
    return this.group(r, false)?.get(canonicalPrefix(r.dst));
  }

  isOwned(id: number): boolean {
    return this.owned.has(id);
  }

  /** A free id of our range, from then on taken and ours. */
  allocate(): number {
    for (let tries = 0; tries < NEXTHOP_ID_COUNT; tries++) {
      const id = this.cursor;
      this.cursor = id + 1 >= NEXTHOP_ID_BASE + NEXTHOP_ID_COUNT ? NEXTHOP_ID_BASE : id + 1;
      if (this.taken.has(id)) continue;
      this.taken.add(id);
      this.owned.add(id);
      return id;
    }
    throw new RangeError('no free nexthop id left in trellis range');
  }

  bind(r: RouteInfo, id: number): void {
    this.group(r, true)!.set(canonicalPrefix(r.dst), id);
  }

  /** Forgets the route's object and returns its id (to delete), if one was known. */
  unbind(r: RouteInfo): number | undefined {
    const group = this.group(r, false);
    const dst = canonicalPrefix(r.dst);
    const id = group?.get(dst);
    group?.delete(dst);
    return id;
  }

  /** Our objects no route points at, given every id the kernel's routes reference. */
  orphans(referenced: ReadonlySet<number>): number[] {
    return [...this.owned].filter((id) => !referenced.has(id));
  }

  /** An id the kernel refused an object of ours at (someone holds it): taken, not ours. */
  notOurs(id: number): void {
    this.taken.add(id);
    this.owned.delete(id);
  }

  /** Objects of ours (unbound) that a deletion left in the kernel: taken and ours again. */
  stillOurs(ids: readonly number[]): void {
    for (const id of ids) {
      this.taken.add(id);
      this.owned.add(id);
    }
  }

  /** Objects deleted from the kernel. */
  dropped(ids: readonly number[]): void {
    if (ids.length === 0) return;
    const gone = new Set(ids);
    for (const id of ids) {
      this.taken.delete(id);
      this.owned.delete(id);
    }
    this.forgetWhere((id) => gone.has(id));
  }

  private group(r: RouteInfo, create: boolean): Map<string, number> | undefined {
    const key = groupOf(r);
    let group = this.byRoute.get(key);
    if (group === undefined && create) {
      group = new Map();
      this.byRoute.set(key, group);
    }
    return group;
  }

  // forEach rather than for…of over [dst, id] pairs: a pass's dump runs this over every route of
  // ours, and without V8's optimizing tiers each pair is an array and an iterator result (Map's
  // forEach visits the entries left after deleting the one it is on, as for…of does).
  private forgetWhere(drop: (id: number) => boolean): void {
    this.byRoute.forEach((group) => {
      group.forEach((id, dst) => {
        if (drop(id)) group.delete(dst);
      });
    });
  }
}

/**
 * What a pod's host end holds once ADD is done, and putting it back: up, the link-local gateway
 * addresses, and a /32 and /128 route to each of the pod's addresses (protocol 126, scope link).
 * A route flush (`ip route flush proto 126`), a route deleted by hand or the veth set down and up
 * (which drops its IPv6 addresses) takes them away while the pod runs; nothing else puts them back,
 * and the pod is cut off until its next ADD.
 */
import type { Lease, LeasedAddress } from '../ipam/index.ts';
import { GATEWAY_V4, GATEWAY_V6, gatewayPrefixLen, hostPrefixLen } from './gateway.ts';
import { attachmentKey, hostVethName } from './names.ts';
import {
  type AddressInfo,
  hasRouteScan,
  type LinkInfo,
  type NetlinkHandle,
  type RouteInfo,
  type SetUpOutcome,
  type SetUpStep,
  TRELLIS_ROUTE_PROTOCOL,
} from './ports.ts';

/**
 * The steps that give host end `index` what ADD gives it, in the order the kernel needs (routes after
 * up). The routes replace whatever holds their key: the lease owns the address (a repair makes sure
 * the lease is still held first: repairHostSides).
 */
export function hostSideSteps(index: number, addresses: readonly LeasedAddress[]): SetUpStep[] {
  const steps: SetUpStep[] = [{ kind: 'up', index }];
  for (const a of addresses) {
    steps.push({
      kind: 'address',
      address:
        a.family === 4
          ? { family: 4, ifindex: index, address: GATEWAY_V4, prefixLen: gatewayPrefixLen(4), scope: 'link' }
          : {
              family: 6,
              ifindex: index,
              address: GATEWAY_V6,
              prefixLen: gatewayPrefixLen(6),
              scope: 'link',
              noDad: true,
            },
    });
  }
  for (const a of addresses) steps.push({ kind: 'route', route: hostRoute(index, a) });
  return steps;
}

/** The route on host end `index` to one of its pod's addresses. */
function hostRoute(index: number, a: LeasedAddress): RouteInfo {
  return {
    family: a.family,
    dst: `${a.address}/${hostPrefixLen(a.family)}`,
    ifindex: index,
    scope: 'link',
    protocol: TRELLIS_ROUTE_PROTOCOL,
  };
}

/** One lease whose host end lacks something, and what. */
export interface HostSideDrift {
  lease: Lease;
  link: LinkInfo;
  missing: string[];
}

/**
 * The leases whose host end exists but lacks part of what ADD gave it. A lease without its host end
 * is not this check's (its pod is gone: DEL, GC and the lease collector deal with it), nor one with a
 * CNI call in flight (`busy`).
 */
export function hostSideDrift(
  leases: readonly Lease[],
  links: readonly LinkInfo[],
  routes: readonly RouteInfo[],
  addresses: readonly AddressInfo[],
  busy: ReadonlySet<string>,
): HostSideDrift[] {
  const byName = new Map(links.map((l) => [l.name, l]));
  const routed = new Set(routes.map((r) => `${r.ifindex} ${r.dst}`));
  const held = new Set(addresses.map((a) => `${a.ifindex} ${a.family} ${a.address}`));
  const out: HostSideDrift[] = [];
  for (const lease of leases) {
    if (busy.has(attachmentKey(lease))) continue;
    const link = byName.get(hostVethName(lease.containerId, lease.ifname));
    if (link === undefined) continue;
    const missing: string[] = [];
    if (!link.up) missing.push('up');
    for (const a of lease.addresses) {
      const gateway = a.family === 4 ? GATEWAY_V4 : GATEWAY_V6;
      if (!held.has(`${link.index} ${a.family} ${gateway}`)) missing.push(`address ${gateway}`);
      const dst = `${a.address}/${hostPrefixLen(a.family)}`;
      if (!routed.has(`${link.index} ${dst}`)) missing.push(`route ${dst}`);
    }
    if (missing.length > 0) out.push({ lease, link, missing });
  }
  return out;
}

/**
 * Finds the drift and puts each back: one listing of links and addresses, and the routes through the
 * leases' host ends (podEndRoutes).
 */
export async function repairHostSides(
  host: Pick<NetlinkHandle, 'listLinks' | 'listRoutes' | 'listAddresses' | 'setUp' | 'answersFor'>,
  leases: readonly Lease[],
  busy: ReadonlySet<string>,
  /**
   * Runs `put` for a lease as a CNI call on it would run (the attachment's lock), only while the lease
   * is still the one read before the listings; false when it was not (released or replaced meanwhile:
   * a DEL that finished during the listings leaves a veth about to go and an address maybe given to
   * a new pod). Absent: put at once (tests of the listing alone).
   */
  whileLeased?: (lease: Lease, put: () => Promise<void>) => Promise<boolean>,
): Promise<{
  repaired: HostSideDrift[];
  failed: { drift: HostSideDrift; error: unknown }[];
  /** Leases (no call in flight) whose host end is gone altogether: nothing here can put a veth pair back. */
  vethless: Lease[];
}> {
  if (leases.length === 0) return { repaired: [], failed: [], vethless: [] };
  // A call in flight when the listings start may finish during them, its lease then complete and
  // its key idle, the listings still without its routes: not drift.
  const busyBefore = [...busy];
  const [links, addresses] = await Promise.all([host.listLinks(), host.listAddresses()]);
  const routes = await podEndRoutes(host, leases, links);
  const repaired: HostSideDrift[] = [];
  const failed: { drift: HostSideDrift; error: unknown }[] = [];
  const idle = (l: Lease): boolean => !busyBefore.includes(attachmentKey(l)) && !busy.has(attachmentKey(l));
  const linkNames = new Set(links.map((l) => l.name));
  const vethless = leases.filter((l) => idle(l) && !linkNames.has(hostVethName(l.containerId, l.ifname)));
  for (const drift of hostSideDrift(leases, links, routes, addresses, new Set([...busyBefore, ...busy]))) {
    let missing = drift.missing;
    const put = async (): Promise<void> => {
      const steps = hostSideSteps(drift.link.index, drift.lease.addresses);
      missing = withAddressesAdded(missing, steps, await host.setUp(steps));
    };
    try {
      if (whileLeased === undefined) await put();
      else if (!(await whileLeased(drift.lease, put))) continue;
      repaired.push({ ...drift, missing });
    } catch (error) {
      // Gone meanwhile (its pod's DEL), or the kernel refused: the next pass looks again.
      failed.push({ drift, error });
    }
  }
  return { repaired, failed, vethless };
}

/**
 * Our routes through the pods' host ends. First one lookup per pod address, all in flight at once:
 * at 5,000 nodes a dump reads ~10,000 peer routes for the two per pod wanted here, and was the biggest
 * part of an idle pass's CPU. When every lookup matches its route, those are the routes. When one does
 * not (the route is gone, or a route in front of it or a policy rule answers instead), the lookups
 * cannot say what is missing: both families are dumped, and the dump decides.
 */
async function podEndRoutes(
  host: Pick<NetlinkHandle, 'listRoutes' | 'answersFor'>,
  leases: readonly Lease[],
  links: readonly LinkInfo[],
): Promise<RouteInfo[]> {
  const indexOf = new Map(links.map((l) => [l.name, l.index]));
  const podEnds = new Set<number>();
  const expected: RouteInfo[] = [];
  for (const lease of leases) {
    const index = indexOf.get(hostVethName(lease.containerId, lease.ifname));
    if (index === undefined) continue;
    podEnds.add(index);
    // Every lease with a host end, those with a CNI call in flight too: which of them the drift
    // leaves out is decided later, when a call may have ended.
    for (const a of lease.addresses) expected.push(hostRoute(index, a));
  }
  const answersFor = host.answersFor?.bind(host);
  if (answersFor !== undefined && expected.length > 0) {
    const answers = await Promise.all(expected.map(answersFor));
    if (answers.every((held) => held)) return expected;
  }
  const routes: RouteInfo[] = [];
  for (const family of [4, 6] as const) {
    const filter = { family, protocol: TRELLIS_ROUTE_PROTOCOL };
    const seen: RouteInfo[] = [];
    const keep = (r: RouteInfo): void => {
      if (r.ifindex !== undefined && podEnds.has(r.ifindex)) seen.push(r);
    };
    if (hasRouteScan(host)) await host.scanRoutes(filter, keep, () => seen.splice(0));
    else for (const r of await host.listRoutes(filter)) keep(r);
    routes.push(...seen);
  }
  return routes;
}

/**
 * What the listings found missing, and the gateway addresses the put found gone too: the veth set down
 * after the listings (an operator's `ip link set down; up` under way) loses its IPv6 address then, and
 * the put gives it back (an address it adds was absent; one still there is 'kept'). Routes are
 * replaced either way, so only the listings can say which were gone.
 */
function withAddressesAdded(
  missing: readonly string[],
  steps: readonly SetUpStep[],
  outcomes: readonly SetUpOutcome[],
): string[] {
  const added = steps.flatMap((s, i) =>
    s.kind === 'address' && outcomes[i] === 'done' ? [`address ${s.address.address}`] : [],
  );
  return [...missing, ...added.filter((a) => !missing.includes(a))];
}
